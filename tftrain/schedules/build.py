"""The configured schedule from a composed config: the one place where epochs become steps."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Callable

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tftrain.errors import ConfigError
from tftrain.schedules._base import ScheduleArgumentError
from tftrain.schedules.compose import Warmup
from tftrain.schedules.cyclic import Cyclic, OneCycle
from tftrain.schedules.decay import Constant, Cosine, CosineRestarts, MultiStep, Polynomial, Step
from tftrain.schedules.plateau import Plateau
from tftrain.schema.schedule import SCHEMAS, ScheduleConf

# Schedule arguments that do not come from a `schedule.<same name>` key.
_CONFIG_KEYS = {"lr": "optimizer.lr", "value": "optimizer.lr", "decay_steps": "trainer.epochs",
                "total_steps": "trainer.epochs", "warmup_steps": "schedule.warmup_epochs",
                "start_factor": "schedule.warmup_start_factor"}


@dataclass
class _Run:
    """What the builders need: the option's typed config, the base rate, and step arithmetic."""

    conf: ScheduleConf
    lr: float
    steps_per_epoch: int
    steps: int  # length of the main schedule: the run minus the warmup

    def to_steps(self, key: str) -> int:
        epochs = getattr(self.conf, key)
        steps = round(epochs * self.steps_per_epoch)
        if steps < 1:
            raise ConfigError(f"schedule.{key}", epochs, f"at least one step: >= {1 / self.steps_per_epoch:.4g} "
                              f"epochs at {self.steps_per_epoch} steps per epoch")
        return steps

    def milestones(self) -> list[int]:
        epochs = list(self.conf.milestones)
        steps = [round(m * self.steps_per_epoch) for m in epochs]
        if not all(0 < s < self.steps for s in steps) or any(a >= b for a, b in zip(steps, steps[1:])):
            raise ConfigError("schedule.milestones", epochs,
                              f"strictly increasing epochs inside the schedule's {self.steps / self.steps_per_epoch:g} "
                              f"epochs (trainer.epochs minus schedule.warmup_epochs, counted from the end of warmup), "
                              f"at least one step ({1 / self.steps_per_epoch:.4g} epochs) apart",
                              "drop the milestones the run never reaches or raise trainer.epochs")
        return steps

    def min_lr(self) -> float:
        if self.conf.min_lr > self.lr:
            raise ConfigError("schedule.min_lr", self.conf.min_lr, f"a learning rate in [0, optimizer.lr={self.lr}]",
                              "lower schedule.min_lr or raise optimizer.lr")
        return self.conf.min_lr

    def max_lr(self, above: float = 0.0) -> float:
        """`schedule.max_lr`, or optimizer.lr where it is null; it must exceed `above`."""
        peak = self.lr if self.conf.max_lr is None else self.conf.max_lr
        if peak <= above:
            raise ConfigError("schedule.max_lr", self.conf.max_lr,
                              f"a learning rate > schedule.min_lr={above} (null means optimizer.lr={self.lr})",
                              "raise schedule.max_lr (or optimizer.lr when it is null) above schedule.min_lr")
        return peak


# option -> builder of the main schedule (the warmup, if any, is added around it).
BUILDERS: dict[str, Callable[[_Run], object]] = {
    "constant": lambda r: Constant(r.lr),
    "step": lambda r: Step(r.lr, r.to_steps("step_size"), r.conf.gamma),
    "multistep": lambda r: MultiStep(r.lr, r.milestones(), r.conf.gamma),
    # PyTorch's ExponentialLR stepped once per epoch: a staircase in steps.
    "exponential": lambda r: Step(r.lr, r.steps_per_epoch, r.conf.gamma),
    "polynomial": lambda r: Polynomial(r.lr, r.steps, r.conf.power, r.min_lr()),
    "cosine": lambda r: Cosine(r.lr, r.steps, r.min_lr()),
    "cosine_restarts": lambda r: CosineRestarts(r.lr, r.to_steps("t0"), r.conf.t_mult, r.min_lr()),
    "cyclic": lambda r: Cyclic(r.conf.min_lr, r.max_lr(above=r.conf.min_lr), r.to_steps("step_size"),
                               r.conf.mode, r.conf.gamma),
    "onecycle": lambda r: OneCycle(r.max_lr(), r.steps, r.conf.pct_start, r.conf.anneal, r.conf.div_factor,
                                   r.conf.final_div_factor, r.conf.three_phase),
    "warmup": lambda r: Cosine(r.lr, r.steps, r.min_lr()),
    "plateau": lambda r: Plateau(r.lr, r.conf.monitor, r.conf.mode, r.conf.factor, r.conf.patience,
                                 r.conf.threshold, r.conf.threshold_mode, r.conf.cooldown, r.min_lr()),
}


