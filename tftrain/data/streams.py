"""Data sources that stream: csv, image_folder, tfrecord, tfds (the `data` options' targets),
and a user's own tf.data.Datasets (`from_datasets`).

A source returns a `StreamSource`: a `Stream` of cheap raw records in a fixed order (CSV lines,
image paths, serialized tf.train.Examples, TFDS examples) and a decoder for the training files,
and for the validation and test files when given (the pipeline holds the missing ones out of the
training records). Nothing is loaded into NumPy; `tftrain.data.pipeline` shards, shuffles,
decodes, (optionally) caches and batches them with tf.data, and scans each split once before
training for counts, checks and the training split's normalization statistics.
"""

from __future__ import annotations

import csv as csv_module
import dataclasses
import logging
import os
import re
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf

from tftrain.errors import DataError
from tftrain.data.files import COLOR_MODES, expand_paths

log = logging.getLogger("tftrain")

DECODE_BATCH = 256  # records decoded per call by batched decoders (CSV lines, tf.train.Examples)


@dataclasses.dataclass
class Stream:
    """One split: `records()` gives its raw records in a fixed order (restricted to this split by
    `mask`), `decode` turns records into (x float32, y int64)."""

    split: str
    describe: str  # the files, for messages
    records: Callable[[], tf.data.Dataset]
    count: int  # examples in this split (exact unless the source could only estimate it)
    decode: Callable
    batched_decode: bool  # records are scalar strings and decode takes a batch of them (vectorized)
    # (code per record of records(), this split's code): the split keeps the records with its code;
    # -1 marks records no split keeps (CSV headers, blank lines). None: every record.
    mask: tuple[np.ndarray, int] | None = None
    cheap_records: bool = False  # records are tiny (paths): shuffle all of them before decoding
    arrays: tuple[np.ndarray, ...] | None = None  # the records as arrays (split and sharded in NumPy)
    # After the decoder failed: "<file>, line N: what is wrong" for the first bad record, found by
    # a plain reading of the files (TensorFlow's error counts records within a decoded batch).
    locate: Callable[[], str | None] | None = None


@dataclasses.dataclass
class StreamSource:
    """`train`: the training files' records (before any hold-out); `val`/`test`: their own files'
    records, or None (held out of `train`)."""

    train: Stream
    val: Stream | None
    test: Stream | None
    input_shape: tuple[int, ...]
    num_classes: int | None  # None: the largest label + 1, from the scan
    notes: str = ""
    target_names: list[str] | None = None  # names of the classes or targets, for predictions
    feature_names: list[str] | None = None  # the input columns (CSV), for predictions from raw rows
    text_labels: bool = False  # the labels are class names (target_names), decoded to their indices

    def streams(self):
        return (self.train, self.val, self.test)


def tf_message(e: Exception) -> str:
    """The useful first line of a TensorFlow error, without the op/graph trailer nor the
    `{{function_node ...}}` and iterator prefixes of an error raised inside tf.data."""
    msg = getattr(e, "message", None) or str(e)
    msg = msg.split("\n\t [[")[0].split(" [Op:")[0].strip()
    msg = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", msg)
    msg = re.sub(r"Error in user-defined function passed to \S+ transformation with iterator: \S+:\s*", "", msg)
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip() and not ln.strip().startswith(("[[", "Traceback"))]
    return " ".join(lines)[:600]


def split_assignment(n: int, val_fraction: float | None, test_fraction: float | None, seed: int) -> np.ndarray:
    """Code per record (0 train, 1 val, 2 test): a seeded random hold-out of the given fractions."""
    order = np.random.default_rng(seed).permutation(n)
    codes = np.zeros(n, np.int8)
    start = 0
    for code, fraction in ((2, test_fraction), (1, val_fraction)):
        if fraction:
            k = max(1, int(round(fraction * n)))
            codes[order[start:start + k]] = code
            start += k
    return codes


def _files(pattern: str | None, key: str) -> list[str]:
    files = expand_paths(pattern) if pattern else []
    if not files:
        raise DataError(f"data.{key}={pattern!r} matches no file. Fix: pass an existing file or glob pattern.")
    return files


def _describe(files: list[str]) -> str:
    return files[0] if len(files) == 1 else f"{len(files)} files ({files[0]}, ...)"


