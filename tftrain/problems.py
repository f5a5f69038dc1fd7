"""What is learned and how it is scored: a `Problem` owns the loss, the metrics and what the
targets must look like (TF Model Garden's Task). The `problem` options' targets:
`Classification`, `Binary`, `Multilabel`, `Regression`.

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

from tftrain.data.labels import ClassLabels, Labels
from tftrain.errors import ArgumentError, DataError


def _top_k(name: str):
    k = int(name.split("_")[1]) if name.split("_")[1].isdigit() else 5
    return keras.metrics.SparseTopKCategoricalAccuracy(k=k, name=name)


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


class Classification(Problem):
    """Single-label classification: an integer label 0..K-1 per example, K logits (softmax).
    Metric names: accuracy, top_5_accuracy (any k), and Keras' own."""

    label_dtype = "int64"
    stratify = True
    from_logits = True
    aliases = {"accuracy": lambda name: keras.metrics.SparseCategoricalAccuracy(name=name)}

    def __init__(self, *, loss, metrics, num_outputs: int | None, label_smoothing: float):
        super().__init__(loss=loss, metrics=metrics, num_outputs=num_outputs, label_smoothing=label_smoothing)

    def _resolve_metric(self, metric):
        if isinstance(metric, str) and metric.startswith("top_") and metric.endswith("_accuracy"):
            return metric, _top_k(metric)
        return super()._resolve_metric(metric)

    def _resolve_loss(self, loss):
        if loss == "sparse_categorical_crossentropy" and self.label_smoothing:
            # Keras' sparse cross-entropy has no label smoothing: the categorical one on one-hot labels.
            smoothing = self.label_smoothing
            return lambda y, logits: keras.losses.categorical_crossentropy(
                tf.one_hot(tf.cast(tf.reshape(y, [-1]), tf.int32), tf.shape(logits)[-1]), logits, from_logits=True,
                label_smoothing=smoothing)
        return super()._resolve_loss(loss)

    def targets(self, y):
        return tf.reshape(tf.convert_to_tensor(y), [-1])

    def predictions(self, outputs):
        return tf.nn.softmax(outputs)

    def check(self, labels, num_classes):
        return self._outputs(ClassLabels().check(labels, num_classes or self.num_outputs))

    def compile_args(self):
        return {"loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "metrics": ["accuracy"]}


class _ZeroOne(Problem):
    """0/1 targets with one logit each (sigmoid)."""

    from_logits = True
    aliases = {"accuracy": lambda name: keras.metrics.BinaryAccuracy(name=name),
               "auc": lambda name: keras.metrics.AUC(name=name),
               "precision": lambda name: keras.metrics.Precision(name=name),
               "recall": lambda name: keras.metrics.Recall(name=name)}

    def __init__(self, *, loss, metrics, num_outputs: int | None, label_smoothing: float):
        super().__init__(loss=loss, metrics=metrics, num_outputs=num_outputs, label_smoothing=label_smoothing)

    def predictions(self, outputs):
        return tf.sigmoid(outputs)

    def _check_zero_one(self, labels) -> None:
        self._finite(labels)
        for s in labels.values():
            if not s.binary:
                raise DataError(f"y_{s.split} holds values other than 0 and 1 (range {s.minimum:g}..{s.maximum:g}): "
                                f"problem={self.kind} needs 0/1 labels. Fix: for class labels 0..K-1 use "
                                "problem=classification; for numeric targets problem=regression.")

    def compile_args(self):
        return {"loss": keras.losses.BinaryCrossentropy(from_logits=True),
                "metrics": [keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy"),
                            keras.metrics.AUC(from_logits=True, name="auc")]}


class Binary(_ZeroOne):
    """Binary classification: a 0/1 label per example, one logit. Metrics: accuracy, auc,
    precision, recall (on the sigmoid probability), and Keras' own."""

    kind = "binary"
    stratify = True

    def check(self, labels, num_classes):
        self._check_zero_one(labels)
        for s in labels.values():
            if s.shape not in ((), (1,)):
                raise DataError(f"y_{s.split} has {s.shape} labels per example; problem=binary needs one 0/1 label. "
                                "Fix: for several 0/1 labels per example use problem=multilabel.")
        return self._outputs(1)


class Multilabel(_ZeroOne):
    """Multi-label classification: an (n, k) matrix of 0/1 labels, k logits (a sigmoid each).
    Metrics: accuracy (over every label), auc (per label, averaged), precision, recall."""

    kind = "multilabel"
    aliases = {**_ZeroOne.aliases, "auc": lambda name: keras.metrics.AUC(multi_label=True, name=name)}

    def check(self, labels, num_classes):
        self._check_zero_one(labels)
        shape = labels["train"].shape
        if len(shape) != 1:
            raise DataError(f"y_train has {shape or 'one'} label(s) per example; problem=multilabel needs an (n, k) "
                            "matrix of 0/1 labels. Fix: for one label per example use problem=binary or "
                            "problem=classification.")
        return self._outputs(shape[0])


class Regression(Problem):
    """Regression: a value per example (n,) or several (n, d), as many outputs. Metrics: mae, mse,
    rmse, r2_score, mape, and Keras' own. With the data's `normalize_target`, the loss is computed
    on targets and outputs standardized by the training split's statistics (the model's outputs
    stay in the targets' units: its last layer undoes the standardization)."""

    aliases = {"rmse": lambda name: keras.metrics.RootMeanSquaredError(name=name),
               "mae": lambda name: keras.metrics.MeanAbsoluteError(name=name),
               "mse": lambda name: keras.metrics.MeanSquaredError(name=name),
               "r2": lambda name: keras.metrics.R2Score(name=name)}

    def check(self, labels, num_classes):
        self._finite(labels)
        shape = labels["train"].shape
        if len(shape) > 1:
            raise DataError(f"y_train has targets of shape {shape} per example; regression takes one value or a "
                            "vector per example. Fix: flatten the targets.")
        return self._outputs(shape[0] if shape else 1)

    def per_example_loss(self, y, outputs):
        if self.target_normalization is None:
            return super().per_example_loss(y, outputs)
        mean, std = (tf.constant(v, tf.float32) for v in self.target_normalization)
        y = (tf.cast(self.targets(y), tf.float32) - mean) / std
        values = tf.cast(self.loss_fn(y, (tf.cast(outputs, tf.float32) - mean) / std), tf.float32)
        return tf.reduce_mean(values, axis=list(range(1, values.shape.rank))) if values.shape.rank > 1 else values

    def compile_args(self):
        return {"loss": self.loss, "metrics": [keras.metrics.MeanAbsoluteError(name="mae"),
                                               keras.metrics.RootMeanSquaredError(name="rmse")]}
