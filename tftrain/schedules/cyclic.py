"""Cyclical rates (PyTorch's CyclicLR and OneCycleLR). All durations are in steps."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from tftrain.schedules._base import Schedule, is_number, number, require


@keras.saving.register_keras_serializable(package="tftrain")
class Cyclic(Schedule):
    """PyTorch's CyclicLR with a symmetric cycle: up from `min_lr` to `max_lr` in `step_size`
    steps, down in as many.

    `cycle = floor(1 + t / (2 * step_size))`, `x = 1 + t / (2 * step_size) - cycle`,
    `height = (max_lr - min_lr) * (2x if x <= 1/2 else 2 - 2x)`, and
    `lr = min_lr + height * f`: `f = 1` (mode "triangular"), `1 / 2**(cycle - 1)` ("triangular2",
    the amplitude halves every cycle) or `gamma**t` ("exp_range", `gamma` per step).
    The base rate is `min_lr` (PyTorch's base_lr).

    >>> from tftrain.schedules import Cyclic
    >>> s = Cyclic(0.001, 0.1, step_size=10)
    >>> [round(float(s(t)), 6) for t in (0, 5, 10, 20, 30)]
    [0.001, 0.0505, 0.1, 0.001, 0.1]
    """

    MODES = ("triangular", "triangular2", "exp_range")

    def __init__(self, min_lr, max_lr, step_size, mode="triangular", gamma=1.0):
        require(is_number(min_lr) and min_lr >= 0, "min_lr", min_lr, "a finite number >= 0")
        require(is_number(max_lr) and max_lr > min_lr, "max_lr", max_lr, f"a finite number > min_lr={min_lr}")
        require(is_number(step_size) and step_size > 0, "step_size", step_size, "> 0")
        require(mode in self.MODES, "mode", mode, f"one of {list(self.MODES)}")
        require(is_number(gamma) and gamma > 0, "gamma", gamma, "> 0")
        self.min_lr, self.max_lr, self.step_size = float(min_lr), float(max_lr), number(step_size)
        self.mode, self.gamma = mode, float(gamma)

    def rate(self, t):
        # PyTorch's order of operations, with step_ratio = 1/2.
        total = 2.0 * self.step_size
        cycle = tf.floor(1.0 + t / total)
        x = 1.0 + t / total - cycle
        scale = tf.where(x <= 0.5, x / 0.5, (x - 1.0) / (0.5 - 1.0))
        height = (self.max_lr - self.min_lr) * scale
        if self.mode == "triangular":
            return self.min_lr + height * 1.0
        if self.mode == "triangular2":
            return self.min_lr + height * (1.0 / tf.pow(tf.constant(2.0, tf.float64), cycle - 1.0))
        return self.min_lr + height * tf.pow(tf.constant(self.gamma, tf.float64), t)

    def get_config(self):
        return {"min_lr": self.min_lr, "max_lr": self.max_lr, "step_size": self.step_size,
                "mode": self.mode, "gamma": self.gamma}


def _anneal_cos(start, end, pct):
    return end + (start - end) / 2.0 * (tf.cos(math.pi * pct) + 1.0)


def _anneal_linear(start, end, pct):
    return (end - start) * pct + start


@keras.saving.register_keras_serializable(package="tftrain")
class OneCycle(Schedule):
    """PyTorch's OneCycleLR over `total_steps` steps (learning rate only, no momentum cycling).

    From `initial = max_lr / div_factor` up to `max_lr` at step `pct_start * T - 1`, then down to
    `initial / final_div_factor` at step `T - 1` (T = `total_steps`). With `three_phase`, down to
    `initial` at step `2 * pct_start * T - 2` first, then to `initial / final_div_factor`. Within a
    phase from (s0, a) to (s1, b), `p = (t - s0) / (s1 - s0)` and the rate is
    `b + (a - b) * (1 + cos(pi * p)) / 2` (anneal "cos") or `a + (b - a) * p` ("linear").
    The final rate is held after step T - 1 (PyTorch raises there).

    >>> from tftrain.schedules import OneCycle
    >>> s = OneCycle(0.1, total_steps=100, pct_start=0.25, div_factor=10.0, final_div_factor=10.0)
    >>> [round(float(s(t)), 6) for t in (0, 24, 99, 150)]
    [0.01, 0.1, 0.001, 0.001]
    """

    ANNEALS = ("cos", "linear")

    def __init__(self, max_lr, total_steps, pct_start=0.3, anneal="cos", div_factor=25.0,
                 final_div_factor=1e4, three_phase=False):
        require(is_number(max_lr) and max_lr > 0, "max_lr", max_lr, "a finite number > 0")
        require(is_number(total_steps) and total_steps >= 2 and float(total_steps).is_integer(), "total_steps",
                total_steps, "an integer >= 2")
        require(is_number(pct_start) and 0 < pct_start < 1, "pct_start", pct_start, "in (0, 1)")
        require(anneal in self.ANNEALS, "anneal", anneal, f"one of {list(self.ANNEALS)}")
        require(is_number(div_factor) and div_factor > 0, "div_factor", div_factor, "> 0")
        require(is_number(final_div_factor) and final_div_factor > 0, "final_div_factor", final_div_factor, "> 0")
        require(isinstance(three_phase, bool), "three_phase", three_phase, "True or False")
        # Every phase must span at least part of a step, or PyTorch divides by zero.
        require(pct_start * total_steps > 1, "pct_start", pct_start,
                f"> 1 / total_steps = {1 / total_steps:.3g} (the warm-up phase must last more than one step)")
        if three_phase:
            require(2 * pct_start * total_steps - 2 < total_steps - 1, "pct_start", pct_start,
                    f"< {(total_steps + 1) / (2 * total_steps):.3g} with three_phase (the third phase must "
                    "last at least one step)")
        self.max_lr, self.total_steps, self.pct_start = float(max_lr), int(total_steps), float(pct_start)
        self.anneal, self.div_factor, self.final_div_factor = anneal, float(div_factor), float(final_div_factor)
        self.three_phase = three_phase

    def _phases(self):
        """(end step, start rate, end rate) per phase, PyTorch's float end steps included."""
        initial = self.max_lr / self.div_factor
        final = initial / self.final_div_factor
        up_end, last = float(self.pct_start * self.total_steps) - 1, float(self.total_steps - 1)
        if self.three_phase:
            return [(up_end, initial, self.max_lr),
                    (float(2 * self.pct_start * self.total_steps) - 2, self.max_lr, initial),
                    (last, initial, final)]
        return [(up_end, initial, self.max_lr), (last, self.max_lr, final)]

    def rate(self, t):
        anneal = _anneal_cos if self.anneal == "cos" else _anneal_linear
        t = tf.minimum(t, float(self.total_steps - 1))
        phases, starts = self._phases(), [0.0]
        starts += [end for end, _, _ in phases[:-1]]
        values = [anneal(a, b, (t - s0) / (s1 - s0)) for s0, (s1, a, b) in zip(starts, phases)]
        out = values[-1]
        for (end, _, _), value in reversed(list(zip(phases[:-1], values[:-1]))):
            out = tf.where(t <= end, value, out)
        return out

    def get_config(self):
        return {"max_lr": self.max_lr, "total_steps": self.total_steps, "pct_start": self.pct_start,
                "anneal": self.anneal, "div_factor": self.div_factor, "final_div_factor": self.final_div_factor,
                "three_phase": self.three_phase}
