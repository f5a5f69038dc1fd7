"""The schedule options of the config: `build_for_run` and one target function per option.

This is the one place where durations in epochs become steps (`round(epochs * steps_per_epoch)`).
Each option's YAML names its target here (`_target_: tftrain.schedules.build.cosine`); the
target takes the `Run` it is built for and the option's own keys, and returns the main schedule;
`build_for_run` adds the warmup around it. Out-of-range values raise `ScheduleArgumentError`
naming the option's key (the config layer reports it as `schedule.<key>`).
"""

from __future__ import annotations

from dataclasses import dataclass

from tftrain.schedules._base import ScheduleArgumentError, require
from tftrain.schedules.compose import Warmup
from tftrain.schedules.cyclic import Cyclic, OneCycle
from tftrain.schedules.decay import Constant, Cosine, CosineRestarts, MultiStep, Polynomial, Step, WarmupStableDecay
from tftrain.schedules.plateau import Plateau


@dataclass(frozen=True)
class Run:
    """What a schedule is built for: the base rate, the steps per epoch, and `steps`, the length
    of the schedule itself (the run minus its warmup)."""

    lr: float
    steps_per_epoch: int
    steps: int

    def to_steps(self, key: str, epochs: float) -> int:
        steps = round(epochs * self.steps_per_epoch)
        require(steps >= 1, key, epochs, f"at least one step: >= {1 / self.steps_per_epoch:.4g} epochs at "
                f"{self.steps_per_epoch} steps per epoch")
        return steps

    def milestones(self, epochs: list[float]) -> list[int]:
        steps = [round(m * self.steps_per_epoch) for m in epochs]
        require(all(0 < s < self.steps for s in steps) and all(a < b for a, b in zip(steps, steps[1:])),
                "milestones", list(epochs),
                f"strictly increasing epochs inside the schedule's {self.steps / self.steps_per_epoch:g} epochs "
                f"(trainer.epochs minus schedule.warmup_epochs, counted from the end of warmup), at least one "
                f"step ({1 / self.steps_per_epoch:.4g} epochs) apart; drop the milestones the run never reaches "
                "or raise trainer.epochs")
        return steps

    def max_lr(self, max_lr: float | None) -> float:
        """`max_lr`, or the base rate where it is None."""
        return self.lr if max_lr is None else max_lr


def build_for_run(target, *, lr: float, epochs: int, steps_per_epoch: int, warmup_epochs: float = 0.0,
                  warmup_start_factor: float = 0.1, **keys):
    """`target(run, **keys)` for a run of `epochs` epochs of `steps_per_epoch` steps from the base
    rate `lr`, inside a linear `Warmup` of `warmup_epochs` when that is > 0 (the schedule then
    runs over the remaining epochs, its own step count starting at 0).

    >>> s = build_for_run(cosine, lr=0.1, epochs=10, steps_per_epoch=100, warmup_epochs=1, min_lr=0.0)
    >>> type(s).__name__, s.warmup_steps, type(s.schedule).__name__, s.schedule.decay_steps
    ('Warmup', 100, 'Cosine', 900)
    """
    if not (isinstance(steps_per_epoch, int) and steps_per_epoch >= 1):
        raise ValueError(f"steps_per_epoch must be an integer >= 1. Received: steps_per_epoch={steps_per_epoch!r}")
    run_steps, warmup_steps = epochs * steps_per_epoch, round(warmup_epochs * steps_per_epoch)
    require(warmup_epochs == 0 or warmup_steps >= 1, "warmup_epochs", warmup_epochs,
            f"0 or at least one step: >= {1 / steps_per_epoch:.4g} epochs at {steps_per_epoch} steps per epoch")
    require(warmup_steps < run_steps, "warmup_epochs", warmup_epochs,
            f"fewer epochs than the run (trainer.epochs={epochs}), leaving the schedule at least one step; "
            f"lower schedule.warmup_epochs below {epochs} or raise trainer.epochs")
    schedule = target(Run(float(lr), steps_per_epoch, run_steps - warmup_steps), **keys)
    return Warmup(schedule, warmup_steps, warmup_start_factor) if warmup_steps > 0 else schedule


# ---------------------------------------------------------------- the options' targets


def constant(run: Run):
    return Constant(run.lr)


def step(run: Run, *, step_size: float, gamma: float):
    return Step(run.lr, run.to_steps("step_size", step_size), gamma)


def multistep(run: Run, *, milestones: list[float], gamma: float):
    return MultiStep(run.lr, run.milestones(milestones), gamma)


def exponential(run: Run, *, gamma: float):
    """PyTorch's ExponentialLR stepped once per epoch: a staircase in steps."""
    return Step(run.lr, run.steps_per_epoch, gamma)


def polynomial(run: Run, *, power: float, min_lr: float):
    return Polynomial(run.lr, run.steps, power, min_lr)


def cosine(run: Run, *, min_lr: float):
    return Cosine(run.lr, run.steps, min_lr)


def cosine_restarts(run: Run, *, t0: float, t_mult: int, min_lr: float):
    return CosineRestarts(run.lr, run.to_steps("t0", t0), t_mult, min_lr)


def cyclic(run: Run, *, min_lr: float, max_lr: float | None, step_size: float, mode: str, gamma: float):
    return Cyclic(min_lr, run.max_lr(max_lr), run.to_steps("step_size", step_size), mode, gamma)


def onecycle(run: Run, *, max_lr: float | None, pct_start: float, div_factor: float, final_div_factor: float,
             anneal: str, three_phase: bool):
    return OneCycle(run.max_lr(max_lr), run.steps, pct_start, anneal, div_factor, final_div_factor, three_phase)


def plateau(run: Run, *, monitor: str, mode: str, factor: float, patience: int, threshold: float,
            threshold_mode: str, cooldown: int, min_lr: float):
    return Plateau(run.lr, monitor, mode, factor, patience, threshold, threshold_mode, cooldown, min_lr)


def wsd(run: Run, *, decay_fraction: float, final_lr_factor: float, shape: str):
    return WarmupStableDecay(run.lr, run.steps, decay_fraction, final_lr_factor, shape)


__all__ = ["Run", "build_for_run", "ScheduleArgumentError", "constant", "step", "multistep", "exponential",
           "polynomial", "cosine", "cosine_restarts", "cyclic", "onecycle", "plateau", "wsd"]
