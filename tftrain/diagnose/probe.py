"""Per-layer statistics of one batch through a model, under a tf.distribute strategy.

`Probe(model, layers)` records, while the model runs, what each of `layers` computes: its output
and, when it has a non-linear activation of its own (Dense(activation="relu")), the input of that
activation. Keras has no hook API (PyTorch's forward hooks), so the probe sets an instance
attribute over each layer's `call` (and `activation`) for as long as it is open; the model is
unchanged once it closes. It works on any model, functional, Sequential or subclassed, since
Keras calls a layer's `call` through the instance.

`statistics(...)` runs one forward pass (and, given a loss, the backward pass) in one compiled
function and returns each recorded tensor's mean, standard deviation and per-unit "never
non-zero" flags, all-reduced over the replicas so they are the global batch's, and the gradient of
each listed variable, summed over the replicas.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Sequence

import keras
import numpy as np

# Activations whose output is exactly 0 over a whole range of inputs: a unit that gives 0 for
# every example gets no gradient through them ("dead").
LINEAR = (None, keras.activations.linear)


def has_own_activation(layer) -> bool:
    """Whether `layer` applies a non-linear activation itself (Dense(activation="relu"))."""
    activation = getattr(layer, "activation", None)
    return activation not in LINEAR and callable(activation)


class Probe:
    """Records each of `layers`' output (and the input of its own activation) while open."""

    def __init__(self, layers: Sequence[keras.layers.Layer]):
        self.layers = list(layers)
        # Per thread: MirroredStrategy traces each replica's function in a thread of its own.
        self._local = threading.local()

    @property
    def outputs(self) -> dict:
        """Layer index -> what it computed, in this thread's (replica's) latest forward pass."""
        if not hasattr(self._local, "outputs"):
            self._local.outputs = {}
        return self._local.outputs

    @property
    def pre_activations(self) -> dict:
        if not hasattr(self._local, "pre"):
            self._local.pre = {}
        return self._local.pre

    def _wrap(self, index: int, layer):
        call = layer.call

        def recording_call(*args, **kwargs):
            out = call(*args, **kwargs)
            self.outputs[index] = out
            return out

        object.__setattr__(layer, "call", recording_call)  # Keras' __setattr__ would track it
        if has_own_activation(layer):
            activation = layer.activation

            def recording_activation(x):
                self.pre_activations[index] = x
                return activation(x)

            object.__setattr__(layer, "activation", recording_activation)
            return activation
        return None

    @contextlib.contextmanager
    def open(self):
        saved = [self._wrap(i, layer) for i, layer in enumerate(self.layers)]
        try:
            yield self
        finally:
            for layer, activation in zip(self.layers, saved):
                object.__delattr__(layer, "call")
                if activation is not None:
                    object.__setattr__(layer, "activation", activation)
            self._local = threading.local()


def _moments(t):
    """Sum, sum of squares, count and, per unit (last axis), 1 where it is non-zero somewhere in
    one replica's tensor (summed over replicas: tf.distribute reduces by SUM or MEAN only)."""
    import tensorflow as tf

    t = tf.cast(t, tf.float32)
    flat = tf.reshape(t, [-1, tf.shape(t)[-1]])
    return (tf.reduce_sum(t), tf.reduce_sum(tf.square(t)), tf.cast(tf.size(t), tf.float32),
            tf.cast(tf.reduce_any(flat != 0, axis=0), tf.float32))


def _finish(total, total_sq, count, unit_alive) -> dict:
    mean = total / max(count, 1.0)
    var = max(total_sq / max(count, 1.0) - mean * mean, 0.0)
    return {"mean": float(mean), "std": float(np.sqrt(var)), "var": float(var),
            "dead_fraction": float(np.mean(np.asarray(unit_alive) == 0.0)), "units": int(np.size(unit_alive))}


def statistics_fn(model, probe: Probe, strategy, training: bool,
                  loss: Callable | None = None, variables: Sequence | None = None):
    """A compiled function of one distributed batch `(x, y)` (or `x`) that returns
    (outputs, pre_activations, grads): per probed layer index, the statistics of what it computed
    (`_finish`'s dict; pre_activations only for layers with an activation of their own), and,
    given `loss(y, outputs) -> scalar` (already averaged over the global batch) and `variables`,
    the gradient of each variable summed over the replicas (NumPy arrays). Call it inside
    `probe.open()`; it traces once per open probe."""
    import tensorflow as tf

    def replica(batch):
        x, y = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
        if loss is None:
            model(x, training=training)
            grads = []
        else:
            with tf.GradientTape() as tape:
                value = loss(y, model(x, training=training))
            grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                     for v, g in zip(variables, tape.gradient(value, list(variables)))]
        outs = {i: _moments(t) for i, t in probe.outputs.items()}
        pres = {i: _moments(t) for i, t in probe.pre_activations.items()}
        return outs, pres, grads

    @tf.function
    def run(dist_batch):
        outs, pres, grads = strategy.run(replica, args=(dist_batch,))
        reduce = strategy.reduce

        def reduced(moments):
            s, sq, n, m = moments
            return (reduce("SUM", s, axis=None), reduce("SUM", sq, axis=None), reduce("SUM", n, axis=None),
                    reduce("SUM", m, axis=None))

        return ({i: reduced(m) for i, m in outs.items()}, {i: reduced(m) for i, m in pres.items()},
                [reduce("SUM", g, axis=None) for g in grads])

    def call(dist_batch):
        outs, pres, grads = run(dist_batch)
        as_np = lambda m: _finish(*(np.asarray(v) for v in m))  # noqa: E731
        return ({i: as_np(m) for i, m in outs.items()}, {i: as_np(m) for i, m in pres.items()},
                [np.asarray(g) for g in grads])

    return call
