"""In-memory data sources: NumPy splits, checked in full once; the `data` options' targets.

digits, synthetic, npz, the `keras.datasets` image sets (mnist, fashion_mnist, cifar10,
cifar100), and a user's own function (`data=custom`, via `from_user`). A source returns `Splits`
with whatever splits it has; `hold_out` takes the missing validation and test splits out of the
training arrays. `tftrain.data.pipeline` feeds the splits to the loop by gathering batches of a
seeded permutation (no per-example tf.data work, no copy in a shuffle buffer).
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

from tftrain.data.labels import Labels
from tftrain.errors import DataError

log = logging.getLogger("tftrain")


@dataclasses.dataclass
class Splits:
    """Arrays per split; x keeps its dtype (uint8 images stay uint8: cast per batch). `x_val` /
    `x_test` None: the source has no such split (`hold_out` makes one). `num_classes`: known to
    the source (e.g. 100 for CIFAR-100), or None to infer it from the labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    num_classes: int | None = None
    target_names: list[str] | None = None  # names of the classes (or of the targets), for predictions
    feature_names: list[str] | None = None  # names of the input features (tabular data), for predictions

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def _split(x, y, fraction: float, seed: int, stratify: bool):
    """(x_rest, x_held, y_rest, y_held): `fraction` of the examples held out at random (seeded),
    stratified by label when asked and possible (scikit-learn's train_test_split)."""
    if len(x) != len(y):
        raise DataError(f"x_train has {len(x)} examples but y_train has {len(y)}. "
                        "Fix: give features and labels the same length.")
    from sklearn.model_selection import train_test_split

    if stratify:
        try:
            return train_test_split(x, y, test_size=fraction, random_state=seed, stratify=y)
        except ValueError:  # a class with a single example, or fewer held-out examples than classes
            pass
    order = np.random.default_rng(seed).permutation(len(x))
    n_held = max(1, int(round(fraction * len(x))))
    held, rest = order[:n_held], order[n_held:]
    return x[rest], x[held], y[rest], y[held]


def hold_out(s: Splits, val_fraction: float | None, test_fraction: float | None, seed: int,
             stratify: bool | None = None) -> Splits:
    """`s` with its missing test split (`test_fraction` of the training examples), then its missing
    validation split (`val_fraction` of them), held out of the training arrays. `stratify`: by
    class (None: when the labels are integers)."""
    if stratify is None:
        stratify = np.issubdtype(np.asarray(s.y_train).dtype, np.integer) and np.ndim(s.y_train) == 1
    x, y, n = s.x_train, s.y_train, len(s.x_train)
    out = dataclasses.replace(s)
    if s.x_test is None:
        if not test_fraction:
            raise DataError("The source has no test split and no test_fraction to hold one out. Fix: set "
                            "data.test_fraction (e.g. 0.2) or give x_test, y_test.")
        x, out.x_test, y, out.y_test = _split(x, y, test_fraction, seed, stratify)
    if s.x_val is None:
        if not val_fraction:
            raise DataError("The source has no validation split and no val_fraction to hold one out. Fix: set "
                            "data.val_fraction (e.g. 0.1) or give x_val, y_val.")
        x, out.x_val, y, out.y_val = _split(x, y, val_fraction * n / len(x), seed, stratify)
    out.x_train, out.y_train = x, y
    return out


# ---------------------------------------------------------------- sources


def _digit_images(image_size=None) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits scaled to [0, 1] as (8, 8, 1) images (bilinearly resized to
    `image_size` when given), and their digits."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype("float32")[..., None]
    if image_size is not None:
        import tensorflow as tf

        x = tf.image.resize(x, tuple(image_size), method="bilinear").numpy().astype("float32")
    return x, d.target.astype("int64")


def digits(*, image_size) -> Splits:
    """scikit-learn's 8x8 handwritten digits (1797 images, 10 classes): all as training examples
    (the pipeline holds out validation and test)."""
    x, y = _digit_images(image_size)
    return Splits(x, y, num_classes=10, target_names=[str(d) for d in range(10)])


# The digits' multi-label targets: several true at once per image.
DIGIT_ATTRIBUTES = {"even": (0, 2, 4, 6, 8), "greater_than_4": (5, 6, 7, 8, 9), "prime": (2, 3, 5, 7),
                    "closed_loop": (0, 4, 6, 8, 9)}


