"""Schemas of the `data` group.

A data option is a source (`_target_` and its own keys: what to read) plus the pipeline keys
tftrain applies to any source (how to split, normalize, augment, cache and shuffle it): the
fields of the mixins below, listed in `PIPELINE_KEYS`. Paths are checked here, so a missing file
fails before TensorFlow is imported; what needs reading (columns, labels, NaNs) is checked by
`tftrain.data` before training starts.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional

from omegaconf import MISSING

from tftrain.data.files import COLOR_MODES, expand_paths
from tftrain.errors import require
from tftrain.schema.registry import schema

NORMALIZE = (None, "standardize", "scale")
FLIPS = (None, "horizontal", "vertical", "horizontal_and_vertical")
INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5", "gaussian", "mitchellcubic")
FEATURE_DTYPES = ("float32", "int64", "bytes")
FEATURE_DECODERS = (None, "raw", "image")


# ---------------------------------------------------------------- pipeline keys (any source)


@dataclass
class AugmentConf:
    """Random image augmentation, applied to training batches only (never to val/test)."""

    flip: Optional[str] = None  # null | horizontal | vertical | horizontal_and_vertical
    translate: float = 0.0  # max random shift, a fraction of height and width (zero fill), e.g. 0.1


@dataclass(kw_only=True)
class DataConf:
    _target_: str = MISSING
    normalize: Optional[str] = None  # null | standardize (mean 0, std 1) | scale (min-max to [0, 1]): per channel, training-split statistics; a layer of the saved model
    normalize_target: bool = False  # regression: train on targets standardized by the training split's mean and std; the saved model's outputs are in the original units
    drop_remainder: bool = False  # false: every training example every epoch (a smaller last batch, its loss averaged over its real examples); true: only full batches, a different remainder left out each epoch

    def __post_init__(self):
        require(self.normalize in NORMALIZE, "normalize", self.normalize,
                "null, standardize (per-channel mean 0, std 1) or scale (per-channel min-max to [0, 1]); "
                "statistics come from the training split only")
        if hasattr(self, "augment"):
            aug = self.augment
            require(aug.flip in FLIPS, "augment.flip", aug.flip, f"one of {list(FLIPS)}")
            require(0 <= aug.translate < 0.5, "augment.translate", aug.translate,
                    "a fraction of height/width in [0, 0.5), e.g. 0.1 (0: off)")
        for key in ("val_fraction", "test_fraction"):
            if hasattr(self, key):
                require(0 < getattr(self, key) < 1, key, getattr(self, key), "a fraction in (0, 1)")
        val, test = getattr(self, "val_fraction", 0), getattr(self, "test_fraction", 0)
        if val + test >= 1:
            # The larger fraction is the likelier mistake; the message names both.
            key, other = ("test_fraction", "val_fraction") if test >= val else ("val_fraction", "test_fraction")
            require(False, key, getattr(self, key),
                    f"with data.{other}={getattr(self, other)}, less than {1 - getattr(self, other):.4g} "
                    "(val_fraction + test_fraction < 1, leaving examples to train on)",
                    f"lower `data.{key}` (or `data.{other}`) so that the two add up to less than 1, "
                    f"e.g. data.{key}={round(min(0.2, (1 - getattr(self, other)) / 2), 3):g}")


@dataclass(kw_only=True)
class _Augment:
    augment: AugmentConf = field(default_factory=AugmentConf)  # image inputs only; training batches only


@dataclass(kw_only=True)
class _ValSplit:
    val_fraction: float = 0.1  # held out for validation when the source has no validation split
    split_seed: int = 0  # fixed: the same split whatever trainer.seed is


@dataclass(kw_only=True)
class _Split(_ValSplit):
    test_fraction: float = 0.2  # held out for testing when the source has no test split


@dataclass(kw_only=True)
class _Stream:
    cache: Optional[str] = None  # null: read the files every epoch | memory | a file path prefix (tf.data cache on disk)
    shuffle_buffer: Optional[int] = 10000  # examples in the shuffle buffer (null: the whole split, an exact shuffle)
    scan_limit: Optional[int] = None  # the pass before training checks at most N examples per split (null: all)

    def check_stream(self) -> None:
        require(self.shuffle_buffer is None or self.shuffle_buffer >= 1, "shuffle_buffer", self.shuffle_buffer,
                "null (the whole split: a uniform shuffle, held in memory) or an integer >= 1")
        require(self.scan_limit is None or self.scan_limit >= 1, "scan_limit", self.scan_limit,
                "null (check every example) or an integer >= 1")
        if self.cache not in (None, "memory"):
            parent = Path(os.path.expanduser(self.cache)).parent
            require(parent.is_dir(), "cache", self.cache,
                    "null, memory, or a file path prefix in an existing directory (a tf.data cache on disk)",
                    f"create {str(parent)!r} or use data.cache=memory")


PIPELINE_KEYS = frozenset(f.name for cls in (DataConf, _Augment, _Split, _Stream)
                          for f in dataclasses.fields(cls)) - {"_target_"}


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


def _check_classes(conf) -> None:
    require(conf.num_classes is None or conf.num_classes >= 2, "num_classes", conf.num_classes,
            "null (inferred) or an integer >= 2")


# ---------------------------------------------------------------- in-memory sources


@schema("data", "digits")
@dataclass(kw_only=True)
class DigitsConf(_Split, _Augment, DataConf):
    _target_: str = "tftrain.data.sources.digits"
    image_size: Optional[List[int]] = None  # null: 8x8; or [height, width] to resize (bilinear) to, e.g. [28, 28] like MNIST

    def __post_init__(self):
        super().__post_init__()
        require(self.image_size is None or (len(self.image_size) == 2 and all(d > 0 for d in self.image_size)),
                "image_size", self.image_size, "null or [height, width], two positive integers")


@schema("data", "digits_multilabel")
@dataclass(kw_only=True)
class DigitsMultilabelConf(_Split, _Augment, DataConf):
    _target_: str = "tftrain.data.sources.digits_multilabel"


@schema("data", "breast_cancer")
@dataclass(kw_only=True)
class BreastCancerConf(_Split, DataConf):
    _target_: str = "tftrain.data.sources.breast_cancer"


@schema("data", "diabetes")
@dataclass(kw_only=True)
class DiabetesConf(_Split, DataConf):
    _target_: str = "tftrain.data.sources.diabetes"


@schema("data", "synthetic")
@dataclass(kw_only=True)
class SyntheticConf(_Augment, DataConf):
    _target_: str = "tftrain.data.sources.synthetic"
    num_train: int = 2048
    num_val: int = 256
    num_test: int = 512
    input_shape: List[int] = field(default_factory=lambda: [16])  # e.g. [16] or [32, 32, 3]
    num_classes: int = 10
    noise: float = 1.0  # std of the noise around each class prototype (prototypes have std 1 per feature)
    seed: int = MISSING  # the generator's seed (the option's YAML: trainer.seed)

    def __post_init__(self):
        super().__post_init__()
        for key in ("num_train", "num_val", "num_test"):
            require(getattr(self, key) > 0, key, getattr(self, key), "an integer > 0")
        require(len(self.input_shape) > 0 and all(d > 0 for d in self.input_shape), "input_shape",
                self.input_shape, "a non-empty list of positive integers, e.g. [16] or [32, 32, 3]")
        require(self.num_classes >= 2, "num_classes", self.num_classes, "an integer >= 2")
        require(self.noise >= 0, "noise", self.noise, "a number >= 0")


@schema("data", "npz")
@dataclass(kw_only=True)
class NpzConf(_Split, _Augment, DataConf):
    _target_: str = "tftrain.data.sources.npz"
    path: str = MISSING  # a .npz with x_train, y_train and optionally x_val, y_val, x_test, y_test

    def __post_init__(self):
        super().__post_init__()
        require(Path(self.path).expanduser().is_file(), "path", self.path,
                "the path of an existing .npz file with x_train, y_train (and optionally x_val, y_val, "
                "x_test, y_test)", "pass data.path=/absolute/path/to/file.npz")


@dataclass(kw_only=True)
class KerasDatasetConf(_ValSplit, _Augment, DataConf):
    """keras.datasets.<name> from its cache ($KERAS_HOME/datasets, default ~/.keras/datasets),
    downloaded by Keras' own loader when missing and `download` is true."""

    download: bool = True  # false: never try the network; fail at once when the cache is missing


