"""The tf.distribute strategy named by `trainer.strategy`."""

from __future__ import annotations

import tensorflow as tf


def _auto():
    gpus = tf.config.list_logical_devices("GPU")
    # Several GPUs: mirror across them. One GPU or the CPU: the default strategy has no overhead.
    return tf.distribute.MirroredStrategy() if len(gpus) >= 2 else tf.distribute.get_strategy()


def _one_device():
    return tf.distribute.OneDeviceStrategy("/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0")


STRATEGIES = {
    "auto": _auto,
    "default": tf.distribute.get_strategy,
    "mirrored": lambda: tf.distribute.MirroredStrategy(),
    "one_device": _one_device,
    "multi_worker": lambda: tf.distribute.MultiWorkerMirroredStrategy(),
}


def make_strategy(cfg_trainer) -> tf.distribute.Strategy:
    return STRATEGIES[cfg_trainer.strategy]()
