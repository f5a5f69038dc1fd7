"""What is learned and how it is scored: a `Problem` owns the loss and the metrics (TF Model
Garden's Task), and the additive state that reduces them exactly across batches and replicas.

The loss is a Keras loss computing one value per example. The metrics are Keras metric objects
used through their stateless API: each batch's contribution is `stateless_update_state` from the
metric's zero state, so every metric's state is a sum over batches (Keras declares these
variables with aggregation "sum"). The step returns one flat vector per batch — [loss sum,
example count, every metric's state] — which the trainer sums over replicas and steps; the
epoch's metrics are `stateless_result` of the totals. Exact under any strategy (2 replicas give
the metrics of 1), and the totals of an epoch in progress are one vector a checkpoint keeps.
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from tftrain.errors import ArgumentError


class Problem:
    """`loss(y, outputs) -> per-example losses`; `metrics`: {name: keras.metrics.Metric}.

    Call `build(y, outputs)` once with an example batch (eagerly, outside any tf.function) before
    `batch_state`: metrics such as R2Score create their state on first use.
    """

    def __init__(self, loss: Callable, metrics: dict[str, keras.metrics.Metric]):
        self.loss_fn, self.metrics = loss, dict(metrics)
        self._shapes: list[list[tuple[tuple[int, ...], tf.DType]]] = []
        self.size = 2

    # ------------------------------------------------------------------ set-up (host)

    def build(self, y, outputs) -> None:
        """Create every metric's state from one example batch (y, outputs), then check it is additive."""
        self._shapes = []
        for name, metric in self.metrics.items():
            if not metric.variables:
                metric.update_state(y, outputs)
                metric.reset_state()
            not_additive = [v.path for v in metric.variables if getattr(v, "aggregation", "sum") != "sum"]
            if not_additive or any(np.any(np.asarray(v.numpy()) != 0) for v in metric.variables):
                raise ArgumentError("metrics", name, "a metric whose state adds up over batches (a sum starting at "
                                    f"zero), so that replicas and epochs reduce exactly; {name}'s state "
                                    f"{not_additive or [v.path for v in metric.variables]} does not")
            self._shapes.append([(tuple(v.shape), v.dtype) for v in metric.variables])
        self.size = 2 + sum(int(np.prod(shape)) for shapes in self._shapes for shape, _ in shapes)

    @property
    def names(self) -> list[str]:
        return ["loss", *self.metrics]

    # ------------------------------------------------------------------ in the step (replica context)

    def per_example_loss(self, y, outputs):
        return self.loss_fn(y, tf.cast(outputs, tf.float32))

    def batch_state(self, y, outputs, per_example=None):
        """The batch's flat additive state: [loss sum, count, metric states...] (float32)."""
        outputs = tf.cast(outputs, tf.float32)
        if per_example is None:
            per_example = self.per_example_loss(y, outputs)
        parts = [tf.reshape(tf.reduce_sum(tf.cast(per_example, tf.float32)), [1]),
                 tf.reshape(tf.cast(tf.shape(per_example)[0], tf.float32), [1])]
        for metric in self.metrics.values():
            zeros = [tf.zeros(v.shape, v.dtype) for v in metric.variables]
            for value in metric.stateless_update_state(zeros, y, outputs):
                parts.append(tf.reshape(tf.cast(value, tf.float32), [-1]))
        return tf.concat(parts, axis=0)

    # ------------------------------------------------------------------ results (host)

    def zeros(self) -> np.ndarray:
        return np.zeros(self.size, np.float64)

    def results(self, totals) -> dict[str, float]:
        """{"loss": mean loss, <metric>: value} from summed states."""
        totals = np.asarray(totals, np.float64)
        out = {"loss": float(totals[0] / totals[1]) if totals[1] else float("nan")}
        i = 2
        for (name, metric), shapes in zip(self.metrics.items(), self._shapes):
            values = []
            for shape, dtype in shapes:
                n = int(np.prod(shape))
                values.append(tf.cast(np.reshape(totals[i:i + n], shape), dtype))
                i += n
            out[name] = float(np.asarray(metric.stateless_result(values)).reshape(-1)[0])
        return out


def classification(label_smoothing: float = 0.0) -> Problem:
    """Single-label classification from logits: sparse categorical cross-entropy and accuracy."""
    def loss(y, logits):
        if label_smoothing:
            onehot = tf.one_hot(tf.cast(tf.reshape(y, [-1]), tf.int32), tf.shape(logits)[-1])
            return keras.losses.categorical_crossentropy(onehot, logits, from_logits=True,
                                                         label_smoothing=label_smoothing)
        return keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)

    return Problem(loss, {"accuracy": keras.metrics.SparseCategoricalAccuracy(name="accuracy")})