# ---------------------------------------------------------------- csv


def _not_utf8(path: str) -> DataError:
    """The error for a CSV file that is not UTF-8, naming its first such line."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                return DataError(f"{path}, line {number}: byte {line[e.start]:#04x} at column {e.start + 1} is not "
                                 "UTF-8 (the file is in another encoding, e.g. Latin-1 or Windows-1252). Fix: save it "
                                 f"as UTF-8, e.g. `iconv -f latin1 -t utf-8 {path} > {Path(path).stem}.utf8.csv`.")
    return DataError(f"{path} is not UTF-8 text. Fix: save it as UTF-8.")


def _csv_rows(path: str, delimiter: str):
    """(line number, row) of every row of `path` with a field that is not blank."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv_module.reader(f, delimiter=delimiter)
            for row in reader:
                if row and any(c.strip() for c in row):
                    yield reader.line_num, row
    except UnicodeDecodeError:
        raise _not_utf8(path) from None


def _csv_header(path: str, delimiter: str, header: bool) -> list[str]:
    for _, row in _csv_rows(path, delimiter):
        return [c.strip() for c in row] if header else [str(i) for i in range(len(row))]
    raise DataError(f"{path} is empty: no header or rows. Fix: give it a header line and rows.")


def _csv_lines(files: list[str], header: bool) -> tuple[int, np.ndarray]:
    """(lines TextLineDataset reads from `files` in order, positions of the data rows among them):
    headers and blank lines are no rows."""
    skipped, total = [], 0
    for path in files:
        i = -1
        with open(path, "rb") as f:
            for i, line in enumerate(f):
                if (header and i == 0) or not line.strip():
                    skipped.append(total + i)
                if not line.isascii():  # TensorFlow reads bytes: a Latin-1 name would be a class of its own
                    try:
                        line.decode("utf-8")
                    except UnicodeDecodeError:
                        raise _not_utf8(path) from None
        total += i + 1
    return total, np.delete(np.arange(total), skipped)


def _csv_column(files: list[str], delimiter: str, header: bool, index: int) -> list[str]:
    """Column `index`'s fields of every data row of `files` (blank lines skipped), as text."""
    values = []
    for path in files:
        rows = _csv_rows(path, delimiter)
        if header:
            next(rows, None)
        values += [row[index].strip() for _, row in rows if len(row) > index]
    return values


