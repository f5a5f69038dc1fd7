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

import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

import tftrain.schema  # noqa: F401 - registers the schemas the YAML files extend
from tftrain.config.files import config_dir
from tftrain.errors import ComposeError, ConfigError, Preempted, RunDirBusy, TftrainError, UserCodeError, show_tracebacks

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


# The sweep's stop: the first SIGTERM/SIGINT a sweep's process gets (in a job, which checkpoints
# and raises Preempted, or between jobs) ends the sweep before its next job.
_sweep_stop: Preempted | None = None
_in_job = False


def _stop_sweep(signum, frame) -> None:
    """A stop signal outside a job's training (start-up, between jobs): remembered, and raised in a
    job that is starting (it has nothing to checkpoint yet); a second one ends the process at once."""
    global _sweep_stop
    if _sweep_stop is not None:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    name = signal.Signals(signum).name
    _sweep_stop = Preempted(f"Stopped on {name} before the job's first step: nothing was trained, so no checkpoint "
                            "was needed.", signum)
    log.warning("Received %s: the sweep stops before its next job (send it again to stop at once).", name)
    if _in_job:
        raise _sweep_stop


def _watch_sweep_signals() -> None:
    """In the sweep's own process (the basic launcher runs its jobs there): SIGTERM and SIGINT stop
    the sweep; each job's training replaces this handler with its own while it runs
    (tftrain.loop.signals.StopSignals, which restores it)."""
    if os.environ.get("TFTRAIN_SWEEP_PID") != str(os.getpid()) or \
            threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        if signal.getsignal(signum) is not _stop_sweep:
            signal.signal(signum, _stop_sweep)


_orphaned = False


def _end_with_parent() -> None:
    """A job in a worker process the sweep started (hydra/launcher=parallel: joblib's loky
    workers) ends when the sweep's process is gone, even killed (SIGKILL runs no clean-up there):
    it stops after a checkpoint, as on SIGTERM, then exits; a rerun of the sweep resumes it."""
    global _orphaned
    sweep_pid = os.environ.get("TFTRAIN_SWEEP_PID", "")
    parent = os.getppid()
    if _orphaned or not sweep_pid.isdigit() or int(sweep_pid) == os.getpid() or int(sweep_pid) != parent:
        return
    if any(t.name == "tftrain-parent-watch" for t in threading.enumerate()):
        return

    def watch() -> None:
        global _orphaned
        while os.getppid() == parent:
            time.sleep(0.5)
        _orphaned = True
        log.warning("The sweep's process (pid %d) is gone: this job stops after a checkpoint.", parent)
        os.kill(os.getpid(), signal.SIGTERM)  # the job's StopSignals checkpoints; idle, the process ends
        time.sleep(60)  # a checkpoint's time at most
        os._exit(128 + signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="tftrain-parent-watch").start()


def _run_in_sweep(cfg: DictConfig, output_dir: str):
    """One job of a sweep (`sweep_job`, run through)."""
    job = sweep_job(cfg, output_dir)
    try:
        next(job)
    except StopIteration as done:
        return done.value
    raise AssertionError("sweep_job yields only when together=True")  # pragma: no cover


