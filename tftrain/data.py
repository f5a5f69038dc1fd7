"""Data sets as in-memory splits, checked once, and the tf.data pipelines that feed the loop.

A loader returns `Splits` (NumPy arrays); `make_dataset` turns one split into a batched,
shuffled, prefetched tf.data pipeline. Loaders are chosen by `data.name` from `LOADERS`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np

from tftrain.errors import DataError


@dataclasses.dataclass
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def _stratified_split(x, y, fraction: float, seed: int):
    from sklearn.model_selection import train_test_split

    return train_test_split(x, y, test_size=fraction, random_state=seed, stratify=y)


def load_digits(cfg, seed: int) -> Splits:
    """scikit-learn's 8x8 digits, scaled to [0, 1], as (8, 8, 1) images; the split uses split_seed."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = (d.images / 16.0).astype("float32")[..., None]
    y = d.target.astype("int64")
    x_rest, x_test, y_rest, y_test = _stratified_split(x, y, cfg.test_fraction, cfg.split_seed)
    val_of_rest = cfg.val_fraction / (1.0 - cfg.test_fraction)
    x_train, x_val, y_train, y_val = _stratified_split(x_rest, y_rest, val_of_rest, cfg.split_seed)
    return Splits(x_train, y_train, x_val, y_val, x_test, y_test, num_classes=10)


def load_synthetic(cfg, seed: int) -> Splits:
    """Gaussian clusters: a random prototype per class plus `noise`-scaled Gaussian noise."""
    rng = np.random.default_rng(seed)
    shape = tuple(cfg.input_shape)
    prototypes = rng.normal(size=(cfg.num_classes, *shape)).astype("float32")

    def draw(n):
        y = rng.integers(0, cfg.num_classes, size=n)
        x = prototypes[y] + cfg.noise * rng.normal(size=(n, *shape)).astype("float32")
        return x.astype("float32"), y.astype("int64")

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (
        draw(cfg.num_train), draw(cfg.num_val), draw(cfg.num_test))
    return Splits(x_train, y_train, x_val, y_val, x_test, y_test, num_classes=cfg.num_classes)


def load_npz(cfg, seed: int) -> Splits:
    """A user's .npz with x_train, y_train, x_test, y_test and optionally x_val, y_val."""
    path = Path(cfg.path).expanduser()
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise DataError(f"data.path={str(path)!r} is not a readable .npz file ({e}). Fix: save it with "
                        "numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...).") from None
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise DataError(f"data.path={str(path)!r} lacks the arrays {missing} (it has {sorted(arrays)}). "
                        "Fix: save x_train, y_train, x_test, y_test (and optionally x_val, y_val) in it.")
    x_train, y_train = arrays["x_train"].astype("float32"), arrays["y_train"]
    if "x_val" in arrays and "y_val" in arrays:
        x_val, y_val = arrays["x_val"].astype("float32"), arrays["y_val"]
    else:
        x_train, x_val, y_train, y_val = _split_plain(x_train, y_train, cfg.val_fraction, cfg.split_seed)
    y_all = np.concatenate([np.ravel(y_train), np.ravel(y_val), np.ravel(arrays["y_test"])])
    num_classes = int(y_all.max()) + 1 if y_all.size else 0
    return Splits(x_train, y_train, x_val, y_val, arrays["x_test"].astype("float32"), arrays["y_test"],
                  num_classes=max(num_classes, 2))


def _split_plain(x, y, fraction, seed):
    """Hold out `fraction` at random (not stratified: user labels may have rare classes)."""
    if len(x) != len(y):
        raise DataError(f"x_train has {len(x)} examples but y_train has {len(y)}. Fix: give both the same length.")
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(round(fraction * len(x))))
    val, train = order[:n_val], order[n_val:]
    return x[train], x[val], y[train], y[val]


LOADERS: dict[str, Callable] = {"digits": load_digits, "synthetic": load_synthetic, "npz": load_npz}


def check_splits(s: Splits) -> Splits:
    """Fail before training, naming the split and the problem, on data the model cannot use."""
    for split in ("train", "val", "test"):
        x, y = getattr(s, f"x_{split}"), getattr(s, f"y_{split}")
        if len(x) == 0:
            raise DataError(f"The {split} split is empty. Fix: give it examples (or a smaller val/test fraction).")
        if len(x) != len(y):
            raise DataError(f"x_{split} has {len(x)} examples but y_{split} has {len(y)}. "
                            "Fix: give features and labels the same length.")
        if x.shape[1:] != s.input_shape:
            raise DataError(f"x_{split} has example shape {x.shape[1:]} but x_train has {s.input_shape}. "
                            "Fix: give every split the same example shape.")
        if not np.all(np.isfinite(x)):
            bad = int(np.sum(~np.isfinite(x)))
            raise DataError(f"x_{split} holds {bad} NaN or Inf values. Fix: clean or impute them first.")
        y_flat = np.ravel(y)
        if y_flat.shape[0] != len(x) or not np.issubdtype(y_flat.dtype, np.integer) and not np.all(y_flat == np.round(y_flat)):
            raise DataError(f"y_{split} must hold one integer class label per example (got dtype "
                            f"{y.dtype}, shape {y.shape}). Fix: store labels as integers 0..num_classes-1.")
        if y_flat.min() < 0 or y_flat.max() >= s.num_classes:
            raise DataError(f"y_{split} has labels outside [0, {s.num_classes}): min {y_flat.min()}, "
                            f"max {y_flat.max()}. Fix: map the labels to 0..{s.num_classes - 1}.")
    return dataclasses.replace(s, y_train=np.ravel(s.y_train).astype("int64"),
                               y_val=np.ravel(s.y_val).astype("int64"), y_test=np.ravel(s.y_test).astype("int64"))


def load_data(cfg_data, seed: int) -> Splits:
    return check_splits(LOADERS[cfg_data.name](cfg_data, seed))


def make_dataset(x, y, batch_size: int, *, shuffle: bool, seed: int, drop_remainder: bool):
    """Batched tf.data pipeline; shuffling is seeded and differs per epoch (reshuffle each iteration)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