def _first_bad_row(files: list[str], delimiter: str, header: bool, width: int, numeric: set[int],
                   names: set[str] | None, label: int) -> str | None:
    """`<file>, line N: <what>` for the first data row TensorFlow's CSV decoder rejects: a wrong
    number of fields, text in a numeric column, a label that is missing or not a known class."""
    for path in files:
        rows = _csv_rows(path, delimiter)
        if header:
            next(rows, None)
        for line, row in rows:
            if len(row) != width:
                return f"{path}, line {line}: {len(row)} fields where the header has {width}"
            for i in sorted(numeric):
                field = row[i].strip()
                if field and not _is_number(field):
                    return f"{path}, line {line}: column {i + 1} holds {field[:40]!r}, not a number"
            if not row[label].strip():
                return f"{path}, line {line}: the label (column {label + 1}) is empty"
            if names is not None and row[label].strip() not in names:
                return f"{path}, line {line}: the label {row[label].strip()[:40]!r} is not one of the classes"
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def csv(*, path: str, val_path: str | None, test_path: str | None, label_column: str | list[str],
        feature_columns: list[str] | None, header: bool, delimiter: str, num_classes: int | None) -> StreamSource:
    """CSV files: one example per line; features numbers (empty: NaN); `label_column` the target
    column, or a list of them (several targets per example: multi-label or multi-output
    regression)."""
    targets = [label_column] if isinstance(label_column, str) else list(label_column)
    groups = {key: _files(value, key) for key, value in
              (("path", path), ("val_path", val_path), ("test_path", test_path)) if key == "path" or value is not None}
    columns = _csv_header(groups["path"][0], delimiter, header)
    for files in groups.values():
        for f in files:
            other = _csv_header(f, delimiter, header)
            if other != columns:
                raise DataError(f"The columns of {f} ({len(other)}: {other[:8]}...) differ from those of "
                                f"{groups['path'][0]} ({len(columns)}: {columns[:8]}...). Fix: give every CSV "
                                "file the same columns in the same order.")
    absent = [c for c in targets if c not in columns]
    if absent:
        raise DataError(f"data.label_column={label_column!r}: {absent} {'is' if len(absent) == 1 else 'are'} not a "
                        f"column of {groups['path'][0]}; its columns are {columns[:20]}{'...' if len(columns) > 20 else ''}"
                        f"{'' if header else ' (header: false, so columns are named by position)'}. "
                        "Fix: set data.label_column to the label's column (or a list of them).")
    features = list(feature_columns) if feature_columns is not None else \
        [c for c in columns if c not in targets]
    missing = [c for c in features if c not in columns]
    if missing:
        raise DataError(f"data.feature_columns names columns {missing} that {groups['path'][0]} lacks; its "
                        f"columns are {columns[:20]}. Fix: correct the names or set data.feature_columns=null.")
    if not features:
        raise DataError(f"{groups['path'][0]} has no feature columns besides the label {label_column!r}. "
                        "Fix: add feature columns.")
    if len(set(columns)) != len(columns):
        dup = sorted({c for c in columns if columns.count(c) > 1})
        raise DataError(f"{groups['path'][0]} repeats the column names {dup}. Fix: give columns unique names.")
    index = {c: i for i, c in enumerate(columns)}
    wanted = sorted({index[c] for c in features} | {index[c] for c in targets})
    pos = {i: k for k, i in enumerate(wanted)}
    label_is = {index[c] for c in targets}
    # A target must be present (no default); an empty feature field reads as NaN (then refused by the scan).
    defaults = [tf.constant([], tf.float64) if i in label_is else tf.constant([np.nan], tf.float32) for i in wanted]
    feature_pos = [pos[index[c]] for c in features]
    target_pos = [pos[index[c]] for c in targets]
    label_name = label_column
    several = not isinstance(label_column, str)
    names = None
    if not several:
        # A label column with text in it holds class names: the classes are the training files'
        # names, sorted; validation and test files may hold only those.
        train_values = _csv_column(groups["path"], delimiter, header, index[label_column])
        if any(v and not _is_number(v) for v in train_values):
            names = sorted(set(v for v in train_values if v))  # an empty label fails the scan, as before
            known = set(names)
            for key in ("val_path", "test_path"):
                if key in groups:
                    unknown = sorted(set(_csv_column(groups[key], delimiter, header, index[label_column])) - known)
                    if unknown:
                        raise DataError(f"data.{key}: the {label_column!r} column holds the class name(s) "
                                        f"{unknown[:10]} that the training files ({_describe(groups['path'])}) never "
                                        f"use; their classes are {names[:20]}. Fix: drop or correct those rows, or "
                                        "add examples of those classes to the training files.")
            k = pos[index[label_column]]
            defaults[k] = tf.constant([], tf.string)
    class_table = tf.constant(names) if names else None

    def decode(lines):
        cols = tf.io.decode_csv(lines, record_defaults=defaults, field_delim=delimiter, select_cols=wanted)
        x = tf.stack([cols[k] for k in feature_pos], axis=1)
        if class_table is not None:  # the name's index among the sorted names (every name is known: checked above)
            found = tf.equal(tf.strings.strip(cols[target_pos[0]])[:, None], class_table[None, :])
            return x, tf.cast(tf.argmax(tf.cast(found, tf.int32), axis=1), tf.float32)
        y = tf.stack([cols[k] for k in target_pos], axis=1) if several else cols[target_pos[0]]
        return x, tf.cast(y, tf.float32)

    numeric = set(wanted) - (label_is if names else set())
    label_at = index[targets[0]]

    def make(files, total):
        def locate():
            return _first_bad_row(files, delimiter, header, len(columns), numeric, set(names) if names else None,
                                  label_at)

        def stream(split, mask, count):
            return Stream(split, _describe(files), lambda: tf.data.TextLineDataset(files), count, decode, True, mask,
                          locate=locate)
        return stream

    streams = {"val": None, "test": None}
    for split, key in (("train", "path"), ("val", "val_path"), ("test", "test_path")):
        if key in groups:  # headers and blank lines are records no split keeps (code -1)
            total, rows = _csv_lines(groups[key], header)
            codes = np.full(total, -1, np.int8)
            codes[rows] = 0
            streams[split] = make(groups[key], total)(split, (codes, 0), len(rows))
    return StreamSource(streams["train"], streams["val"], streams["test"], (len(features),),
                        len(names) if names else num_classes,
                        notes=f"{len(features)} feature columns, label {label_name!r}"
                              f"{f' ({len(names)} class names)' if names else ''}",
                        target_names=targets if several else names, feature_names=features,
                        text_labels=names is not None)


