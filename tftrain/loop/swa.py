"""Stochastic weight averaging (Izmailov et al. 2018) as Lightning's StochasticWeightAveraging and
torch.optim.swa_utils do it: a running average of the weights at each epoch end from a start epoch
(its rate schedule is tftrain.schedules.SWALR), then, once training ends, the average put into the
model and its BatchNorm statistics recomputed over the training data (torch's `update_bn`).

The average and its count are tf.Variables the run's checkpoint holds (`checkpoint_variables`), so
a resumed run averages exactly what an uninterrupted one would.
"""

from __future__ import annotations

import logging

import keras
import numpy as np
import tensorflow as tf

log = logging.getLogger("tftrain")


def averaged_variables(model) -> list:
    """What is averaged: the model's parameters (torch's AveragedModel averages parameters, not
    buffers). Each variable's own `trainable` flag is kept when its layer is frozen, so frozen or
    later-unfrozen parameters are in the list from the start (a constant averages to itself);
    BatchNorm's moving statistics, seed-generator states and other state are not."""
    return [v for v in model.weights if v.trainable]


class StochasticWeightAveraging(keras.callbacks.Callback):
    """Averages the weights at the end of each epoch from `start_epoch` (0-based) on, with equal
    weight per epoch (`avg + (w - avg) / (n + 1)`, torch's default `avg_fn`). `finalize(strategy,
    batches)`, called once training has ended, puts the average into the model and recomputes
    its BatchNorm statistics over `batches`.

    With an optimizer's `use_ema`, what is averaged is what the run would otherwise end with: the
    optimizer's moving averages of the weights (a parameter it does not train: the parameter)."""

    def __init__(self, start_epoch: int, verbose: int = 0):
        super().__init__()
        if not (isinstance(start_epoch, int) and start_epoch >= 0):
            raise ValueError(f"start_epoch must be an integer >= 0 (0-based). Received: start_epoch={start_epoch!r}")
        self.start_epoch, self.say = start_epoch, verbose > 0

    def set_model(self, model):
        super().set_model(model)
        self.parameters = averaged_variables(model)
        self.average = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name="swa_average")
                        for v in self.parameters]
        self.count = tf.Variable(0, dtype=tf.int64, trainable=False, name="swa_count")
        self.checkpoint_variables = [*self.average, self.count]

    def _sources(self) -> list:
        optimizer = getattr(self.model, "optimizer", None)
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # a LossScaleOptimizer's
        averages = getattr(optimizer, "_model_variables_moving_average", None) if getattr(
            optimizer, "use_ema", False) else None
        if not averages:
            return self.parameters
        sources = []
        for v in self.parameters:
            try:  # Keras keeps no public map from a variable to its moving average
                sources.append(averages[optimizer._get_variable_index(v)])
            except (KeyError, IndexError):
                sources.append(v)
        return sources

    def on_epoch_end(self, epoch, logs=None):
        if epoch < self.start_epoch:
            return
        n = tf.cast(self.count, tf.float32)
        for avg, v in zip(self.average, self._sources()):
            avg.assign(avg + (tf.cast(tf.convert_to_tensor(v), avg.dtype) - avg) / tf.cast(n + 1.0, avg.dtype))
        self.count.assign_add(1)

    @property
    def averaged_epochs(self) -> int:
        return int(self.count.numpy())

    def finalize(self, strategy, batches) -> bool:
        """The averaged weights into the model, then its BatchNorm statistics recomputed over
        `batches` (the training data: (x, y) batches, distributed under `strategy`). False, with
        the model left as trained, when no epoch was averaged (the run stopped before the start)."""
        n = self.averaged_epochs
        if n == 0:
            log.warning("Stochastic weight averaging: training ended before its first averaged epoch (epoch %d); "
                        "the model keeps its last weights", self.start_epoch + 1)
            return False
        with strategy.scope():
            for v, avg in zip(self.parameters, self.average):
                v.assign(avg)
        layers = update_bn(self.model, strategy, batches)
        if self.say:
            log.info("Stochastic weight averaging: the average of %d epochs' weights (epochs %d to %d)%s", n,
                     self.start_epoch + 1, self.start_epoch + n,
                     f", BatchNorm statistics of {layers} layer(s) recomputed over the training data" if layers else "")
        return True


def update_bn(model, strategy, batches) -> int:
    """torch.optim.swa_utils.update_bn for Keras: every trainable BatchNormalization layer's
    moving mean and variance set to the average, over `batches`, of the batch statistics its
    training-mode forward pass computes (the cumulative average torch's `momentum=None` gives).
    Returns the number of layers updated.

    Each layer runs with momentum 0, so after a batch its moving statistics hold exactly that
    batch's. Under a distribution strategy each replica normalizes its own share of the batch (as
    in training) and holds that share's statistics in its copy of the variables: the shares are
    read inside the step and summed across replicas and workers, so every replica and worker ends
    with the same average over every share. A share with no examples (a partial last batch split
    over several replicas) gives no statistics and is left out. Frozen layers (inference mode in
    Keras) and batch renormalization (its own statistics) are left as they are."""
    layers = [layer for layer in model._flatten_layers(include_self=False)
              if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable and not layer.renorm]
    if not layers:
        return 0
    stats = [v for layer in layers for v in (layer.moving_mean, layer.moving_variance)]
    momenta = [layer.momentum for layer in layers]

    @tf.autograph.experimental.do_not_convert
    def replica(inputs):
        model(inputs, training=True)
        ok = tf.shape(tf.nest.flatten(inputs)[0])[0] > 0
        return [tf.where(ok, tf.cast(tf.convert_to_tensor(v), tf.float64), 0.0) for v in stats], tf.cast(ok, tf.float64)

    @tf.function
    def forward(x):
        shares, counts = strategy.run(replica, args=(x,))
        total = lambda t: strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None)  # noqa: E731
        return [total(t) for t in shares], total(counts)

    sums = [np.zeros(v.shape, np.float64) for v in stats]
    counted = 0.0
    try:
        for layer in layers:
            layer.momentum = 0.0  # read when `forward` is traced
        for x, _ in batches:
            with strategy.scope():
                for v in stats:  # finite before the update: 0 * moving + batch statistic
                    v.assign(tf.zeros(v.shape, v.dtype))
            shares, count = forward(x)
            sums = [s + t.numpy() for s, t in zip(sums, shares)]
            counted += float(count.numpy())
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    if counted == 0:
        raise ValueError("update_bn: no batch of the training data gave BatchNorm statistics")
    with strategy.scope():
        for v, s in zip(stats, sums):
            v.assign((s / counted).astype(v.dtype))
    return len(layers)
