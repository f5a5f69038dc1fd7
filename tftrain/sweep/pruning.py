"""Pruning Optuna trials: the pruner a search asks for (`hydra.sweeper.pruner` and
`hydra.sweeper.pruning`), and the job side, `pruning_callback(cfg)`.

A trial's job reports its objective to the trial at every epoch end and stops training when the
pruner says the trial is unpromising; the run then records `"status": "pruned"` and the sweeper
(tftrain.sweep.search) tells Optuna PRUNED. Steps are 0-based epoch indices, as Optuna's pruners expect
(MedianPruner's n_warmup_steps=2: the first two epochs are never pruned).

Optuna is imported only when a job runs as a trial with a pruner.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

from tftrain.errors import ConfigError, TftrainError
from tftrain.sweep.study import ENV_STUDY, ENV_TRIAL

log = logging.getLogger("tftrain")

# name -> (the optuna.pruners class, its `hydra.sweeper.pruning` options: default and lowest value).
# MedianPruner: a trial worse than the median of the earlier trials at the same epoch is pruned.
# HyperbandPruner: successive halving in brackets, rungs at min_resource * reduction_factor**k epochs.
PRUNERS = {
    "median": ("MedianPruner", {"n_startup_trials": (5, 0), "n_warmup_steps": (0, 0)}),
    "hyperband": ("HyperbandPruner", {"min_resource": (1, 1), "reduction_factor": (3, 2), "max_resource": ("auto", 1)}),
}


def _int_at_least(key: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"hydra.sweeper.pruning.{key}", value, f"an integer >= {low}")
    return value


def pruner_spec(name: str | None, options: Mapping[str, Any] | None) -> dict | None:
    """The validated pruner as plain data ({"name": ..., its options}); None without pruning."""
    if name is None or str(name).lower() in ("none", "null", "false", "off"):
        return None
    if name not in PRUNERS:
        raise ConfigError("hydra.sweeper.pruner", name, f"null (no pruning) or one of {list(PRUNERS)}",
                          "e.g. hydra.sweeper.pruner=median")
    options = dict(options or {})
    spec: dict[str, Any] = {"name": name}
    for key, (default, low) in PRUNERS[name][1].items():
        value = options.get(key, default)
        spec[key] = value if value == "auto" else _int_at_least(key, value, low)
    if spec.get("max_resource", "auto") != "auto" and spec["max_resource"] < spec["min_resource"]:
        raise ConfigError("hydra.sweeper.pruning.max_resource", spec["max_resource"],
                          f"auto or an integer >= min_resource ({spec['min_resource']}): the most epochs a trial trains",
                          "set it to trainer.epochs (hparams_search=optuna does)")
    return spec


def make_pruner(spec: dict | None):
    """The optuna pruner of a `pruner_spec` (NopPruner for None)."""
    import optuna

    if spec is None:
        return optuna.pruners.NopPruner()
    cls, options = PRUNERS[spec["name"]]
    return getattr(optuna.pruners, cls)(**{k: spec[k] for k in options})


# ---------------------------------------------------------------- the job side


def epoch_key(objective: str) -> tuple[str, bool]:
    """(the per-epoch log holding the objective, whether the objective is its running best):
    best_val_X -> val_X (its best so far), val_X -> val_X, test_X -> val_X (the test set is
    evaluated once, at the end), train_X -> X, X -> val_X."""
    for prefix, best in (("best_val_", True), ("val_", False), ("test_", False)):
        if objective.startswith(prefix):
            return f"val_{objective[len(prefix):]}", best
    if objective.startswith("train_"):
        return objective[len("train_"):], False
    return f"val_{objective}", False


def pruning_callback(cfg, strategy=None):
    """A Keras callback that reports the objective to the Optuna trial this job runs as, at every
    epoch end, and stops training when the trial's pruner says so (its `pruned` attribute then
    True); None unless the job runs as a trial of a search with a pruner.

    `cfg`: the run's config; `strategy`: the run's tf.distribute strategy. Under multi-worker
    training only the chief reports and asks the pruner, and every worker stops at the epoch the
    chief decides (its decision is all-reduced), so no worker is left waiting in a collective.
    """
    number = os.environ.get(ENV_TRIAL)
    if number is None:
        return None
    study_file = os.environ.get(ENV_STUDY)
    try:
        study_info = json.loads(Path(study_file).read_text()) if study_file else None
    except (OSError, ValueError) as e:
        raise TftrainError(f"This job runs as Optuna trial {number} but cannot read its study file {study_file}: {e}. "
                           "Fix: keep the sweep directory on storage this job can read, or unset TFTRAIN_OPTUNA_TRIAL "
                           "to train outside the search.") from None
    if study_info is None:
        raise TftrainError("TFTRAIN_OPTUNA_TRIAL is set but TFTRAIN_OPTUNA_STUDY (the search's optuna_study.json) is "
                           "not. Fix: let the sweeper set both (hparams_search=optuna), or unset TFTRAIN_OPTUNA_TRIAL.")
    if study_info.get("pruner") is None:
        return None
    try:
        import optuna
    except ImportError:
        raise TftrainError(f"This job runs as Optuna trial {number} with pruning, but optuna is not installed here. "
                           "Fix: pip install \"tftrain[sweep]\" in the environment the jobs run in.") from None
    from tftrain.schema.problem import default_objective, direction

    objective = cfg.trainer.objective or default_objective(cfg.problem.get("metrics"))
    maximize = direction(objective, cfg.trainer.get("objective_mode"), cfg.problem.get("metrics")) == "maximize"
    chief, multi_worker = True, False
    if strategy is not None:
        from tftrain.loop.distribute import is_chief

        chief = is_chief(strategy)
        multi_worker = bool(strategy.extended._in_multi_worker_mode())
    trial = None
    if chief:
        from tftrain.sweep.study import open_storage

        storage = open_storage(study_info["storage"], created=True)
        study = optuna.load_study(study_name=study_info["study_name"], storage=storage,
                                  sampler=optuna.samplers.RandomSampler(),  # a trial's job never samples
                                  pruner=make_pruner(study_info["pruner"]))
        trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name),
                                                                   int(number))
        trial = optuna.trial.Trial(study, trial_id)
    return _callback_class()(trial, int(number), objective, maximize, strategy if multi_worker else None)


def _callback_class():
    # Defined on first use: the sweeper's process imports this module (pruner_spec) and must not
    # import Keras and TensorFlow.
    import keras

    class OptunaPruning(keras.callbacks.Callback):
        """See `pruning_callback`. Its state (the running best, whether it pruned) is saved with
        the run's checkpoints, so a resumed run reports the same values."""

        def __init__(self, trial, number: int, objective: str, maximize: bool, strategy=None):
            super().__init__()
            self.trial, self.number, self.objective, self.maximize = trial, number, objective, maximize
            self.key, self.running_best = epoch_key(objective)
            self.strategy = strategy  # multi-worker only: the decision is all-reduced
            self.best: float | None = None
            self.pruned = False
            self.pruned_epoch: int | None = None
            self._silent = False  # set after a storage error: training goes on without pruning

        def get_state(self) -> dict:
            return {"best": self.best, "pruned": self.pruned, "pruned_epoch": self.pruned_epoch}

        def set_state(self, state: dict) -> None:
            self.best, self.pruned = state.get("best"), bool(state.get("pruned"))
            self.pruned_epoch = state.get("pruned_epoch")

        def _value(self, logs: dict) -> float | None:
            value = logs.get(self.key)
            if value is None:
                return None
            value = float(value)
            if self.running_best:
                if self.best is None or (value > self.best if self.maximize else value < self.best):
                    self.best = value
                return self.best
            return value

        def on_epoch_end(self, epoch, logs=None):
            value = self._value(logs or {})
            prune = False
            if self.trial is not None and not self._silent:
                if value is None:
                    log.warning("Optuna pruning: no %s in the epoch's logs (%s); trial %d is not pruned",
                                self.key, ", ".join(sorted(logs or {})), self.number)
                    self._silent = True
                else:
                    prune = self._report(epoch, value)
            if self.strategy is not None:
                prune = self._agree(prune)
            if prune:
                self.model.stop_training = True
                self.pruned, self.pruned_epoch = True, epoch + 1
                log.info("Pruned by Optuna at epoch %d: %s %.6g is unpromising for trial %d (its pruner's verdict)",
                         epoch + 1, self.objective, value if value is not None else float("nan"), self.number)

        def _report(self, epoch: int, value: float) -> bool:
            try:
                with warnings.catch_warnings():
                    # A resumed run may end an epoch it had already reported: Optuna keeps the first.
                    warnings.filterwarnings("ignore", message=".*is already reported")
                    self.trial.report(value, step=epoch)
                return bool(self.trial.should_prune())
            except Exception as e:  # noqa: BLE001 - the storage failing must not end the training
                log.warning("Optuna pruning: could not report epoch %d of trial %d (%s); training goes on without "
                            "pruning", epoch + 1, self.number, e)
                self._silent = True
                return False

        def _agree(self, prune: bool) -> bool:
            """The chief's decision on every worker: a sum over the workers' replicas, to which only
            the chief's add 1 (ReduceOp has no MAX)."""
            import tensorflow as tf

            flag = tf.constant(1.0 if prune else 0.0)
            per_replica = self.strategy.run(lambda: tf.identity(flag))
            return bool(self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None).numpy() > 0)

    return OptunaPruning
