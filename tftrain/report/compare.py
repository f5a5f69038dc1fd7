"""`python -m tftrain.report <run or sweep dirs...>`: any runs side by side.

The config keys that differ between the runs, their final and best metrics, and curves of
chosen metrics, written to `--out` (default `report/`) as report.md, report.png and one
self-contained report.html. A sweep directory stands for its runs. Runs that differ only in
`trainer.seed` are seeds of one configuration: mean ± 95% interval over them, ranked by the
objective with Welch's t-test verdicts (tftrain.sweep.aggregate). Failed runs and runs still in
progress are shown with their status, from what they have written so far (history.csv).

From a notebook: `tftrain.report.report(["runs/sgd", "runs/adam"])` -> the report.md path.
Light on purpose: no TensorFlow.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from tftrain.sweep import aggregate, summary as sweep
from tftrain.errors import TftrainError

USAGE = ("python -m tftrain.report RUN_OR_SWEEP_DIR... [--out DIR] [--metrics M1,M2] [--objective METRIC] "
         "[--mode min|max]")
RUN_FILES = ("metrics.json", "config.yaml", "history.csv", ".hydra/overrides.yaml")
WHAT_A_RUN_HOLDS = ("a run directory holds metrics.json, config.yaml and history.csv (from python -m tftrain or "
                    "tftrain.train(cfg, output_dir=...)); a sweep directory holds run directories (each with "
                    ".hydra/overrides.yaml)")
# Keys that change how a run is logged or resumed, not what it computes: runs differing only in
# these are still seeds of one configuration.
BOOKKEEPING = ("output_dir", "trainer.verbose", "trainer.resume", "trainer.keep_checkpoints",
               "trainer.checkpoint_every_steps", "callbacks.tensorboard.", "callbacks.csv_logger.", "logger.")


# ---------------------------------------------------------------- finding and reading runs


def run_dirs(paths) -> list[Path]:
    """The run directories `paths` name (a sweep directory: its runs), each once, in order."""
    found: dict[Path, None] = {}
    for path in map(Path, paths):
        if not path.exists():
            raise TftrainError(f"{path} does not exist. Fix: give run or sweep directories ({WHAT_A_RUN_HOLDS}).")
        if not path.is_dir():
            raise TftrainError(f"{path} is a file, not a run or sweep directory. Fix: give its directory "
                               f"({WHAT_A_RUN_HOLDS}).")
        runs = [path] if any((path / f).is_file() for f in RUN_FILES) else sweep.find_runs(path)
        if not runs:
            raise TftrainError(f"{path} is neither a run nor a sweep directory: {WHAT_A_RUN_HOLDS}, and {path} holds "
                               "none of these. Fix: give the directory a run wrote (outputs/<date>/<time>, its "
                               "hydra.run.dir, or the output_dir given to tftrain.train) or a sweep's directory.")
        found.update(dict.fromkeys(r.resolve() for r in runs))
    if not found:
        raise TftrainError(f"No run or sweep directory given. Usage: {USAGE}")
    return list(found)


def _load(path: Path):
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError):  # missing, or half-written by a killed process
        return None


def _load_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def flatten(node: dict, prefix: str = "") -> dict:
    """A nested config as dotted keys (`optimizer.lr`); lists and empty mappings are values."""
    out = {}
    for key, value in node.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _float(cell) -> float | None:
    try:
        return float(cell)
    except (TypeError, ValueError):  # an empty cell: the metric was not logged that epoch
        return None


def _history_csv(path: Path) -> dict[str, list]:
    """history.csv as metrics.json's `history`: what a run in progress has logged so far."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error):
        return {}
    return {k: [_float(r.get(k)) for r in rows] for k in (rows[0] if rows else {}) if k != "epoch"}


def _lock_holder(run_dir: Path) -> str | None:
    """Who trains in `run_dir` now (tftrain.tasks.resume.RunLock's flock), or None."""
    try:
        from tftrain.tasks.locks import holder_of
    except ImportError:  # no fcntl (Windows): no flock either, so nobody can be seen holding it
        return None
    return holder_of(run_dir / ".tftrain.lock")


def _from_history(history: dict[str, list]) -> dict:
    """What metrics.json would say of the epochs logged so far (no test metrics yet)."""
    from tftrain.problems.direction import lower_is_better

    metrics: dict = {"history": history, "epochs": max((len(v) for v in history.values()), default=0)}
    for key, values in history.items():
        values = [v for v in values if v is not None]
        if key.startswith("val_") and values:
            metrics[key] = values[-1]
            metrics[f"best_{key}"] = min(values) if lower_is_better(key) else max(values)
    return metrics


