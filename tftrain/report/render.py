"""The run report (tftrain.report) as a document: a list of blocks written out as Markdown and as
one self-contained HTML page (the figure embedded), so both say the same; and its figure.

Blocks: ("h", level, text), ("p", text), ("table", headers, rows), ("details", summary, text),
("img", file name, alt). Text may hold `code` spans, as in Markdown.
"""

from __future__ import annotations

import base64
import dataclasses
import html as html_lib
import math
import os
import re
from pathlib import Path

from tftrain.sweep import aggregate, summary as sweep

SHOWN_CHARS = 160  # a table cell's longest text (errors, long config values)
TRANSPOSE_OVER = 10  # differing keys beyond which the key table has one row per key instead of per run


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else str(value)
    return str(value)


def _cut(text: str, limit: int = SHOWN_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def config_labels(configs: list[aggregate.Configuration]) -> dict[int, str]:
    """A short name per configuration (by id): its own command-line overrides, seed left out (when
    its runs came from the CLI, like at least one other configuration's), else its run directory
    (the common path of its seeds'); made unique with a run's name."""
    with_cli = [c for c in configs if all(r["cli"] is not None for r in c.runs)]
    everywhere = set.intersection(*(set(aggregate.seedless(r["cli"])) for c in with_cli for r in c.runs)) \
        if len(with_cli) > 1 else None
    labels: dict[int, str] = {}
    for c in configs:
        names = [r["run"] for r in c.runs]
        own = []
        if everywhere is not None and c in with_cli:
            mine = set.intersection(*(set(aggregate.seedless(r["cli"])) for r in c.runs))
            own = [o for o in aggregate.seedless(c.runs[0]["cli"]) if o in mine and o not in everywhere]
        common = os.path.commonpath(names) if len(names) > 1 else names[0]
        labels[id(c)] = " ".join(own) or (common if common not in ("", ".") else f"{names[0]} +{len(names) - 1}")
    taken = [labels[id(c)] for c in configs]
    for c in configs:
        if taken.count(labels[id(c)]) > 1:
            labels[id(c)] += f" ({Path(c.runs[0]['run']).name}" + (", …)" if len(c.runs) > 1 else ")")
    return labels


def document(comparison, drawn: list[str], paths) -> list[tuple]:
    """The report's blocks for a tftrain.report.Comparison, with curves of `drawn`."""
    rows, configs, differ, objective, mode = (comparison.rows, comparison.configs, comparison.differ,
                                              comparison.objective, comparison.mode)
    labels = config_labels(configs)
    seeded = any(len(c.runs) > 1 for c in configs)
    config_of = {id(r): c for c in configs for r in c.runs}
    counts = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    best = "highest" if mode == "max" else "lowest"
    second = sweep.tiebreak_of(objective)
    doc = [("h", 1, "Run report"),
           ("p", f"{len(rows)} run(s) (" + ", ".join(f"{n} {s}" for s, n in counts.items()) + ") from "
            + ", ".join(f"`{p}`" for p in paths) + f"; {len(configs)} configuration(s). Ranked by `{objective}` "
            f"({best} first" + (f", ties by `{second}`" if second else "") + "); runs not completed last.")]

    shown = sweep.metric_columns(rows, objective)
    headers = ["#", "run", *(["config #"] if seeded else []), "status", *shown, "epochs", "train time (s)",
               "wall time (s)"]
    errors = any(r["error"] for r in rows)
    table = []
    for r in rows:
        m = r["metrics"]
        table.append([str(r["rank"]), r["run"], *([str(config_of[id(r)].rank)] if seeded else []), r["status"],
                      *[_fmt(m.get(c)) for c in shown], _fmt(r["epochs"]), _fmt(m.get("train_time_s"), 1),
                      _fmt(r["wall_time_s"], 1), *([_cut(r["error"])] if errors else [])])
    doc += [("h", 2, "Runs"), ("table", headers + (["error"] if errors else []), table)]

    doc += [("h", 2, "Config keys that differ")]
    without = [r["run"] for r in rows if r["config"] is None]
    if without:
        doc.append(("p", "No config.yaml (left out of the comparison): " + ", ".join(f"`{w}`" for w in without)))
    with_config = [r for r in rows if r["config"] is not None]
    if differ and len(differ) > TRANSPOSE_OVER:  # wide: one row per key, the runs by their #
        doc += [("p", "Columns: the runs by their # in the Runs table."),
                ("table", ["key", *[f"#{r['rank']}" for r in with_config]],
                 [[f"`{k}`", *[_cut(r["differ"][k], 60) for r in with_config]] for k in differ])]
    elif differ:
        doc.append(("table", ["#", "run", *[f"`{k}`" for k in differ]],
                    [[str(r["rank"]), r["run"], *[_cut(r["differ"][k], 60) for k in differ]] for r in with_config]))
    elif with_config:
        doc.append(("p", f"All {len(with_config)} run(s) have the same config."))
    if comparison.seedlike:
        doc.append(("p", ", ".join(f"`{k}`" for k in comparison.seedlike) + " follow(s) `trainer.seed` in every run: "
                    "part of the seed, not of the configuration."))
    if comparison.same:
        doc.append(("details", f"{len(comparison.same)} key(s) have the same value in every run",
                    ", ".join(f"`{k}={_cut(v, 60)}`" for k, v in comparison.same.items())))

    if seeded:
        metrics = [objective, *[c for c in shown if c != objective]]
        doc += [("h", 2, "Configurations"),
                ("p", "Runs that differ only in `trainer.seed` (or in logging and checkpointing keys) are seeds of one "
                 "configuration. "
                 f"Values are mean ± the half-width of the 95% Student t interval over its completed runs (n); ranked "
                 f"by the mean of `{objective}` ({best} first); verdicts from Welch's t-test against #1 (two-sided, "
                 f"p < {aggregate.ALPHA} counts as a difference)."),
                # Named by their labels: the identities (every differing key=value) are too long to read.
                ("p", aggregate.conclusion([dataclasses.replace(c, overrides=(labels[id(c)],)) for c in configs],
                                           objective, mode)),
                ("table", ["#", "configuration", "run #s", "n", "verdict", *metrics],
                 [[str(c.rank), _cut(labels[id(c)]), ", ".join(str(r["rank"]) for r in c.runs),
                   str(len(c.completed)) + (f" ({len(c.runs) - len(c.completed)} not completed)"
                                            if len(c.completed) < len(c.runs) else ""),
                   c.verdict, *[str(c.interval(m)) for m in metrics]] for c in configs])]

    doc += [("h", 2, "Curves")]
    if drawn:
        unfinished = any(r["status"] != "completed" for r in rows)
        doc += [("p", "Per epoch: " + ", ".join(f"`{m}`" for m in drawn) + "; one line per configuration"
                 + (" (mean, with its 95% band over seeds)" if seeded else "")
                 + ("; dashed: runs not completed, their epochs so far" if unfinished else "") + "."),
                ("img", "report.png", "curves")]
    else:
        doc.append(("p", "No run logged a history of these metrics (report.png is empty)."))
    return doc


# ---------------------------------------------------------------- writing it out


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(doc: list[tuple]) -> str:
    lines: list[str] = []
    for kind, *args in doc:
        if kind == "h":
            lines += ["#" * args[0] + " " + args[1], ""]
        elif kind == "p":
            lines += [args[0], ""]
        elif kind == "table":
            headers, rows = args
            lines += ["| " + " | ".join(map(_md_cell, headers)) + " |", "|" + "---|" * len(headers)]
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in rows] + [""]
        elif kind == "details":  # folded on GitHub; plain text elsewhere
            lines += [f"<details><summary>{args[0]}</summary>", "", args[1], "", "</details>", ""]
        elif kind == "img":
            lines += [f"![{args[1]}]({args[0]})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _inline(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html_lib.escape(text, quote=False))


STYLE = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:110em}table{border-collapse:collapse;"
         "margin:.5em 0}th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}"
         "th{background:#f3f3f3}code{background:#f6f6f6;padding:0 .2em}img{max-width:100%}")