def digits_multilabel() -> Splits:
    """The 8x8 digits with four 0/1 labels per image: even, greater than 4, prime, and drawn with
    a closed loop (0, 4, 6, 8, 9). A multi-label problem on bundled real images."""
    x, digit = _digit_images()
    y = np.stack([np.isin(digit, members) for members in DIGIT_ATTRIBUTES.values()], axis=1).astype("float32")
    return Splits(x, y, target_names=list(DIGIT_ATTRIBUTES))


def breast_cancer() -> Splits:
    """scikit-learn's Wisconsin breast cancer data (569 tumours, 30 features): 1 benign, 0 malignant."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    return Splits(d.data.astype("float32"), d.target.astype("int64"), target_names=["benign"],
                  feature_names=[str(n) for n in d.feature_names])


def diabetes() -> Splits:
    """scikit-learn's diabetes data (442 patients, 10 raw features: age, sex, BMI, blood pressure and
    six blood serum measurements): disease progression after one year, a number from 25 to 346."""
    from sklearn.datasets import load_diabetes

    d = load_diabetes(scaled=False)
    return Splits(d.data.astype("float32"), d.target.astype("float32"), target_names=["progression"],
                  feature_names=[str(n) for n in d.feature_names])


def synthetic(*, num_train: int, num_val: int, num_test: int, input_shape, num_classes: int, noise: float,
              seed: int) -> Splits:
    """Gaussian clusters: a random prototype per class plus `noise`-scaled Gaussian noise."""
    rng = np.random.default_rng(seed)
    shape = tuple(input_shape)
    prototypes = rng.normal(size=(num_classes, *shape)).astype("float32")

    def draw(n):
        y = rng.integers(0, num_classes, size=n)
        x = prototypes[y] + noise * rng.normal(size=(n, *shape)).astype("float32")
        return x.astype("float32"), y.astype("int64")

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = draw(num_train), draw(num_val), draw(num_test)
    return Splits(x_train, y_train, x_val, y_val, x_test, y_test, num_classes=num_classes)


def npz(*, path: str) -> Splits:
    """A user's .npz with x_train, y_train and optionally x_val, y_val, x_test, y_test."""
    import zipfile

    path = Path(path).expanduser()
    if not zipfile.is_zipfile(path):  # np.load would read a .npy or a pickle, and speak of allow_pickle
        raise DataError(f"data.path={str(path)!r} is not an .npz file (a zip archive of named arrays). Fix: save "
                        "it with numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...).")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        reason = "it holds Python objects, not numeric arrays" if "pickle" in str(e) else str(e)
        raise DataError(f"data.path={str(path)!r} is not a readable .npz file ({reason}). Fix: save numeric arrays "
                        "with numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...).") from None
    return from_arrays(arrays, f"data.path={str(path)!r}")


