"""Hyper-parameter search with Optuna as a Hydra sweeper (`hparams_search=optuna`; the plugin is
hydra_plugins/tftrain_optuna_sweeper, which only wraps `OptunaSearch`).

Each trial is one Hydra job, launched by whatever launcher is configured (in-process, joblib
processes, SLURM through submitit), `n_jobs` trials per batch. The search space has
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

import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from tftrain.errors import ConfigError, TftrainError
from tftrain.tasks.locks import HolderLock
from tftrain.sweep.search_space import SYNTAX, SearchSpace, parse_search_space
from tftrain.sweep.study import ENV_STUDY, ENV_TRIAL, RESULTS_FILE, STUDY_FILE, open_storage, quiet_optuna

log = logging.getLogger("tftrain")

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


class OptunaSearch:
    """The sweeper (see the module's docstring); its arguments are `hydra.sweeper.*`."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        """`settings`: hydra.sweeper.* (direction, study_name, storage, n_trials, n_jobs, sampler,
        pruner, pruning, params), each checked here."""
        from tftrain.sweep.pruning import pruner_spec

        direction, study_name, storage = settings["direction"], settings["study_name"], settings.get("storage")
        n_trials, n_jobs, sampler = settings["n_trials"], settings["n_jobs"], settings.get("sampler")
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
            raise ConfigError("hydra.sweeper.n_jobs", n_jobs, "an integer >= 1 (trials launched together; with "
                              "hydra/launcher=parallel they run at once)")
        sampler = dict(sampler or {})
        seed = sampler.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConfigError("hydra.sweeper.sampler.seed", seed, "an integer, or null for a random seed")
        startup = sampler.get("n_startup_trials", 10)
        if isinstance(startup, bool) or not isinstance(startup, int) or startup < 0:
            raise ConfigError("hydra.sweeper.sampler.n_startup_trials", startup, "an integer >= 0")
        self.direction, self.study_name, self.storage = direction, study_name, storage
        self.n_trials, self.n_jobs, self.seed, self.n_startup_trials = n_trials, n_jobs, seed, startup
        self.pruner = pruner_spec(pruner, pruning)
        self.params = params
        self.config: DictConfig | None = None
        self.hydra_context = None
        self.launcher = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

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
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")  # as Hydra's basic sweeper does
        url = _absolute(self.storage) if self.storage else f"sqlite:///{sweep_dir / 'optuna.db'}"
        with SweepLock(sweep_dir):
            study = self._study(url, sweep_dir)
            done = self._recover(study, sweep_dir)
            self._write_study_file(sweep_dir, url)
            log.info("Optuna study %r in %s: %s, %d of %d trials finished; TPE (seed %s), %s; %d trial(s) per batch",
                     self.study_name, url, self.direction, done, self.n_trials, self.seed,
                     f"pruner {self.pruner['name']}" if self.pruner else "no pruning", self.n_jobs)
            if done >= self.n_trials:
                log.info("The study has its %d trials: nothing to run (raise hydra.sweeper.n_trials to run more)",
                         self.n_trials)
            while done < self.n_trials:
                batch = [study.ask(dict(space.distributions)) for _ in range(min(self.n_jobs, self.n_trials - done))]
                # A retried trial runs alone as the job it was, in its run directory: the run
                # resumes from its checkpoints. New trials are launched together.
                retries = [t for t in batch if "retry_of" in t.user_attrs]
                for group in [[t] for t in retries] + [[t for t in batch if t not in retries]]:
                    if group:
                        self._run_batch(study, group, space, sweep_dir)
                done += len(batch)
            self._write_results(study, sweep_dir, url)
        return None

    def _study(self, url: str, sweep_dir: Path):
        import optuna

        from tftrain.sweep.pruning import make_pruner

        try:
            study = optuna.create_study(storage=open_storage(url), study_name=self.study_name,
                                        direction=self.direction, pruner=make_pruner(self.pruner), load_if_exists=True)
        except ValueError as e:  # an existing study of the other direction
            raise TftrainError(f"Cannot continue the Optuna study {self.study_name!r} in {url}: {e}. Fix: search in "
                               "a new hydra.sweep.dir (or hydra.sweeper.study_name), or keep the study's direction "
                               "(trainer.objective and trainer.objective_mode).") from None
        if study.direction.name.lower() != self.direction:
            raise TftrainError(f"The Optuna study {self.study_name!r} in {url} was created to {study.direction.name.lower()}"
                               f" and this search asks to {self.direction}. Fix: search in a new hydra.sweep.dir (or "
                               "hydra.sweeper.study_name), or keep trainer.objective and trainer.objective_mode as they were.")
        # Seeded by the number of trials already there: a continued study draws new points (the
        # same seed would replay the first run's random start-up draws), still reproducibly.
        seed = None if self.seed is None else self.seed + len(study.get_trials(deepcopy=False))
        study.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.n_startup_trials)
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
        (sweep_dir / STUDY_FILE).write_text(json.dumps(data, indent=2) + "\n")

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

    def validate_batch_is_legal(self, batch) -> None:
        from hydra.plugins.sweeper import Sweeper

        Sweeper.validate_batch_is_legal(self, batch)

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
        results: dict[str, Any] = {"name": "optuna", "study_name": self.study_name, "storage": url,
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
        OmegaConf.save(OmegaConf.create(results), sweep_dir / RESULTS_FILE)


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
