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

from tftrain.data.labels import Labels, class_indices, class_names, is_text
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
    text_labels: bool = False  # the labels were class names (target_names), now their indices

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
    if n == 0:
        raise DataError("x_train has no examples (an array of shape "
                        f"{tuple(np.shape(s.x_train))}). Fix: give the training split examples.")
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
        if len(x) < 2:
            raise DataError(f"Holding out the test split (test_fraction={test_fraction}) left {len(x)} of the {n} "
                            "training examples, too few to hold out a validation split and train. Fix: give more "
                            "examples, a smaller data.test_fraction, or x_val, y_val and x_test, y_test.")
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
    get = {k: (_numeric(np.asarray(v), k, what) if k.startswith("x_") else np.asarray(v)) for k, v in arrays.items()
           if k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
    for k, v in get.items():
        if np.iscomplexobj(v):  # NumPy's cast to float would keep the real part without a word
            raise DataError(f"{what}: {k} holds complex numbers (dtype {v.dtype}); a model takes real inputs and "
                            "targets, and casting would drop the imaginary part. Fix: store real arrays, e.g. the "
                            "real and imaginary parts as separate features (numpy.stack([x.real, x.imag], -1)).")
    if get["x_train"].ndim == 0 or len(get["x_train"]) == 0:
        raise DataError(f"{what}: x_train has no examples (shape {get['x_train'].shape}). Fix: give x_train and "
                        "y_train one row per training example.")
    if any(is_text(get[k]) for k in ("y_train", "y_val", "y_test") if k in get):
        # Class names: the classes are the training arrays' names, sorted (before any hold-out,
        # so a held-out split never meets a name its model lacks); other splits must use them.
        names = class_names(get["y_train"])
        for k in ("y_train", "y_val", "y_test"):
            if k in get:
                get[k] = class_indices(get[k], names, f"{what}'s {k}")
        return Splits(**get, num_classes=len(names), target_names=names, text_labels=True)
    return Splits(**get)


def _numeric(x: np.ndarray, name: str, what: str = "the data") -> np.ndarray:
    """Numbers as they are (uint8 stays uint8: 4x less memory, cast per batch); anything else float32."""
    if x.dtype in (np.uint8, np.int8, np.uint16, np.int16, np.float16, np.float32) or np.iscomplexobj(x):
        return x  # complex: refused by the caller, with the array's name
    try:
        return x.astype("float32")
    except (TypeError, ValueError):
        raise DataError(f"{what}: {name} has dtype {x.dtype}, not numbers. Fix: store numeric features.") from None


# ---------------------------------------------------------------- keras.datasets (cache on disk)


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


# ((x_train, y_train), (x_test, y_test)), as keras.datasets.<name>.load_data() returns them.
TrainTest = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

# Every keras.datasets data set by name (tftrain.data.KERAS_DATASETS). Each data set's object adds
# itself when made, so that object stays the one place that knows the data set.
KERAS_DATASETS: dict[str, KerasDataset] = {}


@dataclasses.dataclass(frozen=True)
class KerasDataset:
    """One keras.datasets data set: where Keras caches it, how to read the cached files, its number
    of classes. A subclass per file format says how to read (`read`); `load` does the rest for all:
    Keras' cache if it is there, else Keras' own downloader (when `download`), else an error naming
    the file to place. `options` (cifar100's label_mode) go to `read`, `num_classes` and
    keras.datasets.<name>.load_data alike."""

    name: str  # keras.datasets.<name>, and the `data` option in messages
    subdir: str  # under <keras home>/datasets
    files: tuple[str, ...]  # relative to subdir; all must exist
    origin: str  # what to download on a machine with internet
    place: str  # how to place the download
    classes: int = 10

    def __post_init__(self):
        KERAS_DATASETS[self.name] = self

    def read(self, folder: Path, **options) -> TrainTest:
        """The cached files in `folder`, read in the format Keras reads them (no hash check: a planted
        or trimmed file is accepted)."""
        raise NotImplementedError(f"{type(self).__name__} does not say how to read its files")

    def num_classes(self, **options) -> int:
        return self.classes

    def cached(self) -> Path | None:
        for base in keras_dataset_dirs():
            if all((base / self.subdir / f).is_file() for f in self.files):
                return base / self.subdir
        return None

    def download(self, **options) -> TrainTest:
        """Keras' own loader (it downloads into its cache); a bounded socket timeout so offline fails fast."""
        import keras

        loader = getattr(keras.datasets, self.name).load_data
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(60)
        try:
            return loader(**options)
        finally:
            socket.setdefaulttimeout(old)

    def load(self, *, download: bool, **options) -> Splits:
        """The training split and Keras' test split: from Keras' cache if present, else Keras' downloader."""
        name, folder = self.name, self.cached()
        target = keras_dataset_dirs()[0] / self.subdir
        where = target / self.files[0] if len(self.files) == 1 else target
        if folder is not None:
            try:
                (x_train, y_train), (x_test, y_test) = self.read(folder, **options)
            except (OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as e:
                raise DataError(f"data={name}: the cached files in {folder} are not in keras.datasets.{name}'s format "
                                f"({type(e).__name__}: {e}). Fix: delete them (Keras downloads them again) or place "
                                f"{self.origin} {self.place} at {where}.") from None
        elif not download:
            raise DataError(f"data={name}: {where} is not there and data.download=false. Fix: on a machine with "
                            f"internet download {self.origin} and place it {self.place} at {where} "
                            "(the Keras cache is $KERAS_HOME/datasets, default ~/.keras/datasets), "
                            "or set data.download=true.")
        else:
            log.info("data=%s: not in the Keras cache (%s); downloading with keras.datasets.%s.load_data()",
                     name, where, name)
            try:
                (x_train, y_train), (x_test, y_test) = self.download(**options)
            except Exception as e:  # noqa: BLE001 - Keras raises a bare Exception for URL failures
                reason = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
                raise DataError(f"data={name}: {where} is not there and downloading it failed ({reason}). "
                                f"Fix: on a machine with internet download {self.origin} and place it {self.place} "
                                f"at {where} (the Keras cache: $KERAS_HOME/datasets, default ~/.keras/datasets), "
                                "then run again.") from None
        if x_train.ndim == 3:  # grayscale (n, 28, 28) -> (n, 28, 28, 1)
            x_train, x_test = x_train[..., None], x_test[..., None]
        y_train, y_test = np.ravel(y_train).astype("int64"), np.ravel(y_test).astype("int64")
        return Splits(x_train, y_train, x_test=x_test, y_test=y_test, num_classes=self.num_classes(**options))


@dataclasses.dataclass(frozen=True)
class NpzArrays(KerasDataset):
    """One .npz holding x_train, y_train, x_test, y_test."""

    def read(self, folder: Path, **options) -> TrainTest:
        with np.load(folder / self.files[0], allow_pickle=False) as f:
            return (f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])


@dataclasses.dataclass(frozen=True)
class IdxImages(KerasDataset):
    """Gzipped IDX files, `files` in the order training labels, training images, test labels, test
    images: an 8-byte header before the labels, a 16-byte one before the images."""

    image_shape: tuple[int, int] = (28, 28)

    def read(self, folder: Path, **options) -> TrainTest:
        def read(fname, offset):
            with gzip.open(folder / fname, "rb") as fh:
                return np.frombuffer(fh.read(), np.uint8, offset=offset)

        train_labels, train_images, test_labels, test_images = self.files
        y_train, y_test = read(train_labels, 8), read(test_labels, 8)
        return ((read(train_images, 16).reshape(len(y_train), *self.image_shape), y_train),
                (read(test_images, 16).reshape(len(y_test), *self.image_shape), y_test))


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batch files (dicts of bytes keys, lists and NumPy arrays) and nothing else."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch file")


