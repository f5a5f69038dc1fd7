"""The `Problem` base class: what is learned and how it is scored (TF Model Garden's Task); the
kinds are in tftrain.problems.kinds.

The model outputs raw values: logits for the classification problems (the loss takes them
`from_logits`; the metrics get probabilities, `predictions`), values for regression.

Metrics are Keras metric objects used through their stateless API: each batch's contribution is
`stateless_update_state` from the metric's zero state, so every metric's state is a sum over
batches (Keras declares these variables with aggregation "sum"). The step returns one flat
vector per batch — [loss sum, example count, every metric's state] — which the trainer sums
over replicas and steps; the epoch's metrics are `stateless_result` of the totals. Exact under
any strategy (2 replicas give the metrics of 1), and the totals of an epoch in progress are one
vector a checkpoint keeps.
"""

from __future__ import annotations

import inspect

import keras
import numpy as np
import tensorflow as tf

from tftrain.data.labels import Labels
from tftrain.errors import ArgumentError, DataError
from tftrain.problems.direction import lower_is_better


class Problem:
    """`loss`: a Keras loss name (`mse`, `huber`, `binary_focal_crossentropy`, ...) or object (a
    keras.losses.Loss, or a function (y_true, y_pred) -> per-example losses). `metrics`: Keras
    metric names or objects. `num_outputs`: the model's outputs (None: inferred from the targets).

    Call `build(y, outputs)` once with an example batch (eagerly, outside any tf.function) before
    `batch_state`: metrics such as R2Score create their state on first use.
    """

    label_dtype = "float32"  # the targets' dtype in the pipeline
    stratify = False  # hold out validation/test splits stratified by label
    from_logits = False  # the model's outputs are logits (the loss converts them; metrics get probabilities)
    aliases: dict = {}  # metric names this problem resolves itself (e.g. accuracy -> the right accuracy)

    def __init__(self, *, loss, metrics, num_outputs: int | None, label_smoothing: float = 0.0):
        if num_outputs is not None and num_outputs < 1:
            raise ArgumentError("num_outputs", num_outputs, "null (inferred from the data) or an integer >= 1")
        self.num_outputs, self.label_smoothing = num_outputs, float(label_smoothing)
        self.loss = loss
        self.loss_fn = self._resolve_loss(loss)
        self.metrics = dict(self._resolve_metric(m) for m in metrics)
        self.target_normalization = None  # (mean, std) of the targets, for regression's normalized loss
        self._shapes: list[list[tuple[tuple[int, ...], tf.DType]]] = []
        self.size = 2

    # ------------------------------------------------------------------ resolution

    def _resolve_loss(self, loss):
        if isinstance(loss, keras.losses.Loss):
            return loss.call  # per-example values (no reduction)
        if callable(loss):
            return loss
        try:
            fn = keras.losses.get(loss)
        except (ValueError, TypeError):
            fn = None
        if fn is None or not callable(fn):
            raise ArgumentError("loss", loss, "a Keras loss name (e.g. sparse_categorical_crossentropy, "
                                "binary_crossentropy, binary_focal_crossentropy, mse, mae, huber) or "
                                "{_target_: keras.losses.SomeLoss, ...}")
        params = inspect.signature(fn).parameters
        kwargs = {}
        if "from_logits" in params:
            kwargs["from_logits"] = self.from_logits
        if self.label_smoothing:
            if "label_smoothing" not in params:
                raise ArgumentError("label_smoothing", self.label_smoothing, f"0: the loss {loss} takes no label "
                                    "smoothing")
            kwargs["label_smoothing"] = self.label_smoothing
        return lambda y, out: fn(y, out, **kwargs)

    def _resolve_metric(self, metric) -> tuple[str, keras.metrics.Metric]:
        if isinstance(metric, keras.metrics.Metric):
            return metric.name, metric
        if isinstance(metric, str):
            if metric in self.aliases:
                return metric, self.aliases[metric](metric)
            try:
                resolved = keras.metrics.get(metric)
            except (ValueError, TypeError):
                resolved = None
            if isinstance(resolved, keras.metrics.Metric):
                return metric, resolved
            if callable(resolved):  # a metric function: its mean over the examples
                return metric, keras.metrics.MeanMetricWrapper(resolved, name=metric)
        raise ArgumentError("metrics", metric, f"a Keras metric name (for this problem e.g. "
                            f"{sorted(self.aliases) or ['mae']}) or {{_target_: keras.metrics.SomeMetric, ...}}")

    # ------------------------------------------------------------------ targets (data layer's Targets)

    def check(self, labels: dict[str, Labels], num_classes: int | None) -> int:
        raise NotImplementedError

    def _finite(self, labels: dict[str, Labels]) -> None:
        for s in labels.values():
            if not s.finite:
                raise DataError(f"y_{s.split} holds NaN or Inf values. Fix: clean or drop those examples.")

    def _outputs(self, inferred: int) -> int:
        if self.num_outputs is not None and self.num_outputs != inferred:
            raise DataError(f"problem.num_outputs={self.num_outputs} but the data's targets have {inferred} per "
                            "example. Fix: set problem.num_outputs=null (inferred) or reshape the targets.")
        return inferred

    # ------------------------------------------------------------------ set-up (host)

    def build(self, y, outputs) -> None:
        """Create every metric's state from one example batch (y, outputs), then check it is additive."""
        y, outputs = self.targets(y), self.predictions(tf.cast(outputs, tf.float32))
        self._shapes = []
        for name, metric in self.metrics.items():
            metric.update_state(y, outputs)  # some (R2Score, AUC multi_label) create state on first use
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

    def targets(self, y):
        """The targets as the loss and metrics take them (one column per output)."""
        y = tf.convert_to_tensor(y)
        return tf.reshape(y, [-1, 1]) if y.shape.rank == 1 else y

    def predictions(self, outputs):
        """What the metrics (and `task=predict`) see: probabilities, or values."""
        return outputs

    def per_example_loss(self, y, outputs):
        outputs = tf.cast(outputs, tf.float32)
        y = tf.cast(self.targets(y), tf.float32) if self.label_dtype == "float32" else self.targets(y)
        values = tf.cast(self.loss_fn(y, outputs), tf.float32)
        return tf.reduce_mean(values, axis=list(range(1, values.shape.rank))) if values.shape.rank > 1 else values

    def batch_state(self, y, outputs, per_example=None):
        """The batch's flat additive state: [loss sum, count, metric states...] (float32)."""
        outputs = tf.cast(outputs, tf.float32)
        if per_example is None:
            per_example = self.per_example_loss(y, outputs)
        parts = [tf.reshape(tf.reduce_sum(tf.cast(per_example, tf.float32)), [1]),
                 tf.reshape(tf.cast(tf.shape(per_example)[0], tf.float32), [1])]
        y, predictions = self.targets(y), self.predictions(outputs)
        for metric in self.metrics.values():
            zeros = [tf.zeros(v.shape, v.dtype) for v in metric.variables]
            for value in metric.stateless_update_state(zeros, y, predictions):
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
            out[name] = float(np.mean(np.asarray(metric.stateless_result(values))))
        return out

    # ------------------------------------------------------------------ the saved model

    def compile_args(self) -> dict:
        """Keras compile() arguments for model.keras, so a reloaded model can evaluate() or fit()."""
        return {"loss": self.loss, "metrics": []}

    # ------------------------------------------------------------------ directions and predictions

    @staticmethod
    def lower_is_better(name: str) -> bool:
        """Whether a lower value of the logged metric `name` is better (tftrain.problems.direction)."""
        return lower_is_better(name)

    def best(self, name: str, values: list) -> float | None:
        """The best of an epoch series of metric `name` (None values left out)."""
        values = [v for v in values if v is not None]
        if not values:
            return None
        return min(values) if self.lower_is_better(name) else max(values)

    def columns(self, outputs: np.ndarray, names: list[str] | None) -> tuple[list[str], list[list]]:
        """What `task=predict` writes for the model's raw `outputs` ([n, k]): (column names, rows).
        `names`: the targets' names from training, if any. Here: the values, `prediction` or
        `prediction_<i>`."""
        values = np.asarray(outputs).reshape(len(outputs), -1)
        if values.shape[1] == 1:
            return ["prediction"], [[f"{v[0]:.6g}"] for v in values]
        return [f"prediction_{i}" for i in range(values.shape[1])], [[f"{v:.6g}" for v in row] for row in values]

    def probabilities(self, outputs: np.ndarray) -> np.ndarray:
        """`predictions` of raw outputs, on the host."""
        return np.asarray(self.predictions(tf.constant(outputs, tf.float32)))