# ---------------------------------------------------------------- image_folder


def image_folder(*, path: str, val_path: str | None, test_path: str | None, image_size, color_mode: str,
                 interpolation: str) -> StreamSource:
    """<path>/<class>/<image>: indexed by keras.utils.image_dataset_from_directory (class names sorted,
    its allowed formats), decoded as it decodes (tf.io.decode_image, tf.image.resize) per element."""
    import keras

    channels = COLOR_MODES[color_mode]
    size = tuple(int(d) for d in image_size)

    def index(folder, class_names=None):
        folder = os.path.expanduser(folder)
        try:
            ds = keras.utils.image_dataset_from_directory(
                folder, labels="inferred", label_mode="int", class_names=class_names, color_mode=color_mode,
                batch_size=None, image_size=size, shuffle=False, interpolation=interpolation, verbose=False)
        except ValueError as e:
            raise DataError(f"{folder}: {e} Fix: put the images in one sub-folder per class "
                            f"({folder}/<class name>/<image>.png|jpg|bmp|gif).") from None
        names = list(ds.class_names)
        paths = list(ds.file_paths)
        labels = np.array([names.index(os.path.relpath(p, folder).split(os.sep)[0]) for p in paths], np.int64)
        return names, np.array(paths, dtype=object).astype(str), labels

    names, paths, labels = index(path)
    if len(names) < 2:
        raise DataError(f"{path} has {len(names)} class sub-folder(s) ({names}); classification needs at "
                        "least 2. Fix: one sub-folder per class.")
    empty = [n for i, n in enumerate(names) if not np.any(labels == i)]
    if empty:  # a class without examples would still get an output, never trained nor tested
        raise DataError(f"{os.path.join(os.path.expanduser(path), empty[0])} (class {empty[0]!r}"
                        f"{f' and {len(empty) - 1} more: {empty[1:6]}' if len(empty) > 1 else ''}) holds no image "
                        "in a format image_dataset_from_directory reads (.png, .jpg, .jpeg, .bmp, .gif). Fix: put that "
                        "class' images there, or remove the empty sub-folder.")
    method = interpolation

    def decode(path, label):
        img = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
        img = tf.image.resize(img, size, method=method)
        img.set_shape((size[0], size[1], channels))
        return tf.cast(img, tf.float32), label

    def stream(split, p, lab, where):
        def read():
            return tf.data.Dataset.from_tensor_slices((p, lab))
        return Stream(split, where, read, len(p), decode, False, None, cheap_records=True, arrays=(p, lab))

    out = {"train": stream("train", paths, labels, path), "val": None, "test": None}
    for split, folder in (("val", val_path), ("test", test_path)):
        if folder is not None:
            try:
                other_names, p, lab = index(folder, class_names=names)
            except DataError as e:
                raise DataError(f"{e} The {split} folder must have the same class sub-folders as {path}: "
                                f"{names}.") from None
            out[split] = stream(split, p, lab, folder)
    return StreamSource(out["train"], out["val"], out["test"], (size[0], size[1], channels), len(names),
                        notes=f"{len(paths)} images in {len(names)} classes {names[:10]}", target_names=names)


# ---------------------------------------------------------------- tfrecord


def _count_records(files, compression) -> int:
    ds = tf.data.TFRecordDataset(files, compression_type=compression or "")
    return int(ds.reduce(np.int64(0), lambda n, _: n + 1).numpy())


