"""The summary of a sweep (`python -m tftrain -m ...`): one row per run, best first.

`SweepSummary` is a Hydra callback (`hydra.callbacks` in conf/config.yaml): at the end of a
multirun it reads the runs' directories under `hydra.sweep.dir`, so it works with any sweeper
(basic, Optuna) and launcher (basic, joblib, submitit) and writes there:

- `summary.csv`: every run's overrides, status (completed | failed), final and best validation
  metrics, test metrics, epochs, wall time and error, sorted by `trainer.objective`
  (`trainer.objective_mode`), failed runs last;
- `summary.md`: the same as a Markdown table (overrides common to all runs shown once above it);
- `summary.png`: per epoch, the validation curve of the objective's metric and of the loss of
  every completed run.

A run is a directory with `.hydra/overrides.yaml`; its outcome is its `metrics.json` (written by
the task, or by `record_failure` with `"status": "failed"`). A run that left neither (killed,
out of memory, timed out) is a failed row too. Rebuild a summary by hand with
`python -m tftrain.sweep <sweep dir>`.

This module stays light (no TensorFlow): Hydra imports it for every run.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import sys
import textwrap
import traceback
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

log = logging.getLogger("tftrain")

METRIC_PREFIXES = ("val_", "best_val_", "test_")  # the summary's metric columns: these of every logged metric
LABELLED = 10  # runs of the figure with a colour and a legend entry (the best ones); others are grey


def record_failure(run_dir: str | Path, error: BaseException, wall_time_s: float | None = None) -> None:
    """Mark `run_dir` failed: `error.txt` (the traceback) and `metrics.json` with
    `"status": "failed"` and the error message, which the summary reads."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "error.txt").write_text("".join(traceback.format_exception(error)))
    metrics = {"status": "failed", "error": str(error), "error_type": type(error).__name__,
               "wall_time_s": wall_time_s, "run_dir": str(run_dir.resolve())}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


