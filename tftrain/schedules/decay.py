"""Decays that are pure functions of the step (PyTorch's StepLR, MultiStepLR, PolynomialLR,
CosineAnnealingLR, CosineAnnealingWarmRestarts) and warmup-stable-decay. All durations are in steps."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from tftrain.schedules._base import Schedule, is_number, number, require


def _check_rate(arg: str, value) -> None:
    require(is_number(value) and value >= 0, arg, value, "a finite number >= 0")


def _check_min_lr(lr, min_lr) -> None:
    _check_rate("min_lr", min_lr)
    require(min_lr <= lr, "min_lr", min_lr, f"a rate <= the schedule's base rate lr={lr} (optimizer.lr)")


def _check_steps(arg: str, value) -> None:
    require(is_number(value) and value > 0, arg, value, "> 0")


def _check_gamma(gamma) -> None:
    require(is_number(gamma) and gamma > 0, "gamma", gamma, "> 0")


def _cosine(lr, min_lr, progress):
    """min_lr + (lr - min_lr) * (1 + cos(pi * progress)) / 2, in PyTorch's order of operations."""
    return min_lr + (lr - min_lr) * (1.0 + tf.cos(math.pi * progress)) / 2.0


@keras.saving.register_keras_serializable(package="tftrain")
class Constant(Schedule):
    """A constant rate: `value` at every step.

    >>> from tftrain.schedules import Constant
    >>> round(float(Constant(0.01)(1000)), 6)
    0.01
    """

    def __init__(self, value):
        _check_rate("value", value)
        self.value = float(value)

    def rate(self, t):
        return tf.zeros_like(t) + self.value

    def get_config(self):
        return {"value": self.value}


@keras.saving.register_keras_serializable(package="tftrain")
class Step(Schedule):
    """PyTorch's StepLR: `lr * gamma ** floor(t / step_size)`.

    Decays by `gamma` every `step_size` steps. With `step_size` = the steps of an epoch it is
    PyTorch's ExponentialLR stepped once per epoch.

    >>> from tftrain.schedules import Step
    >>> s = Step(0.1, step_size=100, gamma=0.5)
    >>> [round(float(s(t)), 6) for t in (0, 99, 100, 250)]
    [0.1, 0.1, 0.05, 0.025]
    """

    def __init__(self, lr, step_size, gamma=0.1):
        _check_rate("lr", lr)
        _check_steps("step_size", step_size)
        _check_gamma(gamma)
        self.lr, self.step_size, self.gamma = float(lr), number(step_size), float(gamma)

    def rate(self, t):
        return self.lr * tf.pow(tf.constant(self.gamma, tf.float64), tf.math.floordiv(t, self.step_size))

    def get_config(self):
        return {"lr": self.lr, "step_size": self.step_size, "gamma": self.gamma}


@keras.saving.register_keras_serializable(package="tftrain")
class MultiStep(Schedule):
    """PyTorch's MultiStepLR: `lr * gamma ** (number of milestones <= t)`.

    `milestones`: strictly increasing steps > 0 at which the rate is multiplied by `gamma`.

    >>> from tftrain.schedules import MultiStep
    >>> s = MultiStep(0.1, milestones=[100, 300], gamma=0.1)
    >>> [round(float(s(t)), 6) for t in (99, 100, 299, 300)]
    [0.1, 0.01, 0.01, 0.001]
    """

    def __init__(self, lr, milestones, gamma=0.1):
        _check_rate("lr", lr)
        milestones = list(milestones)
        require(len(milestones) > 0, "milestones", milestones,
                "a non-empty list of steps (no milestone would be a constant rate: use schedule=constant)")
        require(all(is_number(m) and m > 0 for m in milestones)
                and all(a < b for a, b in zip(milestones, milestones[1:])),
                "milestones", milestones, "a list of strictly increasing steps > 0")
        _check_gamma(gamma)
        self.lr, self.milestones, self.gamma = float(lr), [number(m) for m in milestones], float(gamma)

    def rate(self, t):
        passed = tf.cast(t[..., None] >= tf.constant(self.milestones, tf.float64), tf.float64)
        return self.lr * tf.pow(tf.constant(self.gamma, tf.float64), tf.reduce_sum(passed, axis=-1))

    def get_config(self):
        return {"lr": self.lr, "milestones": list(self.milestones), "gamma": self.gamma}


