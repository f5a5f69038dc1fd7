"""The summary of a sweep (`python -m tftrain -m ...`): one row per run, best first.

`SweepSummary` is a Hydra callback (`hydra.callbacks` in conf/config.yaml): at the end of a
multirun it reads the runs' directories under `hydra.sweep.dir`, so it works with any sweeper
(basic, Optuna) and launcher (basic, joblib, submitit) and writes there:

- `summary.csv`: every run's overrides, status (completed | pruned | failed | stopped | running),
  final and best validation metrics, test metrics, epochs, wall time and error, sorted by `trainer.objective`
  (`trainer.objective_mode`), ties broken by the validation loss, failed runs last;
- `summary.md`: the same as a Markdown table (overrides common to all runs shown once above it);
- `aggregate.csv`, `aggregate.md`: runs that differ only in `trainer.seed` as one configuration,
  every metric's mean, std and 95% interval, ranked, best versus tied (tftrain.sweep.aggregate);
- `summary.png`: per epoch, each configuration's mean validation curve of the objective's metric
  and of the loss, with its 95% band when it has several seeds.

A run is a directory with `.hydra/overrides.yaml`; its outcome is its `metrics.json` (written by
the task, or by `record_failure` with `"status": "failed"`). A run that left neither (killed,
out of memory, timed out) is a failed row too, unless another process holds its lock (a second
copy of the sweep trains it): that row is `running`, not failed. Rebuild a summary by hand with
`python -m tftrain.sweep <sweep dir>`.

This module stays light (no TensorFlow): Hydra imports it for every run.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
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

from tftrain.sweep import aggregate

log = logging.getLogger("tftrain")

METRIC_PREFIXES = ("val_", "best_val_", "test_")  # the summary's metric columns: these of every logged metric
LABELLED = 10  # configurations of the figure with a colour and a legend entry (the best ones); others are grey
STATUS_ORDER = {"completed": 0, "pruned": 1, "running": 2}  # then failed (and anything else)

# The outcome of the last sweep summarized in this process: the CLI exits non-zero when jobs failed.
last_outcome: dict | None = None
# The config of the sweep that started and has not ended in this process: a signal ends a sweep
# through an exception, past on_multirun_end, and the CLI then writes its summaries.
_open_sweep: DictConfig | None = None


def finish_stopped_sweep() -> Path | None:
    """The summaries of the sweep a signal stopped (its directory), or None without one."""
    if _open_sweep is None:
        return None
    config = _open_sweep
    SweepSummary().on_multirun_end(config)
    return Path(str(config.hydra.sweep.dir))


def record_failure(run_dir: str | Path, error: BaseException, wall_time_s: float | None = None,
                   status: str = "failed") -> None:
    """Mark `run_dir` failed: `error.txt` (the traceback) and `metrics.json` with
    `"status": "failed"` and the error message, which the summary reads. `status="stopped"`: a
    job a signal stopped after its checkpoint (no error.txt; a rerun of the sweep resumes it).
    Called only by the process that holds the run directory's lock."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if status == "failed":
        (run_dir / "error.txt").write_text("".join(traceback.format_exception(error)))
    metrics = {"status": status, "error": str(error), "error_type": type(error).__name__,
               "wall_time_s": wall_time_s, "run_dir": str(run_dir.resolve())}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


