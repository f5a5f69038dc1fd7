"""The problem kinds, each one class (the `problem` group's targets): `Classification`, `Binary`,
`Multilabel`, `Regression`. A new kind: a subclass of tftrain.problems.Problem, its schema
(tftrain/schema/problem.py) and its YAML (conf/problem/)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tftrain.data.labels import ClassLabels
from tftrain.errors import DataError
from tftrain.problems.base import Problem


def _top_k(name: str):
    k = int(name.split("_")[1]) if name.split("_")[1].isdigit() else 5
    return keras.metrics.SparseTopKCategoricalAccuracy(k=k, name=name)


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

    def columns(self, outputs, names):
        """`prediction` (the class name when the classes have names, else its index) and
        `prob_<class>` for each class."""
        probs = self.probabilities(outputs)
        k = probs.shape[-1]
        named = bool(names) and len(names) == k
        names = names if named else [str(i) for i in range(k)]
        return (["prediction", *(f"prob_{c}" for c in names)],
                [[names[int(np.argmax(p))] if named else int(np.argmax(p)), *(f"{v:.6g}" for v in p)] for p in probs])

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

    def columns(self, outputs, names):
        """One label: `prediction` (0/1) and `prob_<label>`; several: `prediction_<label>` and
        `prob_<label>` for each."""
        probs = self.probabilities(outputs)
        k = probs.shape[-1]
        if k == 1 and names and len(names) == 2:  # two class names: the sorted second is the positive class
            return ["prediction", f"prob_{names[1]}"], [[names[int(p[0] >= 0.5)], f"{p[0]:.6g}"] for p in probs]
        names = names if names and len(names) == k else ([""] if k == 1 else [str(i) for i in range(k)])
        if k == 1:
            return ["prediction", f"prob_{names[0] or '1'}"], [[int(p[0] >= 0.5), f"{p[0]:.6g}"] for p in probs]
        return ([*(f"prediction_{c}" for c in names), *(f"prob_{c}" for c in names)],
                [[*(int(v >= 0.5) for v in p), *(f"{v:.6g}" for v in p)] for p in probs])

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