def sweep_job(cfg: DictConfig, output_dir: str, together: bool = False):
    """One job of a sweep: a failure becomes a row of the summary, not the end of the sweep.
    A generator that returns the job's objective. With `together` (a member of a seed group:
    tftrain.cli.launcher), it yields the job's `tftrain.tasks.train.Training`, built and holding
    its run open, once; the caller runs it (beside the group's other members) and sends its
    metrics back, or throws its error in, which is then handled here as any job's.

    Hydra's launchers catch a job's exception, but the basic sweeper then re-raises it after its
    batch and the sweep stops before on_multirun_end. A job another process holds (a second copy
    of the sweep) is skipped: not a failure, and nothing is written in its directory (its log
    included; the summary counts it as running there, or completed once it is). A stop
    signal ends the sweep: the running job checkpoints and raises Preempted, the jobs after it
    do not start, and the CLI writes the summaries (tftrain.sweep.summary.finish_stopped_sweep).
    """
    global _sweep_stop, _in_job
    from tftrain.sweep.summary import record_failure
    from tftrain.tasks.resume import completed_earlier
    from tftrain.tasks.run import claim_run_dir, without_credentials

    if _sweep_stop is not None:
        raise Preempted(f"Not started: the sweep stopped on {signal.Signals(_sweep_stop.signum).name}.",
                        _sweep_stop.signum)
    _watch_sweep_signals()
    _end_with_parent()
    t0 = time.perf_counter()
    _in_job = True
    try:
        with claim_run_dir(cfg, output_dir):
            try:
                done = completed_earlier(without_credentials(cfg), output_dir)  # as config.yaml holds it
                if done is None:
                    done = (yield from _group_member(cfg, output_dir)) if together else run_task(cfg, output_dir)
                return _objective(cfg, done)
            except Preempted as e:  # the whole sweep was told to stop: rerunning it resumes this job
                _in_job = False
                _sweep_stop = _sweep_stop or e
                if not _completed(output_dir):
                    record_failure(output_dir, e, time.perf_counter() - t0, status="stopped")
                if _orphaned:
                    log.warning("%s", error_text(e))
                    logging.shutdown()
                    os._exit(exit_status(e))
                raise
            except Exception as e:  # any failure of one job, recorded with its traceback
                record_failure(output_dir, e, time.perf_counter() - t0)
                if isinstance(e, TftrainError) and not show_tracebacks():
                    log.error("%s (run marked failed; the sweep goes on)", error_text(e))
                else:
                    log.exception("Run failed (marked failed; the sweep goes on)")
                # None: a failed job (the Optuna search reads the job's metrics.json and tells the trial FAIL).
                return None
    except RunDirBusy as e:
        # The job's tftrain.log is the other process's: close what Hydra opened there for this job
        # (it configures logging afresh for the next one).
        root, inside = logging.getLogger(), os.path.realpath(output_dir) + os.sep
        for handler in list(root.handlers):
            if isinstance(handler, logging.FileHandler) and os.path.realpath(handler.baseFilename).startswith(inside):
                root.removeHandler(handler)
                handler.close()
        log.warning("Job %s skipped, not failed: it is running in another process (%s), which records its outcome; "
                    "this sweep's summary counts it as running there, or as completed once it is.",
                    Path(output_dir).name, getattr(e, "holder", "another process"))
        return None
    finally:
        _in_job = False


def _group_member(cfg: DictConfig, output_dir: str):
    """The task of a seed group's member (tftrain.tasks.train): its run opened and its training
    built here, trained by the group (yield), its metrics returned."""
    from tftrain.tasks.run import open_run
    from tftrain.tasks.train import Training, find_lr

    with open_run(cfg, output_dir, before_resume=find_lr) as run:
        return (yield Training(run))


def _completed(run_dir: str) -> bool:
    try:
        return json.loads((Path(run_dir) / "metrics.json").read_text()).get("status") in ("completed", "pruned")
    except (OSError, ValueError, AttributeError):
        return False


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from tftrain.tasks.run import chief_by_environment, claim_run_dir

    hydra_cfg = HydraConfig.get()
    output_dir = hydra_cfg.runtime.output_dir
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return _run_in_sweep(cfg, output_dir)
    # The lock before anything is written, held until the process ends: a refused start (the
    # directory busy: RunDirBusy, reported by cli()) has written and deleted nothing there.
    # output_dir=... beats hydra.run.dir (tasks.run.run_dir_of reads "~/x" as the home directory).
    with claim_run_dir(cfg, cfg.get("output_dir") or output_dir) as run_dir:
        try:
            metrics = run_task(cfg, str(run_dir))
        except TftrainError as e:
            if show_tracebacks():
                raise
            print(error_text(e), file=sys.stderr)
            if chief_by_environment(cfg):  # this process holds the lock: what it wrote is its own
                clean_failed_start(run_dir)
                _log_last_word(output_dir, error_text(e))
            sys.exit(exit_status(e))
    return _objective(cfg, metrics)


def clean_failed_start(run_dir: str) -> None:
    """A run that stopped before training (a config, data or resume error) leaves only its log
    rather than a run directory that looks like a run. A directory holding anything of value
    (checkpoints, metrics.json) is left as it is. Called only while this process holds the
    directory's lock."""
    import shutil

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
    (run_dir / ".tftrain.lock").unlink(missing_ok=True)  # ours (held while this runs): no run holds it


def _log_last_word(log_dir: str, text: str) -> None:
    """The paragraph the console got (an error, or "stopped ... rerun" after a signal) ends the
    run's tftrain.log too: it is printed rather than logged, so that it is the console's last line."""
    try:
        with open(Path(log_dir) / "tftrain.log", "a") as f:
            f.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")
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


