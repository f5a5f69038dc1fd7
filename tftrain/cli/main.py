"""`python -m tftrain [overrides]`: a thin Hydra shell around the task `task._target_` names.

One run (`python -m tftrain ...`): a tftrain error, Hydra's own composition errors included,
prints one paragraph and exits with status 2 (HYDRA_FULL_ERROR=1: the traceback instead).
A sweep (`python -m tftrain -m ...`): a run that fails, whatever the error, is recorded in its
directory (error.txt, metrics.json with "status": "failed") and the sweep goes on; at the end
tftrain.sweep.SweepSummary (hydra.callbacks) writes summary.csv/.md/.png and aggregate.csv/.md in
the sweep directory, and the command exits 1 if any job failed. Rerunning a sweep with the same
hydra.sweep.dir skips the jobs that completed, resumes the interrupted ones from their checkpoints
and reruns the failed ones. `trainer.seeds=N` is shorthand for a sweep over trainer.seed=0..N-1.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import hydra
from omegaconf import DictConfig

import tftrain.schema  # noqa: F401 - registers the schemas the YAML files extend
from tftrain.config.files import config_dir
from tftrain.errors import ConfigError, Preempted, RunDirBusy, TftrainError, UserCodeError, show_tracebacks

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of the log

log = logging.getLogger("tftrain")


def run_task(cfg: DictConfig, output_dir: str) -> dict:
    """Call the task's target as `target(cfg, output_dir=...)` (tftrain.tasks.train.train, tftrain.tasks.range_test.lr_find, ...)."""
    from tftrain.config.factory import locate

    return locate(cfg.task._target_, "task._target_")(cfg, output_dir=output_dir)


def _objective(cfg: DictConfig, metrics: dict):
    """What sweepers optimize: metrics[trainer.objective] (None when the task has no such metric)."""
    from tftrain.schema.problem import default_objective

    value = metrics.get(cfg.trainer.objective or default_objective(cfg.problem.get("metrics")))
    return float(value) if isinstance(value, (int, float)) else value


def error_text(e: BaseException) -> str:
    """How the CLI shows a tftrain error: one paragraph (and, for an error in the user's own
    code, the traceback of their frames)."""
    detail = f"\n{e.detail}" if isinstance(e, UserCodeError) and e.detail else ""
    return f"tftrain: {'stopped' if isinstance(e, Preempted) else 'error'}: {e}{detail}"


def _run_in_sweep(cfg: DictConfig, output_dir: str):
    """One job of a sweep: a failure becomes a row of the summary, not the end of the sweep.

    Hydra's launchers catch a job's exception, but the basic sweeper then re-raises it after its
    batch and the sweep stops before on_multirun_end.
    """
    from tftrain.sweep.summary import record_failure
    from tftrain.tasks.resume import completed_earlier

    t0 = time.perf_counter()
    try:
        done = completed_earlier(cfg, output_dir)
        return _objective(cfg, done if done is not None else run_task(cfg, output_dir))
    except Preempted:
        raise  # the whole sweep was told to stop: rerunning it resumes this job
    except Exception as e:  # any failure of one job, recorded with its traceback
        record_failure(output_dir, e, time.perf_counter() - t0)
        if isinstance(e, TftrainError) and not show_tracebacks():
            log.error("%s (run marked failed; the sweep goes on)", error_text(e))
        else:
            log.exception("Run failed (marked failed; the sweep goes on)")
        # None: a failed job (the Optuna search reads the job's metrics.json and tells the trial FAIL).
        return None


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    output_dir = hydra_cfg.runtime.output_dir
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return _run_in_sweep(cfg, output_dir)
    try:
        metrics = run_task(cfg, cfg.get("output_dir") or output_dir)  # output_dir=... beats hydra.run.dir
    except TftrainError as e:
        if show_tracebacks():
            raise
        print(error_text(e), file=sys.stderr)
        if not isinstance(e, RunDirBusy):  # the directory is another process': touch nothing there
            clean_failed_start(output_dir, error_text(e))
        sys.exit(exit_status(e))
    return _objective(cfg, metrics)


def clean_failed_start(run_dir: str, error: str) -> None:
    """A run that stopped before training (a config, data or resume error) leaves only its log,
    with the error appended, rather than a run directory that looks like a run. A directory holding
    anything of value (checkpoints, metrics.json) is left as it is."""
    import shutil
    from pathlib import Path

    from tftrain.tasks.outputs import BEFORE_TRAINING, OF_VALUE

    run_dir = Path(run_dir)
    if not run_dir.is_dir() or any((run_dir / name).exists() for name in OF_VALUE):
        return
    for name in BEFORE_TRAINING:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink(missing_ok=True)
    try:
        with open(run_dir / "tftrain.log", "a") as f:
            f.write(error + "\n")
    except OSError:
        pass