def read(run_dir: Path) -> dict:
    """One run as a row of tftrain.sweep.read_run's shape (`overrides_list` is filled in by
    `compare`), plus `path`, `config` (flattened) and `cli` (its command-line overrides)."""
    config = _load(run_dir / "config.yaml")  # the validated config; Hydra's composed one for runs that failed before
    config = config if isinstance(config, dict) else _load(run_dir / ".hydra" / "config.yaml")
    cli = _load(run_dir / ".hydra" / "overrides.yaml")
    metrics = _load_json(run_dir / "metrics.json")
    history = _history_csv(run_dir / "history.csv")
    holder = _lock_holder(run_dir)
    error = ""
    if metrics is None or holder:  # a resumed run's old metrics.json is stale while it trains
        metrics = _from_history(history)
        error_txt = run_dir / "error.txt"
        if holder:
            status, error = "running", f"in progress: {holder}"
        elif error_txt.is_file():
            status, error = "failed", (error_txt.read_text().strip().splitlines() or ["?"])[-1]
        else:
            status, error = "incomplete", ("no metrics.json: stopped before the end (killed, preempted, or "
                                           "failed outside a sweep?); rerun its command to resume")
    else:
        status = metrics.get("status", "completed")
        error = metrics.get("error", "") if status != "completed" else ""
        if status != "completed" and history:  # a failed run's epochs before the failure
            metrics = {**_from_history(history), **{k: v for k, v in metrics.items() if v is not None}}
    return {"path": run_dir, "config": flatten(config) if isinstance(config, dict) else None,
            "cli": [str(o) for o in cli] if isinstance(cli, list) else None, "status": status,
            "epochs": metrics.get("epochs"), "wall_time_s": metrics.get("wall_time_s"), "error": error,
            "metrics": metrics}


# ---------------------------------------------------------------- comparing them


