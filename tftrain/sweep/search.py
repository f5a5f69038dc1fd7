"""Hyper-parameter search with Optuna as a Hydra sweeper (`hparams_search=optuna`; the plugin is
hydra_plugins/tftrain_optuna_sweeper, which only wraps `OptunaSearch`).

Each trial is one Hydra job, launched by whatever launcher is configured (in-process, joblib
processes, SLURM through submitit). `asynchronous` (the default): `n_jobs` workers, this process
and `n_jobs - 1` copies of its command (`worker=true`), each a loop of ask -> run one trial ->
tell that shares the study through its storage, so a worker starts its next trial the moment its
last one ends; a worker asks under a file lock in the sweep directory and stops once the study has
`n_trials` trials finished or running, so the workers together never run more. Each worker's
trial records a heartbeat in the storage while it runs; a RUNNING trial whose heartbeat stopped
(its worker was killed) is told FAIL and retried, as below. `asynchronous=false`: batches of
`n_jobs` trials launched together, each batch waiting for its slowest trial. The search space has
hydra-optuna-sweeper's syntax (`parse_search_space`). The study lives in the sweep directory
(`sqlite:///<hydra.sweep.dir>/optuna.db` unless `storage` says otherwise), so rerunning the same
command with the same `hydra.sweep.dir` continues it: finished trials count toward `n_trials`, and
trials a killed sweep left running are marked failed and their parameters queued again; a retry
runs as the same job, in the same run directory, where the run resumes from its checkpoints.

A trial's outcome is its run directory's metrics.json, as the sweep summary reads it: "completed"
tells Optuna the job's objective, "pruned" (the job's `tftrain.sweep.pruning` callback stopped it)
tells PRUNED, anything else (failed, or no metrics.json: killed) tells FAIL, and the search goes on.

The job side learns which trial it is from two environment variables the sweeper sets through
`hydra.job.env_set` (so every launcher, on any host, passes them): `TFTRAIN_OPTUNA_TRIAL` (the
trial's number) and `TFTRAIN_OPTUNA_STUDY` (the path of `optuna_study.json` in the sweep
directory: storage, study name, pruner). Hydra keeps `hydra.*` overrides out of the task overrides,
so they appear in neither `hydra.job.override_dirname` nor `.hydra/overrides.yaml`.

Optuna is imported inside the functions: this module is imported when Hydra instantiates the
sweeper and by a trial's job, not by every command.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from omegaconf import OmegaConf

from tftrain.errors import ConfigError, TftrainError
from tftrain.tasks.locks import HolderLock
from tftrain.sweep.search_space import SYNTAX, SearchSpace, parse_search_space
from tftrain.sweep.sweeper import LaunchingSweeper
from tftrain.sweep.study import ENV_STUDY, ENV_TRIAL, RESULTS_FILE, STUDY_FILE, open_storage, quiet_optuna, redact

log = logging.getLogger("tftrain")

ENV_PARENT = "TFTRAIN_OPTUNA_PARENT"  # set in the worker processes a search starts: its pid


class SweepLock(HolderLock):
    """`<sweep dir>/.optuna.lock` while a sweeper runs there: a second sweeper on the same
    directory would count the first one's running trials as left by a killed sweep."""

    def __init__(self, sweep_dir: Path):
        super().__init__(Path(sweep_dir) / ".optuna.lock")

    def busy(self, holder: str) -> Exception:
        return TftrainError(f"The Optuna search in {self.path.parent} is already running ({holder}). Fix: wait for "
                            "it to end (rerun then to continue it), or search in another hydra.sweep.dir.")


def _absolute(url: str) -> str:
    """A relative SQLite file (sqlite:///optuna.db) made absolute: the jobs may run in another
    working directory (hydra.job.chdir=true)."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url[len(prefix):] not in ("", ":memory:"):
        return prefix + str(Path(url[len(prefix):]).resolve())
    return url


@contextlib.contextmanager
def _ask_lock(sweep_dir: Path):
    """`<sweep dir>/.optuna.ask.lock`, held while a worker counts the trials and asks the next one,
    so that workers asking at once never exceed n_trials (flock: local processes, and the hosts
    of a shared file system that supports it, as NFS and Lustre with -o flock do)."""
    with open(sweep_dir / ".optuna.ask.lock", "a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


def _counted(trials) -> int:
    """The trials that count toward n_trials: finished or running, a failed trial that was queued
    again counted once, by its retry (a queued retry counts once it runs)."""
    from optuna.trial import TrialState

    retried = {t.user_attrs.get("retry_of") for t in trials} - {None}
    return sum((t.state.is_finished() or t.state == TrialState.RUNNING) and t.number not in retried for t in trials)


def _retry_stale(study, frozen) -> None:
    """Optuna's callback for a trial whose worker stopped beating (told FAIL already)."""
    _retry(study, frozen)
    log.warning("Trial %d lost its worker (no heartbeat): marked failed, its parameters queued again (its run "
                "resumes from its checkpoints)", frozen.number)


