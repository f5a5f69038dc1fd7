"""Schemas of the `data` group (see tftrain/schema/__init__.py for the conventions).

One dataclass per option. Paths are checked here, so a missing file or folder fails before
TensorFlow is imported; what needs TensorFlow to read (columns, labels, NaNs) is checked by
`tftrain.data` before training starts. This module imports nothing heavy (`--help` stays fast).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from tftrain.errors import require

NORMALIZE = (None, "standardize", "scale")
FLIPS = (None, "horizontal", "vertical", "horizontal_and_vertical")
COLOR_MODES = {"grayscale": 1, "rgb": 3, "rgba": 4}
INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5", "gaussian", "mitchellcubic")
FEATURE_DTYPES = ("float32", "int64", "bytes")
FEATURE_DECODERS = (None, "raw", "image")


def expand_paths(pattern: str) -> list[str]:
    """The files a path or glob pattern (`data/train-*.csv`, `~/d/*.tfrecord`) names, sorted."""
    pattern = os.path.expanduser(str(pattern))
    if glob.has_magic(pattern):
        return sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
    return [pattern] if os.path.isfile(pattern) else []


# ---------------------------------------------------------------- shared parts


@dataclass
class AugmentConf:
    """Random image augmentation, applied to training batches only (never to val/test)."""

    flip: Optional[str] = None  # null | horizontal | vertical | horizontal_and_vertical
    translate: float = 0.0  # max shift, a fraction of height and width (zero fill), e.g. 0.1


def _check_fractions(conf, val_given: bool, test_given: bool) -> None:
    for key, given in (("val_fraction", val_given), ("test_fraction", test_given)):
        if not given and hasattr(conf, key):
            require(0 < getattr(conf, key) < 1, key, getattr(conf, key), "a fraction in (0, 1)")
    held = (0 if val_given else getattr(conf, "val_fraction", 0)) + (0 if test_given else getattr(conf, "test_fraction", 0))
    require(held < 1, "val_fraction", getattr(conf, "val_fraction", None),
            "val_fraction + test_fraction < 1, leaving examples to train on")


def _check_pipeline(conf) -> None:
    """normalize, augment, cache, shuffle_buffer, scan_limit: whichever the option has."""
    require(conf.normalize in NORMALIZE, "normalize", conf.normalize,
            "null, standardize (per-channel mean 0, std 1) or scale (per-channel min-max to [0, 1]); "
            "statistics come from the training split only")
    aug = getattr(conf, "augment", None)
    if aug is not None:
        require(aug.flip in FLIPS, "augment.flip", aug.flip, f"one of {list(FLIPS)}")
        require(0 <= aug.translate < 0.5, "augment.translate", aug.translate,
                "a fraction of height/width in [0, 0.5), e.g. 0.1 (0: off)")
    if hasattr(conf, "shuffle_buffer"):
        require(conf.shuffle_buffer is None or conf.shuffle_buffer >= 1, "shuffle_buffer", conf.shuffle_buffer,
                "null (the whole split: a uniform shuffle, held in memory) or an integer >= 1")
    if hasattr(conf, "scan_limit"):
        require(conf.scan_limit is None or conf.scan_limit >= 1, "scan_limit", conf.scan_limit,
                "null (check every example) or an integer >= 1")
    if getattr(conf, "cache", None) not in (None, "memory"):
        parent = Path(os.path.expanduser(conf.cache)).parent
        require(parent.is_dir(), "cache", conf.cache,
                "null, memory, or a file path prefix in an existing directory (a tf.data cache on disk)",
                f"create {str(parent)!r} or use data.cache=memory")


def _check_file_pattern(key: str, value: Optional[str], what: str, required: bool = True) -> None:
    if value is None and not required:
        return
    require(value not in (None, "") and bool(expand_paths(value)), key, value,
            f"a path or glob pattern matching at least one existing {what}",
            f"pass data.{key}=/absolute/path/to/file or a pattern such as data.{key}='/data/part-*'")


def _check_dir(key: str, value: Optional[str], required: bool = True) -> None:
    if value is None and not required:
        return
    require(value not in (None, "") and Path(os.path.expanduser(value)).is_dir(), key, value,
            "an existing directory with one sub-folder of images per class",
            f"pass data.{key}=/absolute/path/to/folder")


# ---------------------------------------------------------------- in-memory data sets


@dataclass
class DigitsConf:
    name: str = "digits"
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    split_seed: int = 0
    normalize: Optional[str] = None
    augment: AugmentConf = field(default_factory=AugmentConf)

    def __post_init__(self):
        for key in ("val_fraction", "test_fraction"):
            require(0 < getattr(self, key) < 1, key, getattr(self, key), "a fraction in (0, 1)")
        require(self.val_fraction + self.test_fraction < 1, "val_fraction", self.val_fraction,
                "val_fraction + test_fraction < 1, leaving examples to train on")
        _check_pipeline(self)


@dataclass
class SyntheticConf:
    name: str = "synthetic"
    num_train: int = 2048
    num_val: int = 256
    num_test: int = 512
    input_shape: List[int] = field(default_factory=lambda: [16])
    num_classes: int = 10
    noise: float = 1.0
    normalize: Optional[str] = None
    augment: AugmentConf = field(default_factory=AugmentConf)

    def __post_init__(self):
        for key in ("num_train", "num_val", "num_test"):
            require(getattr(self, key) > 0, key, getattr(self, key), "an integer > 0")
        require(len(self.input_shape) > 0 and all(d > 0 for d in self.input_shape), "input_shape",
                self.input_shape, "a non-empty list of positive integers, e.g. [16] or [32, 32, 3]")
        require(self.num_classes >= 2, "num_classes", self.num_classes, "an integer >= 2")
        require(self.noise >= 0, "noise", self.noise, "a number >= 0")
        _check_pipeline(self)


@dataclass
class NpzConf:
    name: str = "npz"
    path: str = "???"
    val_fraction: float = 0.1
    split_seed: int = 0
    normalize: Optional[str] = None
    augment: AugmentConf = field(default_factory=AugmentConf)

    def __post_init__(self):
        require(Path(self.path).expanduser().is_file(), "path", self.path,
                "the path of an existing .npz file with x_train, y_train, x_test, y_test "
                "(and optionally x_val, y_val)", "pass data.path=/absolute/path/to/file.npz")
        require(0 < self.val_fraction < 1, "val_fraction", self.val_fraction, "a fraction in (0, 1)")
        _check_pipeline(self)


@dataclass
class KerasDatasetConf:
    """keras.datasets.<name>: its cache ($KERAS_HOME/datasets, default ~/.keras/datasets), downloaded
    by Keras' own loader when missing and `download` is true."""

    name: str = "mnist"
    val_fraction: float = 0.1  # of the training set, at random with split_seed (the test set is Keras')
    split_seed: int = 0
    download: bool = True
    normalize: Optional[str] = "scale"
    augment: AugmentConf = field(default_factory=AugmentConf)

    def __post_init__(self):
        require(0 < self.val_fraction < 1, "val_fraction", self.val_fraction, "a fraction in (0, 1)")
        _check_pipeline(self)