@schema("data", "mnist")
@dataclass(kw_only=True)
class MnistConf(KerasDatasetConf):
    _target_: str = "tftrain.data.sources.mnist"


@schema("data", "fashion_mnist")
@dataclass(kw_only=True)
class FashionMnistConf(KerasDatasetConf):
    _target_: str = "tftrain.data.sources.fashion_mnist"


@schema("data", "cifar10")
@dataclass(kw_only=True)
class Cifar10Conf(KerasDatasetConf):
    _target_: str = "tftrain.data.sources.cifar10"


@schema("data", "cifar100")
@dataclass(kw_only=True)
class Cifar100Conf(KerasDatasetConf):
    _target_: str = "tftrain.data.sources.cifar100"
    label_mode: str = "fine"  # fine (100 classes) | coarse (20 super-classes)

    def __post_init__(self):
        super().__post_init__()
        require(self.label_mode in ("fine", "coarse"), "label_mode", self.label_mode, "fine or coarse")


@schema("data", "custom")
@dataclass(kw_only=True)
class CustomDataConf(_Split, _Stream, _Augment, DataConf):
    """Your own function: `_target_(**other keys)` returns a dict of arrays x_train, y_train
    [, x_val, y_val][, x_test, y_test], or of tf.data.Datasets of single (x, y) examples."""

    OPEN: ClassVar[bool] = True
    shuffle_buffer: Optional[int] = None

    def __post_init__(self):
        super().__post_init__()
        self.check_stream()


