"""Which way a metric improves, by its logged name (`val_mae`, `best_val_loss`, `test_auc`): a
lower loss or error is better, a higher accuracy or AUC. Plain Python: the config layer resolves
`mode: auto` and the objective's direction with it before TensorFlow is imported."""

from __future__ import annotations

# Parts of a metric's name that mean "lower is better" (Keras' losses and error metrics).
LOWER_IS_BETTER = ("loss", "mae", "mse", "rmse", "mape", "msle", "error", "crossentropy", "hinge", "logcosh",
                   "divergence", "poisson", "huber")


def lower_is_better(name: str) -> bool:
    return any(part in name for part in LOWER_IS_BETTER)


def mode_of(name: str) -> str:
    """"min" or "max": the Keras callbacks' `mode` for monitoring `name`."""
    return "min" if lower_is_better(name) else "max"


# Prefixes of a logged name that say where it was measured, longest first.
SPLIT_PREFIXES = ("best_val_", "val_", "test_", "train_")


def metric_of(name: str) -> str:
    """The metric a logged name measures: `val_mae` -> `mae`, `best_val_accuracy` -> `accuracy`."""
    return next((name[len(p):] for p in SPLIT_PREFIXES if name.startswith(p)), name)