@dataclass
class MnistConf(KerasDatasetConf):
    name: str = "mnist"


@dataclass
class FashionMnistConf(KerasDatasetConf):
    name: str = "fashion_mnist"


@dataclass
class Cifar10Conf(KerasDatasetConf):
    name: str = "cifar10"


@dataclass
class Cifar100Conf(KerasDatasetConf):
    name: str = "cifar100"
    label_mode: str = "fine"  # fine (100 classes) | coarse (20 super-classes)

    def __post_init__(self):
        super().__post_init__()
        require(self.label_mode in ("fine", "coarse"), "label_mode", self.label_mode, "fine or coarse")


# ---------------------------------------------------------------- file-backed (streaming) data sets


@dataclass
class CsvConf:
    name: str = "csv"
    path: str = "???"  # a CSV file or a glob of several with the same columns
    val_path: Optional[str] = None  # null: hold out val_fraction of `path`
    test_path: Optional[str] = None  # null: hold out test_fraction of `path`
    label_column: str = "label"  # integer class labels 0..num_classes-1
    feature_columns: Optional[List[str]] = None  # null: every column but the label
    header: bool = True  # false: columns are named by position, "0", "1", ...
    delimiter: str = ","
    num_classes: Optional[int] = None  # null: the largest label + 1
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 0
    normalize: Optional[str] = "standardize"
    cache: Optional[str] = "memory"
    shuffle_buffer: Optional[int] = None
    scan_limit: Optional[int] = None

    def __post_init__(self):
        _check_file_pattern("path", self.path, "CSV file")
        _check_file_pattern("val_path", self.val_path, "CSV file", required=False)
        _check_file_pattern("test_path", self.test_path, "CSV file", required=False)
        _check_fractions(self, self.val_path is not None, self.test_path is not None)
        require(len(self.delimiter) == 1, "delimiter", self.delimiter, "one character, e.g. ',' or ';'")
        require(self.feature_columns is None or len(self.feature_columns) > 0, "feature_columns",
                self.feature_columns, "null (every column but the label) or a non-empty list of column names")
        require(self.feature_columns is None or self.label_column not in self.feature_columns, "feature_columns",
                self.feature_columns, f"columns other than the label column {self.label_column!r}")
        require(self.num_classes is None or self.num_classes >= 2, "num_classes", self.num_classes,
                "null (inferred) or an integer >= 2")
        _check_pipeline(self)