class SweepSummary(Callback):
    """Hydra callback: writes the summaries when a multirun ends; with the MLflow logger, also
    opens the sweep's parent run before its jobs and logs the summaries to it at the end."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Hydra's multirun.yaml (written by its launcher, before the first job) repeats the
        command line: a tracking URI's credentials are masked there before any job trains."""
        from hydra.types import RunMode

        if OmegaConf.select(config, "hydra.mode", default=None) != RunMode.MULTIRUN:
            return
        from tftrain.loggers.mlflow import scrub
        from tftrain.tasks.run import credential_uris

        uris = credential_uris(config)
        path = Path(str(config.hydra.sweep.dir)) / "multirun.yaml"
        try:
            text = path.read_text(encoding="utf-8") if uris else ""
            if text and scrub(text, uris) != text:
                part = path.with_name(f".{path.name}.{os.getpid()}.part")
                part.write_text(scrub(text, uris), encoding="utf-8")
                os.replace(part, path)  # whole: another job or copy of the sweep may be reading it
        except OSError as e:
            log.warning("Could not mask the tracking URI's credentials in %s (%s).", path, e.strerror or e)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _open_sweep
        _open_sweep = config
        mlflow_conf = OmegaConf.select(config, "logger.mlflow", default=None)
        if mlflow_conf is None:
            return
        from tftrain.loggers.mlflow import open_parent

        try:
            open_parent(Path(str(config.hydra.sweep.dir)), OmegaConf.to_container(mlflow_conf, resolve=True))
        except Exception as e:  # noqa: BLE001 - the jobs still log their own runs (or fail with the reason)
            log.warning("Could not open the sweep's MLflow parent run (%s: %s); the jobs log without a parent.",
                        type(e).__name__, str(e).splitlines()[0][:300] if str(e) else "")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _open_sweep
        _open_sweep = None
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            rows, configs, objective, mode = summarize(sweep_dir, OmegaConf.select(config, "trainer.objective"),
                                                       OmegaConf.select(config, "trainer.objective_mode"))
        except Exception:  # the runs are done and saved: a summary bug must not hide that
            log.exception("Could not write the sweep summary in %s", sweep_dir)
            return
        global last_outcome
        running = [r for r in rows if r["status"] == "running"]
        if running:
            log.warning("Still running in another process (not failed): %s. Rebuild the summary when they end: "
                        "python -m tftrain.sweep %s", ", ".join(f"{r['run']} ({r['holder']})" for r in running),
                        sweep_dir)
        failed = sum(r["status"] == "failed" for r in rows)
        last_outcome = {"sweep_dir": str(sweep_dir), "runs": len(rows), "failed": failed, "running": len(running)}
        elsewhere = f", {len(running)} running in another process" if running else ""
        log.info("Sweep summary of %d run(s) (%d failed%s): %s (also summary.csv, aggregate.md, summary.png)",
                 len(rows), failed, elsewhere, sweep_dir / "summary.md")
        if rows and rows[0]["status"] == "completed":
            log.info("Best run: %s", sweep_dir / rows[0]["run"])
            log.info("%s (aggregate.md)", aggregate.conclusion(configs, objective, mode))
        if (sweep_dir / "mlflow_parent_run.json").is_file():
            self._close_parent(sweep_dir, rows, objective, failed)

    @staticmethod
    def _close_parent(sweep_dir: Path, rows: list[dict], objective: str, failed: int) -> None:
        from tftrain.loggers.mlflow import close_parent

        best = rows[0]["metrics"] if rows and rows[0]["status"] == "completed" else {}
        files = [sweep_dir / n for n in ("summary.md", "summary.csv", "aggregate.md", "aggregate.csv", "summary.png")]
        try:
            close_parent(sweep_dir, files, {f"best_{objective}": best.get(objective)} if best else None, failed)
        except Exception as e:  # noqa: BLE001 - the summaries are written; only their copy in MLflow is missing
            log.warning("Could not log the summaries to the sweep's MLflow parent run (%s: %s).", type(e).__name__,
                        str(e).splitlines()[0][:300] if str(e) else "")


# ---------------------------------------------------------------- reading the runs


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C one where PyYAML was built with libyaml


def _load_yaml(path: Path):
    try:
        return OmegaConf.load(path)
    except (OSError, ValueError, yaml.YAMLError, OmegaConfBaseException):  # e.g. half-written by a killed job
        return None


def find_runs(sweep_dir: Path) -> list[Path]:
    """The run directories under `sweep_dir` (each has .hydra/overrides.yaml), in job order."""
    runs = [p.parent.parent for p in Path(sweep_dir).glob("**/.hydra/overrides.yaml")]
    runs = [r for r in runs if r != Path(sweep_dir)]
    # A run inside another job's directory is that job's own (task=budgets' branches), not a job.
    found = set(runs)
    runs = [r for r in runs if not any(parent in found for parent in r.parents)]

    def job_num(run: Path):
        # PyYAML's C loader and a plain dict: about 1 ms a run where OmegaConf.load takes 20 ms,
        # and every run of a sweep is read (the key only; Hydra wrote the file with OmegaConf).
        try:
            hydra_yaml = yaml.load((run / ".hydra" / "hydra.yaml").read_text(), Loader=YAML_LOADER)
            num = hydra_yaml["hydra"]["job"]["num"]
        except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError):  # missing, half-written, not a mapping
            num = None
        return (num if isinstance(num, int) and not isinstance(num, bool) else sys.maxsize, str(run))

    return sorted(runs, key=job_num)