def _one_run_flags(args: list[str]) -> None:
    """`--cfg`/`--info` show one run's config; Hydra refuses them with a sweep (-m, trainer.seeds,
    or a preset whose hydra.mode is MULTIRUN) in a ValueError or an argparse error."""
    shown = next((a for a in args if a in ("--cfg", "-c", "--info", "-i") or a.startswith("--info=")), None)
    if shown is None:
        return
    sweep = next((a for a in args if a in ("-m", "--multirun") or a.startswith(("trainer.seeds=", "+trainer.seeds="))),
                 None)
    if sweep is not None:
        raise ComposeError(
            f"{shown} shows one run's configuration, and `{sweep}` asks for a sweep of several. Fix: leave out "
            f"`{sweep}` (and any comma lists) to see the configuration each job starts from, e.g. `python -m tftrain "
            "experiment=compare_optimizers --cfg job`; give one value of a swept key to see that job's, e.g. "
            "`optimizer=adam trainer.seed=0 --cfg job`.")


def _slurm_here(args: list[str]) -> None:
    """hydra/launcher=slurm submits through SLURM's `srun`/`sbatch`; without them submitit raises a
    RuntimeError deep in the launcher (a long traceback)."""
    import shutil

    launcher = next((a.partition("=")[2] for a in args if a.startswith("hydra/launcher=")), "")
    if launcher in ("slurm", "submitit_slurm") and shutil.which("srun") is None:
        raise ComposeError(
            f"hydra/launcher={launcher} submits each job to SLURM, but `srun` is not on this machine's PATH (not a "
            "SLURM login node, or SLURM's module not loaded). Fix: run the command on the cluster's login node "
            "(`module load slurm` where the cluster needs it); on this machine leave out hydra/launcher=slurm (jobs "
            "run one after another) or use hydra/launcher=parallel (several at once).")


def expand_home(args: list[str]) -> list[str]:
    """`hydra.run.dir="~/x"`: the home directory, as a shell would read it. Hydra takes the value
    as it is and creates a folder named `~` in the current directory."""
    out = []
    for a in args:
        key, eq, value = a.partition("=")
        bare = value.strip("'\"")
        if eq and key.lstrip("+") in ("hydra.run.dir", "hydra.sweep.dir", "output_dir") and bare.startswith("~"):
            a = f"{key}={json.dumps(os.path.expanduser(bare))}"
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


def _stopped_sweep(e: TftrainError) -> str:
    """For a sweep a signal stopped: its summaries (Hydra skips on_multirun_end when a job's
    Preempted ends the sweep), and how to resume it."""
    if not isinstance(e, Preempted):
        return ""
    from tftrain.sweep import summary

    sweep_dir = summary.finish_stopped_sweep()
    if sweep_dir is None:
        return ""
    return (f" The sweep stopped there (summary.md in {sweep_dir} has the jobs so far). Fix: rerun the same command "
            f"with hydra.sweep.dir={sweep_dir}: completed jobs are skipped, the stopped one resumes from its "
            "checkpoint and the others start.")


def cli() -> None:
    """The console entry: `--help` answers fast; everything else goes to Hydra, whose errors are
    reported as tftrain's (one paragraph, exit 2)."""
    args = sys.argv[1:]
    # A user's module (model._target_=mymodule.build) is found in the directory the command runs in,
    # for the `tftrain` script too (whose sys.path[0] is its bin directory).
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    os.environ.setdefault("TFTRAIN_FULL_ERROR", os.environ.get("HYDRA_FULL_ERROR", "0"))
    os.environ["TFTRAIN_SWEEP_PID"] = str(os.getpid())  # a sweep's worker processes end with this one
    try:
        if ("--help" in args or "-h" in args) and not any(a.startswith(("hydra", "-m", "--multirun")) for a in args):
            from tftrain.cli.help import fast_help

            print(fast_help(_overrides(args)))
            return
        # Hydra prints its own errors and exits 1 unless HYDRA_FULL_ERROR=1, when it raises them:
        # tftrain asks for that and reports them itself (the user's wish is in TFTRAIN_FULL_ERROR).
        os.environ["HYDRA_FULL_ERROR"] = "1"
        _one_run_flags(args)
        _slurm_here(args)
        sys.argv[1:] = expand_seeds(expand_home(args))
        from tftrain.sweep.rundirs import swept_keys

        os.environ["TFTRAIN_SWEPT_KEYS"] = ",".join(swept_keys(sys.argv[1:]))  # named first in run directories
        main()
        if _sweep_stop is not None:  # a signal between the last job and the summary
            raise _sweep_stop
        failures = _sweep_failures()
        if failures:
            print(failures, file=sys.stderr)
            sys.exit(1)
    except TftrainError as e:
        if show_tracebacks():
            raise
        print(error_text(e) + _stopped_sweep(e), file=sys.stderr)
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