def _write_atomic(path: Path, text: str) -> None:
    """Whole, never half: a job or another worker may read the file while it is written."""
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    part.write_text(text)
    os.replace(part, path)


def _retry(study, frozen) -> None:
    """Queue a failed trial's parameters again, to run as the same job (run directory)."""
    study.enqueue_trial(frozen.params, user_attrs={"retry_of": frozen.number,
                                                   "job_num": frozen.user_attrs.get("job_num", frozen.number)})


def _outcome(ret) -> tuple[str, str | None]:
    """(the run's status from its metrics.json: completed | pruned | failed, its run directory)."""
    output_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg is not None else None
    if output_dir is None:
        return "failed", None
    try:
        status = json.loads((Path(output_dir) / "metrics.json").read_text()).get("status", "completed")
    except (OSError, ValueError, AttributeError):
        status = "failed"  # no metrics.json: the job was killed, or failed before writing anything
    return str(status), str(output_dir)


def _value_of(ret):
    from hydra.core.utils import JobStatus

    value = ret._return_value if ret.status == JobStatus.COMPLETED else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class OptunaSearch(LaunchingSweeper):
    """The sweeper (see the module's docstring); its arguments are `hydra.sweeper.*`."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        """`settings`: hydra.sweeper.* (direction, study_name, storage, n_trials, n_jobs, sampler,
        pruner, pruning, params), each checked here."""
        from tftrain.sweep.pruning import pruner_spec

        direction, study_name, storage = settings["direction"], settings["study_name"], settings.get("storage")
        n_trials, n_jobs, sampler = settings["n_trials"], settings["n_jobs"], settings.get("sampler")
        asynchronous, worker = settings.get("asynchronous", True), settings.get("worker", False)
        heartbeat_s = settings.get("heartbeat_s", 30)
        pruner, pruning, params = settings.get("pruner"), settings.get("pruning"), settings.get("params")

        if direction not in ("maximize", "minimize"):
            raise ConfigError("hydra.sweeper.direction", direction, "maximize or minimize",
                              "leave it to trainer.objective_mode (hparams_search=optuna sets it) or set maximize/minimize")
        if not study_name:
            raise ConfigError("hydra.sweeper.study_name", study_name, "a non-empty name")
        if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
            raise ConfigError("hydra.sweeper.n_trials", n_trials, "an integer >= 1 (the finished trials the study "
                              "should have, earlier runs' included)")
        if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
            raise ConfigError("hydra.sweeper.n_jobs", n_jobs, "an integer >= 1 (trials run at once: worker "
                              "processes, or with asynchronous=false the trials of a batch)")
        for key, value in (("asynchronous", asynchronous), ("worker", worker)):
            if not isinstance(value, bool):
                raise ConfigError(f"hydra.sweeper.{key}", value, "true or false")
        if isinstance(heartbeat_s, bool) or not isinstance(heartbeat_s, int) or heartbeat_s < 1:
            raise ConfigError("hydra.sweeper.heartbeat_s", heartbeat_s, "an integer >= 1 (seconds between a running "
                              "trial's heartbeats; 2x that without one and the trial is retried)")
        sampler = dict(sampler or {})
        seed = sampler.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConfigError("hydra.sweeper.sampler.seed", seed, "an integer, or null for a random seed")
        startup = sampler.get("n_startup_trials", 10)
        if isinstance(startup, bool) or not isinstance(startup, int) or startup < 0:
            raise ConfigError("hydra.sweeper.sampler.n_startup_trials", startup, "an integer >= 0")
        self.direction, self.study_name, self.storage = direction, study_name, storage
        self.n_trials, self.n_jobs, self.seed, self.n_startup_trials = n_trials, n_jobs, seed, startup
        self.asynchronous, self.worker, self.heartbeat_s = asynchronous, worker, heartbeat_s
        # Several workers share the study: heartbeats, and TPE's constant liar (the running trials'
        # points count as bad ones, so workers asking together do not draw the same region).
        self.shared = worker or (asynchronous and n_jobs > 1)
        self.pruner = pruner_spec(pruner, pruning)
        self.params = params

    # ------------------------------------------------------------ the loop

    def sweep(self, arguments: list[str]) -> None:
        space = parse_search_space(self.params, arguments, self.hydra_context.config_loader)
        if not space.distributions:
            raise ConfigError("hydra.sweeper.params", dict(self.params or {}), "at least one dimension to search ("
                              + SYNTAX + ")", "add one, e.g. 'optimizer.lr=tag(log, interval(1e-4, 1e-1))'")
        # An unknown key or option fails now, before a study or a trial exists to record it.
        self.validate_batch_is_legal([space.overrides(space.first_point())])
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        url = _absolute(self.storage) if self.storage else f"sqlite:///{sweep_dir / 'optuna.db'}"
        if self.worker:
            return self._join(space, sweep_dir, url)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")  # as Hydra's basic sweeper does
        with SweepLock(sweep_dir):
            study = self._study(url, sweep_dir)
            done = self._recover(study, sweep_dir)
            self._write_study_file(sweep_dir, url)
            mode = (f"{self.n_jobs} asynchronous worker(s)" if self.asynchronous else
                    f"{self.n_jobs} trial(s) per batch")
            log.info("Optuna study %r in %s: %s, %d of %d trials finished; TPE (seed %s), %s; %s",
                     self.study_name, redact(url), self.direction, done, self.n_trials, self.seed,
                     f"pruner {self.pruner['name']}" if self.pruner else "no pruning", mode)
            if done >= self.n_trials:
                log.info("The study has its %d trials: nothing to run (raise hydra.sweeper.n_trials to run more)",
                         self.n_trials)
            elif self.asynchronous:
                workers = self._start_workers(sweep_dir, self.n_jobs - 1)
                try:
                    self._work(study, space, sweep_dir)
                except BaseException:  # stopped (a signal, an error): the workers stop after a checkpoint
                    for proc in workers:
                        if proc.poll() is None:
                            proc.send_signal(signal.SIGTERM)
                    raise
                finally:
                    self._wait_for(workers)
            else:
                self._batches(study, space, sweep_dir, done)
            self._write_results(study, sweep_dir, url)
        return None

    def _batches(self, study, space: SearchSpace, sweep_dir: Path, done: int) -> None:
        """asynchronous=false: batches of n_jobs trials, each launched at once and awaited whole."""
        while done < self.n_trials:
            batch = [study.ask(dict(space.distributions)) for _ in range(min(self.n_jobs, self.n_trials - done))]
            # A retried trial runs alone as the job it was, in its run directory: the run
            # resumes from its checkpoints. New trials are launched together.
            retries = [t for t in batch if "retry_of" in t.user_attrs]
            for group in [[t] for t in retries] + [[t for t in batch if t not in retries]]:
                if group:
                    self._run_batch(study, group, space, sweep_dir)
            done += len(batch)

    # ------------------------------------------------------------ asynchronous workers

    def _join(self, space: SearchSpace, sweep_dir: Path, url: str) -> None:
        """worker=true: one more worker (one trial at a time, whatever n_jobs) of the study in
        `sweep_dir`, started by a search (its copies) or by hand (each task of a SLURM array); the
        last to end leaves complete results."""
        with _ask_lock(sweep_dir):  # workers starting together: one creates the study's tables
            study = self._study(url, sweep_dir)
            if not (sweep_dir / STUDY_FILE).is_file():
                self._write_study_file(sweep_dir, url)
        if not (sweep_dir / "multirun.yaml").is_file():
            OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        log.info("Worker (pid %d) of the Optuna study %r in %s: %d trial(s) wanted", os.getpid(), self.study_name,
                 redact(url), self.n_trials)
        self._watch_parent()
        self._work(study, space, sweep_dir)
        if ENV_PARENT not in os.environ:  # a search's own workers leave the results to it
            self._write_results(study, sweep_dir, url)

    def _work(self, study, space: SearchSpace, sweep_dir: Path) -> None:
        """Ask -> run one trial -> tell, until the study has its trials."""
        while (trial := self._ask(study, space, sweep_dir)) is not None:
            with self._heartbeat(trial):
                self._run_batch(study, [trial], space, sweep_dir)

    def _ask(self, study, space: SearchSpace, sweep_dir: Path):
        """The next trial (a queued retry first), or None once the study has n_trials trials."""
        import optuna

        with _ask_lock(sweep_dir):
            if self.shared:
                with optuna_warnings_off():
                    optuna.storages.fail_stale_trials(study)  # runs _retry_stale on each
            trials = study.get_trials(deepcopy=False)
            if _counted(trials) >= self.n_trials:
                return None
            if self.shared and self.seed is not None:
                # Seeded by the trial's place in the study: workers asking in turn draw
                # different points (one seed per worker would draw the same ones).
                study.sampler = self._sampler(self.seed + len(trials))
            with optuna_warnings_off():
                trial = study.ask(dict(space.distributions))
            trial.set_user_attr("sweep_dir", str(sweep_dir))  # before the lock opens: a recovery finds it
            return trial

    @contextlib.contextmanager
    def _heartbeat(self, trial):
        """Records in the storage, every heartbeat_s while `trial` runs, that its worker lives."""
        if not self.shared:
            yield
            return
        storage = self._storage
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(self.study_name), trial.number)
        stop = threading.Event()

        def beat() -> None:
            while True:
                try:
                    storage.record_heartbeat(trial_id)
                except Exception as e:  # noqa: BLE001 - a storage hiccup; the next beat may pass
                    log.debug("Heartbeat of trial %d failed: %s", trial.number, e)
                if stop.wait(self.heartbeat_s):
                    return

        thread = threading.Thread(target=beat, daemon=True, name="tftrain-optuna-heartbeat")
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def _start_workers(self, sweep_dir: Path, n: int) -> list:
        """`n` copies of this command as workers of the study (worker=true, one trial at a time),
        in this sweep directory; their output goes where this process's goes."""
        if n < 1:
            return []
        from hydra.core.override_parser.types import Quote, QuotedString

        own = ("hydra.sweep.dir=", "hydra.sweeper.worker=", "hydra.sweeper.n_jobs=")
        args = [a for a in sys.orig_argv[1:] if not a.lstrip("+").startswith(own)]
        quoted = QuotedString(text=str(sweep_dir), quote=Quote.single).with_quotes()
        # Without the summary callback: this process writes the summaries once the workers end
        # (and opens the one MLflow parent run of the sweep).
        command = [sys.executable, *args, f"hydra.sweep.dir={quoted}", "hydra.sweeper.worker=true",
                   "hydra.sweeper.n_jobs=1", "~hydra.callbacks.sweep_summary"]
        env = {**os.environ, ENV_PARENT: str(os.getpid())}
        log.info("Starting %d more worker process(es): %s", n, " ".join(command[1:]))
        return [subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL) for _ in range(n)]

    @staticmethod
    def _wait_for(workers: list) -> None:
        for proc in workers:
            code = proc.wait()
            if code not in (0, 1):  # 1: some trial failed, as this process reports too
                log.warning("Worker process %d ended with status %d; rerun the search to retry its trial.",
                            proc.pid, code)

    @staticmethod
    def _watch_parent() -> None:
        """A search's own worker stops (after a checkpoint, as on SIGTERM) when the search's process
        is gone, even killed: its trial is retried in its run directory by a rerun."""
        parent = os.environ.get(ENV_PARENT, "")
        if not parent.isdigit() or int(parent) != os.getppid():
            return

        def watch() -> None:
            while os.getppid() == int(parent):
                time.sleep(0.5)
            log.warning("The search's process (pid %s) is gone: this worker stops after a checkpoint.", parent)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, daemon=True, name="tftrain-optuna-parent-watch").start()

    def _storage_of(self, url: str):
        """The storage, or one paragraph naming hydra.sweeper.storage: a URL Optuna cannot use."""
        try:
            return open_storage(url, heartbeat_s=self.heartbeat_s if self.shared else None, on_stale=_retry_stale)
        except Exception as e:  # noqa: BLE001 - SQLAlchemy's and the drivers' errors have no common base
            reason = " ".join(str(e).split())[:300] or type(e).__name__
            raise ConfigError("hydra.sweeper.storage", redact(url), "an Optuna storage URL of a database it can "
                              f"reach, e.g. sqlite:////abs/path/optuna.db or postgresql+psycopg2://user@host/db "
                              f"({type(e).__name__}: {redact(reason)})",
                              "correct the URL (start the server, install its driver: pip install psycopg2-binary), "
                              "or leave hydra.sweeper.storage out for SQLite in the sweep directory") from None

    def _sampler(self, seed):
        import optuna

        with optuna_warnings_off():  # constant_liar is "experimental"
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.n_startup_trials,
                                              constant_liar=self.shared)

    def _study(self, url: str, sweep_dir: Path):
        import optuna

        from tftrain.sweep.pruning import make_pruner

        self._storage = self._storage_of(url)
        try:
            study = optuna.create_study(storage=self._storage, study_name=self.study_name,
                                        direction=self.direction, pruner=make_pruner(self.pruner), load_if_exists=True)
        except ValueError as e:  # an existing study of the other direction
            raise TftrainError(f"Cannot continue the Optuna study {self.study_name!r} in {redact(url)}: {e}. Fix: "
                               "search in a new hydra.sweep.dir (or hydra.sweeper.study_name), or keep the study's "
                               "direction (trainer.objective and trainer.objective_mode).") from None
        if study.direction.name.lower() != self.direction:
            raise TftrainError(f"The Optuna study {self.study_name!r} in {redact(url)} was created to "
                               f"{study.direction.name.lower()} and this search asks to {self.direction}. Fix: search "
                               "in a new hydra.sweep.dir (or hydra.sweeper.study_name), or keep trainer.objective and "
                               "trainer.objective_mode as they were.")
        # Seeded by the number of trials already there: a continued study draws new points (the
        # same seed would replay the first run's random start-up draws), still reproducibly.
        seed = None if self.seed is None else self.seed + len(study.get_trials(deepcopy=False))
        study.sampler = self._sampler(seed)
        return study

    def _recover(self, study, sweep_dir: Path) -> int:
        """Mark FAIL the trials of this sweep directory a killed sweep left running, queue their
        parameters again, and return how many trials count as finished (a failed trial that was
        queued again is counted once, by its retry)."""
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        for t in trials:
            if t.state == TrialState.RUNNING and t.user_attrs.get("sweep_dir") == str(sweep_dir):
                study.tell(t.number, state=TrialState.FAIL)
                _retry(study, t)
                log.warning("Trial %d was left running by an interrupted sweep: marked failed, its parameters "
                            "queued again (its run resumes from its checkpoints)", t.number)
        trials = study.get_trials(deepcopy=False)
        retried = {t.user_attrs.get("retry_of") for t in trials} - {None}
        return sum(t.state.is_finished() and t.number not in retried for t in trials)

    def _write_study_file(self, sweep_dir: Path, url: str) -> None:
        from tftrain.schema.problem import default_objective

        objective = OmegaConf.select(self.config, "trainer.objective") or \
            default_objective(OmegaConf.select(self.config, "problem.metrics"))
        data = {"storage": url, "study_name": self.study_name, "direction": self.direction,
                "objective": objective, "pruner": self.pruner}
        _write_atomic(sweep_dir / STUDY_FILE, json.dumps(data, indent=2) + "\n")

    def _trial_overrides(self, trial, space: SearchSpace, sweep_dir: Path) -> list[str]:
        from hydra.core.override_parser.types import Quote, QuotedString

        study_file = QuotedString(text=str(sweep_dir / STUDY_FILE), quote=Quote.single).with_quotes()
        return [*space.overrides(trial.params), f"++hydra.job.env_set.{ENV_TRIAL}={trial.number}",
                f"++hydra.job.env_set.{ENV_STUDY}={study_file}"]

    def _run_batch(self, study, batch: list, space: SearchSpace, sweep_dir: Path) -> None:
        from hydra.core.utils import JobStatus
        from optuna.trial import TrialState

        from tftrain.errors import Preempted

        # Run directories are numbered by trial (a retry: as the job it retries).
        job_idx = batch[0].user_attrs.get("job_num", batch[0].number)
        for i, trial in enumerate(batch):
            trial.set_user_attr("sweep_dir", str(sweep_dir))
            trial.set_user_attr("job_num", job_idx + i)
            previous = study.get_trials(deepcopy=False)[trial.user_attrs["retry_of"]] \
                if "retry_of" in trial.user_attrs else None
            for step, value in (previous.intermediate_values.items() if previous else ()):
                trial.report(value, step)  # what the resumed run will not report again, for its pruner
        overrides = [self._trial_overrides(t, space, sweep_dir) for t in batch]
        try:
            self.validate_batch_is_legal(overrides)  # composition errors now, in this process, before any job
            returns = self.launcher.launch(overrides, initial_job_idx=job_idx)
        except Exception:
            for trial in batch:  # a config error: retrying the same parameters would fail again
                study.tell(trial, state=TrialState.FAIL)
            raise
        preempted = None
        for trial, ret in zip(batch, returns):
            status, run_dir = _outcome(ret)
            if run_dir:
                trial.set_user_attr("run_dir", run_dir)
            if ret.status == JobStatus.FAILED and isinstance(ret._return_value, Preempted):
                # The sweep was told to stop (the run checkpointed): rerunning the sweep retries the
                # trial in the same run directory, which resumes there.
                study.tell(trial, state=TrialState.FAIL)
                _retry(study, study.get_trials(deepcopy=False)[trial.number])
                preempted = ret._return_value
                continue
            value = _value_of(ret)
            if status == "completed" and value is not None and math.isfinite(value):
                frozen = study.tell(trial, value)
            elif status == "pruned":
                frozen = study.tell(trial, state=TrialState.PRUNED)
            else:
                frozen = study.tell(trial, state=TrialState.FAIL)
            self._log_trial(study, frozen, status, value)
        if preempted is not None:
            raise preempted

    def _log_trial(self, study, frozen, status: str, value) -> None:
        """The one line per trial: its state, value and parameters, and the best so far."""
        from optuna.trial import TrialState

        params = " ".join(f"{k}={_short(v)}" for k, v in frozen.params.items())
        if frozen.state == TrialState.COMPLETE:
            what = f"value {frozen.value:.6g}"
        elif frozen.state == TrialState.PRUNED:
            what = f"pruned at epoch {frozen.last_step + 1}" if frozen.last_step is not None else "pruned"
        else:
            what = ("failed (run " + status + ")" if status != "completed" else
                    f"failed (objective {value!r}: not a finite number)")
        try:
            best = study.best_trial
            best_text = f"; best: trial {best.number}, {best.value:.6g}"
        except ValueError:  # no completed trial yet
            best_text = ""
        log.info("Trial %d %s: %s%s", frozen.number, what, params, best_text)

    # ------------------------------------------------------------ results

    def _write_results(self, study, sweep_dir: Path, url: str) -> None:
        """optimization_results.yaml, as hydra-optuna-sweeper wrote it (name, best_params,
        best_value), plus the best trial's number and run directory and the counts by state."""
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        counts = {s.name.lower(): sum(t.state == s for t in trials)
                  for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        results: dict[str, Any] = {"name": "optuna", "study_name": self.study_name, "storage": redact(url),
                                   "direction": self.direction, "trials": counts}
        try:
            best = study.best_trial
        except ValueError:
            results.update(best_params=None, best_value=None)
            log.warning("No trial of the Optuna study completed (%s): no best parameters; see summary.md for the errors",
                        ", ".join(f"{n} {k}" for k, n in counts.items()))
        else:
            results.update(best_params=dict(best.params), best_value=best.value, best_trial=best.number,
                           best_run_dir=best.user_attrs.get("run_dir"))
            log.info("Best of %d trials: trial %d, value %.6g: %s", len(trials), best.number, best.value,
                     " ".join(f"{k}={_short(v)}" for k, v in best.params.items()))
        _write_atomic(sweep_dir / RESULTS_FILE, OmegaConf.to_yaml(OmegaConf.create(results)))


@contextlib.contextmanager
def optuna_warnings_off():
    """Optuna's ExperimentalWarning for the heartbeats and the constant liar it has shipped for years."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # study.ask's warning that heartbeats are "supposed to be used with Study.optimize": the
        # workers record them themselves (_heartbeat), as Study.optimize does
        warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
        yield


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
