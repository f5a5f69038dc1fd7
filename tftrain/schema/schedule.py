"""Schemas of the `schedule` group.

Durations are in epochs (fractions allowed); the targets (tftrain/schedules/build.py) convert
them to steps and check what needs the run length (warmup shorter than the run, milestones
inside it). Rates default to `optimizer.lr` where a field is null. `warmup_epochs` and
`warmup_start_factor` are tftrain's, for every option: a linear warmup around the schedule.

The schemas hold each key's type, default and meaning; the ranges are checked once, by the
schedule classes (tftrain.schedules, Keras-style argument checks), and the factory
(tftrain.config.factory.build_schedule) reports them as `schedule.<key>`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import MISSING

from tftrain.schema.registry import schema


@dataclass(kw_only=True)
class ScheduleConf:
    _target_: str = MISSING
    warmup_epochs: float = 0.0  # linear warmup first; the schedule then runs over the remaining epochs
    warmup_start_factor: float = 0.1  # the warmup starts at this fraction of the schedule's first rate


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


@schema("schedule", "multistep")
@dataclass(kw_only=True)
class MultistepConf(ScheduleConf):
    _target_: str = "tftrain.schedules.build.multistep"
    milestones: List[float] = field(default_factory=lambda: [15.0, 25.0])  # epochs (from the end of warmup), increasing, inside the run
    gamma: float = 0.1  # factor applied at each milestone


@schema("schedule", "exponential")
@dataclass(kw_only=True)
class ExponentialConf(ScheduleConf):
    _target_: str = "tftrain.schedules.build.exponential"
    gamma: float = 0.9  # factor per epoch


@schema("schedule", "polynomial")
@dataclass(kw_only=True)
class PolynomialConf(ScheduleConf):
    _target_: str = "tftrain.schedules.build.polynomial"
    power: float = 1.0  # 1: linear decay
    min_lr: float = 0.0  # the rate reached at the end of the run


@schema("schedule", "cosine")
@dataclass(kw_only=True)
class CosineConf(ScheduleConf):
    _target_: str = "tftrain.schedules.build.cosine"
    min_lr: float = 0.0  # the rate approached at the end of the run


@schema("schedule", "cosine_restarts")
@dataclass(kw_only=True)
class CosineRestartsConf(ScheduleConf):
    _target_: str = "tftrain.schedules.build.cosine_restarts"
    t0: float = 10.0  # epochs of the first cycle (fractions allowed)
    t_mult: int = 2  # integer >= 1: each cycle is t_mult times longer than the previous one
    min_lr: float = 0.0  # the rate approached at the end of each cycle


@schema("schedule", "cyclic")
@dataclass(kw_only=True)
class CyclicConf(ScheduleConf):
    _target_: str = "tftrain.schedules.build.cyclic"
    min_lr: float = 0.0001  # the base (lowest) rate: the cycle's start, not optimizer.lr
    max_lr: Optional[float] = None  # the peak; null: optimizer.lr
    step_size: float = 5.0  # epochs from min_lr to max_lr (half a cycle; fractions allowed)
    mode: str = "triangular"  # triangular | triangular2 (amplitude halves each cycle) | exp_range (amplitude * gamma**step)
    gamma: float = 1.0  # per step, exp_range only (e.g. 0.9999)


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



@schema("schedule", "wsd")
@dataclass(kw_only=True)
class WsdConf(ScheduleConf):
    _target_: str = "tftrain.schedules.build.wsd"
    decay_fraction: float = 0.2  # the last fraction of the schedule (the run after its warmup) spent decaying, in (0, 1]
    final_lr_factor: float = 0.0  # the rate at the end of the run, as a fraction of optimizer.lr
    shape: str = "1-sqrt"  # linear | cosine | 1-sqrt (lr * (1 - sqrt(p)), Hägele et al. 2024's best)
