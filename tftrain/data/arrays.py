"""In-memory data sets: NumPy splits, checked in full once.

digits, synthetic, npz, and the `keras.datasets` image sets (mnist, fashion_mnist, cifar10,
cifar100). A loader returns `Splits`; `tftrain.data.pipeline` feeds them to the loop by gathering
batches of a seeded permutation (no per-example tf.data work, no copy in a shuffle buffer).
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import os
import pickle
import socket
from pathlib import Path

import numpy as np

from tftrain.errors import DataError

log = logging.getLogger("tftrain")


@dataclasses.dataclass
class Splits:
    """Three splits as arrays; x keeps its dtype (uint8 images stay uint8: cast per batch)."""

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


def split_plain(x, y, fraction, seed, what: str = "x_train"):
    """Hold out `fraction` at random (not stratified: user labels may have rare classes)."""
    if len(x) != len(y):
        raise DataError(f"{what} has {len(x)} examples but its labels have {len(y)}. "
                        "Fix: give both the same length.")
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(round(fraction * len(x))))
    val, train = order[:n_val], order[n_val:]
    return x[train], x[val], y[train], y[val]


# ---------------------------------------------------------------- loaders


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
    x_train, y_train = _numeric(arrays["x_train"], "x_train"), arrays["y_train"]
    if "x_val" in arrays and "y_val" in arrays:
        x_val, y_val = _numeric(arrays["x_val"], "x_val"), arrays["y_val"]
    else:
        x_train, x_val, y_train, y_val = split_plain(x_train, y_train, cfg.val_fraction, cfg.split_seed)
    y_all = [np.ravel(a) for a in (y_train, y_val, arrays["y_test"])]
    num_classes = max((int(a.max()) + 1 for a in y_all if a.size and np.issubdtype(a.dtype, np.number)), default=0)
    return Splits(x_train, y_train, x_val, y_val, _numeric(arrays["x_test"], "x_test"), arrays["y_test"],
                  num_classes=max(num_classes, 2))


def _numeric(x: np.ndarray, name: str) -> np.ndarray:
    """Numbers as they are (uint8 stays uint8: 4x less memory, cast per batch); anything else float32."""
    if x.dtype in (np.uint8, np.int8, np.uint16, np.int16, np.float16, np.float32):
        return x
    try:
        return x.astype("float32")
    except (TypeError, ValueError):
        raise DataError(f"{name} has dtype {x.dtype}, not numbers. Fix: store numeric features.") from None


# ---------------------------------------------------------------- keras.datasets (cache on disk)


@dataclasses.dataclass(frozen=True)
class KerasDataset:
    """Where Keras caches one of its data sets, and how to read the cached files."""

    name: str
    subdir: str  # under <keras home>/datasets
    files: tuple[str, ...]  # relative to subdir; all must exist
    origin: str  # what to download on a machine with internet
    place: str  # how to place the download

    def cached(self) -> Path | None:
        for base in keras_dataset_dirs():
            if all((base / self.subdir / f).is_file() for f in self.files):
                return base / self.subdir
        return None


def keras_home() -> Path:
    """Keras' cache root as Keras resolves it: $KERAS_HOME, else ~/.keras (or /tmp/.keras if ~ is read-only).

    Read at call time, so a KERAS_HOME set after `import keras` (a test, a notebook) is honoured."""
    if "KERAS_HOME" in os.environ:
        return Path(os.path.expanduser(os.environ["KERAS_HOME"]))
    home = os.path.expanduser("~")
    return Path(home if os.access(home, os.W_OK) else "/tmp") / ".keras"


def keras_dataset_dirs() -> list[Path]:
    """Where keras.utils.get_file stores data sets: <keras home>/datasets, or /tmp/.keras/datasets when
    the home is not writable."""
    home = keras_home()
    dirs = [home / "datasets"]
    if not (home.is_dir() and os.access(home, os.W_OK)):
        dirs.append(Path("/tmp/.keras/datasets"))
    return dirs


_TFK = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
_FASHION = ("train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz")
KERAS_DATASETS = {
    "mnist": KerasDataset("mnist", ".", ("mnist.npz",), _TFK + "mnist.npz", "as that file"),
    "fashion_mnist": KerasDataset("fashion_mnist", "fashion-mnist", _FASHION,
                                  _TFK + "{" + ",".join(_FASHION) + "}", "the four .gz files in that folder"),
    "cifar10": KerasDataset("cifar10", "cifar-10-batches-py-target",
                            tuple(f"cifar-10-batches-py/{f}" for f in
                                  ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                                   "test_batch")),
                            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                            "extracted into that folder (tar xzf cifar-10-python.tar.gz -C <folder>)"),
    "cifar100": KerasDataset("cifar100", "cifar-100-python-target",
                             ("cifar-100-python/train", "cifar-100-python/test"),
                             "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                             "extracted into that folder (tar xzf cifar-100-python.tar.gz -C <folder>)"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batch files (dicts of bytes keys, lists and NumPy arrays) and nothing else."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch file")


def _cifar_batch(path: Path, label_key: str):
    with open(path, "rb") as f:
        d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in _ArrayUnpickler(f, encoding="bytes").load().items()}
    data = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return data, np.asarray(d[label_key], dtype=np.int64)


def _read_keras_cache(name: str, folder: Path, cfg):
    """((x_train, y_train), (x_test, y_test)) from the files keras.datasets.<name> caches, read in
    the format Keras reads them (no hash check: a planted or trimmed file is accepted)."""
    if name == "mnist":
        with np.load(folder / "mnist.npz", allow_pickle=False) as f:
            return (f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])
    if name == "fashion_mnist":
        def read(fname, offset):
            with gzip.open(folder / fname, "rb") as fh:
                return np.frombuffer(fh.read(), np.uint8, offset=offset)
        y_train, y_test = read(_FASHION[0], 8), read(_FASHION[2], 8)
        return ((read(_FASHION[1], 16).reshape(len(y_train), 28, 28), y_train),
                (read(_FASHION[3], 16).reshape(len(y_test), 28, 28), y_test))
    if name == "cifar10":
        parts = [_cifar_batch(folder / f"cifar-10-batches-py/data_batch_{i}", "labels") for i in range(1, 6)]
        x_test, y_test = _cifar_batch(folder / "cifar-10-batches-py/test_batch", "labels")
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])), (x_test, y_test)
    key = f"{cfg.label_mode}_labels"
    return (_cifar_batch(folder / "cifar-100-python/train", key), _cifar_batch(folder / "cifar-100-python/test", key))


def _download_with_keras(name: str, cfg):
    """Keras' own loader (it downloads into its cache); a bounded socket timeout so offline fails fast."""
    import keras

    loader = getattr(keras.datasets, name).load_data
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(60)
    try:
        return loader(label_mode=cfg.label_mode) if name == "cifar100" else loader()
    finally:
        socket.setdefaulttimeout(old)