def read_run(run_dir: Path, sweep_dir: Path) -> dict:
    """One summary row (plus `metrics`, the run's metrics.json, `overrides_list`, and `holder`:
    who trains it now, for a `running` row).

    The lock is read before metrics.json: its holder writes metrics.json before it lets go, so
    a job found free has its outcome on disk, and a job found held is running unless it had
    completed (a second copy of the sweep holds it while it reuses that outcome)."""
    from tftrain.tasks.locks import holder_of

    overrides = _load_yaml(run_dir / ".hydra" / "overrides.yaml")
    overrides = [str(o) for o in overrides] if overrides is not None else []
    row: dict[str, Any] = {"run": run_dir.relative_to(sweep_dir).as_posix(), "overrides_list": overrides,
                           "overrides": " ".join(overrides), "holder": None}
    holder = holder_of(run_dir / ".tftrain.lock")
    metrics = _read_json(run_dir / "metrics.json")
    if holder is not None and (metrics is None or metrics.get("status", "completed") not in ("completed", "pruned")):
        # An earlier attempt's record (failed, stopped) is stale while it runs again.
        row["holder"] = holder
        metrics = {"status": "running", "error": f"running in another process ({holder})"}
    elif metrics is None:
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


def tiebreak_of(objective: str) -> str | None:
    """The second metric that orders runs tied on the objective: the validation loss (lower first)."""
    return None if objective in ("val_loss", "best_val_loss") else "val_loss"


def sort_rows(rows: list[dict], objective: str, mode: str) -> list[dict]:
    """Completed runs by `objective` (best first: descending for mode max), ties by the validation
    loss, then pruned runs, runs without a value, and failed runs; remaining ties keep job order.
    Sets each row's `rank` (1 = best)."""
    sign = -1.0 if mode == "max" else 1.0
    second = tiebreak_of(objective)

    def key(row):
        value = _number(row["metrics"].get(objective))
        tie = _number(row["metrics"].get(second)) if second else None
        return (STATUS_ORDER.get(row["status"], 2), value is None, sign * value if value is not None else 0.0,
                tie is None, tie if tie is not None else 0.0)

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
    """Write summary.csv/.md, aggregate.csv/.md and summary.png in `sweep_dir`; return the sorted
    rows. `objective`/`mode` default to the runs' `trainer.objective`/`trainer.objective_mode`."""
    return summarize(sweep_dir, objective, mode)[0]


def summarize(sweep_dir: str | Path, objective: str | None = None, mode: str | None = None):
    """write_summary's work: returns (rows, ranked configurations, objective, mode)."""
    sweep_dir = Path(sweep_dir)
    run_dirs = find_runs(sweep_dir)
    run_objective, run_mode = _objective_from_runs(run_dirs)
    from tftrain.problems.direction import mode_of

    objective = objective or run_objective or "val_loss"
    mode = mode or run_mode or mode_of(objective)
    rows = sort_rows([read_run(r, sweep_dir) for r in run_dirs], objective, mode)
    _write_csv(sweep_dir / "summary.csv", rows, objective)
    (sweep_dir / "summary.md").write_text(to_markdown(rows, objective, mode, sweep_dir))
    configs = aggregate.rank(aggregate.group(rows), objective, mode)
    stats = [*metric_columns(rows, objective), "wall_time_s"]
    aggregate.write_csv(sweep_dir / "aggregate.csv", configs, stats)
    (sweep_dir / "aggregate.md").write_text(aggregate.to_markdown(
        configs, objective, mode, metric_columns(rows, objective), f"Sweep aggregate: `{sweep_dir}`"))
    plot_summary(configs, sweep_dir / "summary.png", objective, mode)
    return rows, configs, objective, mode


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
    counts = {s: sum(r["status"] == s for r in rows) for s in ("completed", "pruned", "running", "failed")}
    second = tiebreak_of(objective)
    lines = [f"# Sweep summary{f': `{sweep_dir}`' if sweep_dir else ''}", "",
             (f"{len(rows)} run(s), {counts['completed']} completed, "
              + (f"{counts['pruned']} pruned, " if counts["pruned"] else "")
              + (f"{counts['running']} running in another process, " if counts["running"] else "")
              + f"{counts['failed']} failed; sorted by "
              f"`{objective}` ({'highest' if mode == 'max' else 'lowest'} first"
              + (f", ties by `{second}` (lowest first)" if second else "") + "), failed runs last. "
              "Seeds of one configuration are aggregated in aggregate.md.")]
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


def _short(override: str) -> str:
    """An override with a float value shown to 3 significant digits."""
    key, sep, value = override.partition("=")
    if sep and re.fullmatch(r"[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?", value) and not value.lstrip("+-").isdigit():
        value = f"{float(value):.3g}"
    return f"{key}={value}" if sep else override


def _label(config: aggregate.Configuration, common: list[str]) -> str:
    """A short legend label: rank, the configuration's own overrides, and its number of seeds."""
    own = [_short(o) for o in config.overrides if o not in common]
    n = len(config.completed)
    return textwrap.fill(f"#{config.rank} " + (" ".join(own) or "(base)") + (f" (n={n})" if n > 1 else ""),
                         width=42, subsequent_indent="   ")