# ---------------------------------------------------------------- file-backed (streaming) sources


@dataclass(kw_only=True)
class _Files(_Split, _Stream, DataConf):
    path: str = MISSING  # a file or a glob pattern of several, e.g. '/data/train-*'
    val_path: Optional[str] = None  # the validation files; null: hold out val_fraction of `path`
    test_path: Optional[str] = None  # the test files; null: hold out test_fraction of `path`

    KIND: ClassVar[str] = "file"

    def __post_init__(self):
        super().__post_init__()
        self.check_stream()
        self.check_paths()

    def check_paths(self) -> None:
        for key in ("path", "val_path", "test_path"):
            _check_file_pattern(key, getattr(self, key), self.KIND, required=key == "path")


@schema("data", "csv")
@dataclass(kw_only=True)
class CsvConf(_Files):
    _target_: str = "tftrain.data.streams.csv"
    KIND: ClassVar[str] = "CSV file"
    label_column: Any = "label"  # the target column, or a list of them (several targets: multilabel, multi-output regression)
    feature_columns: Optional[List[str]] = None  # null: every column but the label(s); or a list, e.g. [age, income]
    header: bool = True  # false: columns are named by position, "0", "1", ...
    delimiter: str = ","
    num_classes: Optional[int] = None  # null: the largest label + 1

    def __post_init__(self):
        super().__post_init__()
        require(len(self.delimiter) == 1, "delimiter", self.delimiter, "one character, e.g. ',' or ';'")
        require(self.feature_columns is None or len(self.feature_columns) > 0, "feature_columns",
                self.feature_columns, "null (every column but the label) or a non-empty list of column names")
        if isinstance(self.label_column, int) and not isinstance(self.label_column, bool):
            self.label_column = str(self.label_column)  # a column named by position (header: false)
        if isinstance(self.label_column, list):
            self.label_column = [str(c) for c in self.label_column]
        targets = [self.label_column] if isinstance(self.label_column, str) else self.label_column
        require(isinstance(targets, list) and len(targets) > 0 and all(isinstance(c, str) for c in targets),
                "label_column", self.label_column, "a column name or a non-empty list of column names")
        require(self.feature_columns is None or not set(targets) & set(self.feature_columns), "feature_columns",
                self.feature_columns, f"columns other than the label column(s) {self.label_column!r}")
        _check_classes(self)