class SweepSummary(Callback):
    """Hydra callback: writes summary.csv, summary.md and summary.png when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            rows = write_summary(sweep_dir, OmegaConf.select(config, "trainer.objective"),
                                 OmegaConf.select(config, "trainer.objective_mode"))
        except Exception:  # the runs are done and saved: a summary bug must not hide that
            log.exception("Could not write the sweep summary in %s", sweep_dir)
            return
        failed = sum(r["status"] != "completed" for r in rows)
        log.info("Sweep summary of %d run(s) (%d failed): %s (also summary.csv, summary.png)",
                 len(rows), failed, sweep_dir / "summary.md")
        if rows and rows[0]["status"] == "completed":
            log.info("Best run: %s", sweep_dir / rows[0]["run"])


# ---------------------------------------------------------------- reading the runs


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _load_yaml(path: Path):
    try:
        return OmegaConf.load(path)
    except (OSError, ValueError, yaml.YAMLError, OmegaConfBaseException):  # e.g. half-written by a killed job
        return None


def find_runs(sweep_dir: Path) -> list[Path]:
    """The run directories under `sweep_dir` (each has .hydra/overrides.yaml), in job order."""
    runs = [p.parent.parent for p in Path(sweep_dir).glob("**/.hydra/overrides.yaml")]
    runs = [r for r in runs if r != Path(sweep_dir)]

    def job_num(run: Path):
        hydra_yaml = _load_yaml(run / ".hydra" / "hydra.yaml")
        num = OmegaConf.select(hydra_yaml, "hydra.job.num", default=None) if hydra_yaml is not None else None
        return (num if isinstance(num, int) else sys.maxsize, str(run))

    return sorted(runs, key=job_num)


def read_run(run_dir: Path, sweep_dir: Path) -> dict:
    """One summary row (plus `metrics`, the run's metrics.json, and `overrides_list`)."""
    overrides = _load_yaml(run_dir / ".hydra" / "overrides.yaml")
    overrides = [str(o) for o in overrides] if overrides is not None else []
    row: dict[str, Any] = {"run": run_dir.relative_to(sweep_dir).as_posix(), "overrides_list": overrides,
                           "overrides": " ".join(overrides)}
    metrics = _read_json(run_dir / "metrics.json")
    if metrics is None:
        error_txt = run_dir / "error.txt"
        reason = (error_txt.read_text().strip().splitlines() or ["?"])[-1] if error_txt.is_file() else (
            "no metrics.json: the job did not finish (killed, out of memory or timed out?); see its .log")
        metrics = {"status": "failed", "error": reason}
    row["status"] = metrics.get("status", "completed")
    for key in ("epochs", "wall_time_s"):
        row[key] = metrics.get(key)
    row["error"] = metrics.get("error", "") if row["status"] != "completed" else ""
    row["metrics"] = metrics  # the whole metrics.json: any objective, and the history for the figure
    return row


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        else None


def sort_rows(rows: list[dict], objective: str, mode: str) -> list[dict]:
    """Completed runs by `objective` (best first: descending for mode max), then runs without a
    value, then failed runs; ties keep job order. Sets each row's `rank` (1 = best)."""
    sign = -1.0 if mode == "max" else 1.0

    def key(row):
        value = _number(row["metrics"].get(objective))
        failed = row["status"] != "completed"
        return (failed, value is None, sign * value if value is not None else 0.0)

    ordered = sorted(rows, key=key)
    for i, row in enumerate(ordered, 1):
        row["rank"] = i
    return ordered


def _objective_from_runs(run_dirs: list[Path]) -> tuple[str | None, str | None]:
    """The runs' trainer.objective and objective_mode: from the config a run validated (its
    config.yaml, nulls resolved from the problem), else from Hydra's composed one."""
    from tftrain.schema.problem import default_objective

    for run in run_dirs:
        for path in (run / "config.yaml", run / ".hydra" / "config.yaml"):
            cfg = _load_yaml(path)
            if cfg is None or OmegaConf.select(cfg, "trainer", default=None) is None:
                continue
            objective = OmegaConf.select(cfg, "trainer.objective", default=None) or \
                default_objective(OmegaConf.select(cfg, "problem.metrics", default=None))
            return objective, OmegaConf.select(cfg, "trainer.objective_mode", default=None)
    return None, None


def write_summary(sweep_dir: str | Path, objective: str | None = None, mode: str | None = None) -> list[dict]:
    """Write summary.csv, summary.md and summary.png in `sweep_dir`; return the sorted rows.
    `objective`/`mode` default to the runs' `trainer.objective`/`trainer.objective_mode`."""
    sweep_dir = Path(sweep_dir)
    run_dirs = find_runs(sweep_dir)
    run_objective, run_mode = _objective_from_runs(run_dirs)
    from tftrain.schema.problem import lower_is_better

    objective = objective or run_objective or "val_loss"
    mode = mode or run_mode or ("min" if lower_is_better(objective) else "max")
    rows = sort_rows([read_run(r, sweep_dir) for r in run_dirs], objective, mode)
    _write_csv(sweep_dir / "summary.csv", rows, objective)
    (sweep_dir / "summary.md").write_text(to_markdown(rows, objective, mode, sweep_dir))
    plot_summary(rows, sweep_dir / "summary.png", objective, mode)
    return rows


# ---------------------------------------------------------------- writing


def _csv_value(value):
    return "" if value is None else value


def metric_columns(rows: list[dict], objective: str) -> list[str]:
    """val_, best_val_ and test_ of every metric the runs logged (in their order), and the objective."""
    names: list[str] = []
    for row in rows:
        for key in row["metrics"]:
            if key.startswith("val_") and key[4:] not in names:
                names.append(key[4:])
    columns = [f"{p}{n}" for p in METRIC_PREFIXES for n in names]
    return columns if objective in columns else [*columns, objective]


def _columns(rows: list[dict], objective: str) -> tuple[str, ...]:
    return ("rank", "run", "overrides", "status", *metric_columns(rows, objective), "epochs", "wall_time_s", "error")


def _cell(row: dict, column: str):
    return row[column] if column in row else row["metrics"].get(column)


def _write_csv(path: Path, rows: list[dict], objective: str) -> None:
    columns = _columns(rows, objective)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_value(_cell(row, c)) for c in columns])


def _fmt(value, digits: int = 4) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else str(value)
    return str(value)


