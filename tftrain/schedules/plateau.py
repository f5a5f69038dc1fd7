"""Adaptive decay on a monitored metric (PyTorch's ReduceLROnPlateau) as a LearningRateSchedule."""

from __future__ import annotations

import logging
import math

import keras
import tensorflow as tf

from tftrain.errors import TftrainError
from tftrain.schedules._base import Schedule, is_number, require

log = logging.getLogger(__name__)


@keras.saving.register_keras_serializable(package="tftrain")
class Plateau(Schedule):
    """PyTorch's ReduceLROnPlateau: multiply the rate by `factor` when the metric `monitor` has not
    improved for more than `patience` epochs.

    Decisions are made on the host, once per epoch, by `on_epoch_end(epoch, logs)` (the training
    loop calls it after validation). With `best` the best value so far, an epoch improves when
    `metric < best * (1 - threshold)` (mode "min", threshold_mode "rel"), `metric < best - threshold`
    ("min", "abs"), `metric > best * (1 + threshold)` ("max", "rel") or `metric > best + threshold`
    ("max", "abs"). Otherwise it counts as bad; during the `cooldown` epochs after a reduction bad
    epochs are not counted. When the count of bad epochs exceeds `patience`, the rate becomes
    `max(rate * factor, min_lr)` (unchanged if that lowers it by no more than `eps`).

    The state (current rate, best, bad epochs, cooldown counter) lives in tf.Variables created
    here, so a schedule built under `strategy.scope()` holds mirrored variables, updated from the
    host with `assign`; `variables` lists them for checkpoints. The step argument is ignored.
    `get_config` returns the arguments only: a reloaded schedule starts from `lr` again.

    Unlike `keras.callbacks.ReduceLROnPlateau` it composes with other schedules (e.g. under
    `Warmup`, which forwards `on_epoch_end`) and its counters can be checkpointed.

    >>> from tftrain.schedules import Plateau
    >>> s = Plateau(0.1, patience=1, factor=0.5)
    >>> for epoch, loss in enumerate([1.0, 0.9, 0.95, 0.92]):
    ...     s.on_epoch_end(epoch, {"val_loss": loss})
    >>> round(float(s(0)), 6), s.best, s.num_bad_epochs
    (0.05, 0.9, 0)
    """

    MODES = ("min", "max")
    THRESHOLD_MODES = ("rel", "abs")

    def __init__(self, lr, monitor="val_loss", mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8):
        require(is_number(lr) and lr >= 0, "lr", lr, "a finite number >= 0")
        require(isinstance(monitor, str) and monitor != "", "monitor", monitor, "a metric name, e.g. 'val_loss'")
        require(mode in self.MODES, "mode", mode, f"one of {list(self.MODES)}")
        require(is_number(factor) and 0 < factor < 1, "factor", factor, "in (0, 1)")
        require(isinstance(patience, int) and patience >= 0, "patience", patience, "an integer >= 0")
        require(is_number(threshold) and threshold >= 0, "threshold", threshold, ">= 0")
        require(threshold_mode in self.THRESHOLD_MODES, "threshold_mode", threshold_mode,
                f"one of {list(self.THRESHOLD_MODES)}")
        require(isinstance(cooldown, int) and cooldown >= 0, "cooldown", cooldown, "an integer >= 0")
        require(is_number(min_lr) and 0 <= min_lr <= lr, "min_lr", min_lr,
                f"a rate in [0, lr={lr}] (the base rate: optimizer.lr)")
        require(is_number(eps) and eps >= 0, "eps", eps, ">= 0")
        self.lr, self.monitor, self.mode, self.factor = float(lr), monitor, mode, float(factor)
        self.patience, self.threshold, self.threshold_mode = patience, float(threshold), threshold_mode
        self.cooldown, self.min_lr, self.eps = cooldown, float(min_lr), float(eps)
        worst = math.inf if mode == "min" else -math.inf
        self._rate = tf.Variable(self.lr, dtype=tf.float64, trainable=False, name="plateau_rate")
        self._best = tf.Variable(worst, dtype=tf.float64, trainable=False, name="plateau_best")
        self._num_bad_epochs = tf.Variable(0, dtype=tf.int64, trainable=False, name="plateau_num_bad_epochs")
        self._cooldown_counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="plateau_cooldown_counter")

    def rate(self, t):
        return tf.zeros_like(t) + self._rate

    @property
    def variables(self) -> list:
        return [self._rate, self._best, self._num_bad_epochs, self._cooldown_counter]

    # Host-side reads (`.numpy()` also works on mirrored variables).
    @property
    def current_lr(self) -> float:
        return float(self._rate.numpy())

    @property
    def best(self) -> float:
        return float(self._best.numpy())

    @property
    def num_bad_epochs(self) -> int:
        return int(self._num_bad_epochs.numpy())

    @property
    def cooldown_counter(self) -> int:
        return int(self._cooldown_counter.numpy())

    def _improves(self, value: float, best: float) -> bool:
        rel, th = self.threshold_mode == "rel", self.threshold
        if self.mode == "min":
            return value < (best * (1.0 - th) if rel else best - th)
        return value > (best * (1.0 + th) if rel else best + th)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise TftrainError(f"The plateau schedule monitors {self.monitor!r}, which the epoch's logs do not hold "
                               f"(they hold {sorted(logs or {})}). Fix: monitor one of them (schedule.monitor; val_* "
                               "metrics need validation data).")
        value = float(value)
        rate, best = self.current_lr, self.best
        bad, cooldown = self.num_bad_epochs, self.cooldown_counter
        if self._improves(value, best):
            best, bad = value, 0
        else:
            bad += 1
        if cooldown > 0:
            cooldown, bad = cooldown - 1, 0
        if bad > self.patience:
            new_rate = max(rate * self.factor, self.min_lr)
            if rate - new_rate > self.eps:
                log.info("Epoch %d: %s did not improve for %d epoch(s); plateau rate %.4g -> %.4g",
                         epoch + 1, self.monitor, bad, rate, new_rate)
                rate = new_rate
            cooldown, bad = self.cooldown, 0
        self._rate.assign(rate)
        self._best.assign(best)
        self._num_bad_epochs.assign(bad)
        self._cooldown_counter.assign(cooldown)

    def get_config(self):
        return {"lr": self.lr, "monitor": self.monitor, "mode": self.mode, "factor": self.factor,
                "patience": self.patience, "threshold": self.threshold, "threshold_mode": self.threshold_mode,
                "cooldown": self.cooldown, "min_lr": self.min_lr, "eps": self.eps}