@schema("data", "image_folder")
@dataclass(kw_only=True)
class ImageFolderConf(_Augment, _Files):
    _target_: str = "tftrain.data.streams.image_folder"
    path: str = MISSING  # <path>/<class name>/<image>: classes sorted by name are labels 0..K-1
    val_path: Optional[str] = None  # a folder with the same class sub-folders; null: hold out val_fraction
    test_path: Optional[str] = None  # likewise; null: hold out test_fraction
    image_size: List[int] = field(default_factory=lambda: [64, 64])  # [height, width] every image is resized to
    color_mode: str = "rgb"  # grayscale | rgb | rgba
    interpolation: str = "bilinear"

    def check_paths(self) -> None:
        for key in ("path", "val_path", "test_path"):
            _check_dir(key, getattr(self, key), required=key == "path")

    def __post_init__(self):
        super().__post_init__()
        require(len(self.image_size) == 2 and all(d > 0 for d in self.image_size), "image_size",
                self.image_size, "[height, width], two positive integers, e.g. [64, 64]")
        require(self.color_mode in COLOR_MODES, "color_mode", self.color_mode, f"one of {sorted(COLOR_MODES)}")
        require(self.interpolation in INTERPOLATIONS, "interpolation", self.interpolation,
                f"one of {list(INTERPOLATIONS)}")


@dataclass
class FeatureConf:
    """One tf.train.Example feature of the input."""

    shape: List[int] = field(default_factory=list)
    dtype: str = "float32"  # float32 | int64 (numbers) | bytes (with decode)
    decode: Optional[str] = None  # bytes only: raw (uint8 bytes of `shape`) | image (PNG/JPEG to [H, W, C])


@schema("data", "tfrecord")
@dataclass(kw_only=True)
class TfrecordConf(_Augment, _Files):
    _target_: str = "tftrain.data.streams.tfrecord"
    KIND: ClassVar[str] = "TFRecord file"
    compression: Optional[str] = None  # null | GZIP | ZLIB
    # key -> shape, dtype (float32 | int64 | bytes, with decode raw | image); several: flattened, concatenated
    features: Dict[str, FeatureConf] = field(default_factory=lambda: {"x": FeatureConf(shape=[16])})
    label_key: str = "label"  # an int64 feature holding one class label per record
    num_classes: Optional[int] = None  # null: the largest label + 1

    def __post_init__(self):
        super().__post_init__()
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
        _check_classes(self)


@schema("data", "tfds")
@dataclass(kw_only=True)
class TfdsConf(_Split, _Stream, _Augment, DataConf):
    """A TensorFlow Datasets data set; needs the optional package: pip install "tftrain[tfds]"."""

    _target_: str = "tftrain.data.streams.tfds"
    dataset: str = "mnist"  # the TFDS name, e.g. mnist, cifar10, fashion_mnist, beans
    data_dir: Optional[str] = None  # null: TFDS' default (~/tensorflow_datasets or $TFDS_DATA_DIR)
    download: bool = True  # false: use only what data_dir already holds
    train_split: str = "train"
    val_split: Optional[str] = None  # e.g. validation or "train[90%:]"; null: hold out val_fraction of train_split
    test_split: Optional[str] = "test"  # null: hold out test_fraction of train_split
    image_size: Optional[List[int]] = None  # resize images to [height, width]; needed for variable sizes

    def __post_init__(self):
        super().__post_init__()
        self.check_stream()
        require(bool(self.dataset), "dataset", self.dataset, "a TFDS data set name, e.g. mnist")
        require(self.data_dir is None or self.download or Path(os.path.expanduser(self.data_dir)).is_dir(),
                "data_dir", self.data_dir, "an existing directory when download is false",
                "point data.data_dir at the folder holding the prepared data set, or set data.download=true")
        require(self.image_size is None or (len(self.image_size) == 2 and all(d > 0 for d in self.image_size)),
                "image_size", self.image_size, "null or [height, width], two positive integers")