def exit_status(e: TftrainError) -> int:
    """2 for errors; 128 + the signal's number for a run stopped by a signal (130 for SIGINT, 143
    for SIGTERM), as a shell reports a process the signal ended, so schedulers see a preemption."""
    return 128 + e.signum if isinstance(e, Preempted) else 2


def _overrides(args: list[str]) -> list[str]:
    """The config overrides among the command-line arguments (not Hydra's flags and their values)."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                   "--config-dir", "-cd", "--experimental-rerun", "--info", "-i"):
            skip = a not in ("--info", "-i")
        elif not a.startswith("-"):
            out.append(a)
    return out


def expand_seeds(args: list[str]) -> list[str]:
    """`trainer.seeds=N` -> `trainer.seed=range(0,N)` and multirun: N seeds of every configuration,
    aggregated at the end of the sweep (aggregate.md)."""
    seeds = [a for a in args if a.startswith(("trainer.seeds=", "+trainer.seeds="))]
    if not seeds:
        return args
    value = seeds[-1].partition("=")[2]
    if not value.isdigit() or int(value) < 1:
        raise ConfigError("trainer.seeds", value, "an integer >= 1 (the number of seeds to sweep: trainer.seed=0..N-1)")
    if any(a.startswith(("trainer.seed=", "+trainer.seed=")) for a in args):
        raise ConfigError("trainer.seeds", value, "not given together with trainer.seed",
                          "give either trainer.seeds=N (seeds 0..N-1) or trainer.seed=0,1,2 with -m, not both")
    if any(a.startswith("hparams_search=") for a in args):
        raise ConfigError("trainer.seeds", value, "not given with hparams_search (the search would tune the seed)",
                          "search with one seed, then rerun the best trial's overrides with trainer.seeds=N")
    rest = [a for a in args if a not in seeds]
    multirun = [] if any(a in ("-m", "--multirun") for a in rest) else ["--multirun"]
    return [*multirun, *rest, f"trainer.seed=range(0,{int(value)})"]


def _sweep_failures() -> str | None:
    """After a sweep: a paragraph when some of its jobs failed (the CLI then exits 1)."""
    from tftrain.sweep import summary as sweep

    outcome = sweep.last_outcome
    if not outcome or not outcome["failed"]:
        return None
    where = outcome["sweep_dir"]
    return (f"tftrain: error: {outcome['failed']} of {outcome['runs']} job(s) failed: see {where}/summary.md (the "
            f"error column) and each failed job's error.txt. Fix the cause and rerun the same command with "
            f"hydra.sweep.dir={where}: completed jobs are skipped and failed ones run again (an Optuna search "
            "continues its study instead).")


def cli() -> None:
    """The console entry: `--help` answers fast; everything else goes to Hydra, whose errors are
    reported as tftrain's (one paragraph, exit 2)."""
    args = sys.argv[1:]
    # A user's module (model._target_=mymodule.build) is found in the directory the command runs in,
    # for the `tftrain` script too (whose sys.path[0] is its bin directory).
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    os.environ.setdefault("TFTRAIN_FULL_ERROR", os.environ.get("HYDRA_FULL_ERROR", "0"))
    try:
        if ("--help" in args or "-h" in args) and not any(a.startswith(("hydra", "-m", "--multirun")) for a in args):
            from tftrain.cli.help import fast_help

            print(fast_help(_overrides(args)))
            return
        # Hydra prints its own errors and exits 1 unless HYDRA_FULL_ERROR=1, when it raises them:
        # tftrain asks for that and reports them itself (the user's wish is in TFTRAIN_FULL_ERROR).
        os.environ["HYDRA_FULL_ERROR"] = "1"
        sys.argv[1:] = expand_seeds(args)
        from tftrain.sweep.rundirs import swept_keys

        os.environ["TFTRAIN_SWEPT_KEYS"] = ",".join(swept_keys(sys.argv[1:]))  # named first in run directories
        main()
        failures = _sweep_failures()
        if failures:
            print(failures, file=sys.stderr)
            sys.exit(1)
    except TftrainError as e:
        if show_tracebacks():
            raise
        print(error_text(e), file=sys.stderr)
        sys.exit(exit_status(e))
    except Exception as e:  # noqa: BLE001 - Hydra's own errors, and its run directory failing
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        if show_tracebacks():
            raise
        if isinstance(e, (HydraException, OmegaConfBaseException)):  # composition and override errors
            from tftrain.config.explain import explain

            print(error_text(explain(e, _overrides(args))), file=sys.stderr)
        elif isinstance(e, OSError):  # Hydra creating the run directory: read-only, under a file, disk full
            print(f"tftrain: error: Cannot write {e.filename or 'the run directory'}: {e.strerror or e}. Fix: choose a "
                  "writable run directory with free space (hydra.run.dir=... or hydra.sweep.dir=...).", file=sys.stderr)
        else:
            raise
        sys.exit(2)


if __name__ == "__main__":
    cli()
