"""What is learned and how it is scored: a `Problem` owns the loss, the metrics, what the targets
must look like, each metric's direction and what a prediction looks like (TF Model Garden's
Task). The `problem` options' targets: `Classification`, `Binary`, `Multilabel`, `Regression`
(tftrain.problems.kinds).

The classes import TensorFlow; they load on first use, so `tftrain.problems.direction` serves
the config layer without it.
"""

from tftrain.problems.direction import lower_is_better, mode_of

__all__ = ["Problem", "Classification", "Binary", "Multilabel", "Regression", "lower_is_better", "mode_of"]


def __getattr__(name):  # PEP 562: the classes (and TensorFlow) load on first use
    if name == "Problem":
        from tftrain.problems.base import Problem

        return Problem
    if name in ("Classification", "Binary", "Multilabel", "Regression"):
        from tftrain.problems import kinds

        return getattr(kinds, name)
    raise AttributeError(f"module 'tftrain.problems' has no attribute {name!r}")
