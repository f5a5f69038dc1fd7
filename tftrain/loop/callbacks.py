"""Keras callbacks with their state checkpointed, driven by tftrain's loop at each epoch end.

The loop (tftrain.loop.controller) calls `on_train_begin`, `on_epoch_begin`, `on_epoch_end(epoch, logs)`,
once per compiled call `on_train_batch_begin/end` (with the running loss), and `on_train_end`,
with Keras-style logs (loss and every metric, their val_ versions, learning_rate), so Keras' own
callbacks work unchanged, and so do the user's own (`callbacks.extra`). (Metrics go to the
loggers: tftrain.loggers.) This module adds early stopping and best.keras: Keras' EarlyStopping
and ModelCheckpoint, with their state (best weights included) checkpointed with the run
(`get_state`/`set_state`, `checkpoint_variables`: the protocol a user's own callback can follow too).
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras

log = logging.getLogger("tftrain")


class EarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' EarlyStopping whose whole state is checkpointed with the run: its counters
    (`get_state`/`set_state`) and, with restore_best_weights, the best epoch's weights (variables
    the checkpoint holds, `checkpoint_variables`). A run killed after its best epoch and resumed
    ends with the same weights as an uninterrupted one.

    With `verbose` > 0 it says when it stops and which epoch's weights it restores as tftrain's
    log lines (Keras' own lines, printed with print(), bypass the log's format and tftrain.log)."""

    def __init__(self, *args, verbose: int = 0, **kwargs):
        super().__init__(*args, verbose=0, **kwargs)
        self.say = verbose > 0

    def on_train_end(self, logs=None):
        if self.say and self.stopped_epoch > 0:
            best = "" if self.best is None else f" (best {self.monitor} {float(self.best):.4g} at epoch {self.best_epoch + 1})"
            log.info("Early stopping at epoch %d: %s did not improve by more than %g for %d epoch(s)%s",
                     self.stopped_epoch + 1, self.monitor, abs(self.min_delta), self.patience, best)
        if self.say and self.restore_best_weights and self.best_weights is not None:
            log.info("Restored the weights of epoch %d, the best by %s", self.best_epoch + 1, self.monitor)
        super().on_train_end(logs)

    def set_model(self, model):
        super().set_model(model)
        self.checkpoint_variables = []
        if self.restore_best_weights:
            import tensorflow as tf

            self.checkpoint_variables = [tf.Variable(tf.zeros(w.shape, w.dtype), trainable=False) for w in model.weights]
        self._kept = None

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.best_weights is not None and self.best_weights is not self._kept:  # a new best: keep it checkpointed
            for variable, value in zip(self.checkpoint_variables, self.best_weights):
                variable.assign(value)
            self._kept = self.best_weights

    def get_state(self) -> dict:
        return {"wait": self.wait, "best": None if self.best is None else float(self.best),
                "best_epoch": self.best_epoch, "stopped_epoch": self.stopped_epoch,
                "has_best_weights": self.best_weights is not None}

    def set_state(self, state: dict) -> None:
        self.wait, self.best = int(state["wait"]), state["best"]
        self.best_epoch, self.stopped_epoch = int(state["best_epoch"]), int(state["stopped_epoch"])
        if state.get("has_best_weights") and self.checkpoint_variables:
            self.best_weights = [v.numpy() for v in self.checkpoint_variables]
            self._kept = self.best_weights


class BestCheckpoint(keras.callbacks.ModelCheckpoint):
    """Keras' ModelCheckpoint (save_best_only) whose best value is checkpointed with the run, so a
    resumed run does not overwrite best.keras with a worse model."""

    def get_state(self) -> dict:
        return {"best": float(self.best) if self.best is not None else None}

    def set_state(self, state: dict) -> None:
        if state.get("best") is not None:
            self.best = state["best"]
