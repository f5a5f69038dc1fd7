"""The learning rate of stochastic weight averaging: torch.optim.swa_utils.SWALR (what Lightning's
StochasticWeightAveraging switches to) as a pure function of the step, so a resumed run gets the
same rates without any state."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from tftrain.schedules._base import is_number, number, rate_of, require
from tftrain.schedules.compose import _check_schedule, _Wrapper

STRATEGIES = ("cos", "linear")


@keras.saving.register_keras_serializable(package="tftrain")
class SWALR(_Wrapper):
    """`schedule` until step `start_step`, then an annealing from the rate `schedule` had there
    (`r0`) to `swa_lr` over `annealing_steps`, then `swa_lr`:

    `swa_lr * a(p) + r0 * (1 - a(p))`, `p = min(1, (t - start_step) / annealing_steps)`,
    `a(p) = (1 - cos(pi * p)) / 2` (cos) or `p` (linear); `annealing_steps` 0 gives swa_lr at once.

    torch's SWALR anneals once per `step()` call, which Lightning makes once per epoch; here the
    annealing moves every step and equals Lightning's rate at each epoch's first step when
    `annealing_steps` is a whole number of epochs.

    >>> from tftrain.schedules import Constant
    >>> s = SWALR(Constant(0.1), swa_lr=0.02, start_step=100, annealing_steps=50, annealing_strategy="linear")
    >>> [round(float(s(t)), 6) for t in (0, 99, 100, 125, 150, 400)]
    [0.1, 0.1, 0.1, 0.06, 0.02, 0.02]
    """

    def __init__(self, schedule, swa_lr, start_step, annealing_steps=0, annealing_strategy="cos"):
        _check_schedule("schedule", schedule)
        require(is_number(swa_lr) and swa_lr > 0, "swa_lr", swa_lr, "a finite rate > 0")
        require(is_number(start_step) and start_step >= 0 and float(start_step).is_integer(), "start_step",
                start_step, "an integer step >= 0")
        require(is_number(annealing_steps) and annealing_steps >= 0 and float(annealing_steps).is_integer(),
                "annealing_steps", annealing_steps, "an integer number of steps >= 0")
        require(annealing_strategy in STRATEGIES, "annealing_strategy", annealing_strategy, "cos or linear")
        self.schedule, self.swa_lr = schedule, float(swa_lr)
        self.start_step, self.annealing_steps = int(start_step), int(annealing_steps)
        self.annealing_strategy = annealing_strategy

    def rate(self, t):
        t0, n = float(self.start_step), float(self.annealing_steps)
        p = tf.clip_by_value((t - t0) / n, 0.0, 1.0) if n > 0 else tf.ones_like(t)
        alpha = p if self.annealing_strategy == "linear" else (1.0 - tf.cos(math.pi * p)) / 2.0
        start = rate_of(self.schedule, tf.zeros_like(t) + t0)
        averaging = self.swa_lr * alpha + start * (1.0 - alpha)
        return tf.where(t < t0, rate_of(self.schedule, t), averaging)

    def get_config(self):
        return {"schedule": keras.saving.serialize_keras_object(self.schedule), "swa_lr": number(self.swa_lr),
                "start_step": self.start_step, "annealing_steps": self.annealing_steps,
                "annealing_strategy": self.annealing_strategy}