def _curve_metric(rows: list[dict], objective: str) -> str:
    """The metric of the summary figure's left panel: the objective's (a metric other than the loss)."""
    from tftrain.problems.direction import metric_of

    base = metric_of(objective)
    if base != "loss":
        return base
    names = [c[4:] for c in metric_columns(rows, objective) if c.startswith("val_") and c != "val_loss"]
    return names[0] if names else "loss"


def plot_summary(configs: list[aggregate.Configuration], path: Path, objective: str, mode: str) -> None:
    """Per epoch, each configuration's mean validation curve of the objective's metric and of the
    loss, with a 95% band where it has several seeds."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state in Hydra's process
    from matplotlib.ticker import MaxNLocator

    rows = [r for c in configs for r in c.runs]
    common = aggregate.common_overrides(configs)
    metric = _curve_metric(rows, objective)
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    ax_acc, ax_loss = fig.subplots(1, 2)
    shown = [c for c in configs if c.completed]
    for i, config in enumerate(shown):  # best first: the first LABELLED get colours and legend entries
        if i < LABELLED:
            style, label = {"marker": "o", "markersize": 3, "color": f"C{i % 10}", "zorder": 3}, _label(config, common)
        else:
            style = {"color": "0.7", "linewidth": 0.8, "zorder": 2}
            label = f"{len(shown) - LABELLED} other configurations" if i == LABELLED else None
        for ax, key in ((ax_acc, f"val_{metric}"), (ax_loss, "val_loss")):
            mean, low, high = aggregate.curve(config, key)
            epochs = range(1, len(mean) + 1)
            ax.plot(epochs, mean, label=label if ax is ax_acc else None, **style)
            if i < LABELLED and any(lo != hi for lo, hi in zip(low, high)):
                ax.fill_between(epochs, low, high, color=style["color"], alpha=0.15, linewidth=0)
    ax_acc.set(title=f"validation {metric}", xlabel="epoch", ylabel=f"val_{metric}")
    ax_loss.set(title="validation loss", xlabel="epoch", ylabel="val_loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    failed = sum(r["status"] != "completed" for r in rows)
    seeds = max((len(c.completed) for c in shown), default=0)
    fig.suptitle(f"{len(shown)} configuration(s), ranked by mean {objective} ({mode})"
                 + ("; mean and 95% band over seeds" if seeds > 1 else "")
                 + (f"; {failed} run(s) not completed, not shown" if failed else ""))
    if shown:
        fig.legend(loc="outside right upper", fontsize="small", title="configuration (rank, overrides)")
    fig.savefig(path, dpi=110)


def check_sweep_dir(path: str | Path) -> Path:
    """`path` as a sweep directory, or a TftrainError saying what it is instead."""
    from tftrain.errors import TftrainError

    path = Path(path)
    if not path.exists():
        raise TftrainError(f"{path} does not exist. Fix: give the directory of a sweep (the hydra.sweep.dir of a "
                           "`python -m tftrain -m ...` run, e.g. outputs/multirun/<date>/<time>).")
    if not path.is_dir():
        raise TftrainError(f"{path} is a file, not a sweep directory. Fix: give the directory of a sweep "
                           "(e.g. outputs/multirun/<date>/<time>).")
    if not find_runs(path):
        if (path / "metrics.json").is_file() or (path / ".hydra").is_dir() or (path / "config.yaml").is_file():
            raise TftrainError(f"{path} is the directory of a single run, not of a sweep. Fix: give its sweep "
                               "directory, or compare runs side by side with python -m tftrain.report <run dirs...>.")
        raise TftrainError(f"{path} holds no runs (no sub-directory with .hydra/overrides.yaml). Fix: give the "
                           "directory of a sweep (the hydra.sweep.dir of a `python -m tftrain -m ...` run).")
    return path


def main(argv: list[str] | None = None) -> int:
    """`python -m tftrain.sweep SWEEP_DIR [OBJECTIVE [min|max]]`: (re)write a sweep's summary
    (summary.csv/.md, aggregate.csv/.md, summary.png) and print summary.md."""
    from tftrain.errors import TftrainError

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(main.__doc__)
        return 0 if argv else 2
    try:
        sweep_dir = check_sweep_dir(argv[0])
        if len(argv) > 2 and argv[2] not in ("min", "max"):
            raise TftrainError(f"The mode {argv[2]!r} is not min or max. Fix: python -m tftrain.sweep {argv[0]} "
                               f"{argv[1]} max (or min).")
        write_summary(sweep_dir, *(argv[1:3]))
    except TftrainError as e:
        print(f"tftrain: error: {e}", file=sys.stderr)
        return 2
    print((sweep_dir / "summary.md").read_text())
    print((sweep_dir / "aggregate.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
