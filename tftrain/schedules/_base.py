"""What every tftrain schedule shares: float64 arithmetic, argument checks, the state protocol."""

from __future__ import annotations

import math
import numbers

import keras
import tensorflow as tf

from tftrain.errors import ArgumentError


class ScheduleArgumentError(ArgumentError):
    """A schedule argument is out of range. Carries the argument's name so the config layer can
    report the config key it came from."""


def require(ok: bool, arg: str, value, requirement: str) -> None:
    """Keras-style argument check: raise ScheduleArgumentError unless `ok`."""
    if not ok:
        raise ScheduleArgumentError(arg, value, requirement)


def is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def number(x):
    """`x` as a JSON-friendly Python number (numpy scalars and 2.0-style floats included)."""
    return int(x) if isinstance(x, numbers.Integral) or float(x).is_integer() else float(x)


def rate_of(schedule, t):
    """Rate of any LearningRateSchedule at float64 step(s) `t`, as float64.

    tftrain's schedules are evaluated in float64 without an intermediate float32 rounding; Keras'
    own schedules compute in their own dtype and are only cast.
    """
    if isinstance(schedule, Schedule):
        return schedule.rate(t)
    return tf.cast(schedule(t), tf.float64)


def variables_of(schedule) -> list:
    return list(getattr(schedule, "variables", []))


def forward_epoch_end(schedule, epoch: int, logs: dict) -> None:
    if hasattr(schedule, "on_epoch_end"):
        schedule.on_epoch_end(epoch, logs)


class Schedule(keras.optimizers.schedules.LearningRateSchedule):
    """Base of tftrain's schedules.

    Subclasses implement `rate(t)`: the rate at step(s) `t` (a float64 tensor of any shape) as a
    float64 tensor. Computing in float64 and rounding once to float32 at the end keeps the rate
    within 2**-24 (relative) of the exact value, also near zero (e.g. `1 + cos(x)` for x near pi
    cancels catastrophically in float32).

    State protocol: `variables` lists the tf.Variables that hold the schedule's state (empty for
    schedules that are pure functions of the step); a training loop checkpoints and restores them.
    `on_epoch_end(epoch, logs)` is called on the host after each epoch's validation; only
    adaptive schedules do anything with it.
    """

    def __call__(self, step):
        with tf.name_scope(type(self).__name__):
            t = tf.cast(keras.ops.convert_to_tensor(step), tf.float64)
            return tf.cast(self.rate(t), tf.float32)

    def rate(self, t):
        raise NotImplementedError(f"{type(self).__name__} must implement rate(t)")

    @property
    def variables(self) -> list:
        return []

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        """Stateless schedules ignore epoch ends."""

    def get_config(self):
        raise NotImplementedError(f"{type(self).__name__} must implement get_config()")