def text(value) -> str:
    """A config value as written in an override."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return str(value)


ABSENT = "—"


def differing_keys(rows: list[dict]) -> tuple[list[str], dict[str, str]]:
    """The config keys whose values differ among the runs (in config order), and those that all
    runs share with their value. Runs without a config are left out of the comparison."""
    configs = [r["config"] for r in rows if r["config"] is not None]
    keys = list(dict.fromkeys(k for c in configs for k in c))
    sections = list(dict.fromkeys(k.split(".")[0] for k in keys))
    keys.sort(key=lambda k: sections.index(k.split(".")[0]))  # a key only some runs have stays in its section
    differ = [k for k in keys if len({text(c[k]) if k in c else ABSENT for c in configs}) > 1]
    same = {k: text(configs[0][k]) for k in keys if k not in differ}
    return differ, same


def _follows_seed(key: str, configs: list[dict]) -> bool:
    """Whether `key` is set from the seed in every run that has it (a source's `seed: ${trainer.seed}`)."""
    return all(text(c[key]) == text(c.get(k)) for c in configs if key in c for k in aggregate.SEED_KEYS)


@dataclass
class Comparison:
    rows: list[dict]  # best first (tftrain.sweep.sort_rows), each a read_run-shaped row
    configs: list[aggregate.Configuration]  # ranked
    differ: list[str]  # config keys whose values differ among the runs
    same: dict[str, str]  # the others, with their shared value
    seedlike: list[str]  # differing keys that follow trainer.seed: not part of a configuration's identity
    objective: str
    mode: str


def compare(paths, objective: str | None = None, mode: str | None = None) -> Comparison:
    """The runs of `paths`, read, grouped into configurations and ranked."""
    dirs = run_dirs(paths)
    common = Path(os.path.commonpath(dirs)) if len(dirs) > 1 else dirs[0].parent
    rows = [read(d) for d in dirs]
    differ, same = differing_keys(rows)
    configs = [r["config"] for r in rows if r["config"] is not None]
    seedlike = [k for k in differ if k not in aggregate.SEED_KEYS and _follows_seed(k, configs)]
    identity = [k for k in differ if k in aggregate.SEED_KEYS or not (k in seedlike or k.startswith(BOOKKEEPING))]
    for row in rows:
        row["run"] = row["path"].relative_to(common).as_posix() if row["path"] != common else row["path"].name
        cfg = row["config"]
        row["differ"] = {k: text(cfg[k]) if k in cfg else ABSENT for k in differ} if cfg is not None else {}
        # The configuration's identity for tftrain.sweep.aggregate.group: its differing keys, the seed
        # included (aggregate.seedless drops it); a run without a config is a configuration of its own.
        row["overrides_list"] = ([f"{k}={text(cfg[k])}" for k in identity if k in cfg] if cfg is not None
                                 else [f"run={row['run']}"])
        row["overrides"] = " ".join(row["overrides_list"])
    objective, mode = _objective(rows, objective, mode)
    rows = sweep.sort_rows(rows, objective, mode)
    return Comparison(rows, aggregate.rank(aggregate.group(rows), objective, mode), differ, same, seedlike,
                      objective, mode)


def _objective(rows: list[dict], objective: str | None, mode: str | None) -> tuple[str, str]:
    """`objective`, else the runs' trainer.objective (null: the problem's default); `mode`, else
    their trainer.objective_mode, else the metric's direction."""
    from tftrain.problems.direction import mode_of
    from tftrain.schema.problem import default_objective

    logged = {k for r in rows for k in r["metrics"] if k != "history"}
    if objective is not None and objective not in logged:
        raise TftrainError(f"No run logged the objective {objective!r}. Fix: --objective one of "
                           f"{', '.join(sorted(logged)) or '(none: no run has metrics yet)'}.")
    for row in rows:
        cfg = row["config"] or {}
        if objective is None and "trainer.objective" in cfg:
            objective = cfg["trainer.objective"] or default_objective(cfg.get("problem.metrics"))
        if mode is None and cfg.get("trainer.objective_mode") in ("min", "max"):
            mode = cfg["trainer.objective_mode"]
        if objective is not None:
            break
    objective = objective or "val_loss"
    return objective, mode or mode_of(objective)


def curve_metrics(rows: list[dict], objective: str, wanted: list[str] | None) -> list[str]:
    """The history keys to draw: `wanted`, else the objective's validation metric and val_loss."""
    logged = list(dict.fromkeys(k for r in rows for k in (r["metrics"].get("history") or {})))
    if wanted:
        unknown = [m for m in wanted if m not in logged]
        if unknown:
            raise TftrainError(f"No run logged {', '.join(map(repr, unknown))} in its history. Fix: --metrics with "
                               f"metrics the runs logged: {', '.join(logged) or '(none: no run has a history yet)'}.")
        return wanted
    from tftrain.problems.direction import metric_of

    return [m for m in dict.fromkeys((f"val_{metric_of(objective)}", "val_loss")) if m in logged]


# ---------------------------------------------------------------- the report


def report(paths, out: str | Path | None = None, metrics=None, objective: str | None = None,
           mode: str | None = None) -> Path:
    """Compare the runs of `paths` (run and sweep directories); write report.md, report.png and
    report.html in `out` (default: ./report); return the report.md path. `metrics`: the history
    keys to draw (a list or "a,b"); `objective`/`mode`: what ranks the runs (default: the runs'
    trainer.objective / trainer.objective_mode)."""
    from tftrain.report import render as report_render

    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if mode not in (None, "min", "max"):
        raise TftrainError(f"The mode {mode!r} is not min or max. Fix: --mode max (or min).")
    wanted = [m.strip() for m in metrics.split(",") if m.strip()] if isinstance(metrics, str) else metrics
    comparison = compare(paths, objective, mode)
    drawn = curve_metrics(comparison.rows, comparison.objective, wanted)
    out = Path("report" if out is None else out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TftrainError(f"The output directory {out} cannot be created: {e.strerror or e}. Fix: --out a "
                           "writable directory.") from None
    report_render.plot(comparison, drawn, out / "report.png")
    doc = report_render.document(comparison, drawn, paths)
    (out / "report.md").write_text(report_render.markdown(doc))
    (out / "report.html").write_text(report_render.html(doc, out / "report.png"))
    return out / "report.md"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one tftrain paragraph with the usage, not argparse's two lines
        raise TftrainError(f"{message}. Usage: {USAGE}")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m tftrain.report", usage=USAGE, description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", help="run directories and sweep directories")
    parser.add_argument("--out", default="report", help="where report.md/.png/.html go (default: report)")
    parser.add_argument("--metrics", help="history keys to draw, comma-separated (default: the objective's and "
                        "val_loss)")
    parser.add_argument("--objective", help="the metric that ranks runs (default: the runs' trainer.objective)")
    parser.add_argument("--mode", choices=("min", "max"), help="best is the lowest or highest objective")
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
        md = report(args.paths, args.out, args.metrics, args.objective, args.mode)
    except TftrainError as e:
        print(f"tftrain: error: {e}", file=sys.stderr)
        return 2
    # Where the report is, not the report: a sweep's tables run to hundreds of lines.
    print(f"Report: {md}, {md.with_suffix('.png')}, {md.with_suffix('.html')} (open the .html in a browser)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