def load_keras_dataset(cfg, seed: int) -> Splits:
    """mnist, fashion_mnist, cifar10, cifar100: from Keras' cache if present, else Keras' downloader;
    the validation split is val_fraction of the training set (seeded by split_seed)."""
    name = cfg.name
    spec = KERAS_DATASETS[name]
    folder = spec.cached()
    target = keras_dataset_dirs()[0] / spec.subdir
    where = target / spec.files[0] if len(spec.files) == 1 else target
    if folder is not None:
        try:
            (x_train, y_train), (x_test, y_test) = _read_keras_cache(name, folder, cfg)
        except (OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as e:
            raise DataError(f"data={name}: the cached files in {folder} are not in keras.datasets.{name}'s format "
                            f"({type(e).__name__}: {e}). Fix: delete them (Keras downloads them again) or place "
                            f"{spec.origin} {spec.place} at {where}.") from None
    elif not cfg.download:
        raise DataError(f"data={name}: {where} is not there and data.download=false. Fix: on a machine with "
                        f"internet download {spec.origin} and place it {spec.place} at {where} "
                        "(the Keras cache is $KERAS_HOME/datasets, default ~/.keras/datasets), "
                        "or set data.download=true.")
    else:
        log.info("data=%s: not in the Keras cache (%s); downloading with keras.datasets.%s.load_data()",
                 name, where, name)
        try:
            (x_train, y_train), (x_test, y_test) = _download_with_keras(name, cfg)
        except Exception as e:  # noqa: BLE001 - Keras raises a bare Exception for URL failures
            reason = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
            raise DataError(f"data={name}: {where} is not there and downloading it failed ({reason}). "
                            f"Fix: on a machine with internet download {spec.origin} and place it {spec.place} "
                            f"at {where} (the Keras cache: $KERAS_HOME/datasets, default ~/.keras/datasets), "
                            "then run again.") from None
    if x_train.ndim == 3:  # mnist, fashion_mnist: (n, 28, 28) -> (n, 28, 28, 1)
        x_train, x_test = x_train[..., None], x_test[..., None]
    y_train, y_test = np.ravel(y_train).astype("int64"), np.ravel(y_test).astype("int64")
    x_train, x_val, y_train, y_val = split_plain(x_train, y_train, cfg.val_fraction, cfg.split_seed)
    num_classes = 100 if name == "cifar100" and cfg.label_mode == "fine" else 20 if name == "cifar100" else 10
    return Splits(x_train, y_train, x_val, y_val, x_test, y_test, num_classes=num_classes)


# ---------------------------------------------------------------- checks


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
        if not np.issubdtype(x.dtype, np.number):
            raise DataError(f"x_{split} has dtype {x.dtype}, not numbers. Fix: store numeric features.")
        if np.issubdtype(x.dtype, np.floating):
            bad = sum(int(np.count_nonzero(~np.isfinite(c))) for c in _chunks(x))
            if bad:
                raise DataError(f"x_{split} holds {bad} NaN or Inf values. Fix: clean or impute them first.")
        y_flat = np.ravel(y)
        if (y_flat.shape[0] != len(x) or not np.issubdtype(y_flat.dtype, np.number)
                or not np.issubdtype(y_flat.dtype, np.integer) and not np.all(y_flat == np.round(y_flat))):
            raise DataError(f"y_{split} must hold one integer class label per example (got dtype "
                            f"{y.dtype}, shape {y.shape}). Fix: store labels as integers 0..num_classes-1.")
        if y_flat.min() < 0 or y_flat.max() >= s.num_classes:
            raise DataError(f"y_{split} has labels outside [0, {s.num_classes}): min {y_flat.min()}, "
                            f"max {y_flat.max()}. Fix: map the labels to 0..{s.num_classes - 1}.")
    return dataclasses.replace(s, y_train=np.ravel(s.y_train).astype("int64"),
                               y_val=np.ravel(s.y_val).astype("int64"), y_test=np.ravel(s.y_test).astype("int64"))


def _chunks(x: np.ndarray, rows: int = 4096):
    for i in range(0, len(x), rows):
        yield x[i:i + rows]


def channel_stats(x: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel (last axis) mean, std, min, max in float64, computed in chunks (no full float64 copy)."""
    c = x.shape[-1]
    total, total_sq, count = np.zeros(c), np.zeros(c), 0
    lo, hi = np.full(c, np.inf), np.full(c, -np.inf)
    for chunk in _chunks(x):
        flat = chunk.reshape(-1, c).astype(np.float64)
        total += flat.sum(0)
        total_sq += np.square(flat).sum(0)
        count += flat.shape[0]
        lo, hi = np.minimum(lo, flat.min(0)), np.maximum(hi, flat.max(0))
    mean = total / count
    return {"mean": mean, "std": np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0)), "min": lo, "max": hi}


ARRAY_LOADERS = {
    "digits": load_digits, "synthetic": load_synthetic, "npz": load_npz,
    "mnist": load_keras_dataset, "fashion_mnist": load_keras_dataset,
    "cifar10": load_keras_dataset, "cifar100": load_keras_dataset,
}


def load_data(cfg_data, seed: int) -> Splits:
    """The checked NumPy splits of an in-memory data option (the file-backed ones stream: use
    `build_datasets`)."""
    if cfg_data.name not in ARRAY_LOADERS:
        raise DataError(f"data={cfg_data.name} streams from files and has no in-memory splits. "
                        "Fix: use tftrain.data.build_datasets(cfg.data, cfg.trainer, strategy).")
    return check_splits(ARRAY_LOADERS[cfg_data.name](cfg_data, seed))
