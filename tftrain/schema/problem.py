"""Schemas of the `problem` group, and the checks that need the whole config: the objective and
the monitors must be metrics the run logs, and their direction (min/max) follows the metric.

The target (tftrain.problems) owns the loss, the metrics and what the targets must look like.
`loss` is a Keras loss name or `{_target_: ...}`; `metrics` Keras metric names (or
`{_target_: ...}` entries); each metric is logged as `<name>`, `val_<name>`, `best_val_<name>`
and `test_<name>`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import MISSING

from tftrain.errors import ConfigError, require
from tftrain.problems.direction import mode_of
from tftrain.schema.registry import schema

# Metrics (and losses) where lower is better; every other metric is better higher (accuracy, auc, r2, ...).
PREFIXES = ("", "train_", "val_", "best_val_", "test_")


@dataclass(kw_only=True)
class ProblemConf:
    _target_: str = MISSING
    loss: Any = MISSING  # a Keras loss name, or {_target_: keras.losses.SomeLoss, ...}
    metrics: List[Any] = field(default_factory=list)  # Keras metric names (or {_target_: ..., name: ...}), logged by name
    num_outputs: Optional[int] = None  # the model's outputs; null: inferred from the data's targets

    def __post_init__(self):
        require(isinstance(self.loss, str) or (isinstance(self.loss, dict) and "_target_" in self.loss), "loss",
                self.loss, "a Keras loss name (e.g. mse, huber) or {_target_: keras.losses.SomeLoss, ...}")
        names = metric_names(self.metrics)
        require(len(set(names)) == len(names) and "loss" not in names and "learning_rate" not in names, "metrics",
                list(self.metrics), "metrics with distinct names other than loss and learning_rate")
        require(self.num_outputs is None or self.num_outputs >= 1, "num_outputs", self.num_outputs,
                "null (inferred) or an integer >= 1")


@dataclass(kw_only=True)
class _Smoothing:
    label_smoothing: float = 0.0  # the targets move this far towards uniform (classification) or 0.5 (0/1 labels)

    def check_smoothing(self) -> None:
        require(0 <= self.label_smoothing < 1, "label_smoothing", self.label_smoothing, "a number in [0, 1)")


@schema("problem", "classification")
@dataclass(kw_only=True)
class ClassificationConf(_Smoothing, ProblemConf):
    _target_: str = "tftrain.problems.Classification"
    loss: Any = "sparse_categorical_crossentropy"
    metrics: List[Any] = field(default_factory=lambda: ["accuracy"])  # also top_5_accuracy (any k), ...

    def __post_init__(self):
        super().__post_init__()
        self.check_smoothing()


@schema("problem", "binary")
@dataclass(kw_only=True)
class BinaryConf(_Smoothing, ProblemConf):
    _target_: str = "tftrain.problems.Binary"
    loss: Any = "binary_crossentropy"  # or binary_focal_crossentropy
    metrics: List[Any] = field(default_factory=lambda: ["accuracy", "auc"])  # also precision, recall

    def __post_init__(self):
        super().__post_init__()
        self.check_smoothing()


@schema("problem", "multilabel")
@dataclass(kw_only=True)
class MultilabelConf(_Smoothing, ProblemConf):
    _target_: str = "tftrain.problems.Multilabel"
    loss: Any = "binary_crossentropy"
    metrics: List[Any] = field(default_factory=lambda: ["accuracy", "auc"])  # accuracy over every label; auc per label, averaged

    def __post_init__(self):
        super().__post_init__()
        self.check_smoothing()


@schema("problem", "regression")
@dataclass(kw_only=True)
class RegressionConf(ProblemConf):
    _target_: str = "tftrain.problems.Regression"
    loss: Any = "mse"  # or mae, huber, log_cosh, ...
    metrics: List[Any] = field(default_factory=lambda: ["mae", "rmse"])  # also mse, r2, mape


def metric_names(metrics) -> list[str]:
    """The names the metrics are logged under (a `{_target_: ...}` entry: its `name`, else its class)."""
    out = []
    for m in metrics:
        if isinstance(m, str):
            out.append(m)
        elif isinstance(m, dict):
            out.append(str(m.get("name") or str(m.get("_target_", "metric")).rsplit(".", 1)[-1].lower()))
        else:
            out.append(str(m))
    return out


def logged(cfg) -> list[str]:
    """What each epoch logs: loss, every metric, their val_ versions, and the learning rate."""
    names = ["loss", *metric_names(cfg.problem.get("metrics") or [])]
    return [*names, *(f"val_{n}" for n in names), "learning_rate"]


def default_objective(metrics) -> str:
    """trainer.objective when null: the problem's first metric on validation (val_loss without one)."""
    names = metric_names(metrics or [])
    return f"val_{names[0]}" if names else "val_loss"


def direction(objective, mode, metrics) -> str:
    """"maximize" or "minimize" for trainer.objective/objective_mode (nulls resolved as validate
    resolves them); the `tftrain_direction` resolver gives it to sweepers while Hydra composes."""
    objective = objective or default_objective(metrics)
    return f"{_mode(mode, objective)}imize"


def _mode(mode, monitor: str):
    """`mode` with auto/null resolved from the monitored metric's direction."""
    return mode_of(monitor) if mode in (None, "auto") else mode


def check_outputs(cfg) -> None:
    """The objective and the monitors name metrics the run logs; fill in their modes (and the
    objective, and best_checkpoint's monitor, when null). Mutates the validated `cfg`."""
    names = ["loss", *metric_names(cfg.problem.get("metrics") or [])]
    epoch_logs = logged(cfg)
    t = cfg.trainer
    objectives = [f"{p}{n}" for p in PREFIXES for n in names]
    if t.objective is None:
        t.objective = default_objective(names[1:])
    if t.objective not in objectives:
        raise ConfigError("trainer.objective", t.objective, f"a metric the run reports: one of {objectives}",
                          "choose one of them, or add the metric to problem.metrics")
    t.objective_mode = _mode(t.objective_mode, t.objective)
    cb = cfg.callbacks
    if cb.best_checkpoint.monitor is None:
        cb.best_checkpoint.monitor = t.objective if t.objective.startswith("val_") else "val_loss"
    for key, node in (("callbacks.early_stopping", cb.early_stopping), ("callbacks.best_checkpoint", cb.best_checkpoint)):
        if node.monitor not in epoch_logs:
            raise ConfigError(f"{key}.monitor", node.monitor, f"a metric logged at each epoch end: one of {epoch_logs}",
                              f"choose one of them (problem.metrics: {names[1:]})")
        node.mode = _mode(node.mode, node.monitor)
    if "monitor" in cfg.schedule:  # plateau
        if cfg.schedule.monitor not in epoch_logs:
            raise ConfigError("schedule.monitor", cfg.schedule.monitor, f"a metric logged at each epoch end: one of "
                              f"{epoch_logs}", "choose one of them")
        cfg.schedule.mode = _mode(cfg.schedule.mode, cfg.schedule.monitor)