@dataclass
class ImageFolderConf:
    name: str = "image_folder"
    path: str = "???"  # <path>/<class_name>/<image files>; classes sorted by name give labels 0..K-1
    val_path: Optional[str] = None
    test_path: Optional[str] = None
    image_size: List[int] = field(default_factory=lambda: [64, 64])
    color_mode: str = "rgb"  # grayscale | rgb | rgba
    interpolation: str = "bilinear"
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 0
    normalize: Optional[str] = "scale"
    augment: AugmentConf = field(default_factory=AugmentConf)
    cache: Optional[str] = None
    shuffle_buffer: Optional[int] = 10000  # used with a cache; without one the file list is shuffled
    scan_limit: Optional[int] = None

    def __post_init__(self):
        _check_dir("path", self.path)
        _check_dir("val_path", self.val_path, required=False)
        _check_dir("test_path", self.test_path, required=False)
        _check_fractions(self, self.val_path is not None, self.test_path is not None)
        require(len(self.image_size) == 2 and all(d > 0 for d in self.image_size), "image_size",
                self.image_size, "[height, width], two positive integers, e.g. [64, 64]")
        require(self.color_mode in COLOR_MODES, "color_mode", self.color_mode, f"one of {sorted(COLOR_MODES)}")
        require(self.interpolation in INTERPOLATIONS, "interpolation", self.interpolation,
                f"one of {list(INTERPOLATIONS)}")
        _check_pipeline(self)


@dataclass
class FeatureConf:
    """One tf.train.Example feature of the input."""

    shape: List[int] = field(default_factory=list)
    dtype: str = "float32"  # float32 | int64 (numbers) | bytes (with decode)
    decode: Optional[str] = None  # bytes only: raw (uint8 bytes of `shape`) | image (PNG/JPEG to [H, W, C])