def _schedule_conf(node) -> ScheduleConf:
    """The `schedule` node as its option's typed dataclass (range checks included)."""
    options = SCHEMAS["schedule"]
    name = node.get("name")
    if name not in options:
        raise ConfigError("schedule.name", name, f"one of {sorted(options)}",
                          "choose an option with `schedule=<option>`")
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(options[name]), node))
    except ConfigError as e:
        raise e.under("schedule") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"schedule.{e.full_key}", getattr(e, "value", None),
                          f"a key of the {name} schedule with a value of its type") from None


def build_schedule(cfg, steps_per_epoch: int):
    """The LearningRateSchedule that `cfg.schedule` describes, for a run of `cfg.trainer.epochs`
    epochs of `steps_per_epoch` steps from the base rate `cfg.optimizer.lr`.

    Durations in the config are epochs and become `round(epochs * steps_per_epoch)` steps here.
    With `schedule.warmup_epochs > 0` the result is a `Warmup` around the option's schedule,
    which then runs over the remaining epochs with its own step count. Bad values raise
    `ConfigError` naming the key (e.g. `schedule.milestones`).

    >>> import tftrain
    >>> cfg = tftrain.compose(["schedule=cosine", "schedule.warmup_epochs=1", "trainer.epochs=10"])
    >>> s = build_schedule(cfg, steps_per_epoch=100)
    >>> type(s).__name__, s.warmup_steps, type(s.schedule).__name__, s.schedule.decay_steps
    ('Warmup', 100, 'Cosine', 900)
    """
    if not (isinstance(steps_per_epoch, numbers.Integral) and steps_per_epoch >= 1):
        raise ValueError(f"steps_per_epoch must be an integer >= 1. Received: steps_per_epoch={steps_per_epoch!r}")
    spe = int(steps_per_epoch)
    conf = _schedule_conf(cfg.schedule)
    lr, epochs = float(cfg.optimizer.lr), int(cfg.trainer.epochs)
    run_steps, warmup_steps = epochs * spe, round(conf.warmup_epochs * spe)
    if conf.warmup_epochs > 0 and warmup_steps < 1:
        raise ConfigError("schedule.warmup_epochs", conf.warmup_epochs,
                          f"0 or at least one step: >= {1 / spe:.4g} epochs at {spe} steps per epoch")
    if warmup_steps >= run_steps:
        raise ConfigError("schedule.warmup_epochs", conf.warmup_epochs,
                          f"fewer epochs than the run (trainer.epochs={epochs}), leaving the schedule at least "
                          "one step",
                          f"lower schedule.warmup_epochs below {epochs} or raise trainer.epochs")
    run = _Run(conf, lr, spe, run_steps - warmup_steps)
    try:
        schedule = BUILDERS[conf.name](run)
        if warmup_steps > 0:
            schedule = Warmup(schedule, warmup_steps, conf.warmup_start_factor)
    except ScheduleArgumentError as e:
        key = _CONFIG_KEYS.get(e.arg, f"schedule.{e.arg}")
        value = {"optimizer.lr": lr, "trainer.epochs": epochs}.get(key, getattr(conf, key.split(".", 1)[1], e.value))
        raise ConfigError(key, value, f"a value giving {e.arg} {e.requirement} at {spe} steps per epoch "
                          f"(received {e.arg}={e.value!r})") from None
    return schedule