def html(doc: list[tuple], png: Path) -> str:
    """One page, nothing beside it: the figure is embedded as base64."""
    parts = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8"><title>tftrain run report</title>',
             f"<style>{STYLE}</style></head><body>"]
    for kind, *args in doc:
        if kind == "h":
            parts.append(f"<h{args[0]}>{_inline(args[1])}</h{args[0]}>")
        elif kind == "p":
            parts.append(f"<p>{_inline(args[0])}</p>")
        elif kind == "table":
            headers, rows = args
            parts.append("<table><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in headers) + "</tr>"
                         + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in rows)
                         + "</table>")
        elif kind == "details":
            parts.append(f"<details><summary>{_inline(args[0])}</summary><p>{_inline(args[1])}</p></details>")
        elif kind == "img":
            data = base64.b64encode(png.read_bytes()).decode("ascii")
            parts.append(f'<img alt="{html_lib.escape(args[1])}" src="data:image/png;base64,{data}">')
    return "\n".join(parts + ["</body></html>"]) + "\n"


def plot(comparison, metrics: list[str], path: Path) -> None:
    """One panel per metric: a line per configuration (mean and 95% band over its completed
    seeds), dashed lines for runs not completed (their epochs so far)."""
    rows, configs, objective, mode = comparison.rows, comparison.configs, comparison.objective, comparison.mode
    from matplotlib.figure import Figure  # no pyplot: no global backend state
    from matplotlib.ticker import MaxNLocator

    cols = min(max(len(metrics), 1), 3)
    nrows = -(-max(len(metrics), 1) // cols)
    fig = Figure(figsize=(4.6 * cols + 3.4, 3.8 * nrows), layout="constrained")
    axes = list(fig.subplots(nrows, cols, squeeze=False).ravel())
    labels = config_labels(configs)
    legend: dict[str, object] = {}
    values: dict[str, list[float]] = {m: [] for m in metrics}  # everything drawn per panel: its scale
    lines = [(c, f"#{c.rank} {labels[id(c)]}" + (f" (n={len(c.completed)})" if len(c.completed) > 1 else ""))
             for c in configs if c.completed]
    for i, (c, label) in enumerate(lines):
        style = {"color": f"C{i % 10}", "marker": "osD^v"[i // 10 % 5], "markersize": 3}
        for ax, metric in zip(axes, metrics):
            mean, low, high = aggregate.curve(c, metric)
            epochs = range(1, len(mean) + 1)
            if mean:
                legend[label] = ax.plot(epochs, mean, **style)[0]
                values[metric] += mean
            # A band only where the seeds spread: identical values still give a std of rounding error.
            if any(hi - lo > 1e-9 * max(abs(m), 1e-12) for m, lo, hi in zip(mean, low, high)):
                ax.fill_between(epochs, low, high, color=style["color"], alpha=0.15, linewidth=0)
    unfinished = [r for r in rows if r["status"] != "completed"]
    for j, row in enumerate(unfinished, len(lines)):
        history = row["metrics"].get("history") or {}
        for ax, metric in zip(axes, metrics):
            curve = [v for v in history.get(metric) or [] if v is not None]
            if curve:
                legend[f"{row['run']} ({row['status']})"] = ax.plot(
                    range(1, len(curve) + 1), curve, linestyle="--", color=f"C{j % 10}", marker="x", markersize=4)[0]
                values[metric] += curve
    for ax, metric in zip(axes, metrics):
        ax.set(title=metric, xlabel="epoch", ylabel=metric)
        positive = [v for v in values[metric] if v > 0]
        if positive and len(positive) == len(values[metric]) and max(positive) > 20 * min(positive):
            ax.set_yscale("log")  # e.g. learning rates of compared runs, orders of magnitude apart
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    for ax in axes[len(metrics):] if metrics else []:
        ax.set_axis_off()
    if not metrics:
        axes[0].set_axis_off()
        axes[0].text(0.5, 0.5, "no run logged a history yet", ha="center", va="center")
    seeds = any(len(c.completed) > 1 for c in configs)
    fig.suptitle(f"{len(lines)} configuration(s), ranked by mean {objective} ({mode})"
                 + ("; mean and 95% band over seeds" if seeds else ""), x=0.01, ha="left")  # clear of the legend
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="outside right upper", fontsize="small",
                   title="configuration (rank, name)")
    fig.savefig(path, dpi=110)