@dataclass
class TfrecordConf:
    name: str = "tfrecord"
    path: str = "???"  # a TFRecord file of tf.train.Example records or a glob of several
    val_path: Optional[str] = None
    test_path: Optional[str] = None
    compression: Optional[str] = None  # null | GZIP | ZLIB
    features: Dict[str, FeatureConf] = field(default_factory=lambda: {"x": FeatureConf(shape=[16])})
    label_key: str = "label"  # an int64 feature holding one class label per record
    num_classes: Optional[int] = None  # null: the largest label + 1
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 0
    normalize: Optional[str] = None
    augment: AugmentConf = field(default_factory=AugmentConf)
    cache: Optional[str] = None
    shuffle_buffer: Optional[int] = 10000
    scan_limit: Optional[int] = None

    def __post_init__(self):
        _check_file_pattern("path", self.path, "TFRecord file")
        _check_file_pattern("val_path", self.val_path, "TFRecord file", required=False)
        _check_file_pattern("test_path", self.test_path, "TFRecord file", required=False)
        _check_fractions(self, self.val_path is not None, self.test_path is not None)
        require(self.compression in (None, "GZIP", "ZLIB"), "compression", self.compression, "null, GZIP or ZLIB")
        require(len(self.features) > 0, "features", dict(self.features),
                "at least one feature, e.g. {x: {shape: [16], dtype: float32}}")
        require(self.label_key not in self.features, "label_key", self.label_key,
                "a feature key other than the input features")
        for key, f in self.features.items():
            require(len(f.shape) > 0 and all(d > 0 for d in f.shape), f"features.{key}.shape", list(f.shape),
                    "a non-empty list of positive integers, e.g. [16] or [28, 28, 1]")
            require(f.dtype in FEATURE_DTYPES, f"features.{key}.dtype", f.dtype, f"one of {list(FEATURE_DTYPES)}")
            require((f.dtype == "bytes") == (f.decode is not None), f"features.{key}.decode", f.decode,
                    "raw or image with dtype bytes; null with float32 or int64")
            require(f.decode in FEATURE_DECODERS, f"features.{key}.decode", f.decode,
                    f"one of {list(FEATURE_DECODERS)}")
            require(f.decode != "image" or (len(f.shape) == 3 and f.shape[2] in (1, 3, 4)),
                    f"features.{key}.shape", list(f.shape), "[height, width, channels] with 1, 3 or 4 channels")
            require(f.decode != "image" or len(self.features) == 1, "features", sorted(self.features),
                    "a single feature when it is an encoded image")
        require(self.num_classes is None or self.num_classes >= 2, "num_classes", self.num_classes,
                "null (inferred) or an integer >= 2")
        _check_pipeline(self)


@dataclass
class TfdsConf:
    """A TensorFlow Datasets data set; needs the optional package: pip install "tftrain[tfds]"."""

    name: str = "tfds"
    dataset: str = "mnist"  # the TFDS name, e.g. mnist, cifar10, fashion_mnist, beans
    data_dir: Optional[str] = None  # null: TFDS' default (~/tensorflow_datasets or $TFDS_DATA_DIR)
    download: bool = True
    train_split: str = "train"
    val_split: Optional[str] = None  # e.g. validation or "train[90%:]"; null: val_fraction of train_split
    test_split: Optional[str] = "test"  # null: test_fraction of train_split
    image_size: Optional[List[int]] = None  # resize images to [height, width]; needed for variable sizes
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 0
    normalize: Optional[str] = "scale"
    augment: AugmentConf = field(default_factory=AugmentConf)
    cache: Optional[str] = None
    shuffle_buffer: Optional[int] = 10000
    scan_limit: Optional[int] = None

    def __post_init__(self):
        require(bool(self.dataset), "dataset", self.dataset, "a TFDS data set name, e.g. mnist")
        require(self.data_dir is None or self.download or Path(os.path.expanduser(self.data_dir)).is_dir(),
                "data_dir", self.data_dir, "an existing directory when download is false",
                "point data.data_dir at the folder holding the prepared data set, or set data.download=true")
        _check_fractions(self, self.val_split is not None, self.test_split is not None)
        require(self.image_size is None or (len(self.image_size) == 2 and all(d > 0 for d in self.image_size)),
                "image_size", self.image_size, "null or [height, width], two positive integers")
        _check_pipeline(self)


SCHEMAS = {"data": {
    "digits": DigitsConf, "synthetic": SyntheticConf, "npz": NpzConf,
    "mnist": MnistConf, "fashion_mnist": FashionMnistConf, "cifar10": Cifar10Conf, "cifar100": Cifar100Conf,
    "csv": CsvConf, "image_folder": ImageFolderConf, "tfrecord": TfrecordConf, "tfds": TfdsConf,
}}
