"""Schemas of the `schedule` group (see tftrain/schema/__init__.py for the conventions).

Durations are in epochs (fractions allowed); `tftrain.schedules.build_schedule` converts them to
steps and checks what needs the run length (warmup shorter than the run, milestones inside it).
Rates default to `optimizer.lr` where a field is null.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional

from tftrain.errors import require

CYCLIC_MODES = ("triangular", "triangular2", "exp_range")
ANNEALS = ("cos", "linear")
PLATEAU_MODES = ("min", "max")
THRESHOLD_MODES = ("rel", "abs")


def _positive(key: str, value, what: str = "a number > 0") -> None:
    require(math.isfinite(value) and value > 0, key, value, what)


def _min_lr(value) -> None:
    require(math.isfinite(value) and value >= 0, "min_lr", value, "a learning rate >= 0")


def _one_of(key: str, value, allowed) -> None:
    require(value in allowed, key, value, f"one of {list(allowed)}")


@dataclass
class ScheduleConf:
    name: str = "constant"
    warmup_epochs: float = 0.0
    warmup_start_factor: float = 0.1

    def __post_init__(self):
        require(math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0, "warmup_epochs",
                self.warmup_epochs, "a number of epochs >= 0")
        require(0 <= self.warmup_start_factor <= 1, "warmup_start_factor", self.warmup_start_factor,
                "a number in [0, 1]")


@dataclass
class ConstantConf(ScheduleConf):
    name: str = "constant"


@dataclass
class StepConf(ScheduleConf):
    name: str = "step"
    step_size: float = 10.0  # epochs
    gamma: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        _positive("step_size", self.step_size, "a number of epochs > 0")
        _positive("gamma", self.gamma)


@dataclass
class MultistepConf(ScheduleConf):
    name: str = "multistep"
    milestones: List[float] = field(default_factory=lambda: [15.0, 25.0])  # epochs
    gamma: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        m = list(self.milestones)
        require(all(math.isfinite(x) and x > 0 for x in m) and all(a < b for a, b in zip(m, m[1:])),
                "milestones", m, "a list of strictly increasing epochs > 0, e.g. [15, 25]")
        _positive("gamma", self.gamma)


@dataclass
class ExponentialConf(ScheduleConf):
    name: str = "exponential"
    gamma: float = 0.9  # per epoch

    def __post_init__(self):
        super().__post_init__()
        _positive("gamma", self.gamma)


@dataclass
class PolynomialConf(ScheduleConf):
    name: str = "polynomial"
    power: float = 1.0
    min_lr: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        _positive("power", self.power)
        _min_lr(self.min_lr)


@dataclass
class CosineConf(ScheduleConf):
    name: str = "cosine"
    min_lr: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        _min_lr(self.min_lr)


@dataclass
class CosineRestartsConf(ScheduleConf):
    name: str = "cosine_restarts"
    t0: float = 10.0  # epochs
    t_mult: int = 2
    min_lr: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        _positive("t0", self.t0, "a number of epochs > 0")
        require(self.t_mult >= 1, "t_mult", self.t_mult, "an integer >= 1")
        _min_lr(self.min_lr)


@dataclass
class CyclicConf(ScheduleConf):
    name: str = "cyclic"
    min_lr: float = 0.0001
    max_lr: Optional[float] = None  # null: optimizer.lr
    step_size: float = 5.0  # epochs, half a cycle
    mode: str = "triangular"
    gamma: float = 1.0  # per step, exp_range only

    def __post_init__(self):
        super().__post_init__()
        _min_lr(self.min_lr)
        require(self.max_lr is None or (math.isfinite(self.max_lr) and self.max_lr > self.min_lr), "max_lr",
                self.max_lr, f"null (optimizer.lr) or a learning rate > min_lr={self.min_lr}")
        _positive("step_size", self.step_size, "a number of epochs > 0")
        _one_of("mode", self.mode, CYCLIC_MODES)
        _positive("gamma", self.gamma)


@dataclass
class OnecycleConf(ScheduleConf):
    name: str = "onecycle"
    max_lr: Optional[float] = None  # null: optimizer.lr
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    anneal: str = "cos"
    three_phase: bool = False

    def __post_init__(self):
        super().__post_init__()
        require(self.max_lr is None or (math.isfinite(self.max_lr) and self.max_lr > 0), "max_lr", self.max_lr,
                "null (optimizer.lr) or a learning rate > 0")
        require(0 < self.pct_start < 1, "pct_start", self.pct_start, "a fraction in (0, 1)")
        require(not self.three_phase or self.pct_start <= 0.5, "pct_start", self.pct_start,
                "a fraction in (0, 0.5] with three_phase=true (up, down, then a last phase)")
        _positive("div_factor", self.div_factor)
        _positive("final_div_factor", self.final_div_factor)
        _one_of("anneal", self.anneal, ANNEALS)


@dataclass
class WarmupConf(ScheduleConf):
    name: str = "warmup"
    warmup_epochs: float = 2.0
    min_lr: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        _min_lr(self.min_lr)


@dataclass
class PlateauConf(ScheduleConf):
    name: str = "plateau"
    monitor: str = "val_loss"
    mode: str = "min"
    factor: float = 0.1
    patience: int = 5  # epochs
    threshold: float = 1e-4
    threshold_mode: str = "rel"
    cooldown: int = 0  # epochs
    min_lr: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        require(self.monitor != "", "monitor", self.monitor, "a logged metric, e.g. val_loss or val_accuracy")
        _one_of("mode", self.mode, PLATEAU_MODES)
        require(0 < self.factor < 1, "factor", self.factor, "a number in (0, 1)")
        require(self.patience >= 0, "patience", self.patience, "an integer number of epochs >= 0")
        require(math.isfinite(self.threshold) and self.threshold >= 0, "threshold", self.threshold, "a number >= 0")
        _one_of("threshold_mode", self.threshold_mode, THRESHOLD_MODES)
        require(self.cooldown >= 0, "cooldown", self.cooldown, "an integer number of epochs >= 0")
        _min_lr(self.min_lr)


SCHEMAS = {"schedule": {
    "constant": ConstantConf,
    "step": StepConf,
    "multistep": MultistepConf,
    "exponential": ExponentialConf,
    "polynomial": PolynomialConf,
    "cosine": CosineConf,
    "cosine_restarts": CosineRestartsConf,
    "cyclic": CyclicConf,
    "onecycle": OnecycleConf,
    "warmup": WarmupConf,
    "plateau": PlateauConf,
}}