def _md_cell(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _common_overrides(rows: list[dict]) -> list[str]:
    """The overrides every run has (all of them for a single run)."""
    lists = [r["overrides_list"] for r in rows]
    return [o for o in lists[0] if all(o in other for other in lists[1:])] if lists else []


def _own_overrides(row: dict, common: list[str]) -> str:
    return " ".join(o for o in row["overrides_list"] if o not in common)


def to_markdown(rows: list[dict], objective: str, mode: str, sweep_dir: Path | None = None) -> str:
    common = _common_overrides(rows) if len(rows) > 1 else []
    failed = sum(r["status"] != "completed" for r in rows)
    lines = [f"# Sweep summary{f': `{sweep_dir}`' if sweep_dir else ''}", "",
             (f"{len(rows)} run(s), {len(rows) - failed} completed, {failed} failed; sorted by "
              f"`{objective}` ({'highest' if mode == 'max' else 'lowest'} first), failed runs last.")]
    if common:
        lines += ["", "Overrides common to all runs: " + " ".join(f"`{o}`" for o in common)]
    shown = metric_columns(rows, objective)
    headers = ["#", "overrides", "status", *shown, "epochs", "wall time (s)", "error"]
    lines += ["", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = [str(row["rank"]), _md_cell(_own_overrides(row, common) or "(none)"), row["status"],
                 *[_fmt(_cell(row, c)) for c in shown], _fmt(row.get("epochs")),
                 _fmt(row.get("wall_time_s"), 1), _md_cell(row.get("error") or "")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _label(row: dict, common: list[str]) -> str:
    """A short legend label: the run's own overrides with floats to 3 significant digits."""
    def short(override: str) -> str:
        key, sep, value = override.partition("=")
        if not sep:
            return override
        if re.fullmatch(r"[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?", value) and not value.lstrip("+-").isdigit():
            value = f"{float(value):.3g}"
        return f"{key}={value}"

    own = [short(o) for o in row["overrides_list"] if o not in common]
    return textwrap.fill(f"#{row['rank']} " + " ".join(own), width=42, subsequent_indent="   ")


def _curve_metric(rows: list[dict], objective: str) -> str:
    """The metric of the summary figure's left panel: the objective's (a metric other than the loss)."""
    base = objective
    for prefix in ("best_val_", "val_", "test_", "train_"):
        if base.startswith(prefix):
            base = base[len(prefix):]
            break
    if base != "loss":
        return base
    names = [c[4:] for c in metric_columns(rows, objective) if c.startswith("val_") and c != "val_loss"]
    return names[0] if names else "loss"


def plot_summary(rows: list[dict], path: Path, objective: str, mode: str) -> None:
    """Per epoch, the validation curve of the objective's metric and of the loss, one line a run."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state in Hydra's process

    common = _common_overrides(rows)
    metric = _curve_metric(rows, objective)
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    ax_acc, ax_loss = fig.subplots(1, 2)
    plotted = 0
    for row in rows:  # best first: the first LABELLED runs get colours and legend entries
        history = row["metrics"].get("history") or {}
        acc, loss = history.get(f"val_{metric}") or [], history.get("val_loss") or []
        if row["status"] != "completed" or not (acc or loss):
            continue
        if plotted < LABELLED:
            style = {"marker": "o", "markersize": 3, "color": f"C{plotted % 10}", "zorder": 3}
            label = _label(row, common)
        else:
            style = {"color": "0.7", "linewidth": 0.8, "zorder": 2}
            label = f"{len([r for r in rows if r['status'] == 'completed']) - LABELLED} other runs" \
                if plotted == LABELLED else None
        ax_acc.plot(range(1, len(acc) + 1), acc, label=label, **style)
        ax_loss.plot(range(1, len(loss) + 1), loss, **style)
        plotted += 1
    ax_acc.set(title=f"validation {metric}", xlabel="epoch", ylabel=f"val_{metric}")
    ax_loss.set(title="validation loss", xlabel="epoch", ylabel="val_loss")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    failed = sum(r["status"] != "completed" for r in rows)
    fig.suptitle(f"{plotted} run(s), ranked by {objective} ({mode})" + (f"; {failed} failed, not shown" if failed else ""))
    if plotted:
        fig.legend(loc="outside right upper", fontsize="small", title="run (rank, overrides)")
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    """`python -m tftrain.sweep SWEEP_DIR [OBJECTIVE [min|max]]`: (re)write a sweep's summary."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(main.__doc__)
        return 0 if argv else 2
    rows = write_summary(argv[0], *(argv[1:3]))
    print((Path(argv[0]) / "summary.md").read_text())
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