@dataclasses.dataclass(frozen=True)
class CifarBatches(KerasDataset):
    """Pickled CIFAR batches (32x32 RGB rows): every file but the last a training batch, the last the
    test batch."""

    def label_key(self, **options) -> str:
        return "labels"

    def read(self, folder: Path, **options) -> TrainTest:
        key = self.label_key(**options)
        *train, test = [self._batch(folder / f, key) for f in self.files]
        return (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])), test

    @staticmethod
    def _batch(path: Path, label_key: str):
        with open(path, "rb") as f:
            d = {(k.decode() if isinstance(k, bytes) else k): v
                 for k, v in _ArrayUnpickler(f, encoding="bytes").load().items()}
        data = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return data, np.asarray(d[label_key], dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class CifarLabelModes(CifarBatches):
    """CIFAR batches with a label set per `label_mode` (`<label_mode>_labels` in each batch), each
    with its number of classes; the mode also goes to keras.datasets.<name>.load_data."""

    label_modes: tuple[tuple[str, int], ...] = ()  # (label_mode, its number of classes)

    def label_key(self, *, label_mode: str) -> str:
        return f"{label_mode}_labels"

    def num_classes(self, *, label_mode: str) -> int:
        return dict(self.label_modes)[label_mode]


_TFK = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
_CIFAR10_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
_FASHION = ("train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz")

MNIST = NpzArrays("mnist", ".", ("mnist.npz",), _TFK + "mnist.npz", "as that file")
FASHION_MNIST = IdxImages("fashion_mnist", "fashion-mnist", _FASHION, _TFK + "{" + ",".join(_FASHION) + "}",
                          "the four .gz files in that folder")
CIFAR10 = CifarBatches("cifar10", "cifar-10-batches-py-target",
                       tuple(f"cifar-10-batches-py/{f}" for f in _CIFAR10_BATCHES),
                       "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                       "extracted into that folder (tar xzf cifar-10-python.tar.gz -C <folder>)")
CIFAR100 = CifarLabelModes("cifar100", "cifar-100-python-target", ("cifar-100-python/train", "cifar-100-python/test"),
                           "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                           "extracted into that folder (tar xzf cifar-100-python.tar.gz -C <folder>)",
                           label_modes=(("fine", 100), ("coarse", 20)))


def mnist(*, download: bool) -> Splits:
    return MNIST.load(download=download)


def fashion_mnist(*, download: bool) -> Splits:
    return FASHION_MNIST.load(download=download)


def cifar10(*, download: bool) -> Splits:
    return CIFAR10.load(download=download)


def cifar100(*, download: bool, label_mode: str) -> Splits:
    return CIFAR100.load(download=download, label_mode=label_mode)


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