def tfrecord(*, path: str, val_path: str | None, test_path: str | None, compression: str | None, features: dict,
             label_key: str, num_classes: int | None) -> StreamSource:
    """TFRecord files of tf.train.Example with the input `features` ({key: {shape, dtype[, decode]}},
    dtype float32 | int64 | bytes, decode raw | image) and an int64 label."""
    groups = {key: _files(value, key) for key, value in
              (("path", path), ("val_path", val_path), ("test_path", test_path)) if key == "path" or value is not None}
    feats = {k: (tuple(int(d) for d in f["shape"]), f.get("dtype", "float32"), f.get("decode")) for k, f in features.items()}
    spec = {label_key: tf.io.FixedLenFeature([], tf.int64)}
    for k, (shape, dtype, _) in feats.items():
        size = int(np.prod(shape))
        spec[k] = (tf.io.FixedLenFeature([], tf.string) if dtype == "bytes"
                   else tf.io.FixedLenFeature([size], tf.float32 if dtype == "float32" else tf.int64))

    def feature(k, value):
        shape, dtype, how = feats[k]
        if how == "image":
            def one(s):
                img = tf.io.decode_image(s, channels=shape[2], expand_animations=False)
                return tf.ensure_shape(img, shape)
            value = tf.map_fn(one, value, fn_output_signature=tf.TensorSpec(shape, tf.uint8))
        elif how == "raw":
            value = tf.io.decode_raw(value, tf.uint8)
        return tf.reshape(tf.cast(value, tf.float32), (-1, *shape))

    if len(feats) == 1:
        input_shape = next(iter(feats.values()))[0]
    else:
        input_shape = (int(sum(np.prod(s) for s, _, _ in feats.values())),)

    def decode(serialized):
        parsed = tf.io.parse_example(serialized, spec)
        xs = [feature(k, parsed[k]) for k in feats]
        x = xs[0] if len(xs) == 1 else tf.concat([tf.reshape(v, (tf.shape(v)[0], -1)) for v in xs], axis=1)
        return x, parsed[label_key]

    def counted(files, key):
        try:
            return _count_records(files, compression)
        except tf.errors.OpError as e:
            raise DataError(f"data.{key}: {_describe(files)} is not a readable TFRecord file"
                            f"{' (' + compression + ')' if compression else ''}: {tf_message(e)}. "
                            "Fix: write it with tf.io.TFRecordWriter (and set data.compression to match).") from None

    def make(files):
        def stream(split, mask, count):
            return Stream(split, _describe(files),
                          lambda: tf.data.TFRecordDataset(files, compression_type=compression or ""),
                          count, decode, True, mask)
        return stream

    streams = {"val": None, "test": None}
    for split, key in (("train", "path"), ("val", "val_path"), ("test", "test_path")):
        if key in groups:
            streams[split] = make(groups[key])(split, None, counted(groups[key], key))
    return StreamSource(streams["train"], streams["val"], streams["test"], input_shape, num_classes,
                        notes=f"features {sorted(feats)}, label {label_key!r}")


# ---------------------------------------------------------------- tfds


def import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError("data=tfds needs the optional package tensorflow-datasets, which is not installed. Fix: "
                        "pip install \"tftrain[tfds]\" (or pip install tensorflow-datasets), or use another data "
                        "option (image_folder, tfrecord, mnist, cifar10, ...).") from None
    return tfds