def from_arrays(arrays: dict, what: str) -> Splits:
    """Splits from a mapping of arrays x_train, y_train [, x_val, y_val] [, x_test, y_test]."""
    missing = [k for k in ("x_train", "y_train") if k not in arrays]
    unpaired = [k for k in ("val", "test") if (f"x_{k}" in arrays) != (f"y_{k}" in arrays)]
    if missing or unpaired:
        raise DataError(f"{what} lacks the arrays {missing or [f'x_{unpaired[0]}/y_{unpaired[0]}']} (it has "
                        f"{sorted(arrays)}). Fix: give x_train, y_train and optionally x_val, y_val, x_test, y_test.")
    get = {k: (_numeric(np.asarray(v), k) if k.startswith("x_") else np.asarray(v)) for k, v in arrays.items()
           if k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
    return Splits(**get)


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


def _read_keras_cache(name: str, folder: Path, label_mode: str):
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
    key = f"{label_mode}_labels"
    return (_cifar_batch(folder / "cifar-100-python/train", key), _cifar_batch(folder / "cifar-100-python/test", key))


def _download_with_keras(name: str, label_mode: str):
    """Keras' own loader (it downloads into its cache); a bounded socket timeout so offline fails fast."""
    import keras

    loader = getattr(keras.datasets, name).load_data
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(60)
    try:
        return loader(label_mode=label_mode) if name == "cifar100" else loader()
    finally:
        socket.setdefaulttimeout(old)


def keras_dataset(name: str, *, download: bool, label_mode: str = "fine") -> Splits:
    """mnist, fashion_mnist, cifar10, cifar100 (train and Keras' test split): from Keras' cache if
    present, else Keras' downloader."""
    spec = KERAS_DATASETS[name]
    folder = spec.cached()
    target = keras_dataset_dirs()[0] / spec.subdir
    where = target / spec.files[0] if len(spec.files) == 1 else target
    if folder is not None:
        try:
            (x_train, y_train), (x_test, y_test) = _read_keras_cache(name, folder, label_mode)
        except (OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as e:
            raise DataError(f"data={name}: the cached files in {folder} are not in keras.datasets.{name}'s format "
                            f"({type(e).__name__}: {e}). Fix: delete them (Keras downloads them again) or place "
                            f"{spec.origin} {spec.place} at {where}.") from None
    elif not download:
        raise DataError(f"data={name}: {where} is not there and data.download=false. Fix: on a machine with "
                        f"internet download {spec.origin} and place it {spec.place} at {where} "
                        "(the Keras cache is $KERAS_HOME/datasets, default ~/.keras/datasets), "
                        "or set data.download=true.")
    else:
        log.info("data=%s: not in the Keras cache (%s); downloading with keras.datasets.%s.load_data()",
                 name, where, name)
        try:
            (x_train, y_train), (x_test, y_test) = _download_with_keras(name, label_mode)
        except Exception as e:  # noqa: BLE001 - Keras raises a bare Exception for URL failures
            reason = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
            raise DataError(f"data={name}: {where} is not there and downloading it failed ({reason}). "
                            f"Fix: on a machine with internet download {spec.origin} and place it {spec.place} "
                            f"at {where} (the Keras cache: $KERAS_HOME/datasets, default ~/.keras/datasets), "
                            "then run again.") from None
    if x_train.ndim == 3:  # mnist, fashion_mnist: (n, 28, 28) -> (n, 28, 28, 1)
        x_train, x_test = x_train[..., None], x_test[..., None]
    y_train, y_test = np.ravel(y_train).astype("int64"), np.ravel(y_test).astype("int64")
    num_classes = 100 if name == "cifar100" and label_mode == "fine" else 20 if name == "cifar100" else 10
    return Splits(x_train, y_train, x_test=x_test, y_test=y_test, num_classes=num_classes)


def mnist(*, download: bool) -> Splits:
    return keras_dataset("mnist", download=download)


def fashion_mnist(*, download: bool) -> Splits:
    return keras_dataset("fashion_mnist", download=download)


def cifar10(*, download: bool) -> Splits:
    return keras_dataset("cifar10", download=download)


def cifar100(*, download: bool, label_mode: str) -> Splits:
    return keras_dataset("cifar100", download=download, label_mode=label_mode)


# ---------------------------------------------------------------- checks


def check_splits(s: Splits, targets) -> tuple[Splits, int, dict]:
    """Fail before training, naming the split and the problem, on data the model cannot use.
    `targets` (tftrain.data.labels.Targets) checks the labels; returns the splits with their
    targets in its dtype (class labels flat), the model's number of outputs, and the labels'
    summaries per split."""
    labels = {}
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
        if not (np.issubdtype(np.asarray(y).dtype, np.number) or np.asarray(y).dtype == bool):
            raise DataError(f"y_{split} has dtype {np.asarray(y).dtype}, not numbers. Fix: store numeric targets "
                            "(integer class labels, 0/1 labels or values).")
        labels[split] = Labels.of(split, y)
    if labels["val"].shape != labels["train"].shape or labels["test"].shape != labels["train"].shape:
        raise DataError(f"The splits' targets have different shapes per example: train {labels['train'].shape}, val "
                        f"{labels['val'].shape}, test {labels['test'].shape}. Fix: give every split the same targets.")
    outputs = targets.check(labels, s.num_classes)

    def cast(y):
        y = np.asarray(y).astype(targets.label_dtype)
        return np.ravel(y) if targets.label_dtype == "int64" else y

    return dataclasses.replace(s, y_train=cast(s.y_train), y_val=cast(s.y_val), y_test=cast(s.y_test)), outputs, labels


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
