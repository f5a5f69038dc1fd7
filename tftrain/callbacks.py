"""Keras callbacks from the `callbacks` group, driven by tftrain's loop at each epoch end.

The loop calls `on_train_begin`, `on_epoch_end(epoch, logs)` and `on_train_end` with Keras-style
logs (loss, accuracy, val_loss, val_accuracy, learning_rate), so Keras' own EarlyStopping and
ModelCheckpoint work unchanged.
"""

from __future__ import annotations

from pathlib import Path

import keras


def _mode(mode: str, monitor: str) -> str:
    if mode != "auto":
        return mode
    return "max" if "acc" in monitor else "min"


def build_callbacks(cfg_callbacks, run_dir: Path) -> list[keras.callbacks.Callback]:
    callbacks = []
    es = cfg_callbacks.early_stopping
    if es.enabled:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=es.monitor, mode=_mode(es.mode, es.monitor), patience=es.patience,
            min_delta=es.min_delta, restore_best_weights=es.restore_best_weights, verbose=1))
    best = cfg_callbacks.best_checkpoint
    if best.enabled:
        callbacks.append(keras.callbacks.ModelCheckpoint(
            str(Path(run_dir) / "best.keras"), monitor=best.monitor, mode=_mode(best.mode, best.monitor),
            save_best_only=True, verbose=0))
    return callbacks