@keras.saving.register_keras_serializable(package="tftrain")
class Polynomial(Schedule):
    """Polynomial decay from `lr` to `min_lr` over `decay_steps` steps, then `min_lr`:
    `(lr - min_lr) * (1 - min(t, T) / T) ** power + min_lr`, T = `decay_steps`.

    PyTorch's PolynomialLR (total_iters = T) plus a floor `min_lr`; `power=1` is a linear decay.

    >>> from tftrain.schedules import Polynomial
    >>> s = Polynomial(0.1, decay_steps=100, power=2.0, min_lr=0.0)
    >>> [round(float(s(t)), 6) for t in (0, 50, 100, 200)]
    [0.1, 0.025, 0.0, 0.0]
    """

    def __init__(self, lr, decay_steps, power=1.0, min_lr=0.0):
        _check_rate("lr", lr)
        _check_steps("decay_steps", decay_steps)
        require(is_number(power) and power > 0, "power", power, "> 0")
        _check_min_lr(lr, min_lr)
        self.lr, self.decay_steps, self.power, self.min_lr = float(lr), number(decay_steps), float(power), float(min_lr)

    def rate(self, t):
        remaining = 1.0 - tf.minimum(t, self.decay_steps) / self.decay_steps
        return (self.lr - self.min_lr) * tf.pow(remaining, self.power) + self.min_lr

    def get_config(self):
        return {"lr": self.lr, "decay_steps": self.decay_steps, "power": self.power, "min_lr": self.min_lr}


@keras.saving.register_keras_serializable(package="tftrain")
class Cosine(Schedule):
    """PyTorch's CosineAnnealingLR with T_max = `decay_steps`, held at `min_lr` afterwards:
    `min_lr + (lr - min_lr) * (1 + cos(pi * min(t, T) / T)) / 2`.

    >>> from tftrain.schedules import Cosine
    >>> s = Cosine(0.1, decay_steps=100, min_lr=0.001)
    >>> [round(float(s(t)), 6) for t in (0, 50, 100, 150)]
    [0.1, 0.0505, 0.001, 0.001]
    """

    def __init__(self, lr, decay_steps, min_lr=0.0):
        _check_rate("lr", lr)
        _check_steps("decay_steps", decay_steps)
        _check_min_lr(lr, min_lr)
        self.lr, self.decay_steps, self.min_lr = float(lr), number(decay_steps), float(min_lr)

    def rate(self, t):
        return _cosine(self.lr, self.min_lr, tf.minimum(t, self.decay_steps) / self.decay_steps)

    def get_config(self):
        return {"lr": self.lr, "decay_steps": self.decay_steps, "min_lr": self.min_lr}


@keras.saving.register_keras_serializable(package="tftrain")
class CosineRestarts(Schedule):
    """PyTorch's CosineAnnealingWarmRestarts (SGDR): cosine annealing from `lr` to `min_lr`,
    restarting at `lr`; cycle i lasts `t0 * t_mult**i` steps.

    Within cycle i, which starts at step `s_i = t0 * (t_mult**i - 1) / (t_mult - 1)` (`t0 * i` when
    t_mult = 1): `min_lr + (lr - min_lr) * (1 + cos(pi * (t - s_i) / (t0 * t_mult**i))) / 2`.
    `t0` and `t_mult` are integers, as in PyTorch, so cycles start at exact steps.

    >>> from tftrain.schedules import CosineRestarts
    >>> s = CosineRestarts(0.1, t0=10, t_mult=2)
    >>> [round(float(s(t)), 6) for t in (0, 5, 10, 20, 30)]
    [0.1, 0.05, 0.1, 0.05, 0.1]
    """

    def __init__(self, lr, t0, t_mult=1, min_lr=0.0):
        _check_rate("lr", lr)
        require(is_number(t0) and t0 >= 1 and float(t0).is_integer(), "t0", t0, "an integer number of steps >= 1")
        require(is_number(t_mult) and t_mult >= 1 and float(t_mult).is_integer(), "t_mult", t_mult,
                "an integer >= 1")
        _check_min_lr(lr, min_lr)
        self.lr, self.t0, self.t_mult, self.min_lr = float(lr), int(t0), int(t_mult), float(min_lr)

    def _cycle_start(self, n):
        # Integers in exact arithmetic: rounding removes pow()'s last-bit errors.
        m = tf.constant(self.t_mult, tf.float64)
        return tf.round(self.t0 * (tf.pow(m, n) - 1.0) / (m - 1.0))

    def rate(self, t):
        t = tf.maximum(t, 0.0)
        if self.t_mult == 1:
            n = tf.math.floordiv(t, float(self.t0))
            start, length = n * self.t0, tf.zeros_like(t) + self.t0
        else:
            m = tf.constant(self.t_mult, tf.float64)
            n = tf.floor(tf.math.log(t / self.t0 * (m - 1.0) + 1.0) / math.log(self.t_mult))
            # log() may land a hair off an integer at a cycle's first step: fix n by one either way.
            n = tf.where(t < self._cycle_start(n), n - 1.0, n)
            n = tf.where(t >= self._cycle_start(n + 1.0), n + 1.0, n)
            start, length = self._cycle_start(n), self.t0 * tf.pow(m, n)
        return _cosine(self.lr, self.min_lr, (t - start) / length)

    def get_config(self):
        return {"lr": self.lr, "t0": self.t0, "t_mult": self.t_mult, "min_lr": self.min_lr}