def tfds(*, dataset: str, data_dir: str | None, download: bool, train_split: str, val_split: str | None,
         test_split: str | None, image_size) -> StreamSource:
    """A TFDS data set with supervised keys (input, label), by name, from `data_dir`."""
    tfds = import_tfds()
    data_dir = os.path.expanduser(data_dir) if data_dir else None
    try:
        builder = tfds.builder(dataset, data_dir=data_dir)
        if download:
            builder.download_and_prepare()
        info = builder.info
    except DataError:
        raise
    except ImportError as e:  # a module TFDS needs for this data set, not a wrong name
        raise DataError(f"data=tfds: TensorFlow Datasets needs the module {e.name or str(e)!r} to load {dataset!r}, and "
                        f"it is not installed. Fix: pip install {e.name or '<that module>'} (pip install "
                        "\"tftrain[tfds]\" installs what tftrain's tests use).") from None
    except Exception as e:  # noqa: BLE001 - TFDS raises many kinds (DatasetNotFoundError, download errors)
        raise DataError(f"data=tfds: could not load {dataset!r} (data_dir {data_dir or 'TFDS default'}): "
                        f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}. Fix: check the "
                        "name (tfds.list_builders()), or prepare it on a machine with internet and point "
                        "data.data_dir at the copy (with data.download=false).") from None
    keys = info.supervised_keys
    if not keys or len(keys) != 2 or not all(isinstance(k, str) for k in keys):
        raise DataError(f"data=tfds: {dataset!r} has no (input, label) supervised keys ({keys}). Fix: use a "
                        "classification data set, or export it to TFRecord and use data=tfrecord.")
    x_key, y_key = keys
    label = info.features[y_key]
    num_classes = getattr(label, "num_classes", None)
    shape = tuple(info.features[x_key].shape)
    if image_size is not None:
        if len(shape) != 3:
            raise DataError(f"data.image_size is set but {dataset!r} inputs have shape {shape}, not images. "
                            "Fix: set data.image_size=null.")
        shape = (int(image_size[0]), int(image_size[1]), shape[2])
    if any(d is None for d in shape):
        raise DataError(f"data=tfds: {dataset!r} inputs have a variable shape {shape}. Fix: set "
                        "data.image_size=[height, width] to resize them.")
    size = tuple(image_size) if image_size is not None else None

    def decode(x, y):
        x = tf.cast(x, tf.float32)
        if size is not None:
            x = tf.image.resize(x, size)
            x.set_shape(shape)
        return x, tf.cast(y, tf.int64)

    def num_examples(split):
        try:
            return int(info.splits[split].num_examples)
        except Exception as e:  # noqa: BLE001
            raise DataError(f"data=tfds: {dataset!r} has no split {split!r} ({type(e).__name__}: {e}); its "
                            f"splits are {sorted(info.splits)}. Fix: set data.train_split/val_split/test_split.") from None

    def reader(split):
        def read():
            try:
                return builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
            except Exception as e:  # noqa: BLE001 - not prepared (download: false), bad split, ...
                raise DataError(f"data=tfds: cannot read {dataset!r} split {split!r} from "
                                f"{data_dir or 'the TFDS default data_dir'}: {type(e).__name__}: "
                                f"{str(e).splitlines()[0][:300] if str(e) else ''}. Fix: prepare it there "
                                "(data.download=true on a machine with internet) or point data.data_dir at "
                                "a prepared copy.") from None
        return read

    def make(split_name):
        def stream(split, mask, count):
            return Stream(split, f"tfds {dataset}:{split_name}", reader(split_name), count, decode, False, mask)
        return stream

    streams = {"val": None, "test": None}
    for split, name in (("train", train_split), ("val", val_split), ("test", test_split)):
        if name is not None:
            streams[split] = make(name)(split, None, num_examples(name))
    return StreamSource(streams["train"], streams["val"], streams["test"], shape, num_classes,
                        notes=f"tfds {dataset} ({x_key} -> {y_key})")


# ---------------------------------------------------------------- a user's own tf.data.Datasets


def from_datasets(datasets: dict, what: str) -> StreamSource:
    """A StreamSource over a user's tf.data.Datasets of single (x, y) examples: train, and val /
    test when given (keys train, val, test); decoded as they come (x cast to float32)."""
    spec = datasets["train"].element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise DataError(f"{what}: the train dataset's elements are {spec}, not (x, y) pairs. Fix: yield one "
                        "(features, label) pair per example (unbatched), e.g. tf.data.Dataset.from_tensor_slices((x, y)).")
    shape = tuple(spec[0].shape)
    if any(d is None for d in shape):
        raise DataError(f"{what}: the examples' shape {shape} is not fully known (a batched dataset?). Fix: give "
                        "single, unbatched (x, y) examples of a fixed shape.")

    def decode(x, y):
        return tf.cast(x, tf.float32), tf.cast(y, tf.int64)

    def stream(split, ds):
        count = int(ds.cardinality())
        if count < 0:  # unknown or infinite: count once (an infinite one never ends: refuse it first)
            if count == int(tf.data.INFINITE_CARDINALITY):
                raise DataError(f"{what}: the {split} dataset is infinite. Fix: remove its .repeat().")
            count = int(ds.reduce(np.int64(0), lambda n, _: n + 1).numpy())
        return Stream(split, f"{what} ({split})", lambda: ds, count, decode, False, None)

    out = {k: stream(k, datasets[k]) if datasets.get(k) is not None else None for k in ("train", "val", "test")}
    return StreamSource(out["train"], out["val"], out["test"], shape, None, notes="tf.data.Datasets")
