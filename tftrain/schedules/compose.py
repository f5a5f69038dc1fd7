"""Schedules made of schedules: warmup, sequencing at boundaries, scaling.

Each accepts any `keras.optimizers.schedules.LearningRateSchedule`, forwards `on_epoch_end` to
its children and lists their `variables` (children first, in order), so adaptive schedules
such as `Plateau` keep working and checkpointing inside them.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tftrain.schedules._base import Schedule, forward_epoch_end, is_number, number, rate_of, require, variables_of


def _check_schedule(arg: str, value) -> None:
    require(isinstance(value, keras.optimizers.schedules.LearningRateSchedule), arg, value,
            "a keras.optimizers.schedules.LearningRateSchedule")


def _serialize(schedule):
    return keras.saving.serialize_keras_object(schedule)


def _deserialize(config):
    return keras.saving.deserialize_keras_object(config)


class _Wrapper(Schedule):
    """A schedule around one other (`self.schedule`): exposes its state and forwards epoch ends.

    Adaptive children (plateau) watch the metric during a warmup too: a reduction then lowers
    the warmup's target."""

    @property
    def variables(self) -> list:
        return variables_of(self.schedule)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        forward_epoch_end(self.schedule, epoch, logs)

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "schedule": _deserialize(config["schedule"])})


@keras.saving.register_keras_serializable(package="tftrain")
class Warmup(_Wrapper):
    """Linear warmup, then `schedule` with its own step counter starting at 0 (PyTorch's LinearLR
    followed by the schedule under SequentialLR):

    `target * (start_factor + (1 - start_factor) * t / W)` for `t < W` (W = `warmup_steps`,
    `target = schedule(0)`, the rate the schedule starts from), then `schedule(t - W)`.

    >>> from tftrain.schedules import Cosine, Warmup
    >>> s = Warmup(Cosine(0.1, decay_steps=100), warmup_steps=10, start_factor=0.1)
    >>> [round(float(s(t)), 6) for t in (0, 5, 10, 60, 110)]
    [0.01, 0.055, 0.1, 0.05, 0.0]
    """

    def __init__(self, schedule, warmup_steps, start_factor=0.1):
        _check_schedule("schedule", schedule)
        require(is_number(warmup_steps) and warmup_steps > 0, "warmup_steps", warmup_steps, "> 0")
        require(is_number(start_factor) and 0 <= start_factor <= 1, "start_factor", start_factor, "in [0, 1]")
        self.schedule, self.warmup_steps, self.start_factor = schedule, number(warmup_steps), float(start_factor)

    def rate(self, t):
        w, s = self.warmup_steps, self.start_factor
        target = rate_of(self.schedule, tf.zeros_like(t))
        warm = target * (s + (1.0 - s) * t / w)
        return tf.where(t < w, warm, rate_of(self.schedule, tf.maximum(t - w, 0.0)))

    def get_config(self):
        return {"schedule": _serialize(self.schedule), "warmup_steps": self.warmup_steps,
                "start_factor": self.start_factor}


@keras.saving.register_keras_serializable(package="tftrain")
class Join(Schedule):
    """Schedules one after another (PyTorch's SequentialLR): `schedules[0]` until step
    `boundaries[0]`, then `schedules[1]` with its own step counter from 0, and so on.

    `boundaries`: strictly increasing steps > 0, one fewer than `schedules`.

    >>> from tftrain.schedules import Constant, Cosine, Join
    >>> s = Join([Constant(0.1), Cosine(0.1, decay_steps=100)], boundaries=[50])
    >>> [round(float(s(t)), 6) for t in (0, 49, 50, 100, 150)]
    [0.1, 0.1, 0.1, 0.05, 0.0]
    """

    def __init__(self, schedules, boundaries):
        schedules, boundaries = list(schedules), list(boundaries)
        require(len(schedules) >= 1, "schedules", schedules, "a non-empty list of schedules")
        for i, schedule in enumerate(schedules):
            _check_schedule(f"schedules[{i}]", schedule)
        require(len(boundaries) == len(schedules) - 1, "boundaries", boundaries,
                f"a list of {len(schedules) - 1} steps (one fewer than schedules)")
        require(all(is_number(b) and b > 0 for b in boundaries)
                and all(a < b for a, b in zip(boundaries, boundaries[1:])),
                "boundaries", boundaries, "strictly increasing steps > 0")
        self.schedules, self.boundaries = schedules, [number(b) for b in boundaries]

    def rate(self, t):
        starts = [0.0, *self.boundaries]
        out = rate_of(self.schedules[-1], tf.maximum(t - starts[-1], 0.0))
        for i in reversed(range(len(self.boundaries))):
            out = tf.where(t < self.boundaries[i], rate_of(self.schedules[i], tf.maximum(t - starts[i], 0.0)), out)
        return out

    @property
    def variables(self) -> list:
        return [v for schedule in self.schedules for v in variables_of(schedule)]

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        for schedule in self.schedules:
            forward_epoch_end(schedule, epoch, logs)

    def get_config(self):
        return {"schedules": [_serialize(s) for s in self.schedules], "boundaries": list(self.boundaries)}

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "schedules": [_deserialize(s) for s in config["schedules"]]})


@keras.saving.register_keras_serializable(package="tftrain")
class Scaled(_Wrapper):
    """`schedule` multiplied by `scale`, held in a tf.Variable (`.scale`) that can be changed
    during training, e.g. by the linear scaling rule or after a divergence.

    `variables` lists the child's variables but not `scale`: whoever changes the scale owns it,
    and restoring a checkpoint (as a divergence recovery does) must not undo a reduction made
    since. `get_config` stores the scale's current value.

    >>> from tftrain.schedules import Constant, Scaled
    >>> s = Scaled(Constant(0.1), scale=2.0)
    >>> s.scale.assign(0.5)  # doctest: +ELLIPSIS
    <...>
    >>> round(float(s(0)), 6)
    0.05
    """

    def __init__(self, schedule, scale=1.0):
        _check_schedule("schedule", schedule)
        require(is_number(scale) and scale > 0, "scale", scale, "> 0")
        self.schedule = schedule
        self.scale = tf.Variable(float(scale), dtype=tf.float64, trainable=False, name="lr_scale")

    def rate(self, t):
        return rate_of(self.schedule, t) * self.scale

    def get_config(self):
        return {"schedule": _serialize(self.schedule), "scale": float(self.scale.numpy())}

