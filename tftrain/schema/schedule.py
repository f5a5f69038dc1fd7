"""Schemas of the `schedule` group.

Durations are in epochs (fractions allowed); the targets (tftrain/schedules/build.py) convert
them to steps and check what needs the run length (warmup shorter than the run, milestones
inside it). Rates default to `optimizer.lr` where a field is null. `warmup_epochs` and
`warmup_start_factor` are tftrain's, for every option: a linear warmup around the schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import MISSING

from tftrain.errors import require
from tftrain.schema.registry import schema

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


@dataclass(kw_only=True)
class ScheduleConf:
    _target_: str = MISSING
    warmup_epochs: float = 0.0  # linear warmup first; the schedule then runs over the remaining epochs
    warmup_start_factor: float = 0.1  # the warmup starts at this fraction of the schedule's first rate

    def __post_init__(self):
        require(math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0, "warmup_epochs",
                self.warmup_epochs, "a number of epochs >= 0")
        require(0 <= self.warmup_start_factor <= 1, "warmup_start_factor", self.warmup_start_factor,
                "a number in [0, 1]")


@schema("schedule", "constant")
@dataclass(kw_only=True)
class ConstantConf(ScheduleConf):
    _target_: str = "tftrain.schedules.build.constant"


@schema("schedule", "step")
@dataclass(kw_only=True)
class StepConf(ScheduleConf):
    _target_: str = "tftrain.schedules.build.step"
    step_size: float = 10.0  # epochs between decays (fractions allowed)
    gamma: float = 0.1  # factor applied at each decay

    def __post_init__(self):
        super().__post_init__()
        _positive("step_size", self.step_size, "a number of epochs > 0")
        _positive("gamma", self.gamma)


@schema("schedule", "multistep")
@dataclass(kw_only=True)
class MultistepConf(ScheduleConf):
    _target_: str = "tftrain.schedules.build.multistep"
    milestones: List[float] = field(default_factory=lambda: [15.0, 25.0])  # epochs (from the end of warmup), increasing, inside the run
    gamma: float = 0.1  # factor applied at each milestone

    def __post_init__(self):
        super().__post_init__()
        m = list(self.milestones)
        require(all(math.isfinite(x) and x > 0 for x in m) and all(a < b for a, b in zip(m, m[1:])),
                "milestones", m, "a list of strictly increasing epochs > 0, e.g. [15, 25]")
        _positive("gamma", self.gamma)


@schema("schedule", "exponential")
@dataclass(kw_only=True)
class ExponentialConf(ScheduleConf):
    _target_: str = "tftrain.schedules.build.exponential"
    gamma: float = 0.9  # factor per epoch

    def __post_init__(self):
        super().__post_init__()
        _positive("gamma", self.gamma)


@schema("schedule", "polynomial")
@dataclass(kw_only=True)
class PolynomialConf(ScheduleConf):
    _target_: str = "tftrain.schedules.build.polynomial"
    power: float = 1.0  # 1: linear decay
    min_lr: float = 0.0  # the rate reached at the end of the run

    def __post_init__(self):
        super().__post_init__()
        _positive("power", self.power)
        _min_lr(self.min_lr)


@schema("schedule", "cosine")
@dataclass(kw_only=True)
class CosineConf(ScheduleConf):
    _target_: str = "tftrain.schedules.build.cosine"
    min_lr: float = 0.0  # the rate approached at the end of the run

    def __post_init__(self):
        super().__post_init__()
        _min_lr(self.min_lr)


@schema("schedule", "cosine_restarts")
@dataclass(kw_only=True)
class CosineRestartsConf(ScheduleConf):
    _target_: str = "tftrain.schedules.build.cosine_restarts"
    t0: float = 10.0  # epochs of the first cycle (fractions allowed)
    t_mult: int = 2  # integer >= 1: each cycle is t_mult times longer than the previous one
    min_lr: float = 0.0  # the rate approached at the end of each cycle

    def __post_init__(self):
        super().__post_init__()
        _positive("t0", self.t0, "a number of epochs > 0")
        require(self.t_mult >= 1, "t_mult", self.t_mult, "an integer >= 1")
        _min_lr(self.min_lr)


@schema("schedule", "cyclic")
@dataclass(kw_only=True)
class CyclicConf(ScheduleConf):
    _target_: str = "tftrain.schedules.build.cyclic"
    min_lr: float = 0.0001  # the base (lowest) rate: the cycle's start, not optimizer.lr
    max_lr: Optional[float] = None  # the peak; null: optimizer.lr
    step_size: float = 5.0  # epochs from min_lr to max_lr (half a cycle; fractions allowed)
    mode: str = "triangular"  # triangular | triangular2 (amplitude halves each cycle) | exp_range (amplitude * gamma**step)
    gamma: float = 1.0  # per step, exp_range only (e.g. 0.9999)

    def __post_init__(self):
        super().__post_init__()
        _min_lr(self.min_lr)
        require(self.max_lr is None or (math.isfinite(self.max_lr) and self.max_lr > self.min_lr), "max_lr",
                self.max_lr, f"null (optimizer.lr) or a learning rate > min_lr={self.min_lr}")
        _positive("step_size", self.step_size, "a number of epochs > 0")
        _one_of("mode", self.mode, CYCLIC_MODES)
        _positive("gamma", self.gamma)


@schema("schedule", "onecycle")
@dataclass(kw_only=True)
class OnecycleConf(ScheduleConf):
    _target_: str = "tftrain.schedules.build.onecycle"
    max_lr: Optional[float] = None  # the peak; null: optimizer.lr
    pct_start: float = 0.3  # fraction of the run spent increasing the rate
    div_factor: float = 25.0  # initial rate = max_lr / div_factor
    final_div_factor: float = 1e4  # final rate = initial rate / final_div_factor
    anneal: str = "cos"  # cos | linear
    three_phase: bool = False  # true: up, back down to the initial rate symmetrically, then to the final rate

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


@schema("schedule", "plateau")
@dataclass(kw_only=True)
class PlateauConf(ScheduleConf):
    _target_: str = "tftrain.schedules.build.plateau"
    monitor: str = "val_loss"  # a metric logged at each epoch end, e.g. val_loss, val_accuracy, loss
    mode: str = "auto"  # auto (from the metric) | min | max: whether lower or higher values of monitor are better
    factor: float = 0.1  # new rate = rate * factor
    patience: int = 5  # epochs without improvement tolerated before a reduction
    threshold: float = 1e-4  # smallest change that counts as an improvement
    threshold_mode: str = "rel"  # rel: relative to the best value | abs: absolute
    cooldown: int = 0  # epochs after a reduction during which no bad epochs are counted
    min_lr: float = 0.0  # the rate is never reduced below this

    def __post_init__(self):
        super().__post_init__()
        require(self.monitor != "", "monitor", self.monitor, "a logged metric, e.g. val_loss or val_accuracy")
        _one_of("mode", self.mode, ("auto", *PLATEAU_MODES))
        require(0 < self.factor < 1, "factor", self.factor, "a number in (0, 1)")
        require(self.patience >= 0, "patience", self.patience, "an integer number of epochs >= 0")
        require(math.isfinite(self.threshold) and self.threshold >= 0, "threshold", self.threshold, "a number >= 0")
        _one_of("threshold_mode", self.threshold_mode, THRESHOLD_MODES)
        require(self.cooldown >= 0, "cooldown", self.cooldown, "an integer number of epochs >= 0")
        _min_lr(self.min_lr)