@keras.saving.register_keras_serializable(package="tftrain")
class WarmupStableDecay(Schedule):
    """The stable and decay phases of warmup-stable-decay (WSD; Hu et al. 2024, MiniCPM; Hägele
    et al. 2024): `lr` held, then a decay over the last `decay_fraction` of `total_steps` to
    `final_lr_factor * lr`, held afterwards. The warmup is tftrain's `Warmup` around it, as for
    every schedule (`schedule.warmup_epochs`).

    With T = `total_steps`, D = `round(decay_fraction * T)` decay steps starting at S = T - D and
    f = `final_lr_factor`: `lr` for t < S, then `lr * (f + (1 - f) * g(p))` with
    `p = min(t - S, D) / D`, where g(p) is `1 - p` (shape "linear"), `(1 + cos(pi * p)) / 2`
    ("cosine") or `1 - sqrt(p)` ("1-sqrt", the best in Hägele et al.). As with `Cosine`, the
    final rate is reached at step T.

    >>> from tftrain.schedules import Warmup, WarmupStableDecay
    >>> s = WarmupStableDecay(0.1, total_steps=100, decay_fraction=0.2, shape="linear")
    >>> [round(float(s(t)), 6) for t in (0, 79, 80, 90, 100, 150)]
    [0.1, 0.1, 0.1, 0.05, 0.0, 0.0]
    >>> w = Warmup(s, warmup_steps=10, start_factor=0.0)
    >>> [round(float(w(t)), 6) for t in (0, 5, 10, 100)]
    [0.0, 0.05, 0.1, 0.05]
    """

    SHAPES = ("linear", "cosine", "1-sqrt")

    def __init__(self, lr, total_steps, decay_fraction=0.2, final_lr_factor=0.0, shape="1-sqrt"):
        _check_rate("lr", lr)
        require(is_number(total_steps) and total_steps >= 1 and float(total_steps).is_integer(), "total_steps",
                total_steps, "an integer >= 1")
        require(is_number(decay_fraction) and 0 < decay_fraction <= 1, "decay_fraction", decay_fraction,
                "in (0, 1]: the fraction of the schedule's steps spent decaying")
        require(is_number(final_lr_factor) and 0 <= final_lr_factor <= 1, "final_lr_factor", final_lr_factor,
                "in [0, 1]: the final rate as a fraction of lr")
        require(shape in self.SHAPES, "shape", shape, f"one of {list(self.SHAPES)}")
        # Whole steps, so that the decay starts at the same step in runs of any length (issue 22's branches).
        decay_steps = round(decay_fraction * total_steps)
        require(decay_steps >= 1, "decay_fraction", decay_fraction,
                f"at least one of the schedule's {int(total_steps)} steps: >= {0.5 / total_steps:.4g}")
        self.lr, self.total_steps, self.decay_fraction = float(lr), int(total_steps), float(decay_fraction)
        self.final_lr_factor, self.shape, self.decay_steps = float(final_lr_factor), shape, decay_steps

    @property
    def decay_start(self) -> int:
        return self.total_steps - self.decay_steps

    def rate(self, t):
        d, f = self.decay_steps, self.final_lr_factor
        p = tf.clip_by_value(t - self.decay_start, 0.0, float(d)) / d
        if self.shape == "linear":
            g = 1.0 - p
        elif self.shape == "cosine":
            g = (1.0 + tf.cos(math.pi * p)) / 2.0
        else:
            g = 1.0 - tf.sqrt(p)
        return self.lr * (f + (1.0 - f) * g)

    def get_config(self):
        return {"lr": self.lr, "total_steps": self.total_steps, "decay_fraction": self.decay_fraction,
                "final_lr_factor": self.final_lr_factor, "shape": self.shape}
