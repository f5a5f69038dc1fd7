"""What a split's targets look like, summarized once before training (from arrays, or batch by
batch during a streamed split's scan), so the problem can check them and size the outputs.

The data layer does not decide what targets mean: a `Targets` (tftrain.problems' problems are
ones) checks the summaries (`check`), says how many outputs the model needs, and which dtype the
targets take in the pipeline. `ClassLabels` is the default: integer class labels.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from tftrain.errors import DataError


@dataclasses.dataclass
class Labels:
    """A split's targets: per-example `shape`, count, range, whether every value is an integer
    (`integral`), 0 or 1 (`binary`), finite; and per-column sums (for their mean and std)."""

    split: str
    shape: tuple[int, ...]
    count: int = 0
    minimum: float = np.inf
    maximum: float = -np.inf
    integral: bool = True
    binary: bool = True
    finite: bool = True
    float_dtype: bool = False  # stored as floats (a CSV column always is)
    total: np.ndarray | None = None
    total_sq: np.ndarray | None = None
    examples: list = dataclasses.field(default_factory=list)  # a few values, for messages

    @classmethod
    def of(cls, split: str, y) -> "Labels":
        y = np.asarray(y)
        return cls(split, tuple(y.shape[1:])).add(y)

    def add(self, y) -> "Labels":
        """Fold a batch of targets (shape (n, *shape)) into the summary."""
        y = np.asarray(y)
        if y.size == 0:
            return self
        flat = y.reshape(len(y), -1).astype(np.float64)
        finite = np.isfinite(flat)
        self.count += len(y)
        self.finite &= bool(finite.all())
        values = flat[finite]
        if values.size:
            self.minimum, self.maximum = min(self.minimum, values.min()), max(self.maximum, values.max())
            self.integral &= bool(np.all(values == np.round(values)))
            self.binary &= bool(np.all((values == 0) | (values == 1)))
            if len(self.examples) < 5:
                odd = values[values != np.round(values)] if not self.integral else values
                self.examples += [float(v) for v in odd[: 5 - len(self.examples)]]
        self.float_dtype |= np.issubdtype(y.dtype, np.floating)
        s, s2 = np.nansum(flat, 0), np.nansum(np.square(flat), 0)
        self.total = s if self.total is None else self.total + s
        self.total_sq = s2 if self.total_sq is None else self.total_sq + s2
        return self

    @property
    def mean(self) -> np.ndarray:
        return self.total / max(self.count, 1)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(np.maximum(self.total_sq / max(self.count, 1) - self.mean ** 2, 0.0))


class Targets(Protocol):
    """What the pipeline needs to know of the problem's targets."""

    label_dtype: str  # the targets' dtype in the pipeline ("int64" or "float32")

    def check(self, labels: dict[str, Labels], num_classes: int | None) -> int:
        """Raise DataError if the targets do not fit the problem; return the model's outputs."""


class ClassLabels:
    """Integer class labels 0..K-1 (K: `num_classes` when the source knows it, else the largest
    label + 1), one per example."""

    label_dtype = "int64"

    def check(self, labels: dict[str, Labels], num_classes: int | None) -> int:
        for s in labels.values():
            if s.shape not in ((), (1,)):
                raise DataError(f"y_{s.split} has {s.shape} targets per example; single-label classification "
                                "needs one integer class label per example. Fix: for several 0/1 labels per example "
                                "use problem=multilabel; for numeric targets problem=regression.")
            if not s.finite:
                raise DataError(f"y_{s.split} holds NaN or Inf values. Fix: clean or drop those examples.")
            if not s.integral:
                raise DataError(f"y_{s.split} holds non-integer values (e.g. {s.examples[:3]}): classification "
                                "needs integer class labels 0..num_classes-1. Fix: for numeric targets use "
                                "problem=regression; otherwise map the labels to integers.")
        inferred = max(2, int(max(s.maximum for s in labels.values())) + 1)
        k = num_classes or inferred
        train = labels["train"]
        if num_classes is None and k > max(100, train.count // 2):
            raise DataError(f"y_train's labels run up to {int(train.maximum)}: {k} classes for {train.count} training "
                            f"examples{' stored as floats' if train.float_dtype else ''}, which looks like a numeric "
                            "target, not class labels. Fix: use problem=regression (or, for that many classes, set "
                            "problem.num_outputs).")
        for s in labels.values():
            if s.minimum < 0 or s.maximum >= k:
                raise DataError(f"y_{s.split} has labels outside [0, {k}): min {s.minimum:g}, max {s.maximum:g}. Fix: "
                                f"map the labels to 0..{k - 1}.")
        return k


# ---------------------------------------------------------------- class names


def is_text(y) -> bool:
    """Whether labels are class names (strings or bytes) rather than numbers."""
    y = np.asarray(y)
    if y.dtype.kind in "US":
        return True
    return y.dtype == object and y.size > 0 and all(isinstance(v, (str, bytes)) for v in y.ravel()[:1000])


def _text(y) -> np.ndarray:
    """Names as str, stripped of surrounding blanks (as a CSV field often carries them)."""
    y = np.asarray(y)
    flat = [(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)).strip() for v in y.ravel()]
    return np.asarray(flat, dtype=object).reshape(y.shape)


def class_names(y) -> list[str]:
    """The classes of text labels `y`: their distinct names, sorted (so the class indices, and
    for two names which one is positive, depend only on the names, not on their order)."""
    return sorted(set(_text(y).ravel().tolist()))


def class_indices(y, names: list[str], what: str = "the labels") -> np.ndarray:
    """Text labels `y` as int64 indices into `names` (a trained model's classes: preprocessing.json's
    `target_names`). Raises DataError naming the labels that are not among `names`."""
    text = _text(y)
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted(set(text.ravel().tolist()) - set(index))
    if unknown:
        raise DataError(f"{what}: the class name(s) {unknown[:10]}"
                        f"{' ...' if len(unknown) > 10 else ''} that training never saw; the model knows the "
                        f"{len(names)} classes {names[:20]}{' ...' if len(names) > 20 else ''}. Fix: drop those "
                        "examples, correct the names, or train on data that has those classes.")
    return np.vectorize(index.__getitem__, otypes=[np.int64])(text) if text.size else np.zeros(text.shape, np.int64)


def check_text_targets(targets, names: list[str], what: str) -> None:
    """Class names fit single-label problems only: classification (any count) and binary (two,
    the sorted second positive)."""
    kind = getattr(targets, "kind", None)
    if kind == "binary":
        if len(names) != 2:
            raise DataError(f"{what} holds {len(names)} class name(s) {names[:10]}; problem=binary needs exactly two "
                            "(the sorted second is the positive class). Fix: use problem=classification for "
                            f"{len(names)} classes, or relabel.")
        return
    if getattr(targets, "label_dtype", "int64") != "int64":
        raise DataError(f"{what} holds text (e.g. {names[:3]}), not numbers: problem={kind or 'regression'} needs "
                        "numeric targets. Fix: use problem=classification (or binary for two names) for class "
                        "names, or give numeric targets.")
