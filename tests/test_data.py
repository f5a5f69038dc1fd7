"""Data options load, bad data fails with its message, normalization and augmentation behave.

Every data file is written here in tmp_path (CSV, .npz, PNG folders, TFRecord, planted Keras
caches in a temporary KERAS_HOME, a stand-in tensorflow_datasets module): nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest

import tftrain
from conftest import ROOT, option_schema, options, per_option
from tftrain.errors import ConfigError, DataError
from tftrain.schema import is_open, validate
from tftrain.schema.data import KerasDatasetConf

tf = pytest.importorskip("tensorflow")

from tftrain.config.factory import build_data  # noqa: E402


def build(*overrides: str, batch: int = 8, strategy=None):
    cfg = validate(tftrain.compose([f"trainer.batch_size={batch}", "trainer.seed=0", *overrides]))
    return build_data(cfg, strategy)


def batches(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def count(ds) -> int:
    return sum(len(y) for _, y in batches(ds))


# ---------------------------------------------------------------- writers


def write_csv(path, x, y, columns=None, label="label", header=True, rows=None):
    columns = columns or [f"f{i}" for i in range(x.shape[1])]
    lines = [",".join([*columns, label])] if header else []
    lines += [",".join([*(f"{v:.6g}" for v in xi), str(yi)]) for xi, yi in zip(x, y)]
    lines += rows or []
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def write_image_folder(root, classes=("cat", "dog", "eel"), per_class=4, size=(6, 5)):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            tf.io.write_file(str(root / c / f"{i}.png"), tf.io.encode_png(img))
    return str(root)


def write_tfrecord(path, x, y, key="x", label="label", drop=None):
    with tf.io.TFRecordWriter(str(path)) as w:
        for i, (xi, yi) in enumerate(zip(x, y)):
            feats = {key: tf.train.Feature(float_list=tf.train.FloatList(value=np.ravel(xi).tolist()))}
            if drop != i:
                feats[label] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(yi)]))
            w.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())
    return str(path)


# Writers of tiny files in the exact formats and places keras.datasets.<name> caches them (written
# here by hand, not by tftrain's readers, so that a reader misreading its format fails the tests).


def _plant_mnist(base, rng, n_train, n_test):
    base.mkdir(parents=True)
    np.savez(base / "mnist.npz", x_train=rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
             y_train=rng.integers(0, 10, n_train).astype(np.uint8),
             x_test=rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
             y_test=rng.integers(0, 10, n_test).astype(np.uint8))


def _plant_fashion_mnist(base, rng, n_train, n_test):
    d = base / "fashion-mnist"
    d.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        with gzip.open(d / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(b"\0" * 8 + rng.integers(0, 10, n).astype(np.uint8).tobytes())
        with gzip.open(d / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(b"\0" * 16 + rng.integers(0, 256, n * 784).astype(np.uint8).tobytes())


def _plant_cifar10(base, rng, n_train, n_test):
    d = base / "cifar-10-batches-py-target" / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for fname, n in [*((f"data_batch_{i}", n_train // 5) for i in range(1, 6)), ("test_batch", n_test)]:
        with open(d / fname, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"labels": rng.integers(0, 10, n).tolist()}, f, protocol=3)


def _plant_cifar100(base, rng, n_train, n_test):
    d = base / "cifar-100-python-target" / "cifar-100-python"
    d.mkdir(parents=True)
    for fname, n in (("train", n_train), ("test", n_test)):
        with open(d / fname, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"fine_labels": rng.integers(0, 100, n).tolist(),
                         b"coarse_labels": rng.integers(0, 20, n).tolist()}, f, protocol=3)


# Per keras.datasets option: its cache writer, the input shape and the classes it gives. Every such
# option in conf/data needs an entry (its tests fail, naming this table, until it has one).
KERAS_CACHES = {"mnist": (_plant_mnist, (28, 28, 1), 10), "fashion_mnist": (_plant_fashion_mnist, (28, 28, 1), 10),
                "cifar10": (_plant_cifar10, (32, 32, 3), 10), "cifar100": (_plant_cifar100, (32, 32, 3), 100)}


def plant_keras_cache(home, name, n_train=40, n_test=12):
    """Tiny files in the exact formats and places keras.datasets.<name> caches them."""
    plant = per_option(KERAS_CACHES, "data", name, "KERAS_CACHES")[0]
    plant(home / "datasets", np.random.default_rng(1), n_train, n_test)


def fake_tfds(n_train=30, n_test=10):
    """A stand-in for tensorflow_datasets with the API the loader uses."""
    rng = np.random.default_rng(2)
    data = {"train": (rng.integers(0, 256, (n_train, 8, 8, 1), dtype=np.uint8), rng.integers(0, 3, n_train)),
            "test": (rng.integers(0, 256, (n_test, 8, 8, 1), dtype=np.uint8), rng.integers(0, 3, n_test))}
    ns = types.SimpleNamespace
    info = ns(supervised_keys=("image", "label"),
              features={"image": ns(shape=(8, 8, 1)), "label": ns(num_classes=3)},
              splits={k: ns(num_examples=len(v[1])) for k, v in data.items()})

    class Builder:
        def __init__(self, name, data_dir=None):
            self.info = info

        def download_and_prepare(self):
            pass

        def as_dataset(self, split, as_supervised, shuffle_files):
            assert as_supervised and not shuffle_files
            return tf.data.Dataset.from_tensor_slices(data[split])

    return types.ModuleType("tensorflow_datasets"), Builder, data


# ---------------------------------------------------------------- every option loads


def _fields(option: str) -> set[str]:
    return {f.name for f in dataclasses.fields(option_schema("data", option))}


def _bundled(option: str) -> bool:
    """Whether data=option loads as it is: it reads no file of the user's (a `path`), downloads
    nothing (a `download` switch) and runs no code of the user's (an open schema)."""
    return not ({"path", "download"} & _fields(option) or is_open(option_schema("data", option)))


def _keras_dataset(option: str) -> bool:
    return issubclass(option_schema("data", option), KerasDatasetConf)


# Per bundled option: input shape, model outputs, target dtype and target shape per example.
# Every bundled option in conf/data needs an entry.
BUNDLED = {"digits": ((8, 8, 1), 10, np.int64, ()), "synthetic": ((16,), 10, np.int64, ()),
           "digits_multilabel": ((8, 8, 1), 4, np.float32, (4,)), "breast_cancer": ((30,), 1, np.float32, ()),
           "diabetes": ((10,), 1, np.float32, ())}


@pytest.mark.parametrize("option", [o for o in options("data") if _bundled(o)])
def test_bundled_options_load(option):
    shape, outputs, target_dtype, target_shape = per_option(BUNDLED, "data", option, "BUNDLED")
    ds = build(f"data={option}", batch=64)
    assert ds.input_shape == shape and ds.num_outputs == outputs
    assert ds.steps_per_epoch == -(-ds.num_train // 64)
    train = batches(ds.train(0))
    assert len(train) == ds.steps_per_epoch and all(len(y) == 64 for _, y in train[:-1])
    assert sum(len(y) for _, y in train) == ds.num_train  # every example, the last batch partial
    assert count(ds.val) == ds.num_val and count(ds.test) == ds.num_test  # eval keeps it
    x, y = train[0]
    assert x.dtype == np.float32 and x.shape == (64, *shape)
    assert y.dtype == target_dtype and y.shape == (64, *target_shape)


def test_custom_loads_the_users_function():
    ds = build("data=custom", "data._target_=tftrain.data.sources.digits", "++data.image_size=null", batch=64)
    assert (ds.input_shape, ds.num_outputs, ds.num_train + ds.num_val + ds.num_test) == ((8, 8, 1), 10, 1797)


def test_npz_loads_and_holds_out_val(tmp_path):
    rng = np.random.default_rng(0)
    path = write_npz(tmp_path / "d.npz", x_train=rng.normal(size=(50, 4)), y_train=rng.integers(0, 3, 50),
                     x_test=rng.normal(size=(9, 4)), y_test=rng.integers(0, 3, 9))
    ds = build("data=npz", f"data.path={path}", "data.val_fraction=0.2")
    assert (ds.num_train, ds.num_val, ds.num_test, ds.input_shape, ds.num_outputs) == (40, 10, 9, (4,), 3)
    assert count(ds.test) == 9


KERAS_OPTIONS = [o for o in options("data") if _keras_dataset(o)]


@pytest.mark.parametrize("name", KERAS_OPTIONS)
def test_keras_datasets_read_their_cache_under_keras_home(name, tmp_path, monkeypatch):
    _, shape, classes = per_option(KERAS_CACHES, "data", name, "KERAS_CACHES")
    plant_keras_cache(tmp_path, name)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    ds = build(f"data={name}", "data.download=false", "data.val_fraction=0.25")
    assert (ds.num_train, ds.num_val, ds.num_test) == (30, 10, 12)
    assert ds.input_shape == shape and ds.num_outputs == classes
    x, _ = batches(ds.train(0))[0]
    assert 0.0 <= x.min() and x.max() <= 255.0  # raw pixels; normalize: scale is the model's first layer
    norm = ds.normalization
    assert norm["mode"] == "scale" and np.all(norm["offset"] == 0) and np.allclose(norm["scale"], 1 / 255)


def test_cifar100_coarse_labels(tmp_path, monkeypatch):
    plant_keras_cache(tmp_path, "cifar100")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert build("data=cifar100", "data.label_mode=coarse", "data.download=false").num_outputs == 20


@pytest.mark.parametrize("name", KERAS_OPTIONS)
def test_every_keras_dataset_missing_offline_says_where_to_place_what(name, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    with pytest.raises(DataError, match=f"data={name}: .* is not there and data.download=false") as e:
        build(f"data={name}", "data.download=false")
    assert str(tmp_path / "kh" / "datasets") in str(e.value) and "download https://" in str(e.value)


def test_keras_dataset_missing_offline_names_the_file_to_place(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    with pytest.raises(DataError, match="mnist.npz") as e:
        build("data=mnist", "data.download=false")
    assert str(tmp_path / "kh" / "datasets" / "mnist.npz") in str(e.value)
    assert "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz" in str(e.value)


def test_keras_dataset_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    import keras

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -2] "
                        "Name or service not known")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    with pytest.raises(DataError, match="downloading it failed .*Name or service not known") as e:
        build("data=cifar10")
    assert str(tmp_path / "datasets" / "cifar-10-batches-py-target") in str(e.value)


def test_csv_loads_with_val_and_test_files(tmp_path):
    rng = np.random.default_rng(0)
    train = write_csv(tmp_path / "train.csv", rng.normal(size=(40, 3)), rng.integers(0, 4, 40), label="y")
    val = write_csv(tmp_path / "val.csv", rng.normal(size=(7, 3)), rng.integers(0, 4, 7), label="y")
    test = write_csv(tmp_path / "test.csv", rng.normal(size=(5, 3)), rng.integers(0, 4, 5), label="y")
    ds = build("data=csv", f"data.path={train}", f"data.val_path={val}", f"data.test_path={test}",
               "data.label_column=y", "data.num_classes=4")
    assert (ds.num_train, ds.num_val, ds.num_test, ds.input_shape, ds.num_outputs) == (40, 7, 5, (3,), 4)
    assert ds.steps_per_epoch == 5 and len(batches(ds.train(0))) == 5
    assert count(ds.val) == 7 and count(ds.test) == 5


def test_csv_glob_feature_columns_no_header_and_fractions(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        write_csv(tmp_path / f"part-{i}.csv", rng.normal(size=(20, 4)), rng.integers(0, 2, 20), header=False)
    ds = build("data=csv", f"data.path={tmp_path}/part-*.csv", "data.header=false", "data.label_column=4",
               "data.feature_columns=[0,2]", "data.val_fraction=0.1", "data.test_fraction=0.2")
    assert ds.input_shape == (2,) and (ds.num_train, ds.num_val, ds.num_test) == (42, 6, 12)
    seen = np.concatenate([y for _, y in batches(ds.val)] + [y for _, y in batches(ds.test)])
    assert len(seen) == 18


def test_csv_streams_from_memory_cache_after_the_scan_and_resumes_exactly(tmp_path):
    """cache: memory reads the files once (the scan); with cache: null every epoch reads them. Either
    way train(epoch, skip) leaves out exactly the first `skip` batches of that epoch."""
    rng = np.random.default_rng(0)
    path = tmp_path / "d.csv"
    write_csv(path, rng.normal(size=(50, 2)), rng.integers(0, 2, 50))
    cached = build("data=csv", f"data.path={path}", batch=4)
    streamed = build("data=csv", f"data.path={path}", "data.cache=null", "data.shuffle_buffer=4", batch=4)
    for ds in (cached, streamed):
        full, resumed = batches(ds.train(3)), batches(ds.train(3, 2))
        assert len(full) == ds.steps_per_epoch == 9  # 35 rows: 8 batches of 4 and a partial one of 3
        assert all(np.array_equal(a[0], b[0]) for a, b in zip(resumed, full[2:])) and len(resumed) == 7
    assert "in memory" in cached.description and "streamed" in streamed.description  # memory cache: the in-memory path
    path.unlink()
    assert len(batches(cached.train(0))) == len(batches(cached.train(1))) == cached.steps_per_epoch
    assert count(cached.val) == cached.num_val
    with pytest.raises(tf.errors.NotFoundError):
        batches(streamed.train(0))


def test_image_folder_loads(tmp_path):
    root = write_image_folder(tmp_path / "imgs")
    ds = build("data=image_folder", f"data.path={root}", "data.image_size=[4,4]", "data.val_fraction=0.25",
               "data.test_fraction=0.25", batch=2)
    assert (ds.num_train, ds.num_val, ds.num_test) == (6, 3, 3)
    assert ds.input_shape == (4, 4, 3) and ds.num_outputs == 3
    x, y = batches(ds.train(0))[0]
    assert x.shape == (2, 4, 4, 3) and set(y) <= {0, 1, 2}
    gray = build("data=image_folder", f"data.path={root}", "data.image_size=[4,4]", "data.color_mode=grayscale",
                 f"data.val_path={root}", f"data.test_path={root}", "data.cache=memory", batch=4)
    assert gray.input_shape == (4, 4, 1) and (gray.num_train, gray.num_val, gray.num_test) == (12, 12, 12)
    assert len(batches(gray.train(0))) == 3


def test_tfrecord_loads(tmp_path):
    rng = np.random.default_rng(0)
    path = write_tfrecord(tmp_path / "d.tfrecord", rng.normal(size=(40, 2, 3)), rng.integers(0, 5, 40))
    ds = build("data=tfrecord", f"data.path={path}", "data.features.x.shape=[2,3]")
    assert ds.input_shape == (2, 3) and ds.num_outputs == 5
    assert (ds.num_train, ds.num_val, ds.num_test) == (28, 4, 8)
    x, y = batches(ds.train(0))[0]
    assert x.shape == (8, 2, 3) and y.dtype == np.int64


def test_tfds_by_name(tmp_path, monkeypatch):
    module, builder, data = fake_tfds()
    module.builder = builder
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", module)
    ds = build("data=tfds", "data.dataset=fake", f"data.data_dir={tmp_path}", "data.val_fraction=0.2")
    assert (ds.num_train, ds.num_val, ds.num_test, ds.input_shape, ds.num_outputs) == (24, 6, 10, (8, 8, 1), 3)
    assert count(ds.test) == 10 and len(batches(ds.train(0))) == 3


TINY_DIGITS_BUILDER = """
import tensorflow_datasets as tfds
from sklearn.datasets import load_digits

digits = load_digits()
images = (digits.images * 16).clip(0, 255).astype("uint8")[..., None]


class TftrainTinyDigits(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(8, 8, 1)),
                                                 "label": tfds.features.ClassLabel(num_classes=10)}),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 300), "test": self._generate_examples(300, 400)}

    def _generate_examples(self, start, stop):
        for i in range(start, stop):
            yield i, {"image": images[i], "label": int(digits.target[i])}
"""


@pytest.mark.slow
def test_the_tfds_extra_trains_on_a_data_set_prepared_in_data_dir(tmp_path):
    """Real TensorFlow Datasets (the tfds extra): a small data set built here into data_dir, then
    trained on with data.download=false (nothing is fetched)."""
    pytest.importorskip("tensorflow_datasets")
    from conftest import compose_small

    # TFDS looks up a builder's resources by its package: the builder lives in a package made here.
    package = tmp_path / "tinydigits"
    package.mkdir()
    (package / "__init__.py").write_text(TINY_DIGITS_BUILDER)
    sys.path.insert(0, str(tmp_path))
    try:
        from tinydigits import TftrainTinyDigits
    finally:
        sys.path.remove(str(tmp_path))

    TftrainTinyDigits(data_dir=str(tmp_path)).download_and_prepare()
    metrics = tftrain.train(compose_small("data=tfds", "data.dataset=tftrain_tiny_digits", f"data.data_dir={tmp_path}",
                                          "data.download=false", "data.normalize=scale", "trainer.epochs=5", "optimizer.lr=0.01",
                                          "logger=[]"), output_dir=tmp_path / "run")
    assert metrics["epochs"] == 5 and metrics["test_accuracy"] > 0.5  # learns (10 classes: chance is 0.1)
    preprocessing = json.loads((tmp_path / "run" / "preprocessing.json").read_text())
    assert preprocessing["input_shape"] == [8, 8, 1] and preprocessing["num_outputs"] == 10


def test_tfds_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # `import tensorflow_datasets` fails
    with pytest.raises(DataError, match=r"tensorflow-datasets.*pip install \"tftrain\[tfds\]\""):
        build("data=tfds")


def test_held_out_splits_are_stratified_by_class_and_seeded():
    from tftrain.data.sources import digits, hold_out

    whole = digits(image_size=None)
    s = hold_out(whole, 0.15, 0.2, seed=0)
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (1167, 270, 360)
    overall = np.bincount(whole.y_train) / len(whole.y_train)
    for y in (s.y_train, s.y_val, s.y_test):  # every class in proportion, within one example
        assert np.all(np.abs(np.bincount(y, minlength=10) - overall * len(y)) <= 1.0)
    again, other = hold_out(whole, 0.15, 0.2, seed=0), hold_out(whole, 0.15, 0.2, seed=1)
    np.testing.assert_array_equal(again.y_test, s.y_test)
    assert not np.array_equal(other.x_test, s.x_test)


# ---------------------------------------------------------------- bad data


def _npz_case(tmp_path, **changes):
    rng = np.random.default_rng(0)
    arrays = dict(x_train=rng.normal(size=(20, 3)), y_train=rng.integers(0, 3, 20),
                  x_val=rng.normal(size=(6, 3)), y_val=rng.integers(0, 3, 6),
                  x_test=rng.normal(size=(6, 3)), y_test=rng.integers(0, 3, 6))
    arrays.update(changes)
    return write_npz(tmp_path / "bad.npz", **arrays)


@pytest.mark.parametrize("change, message", [
    ({"x_val": np.array([[0.0, np.nan, 1.0]] * 6)}, "x_val holds 6 NaN or Inf"),
    ({"x_test": np.full((6, 3), np.inf)}, "x_test holds 18 NaN or Inf"),
    ({"y_test": np.array([0, 1, 2, -1, 0, 1])}, r"y_test has labels outside \[0, 3\)"),
    ({"y_train": np.zeros(19, int)}, "x_train has 20 examples but y_train has 19"),
    ({"x_test": np.zeros((6, 4))}, r"x_test has example shape \(4,\) but x_train has \(3,\)"),
    ({"x_val": np.zeros((0, 3)), "y_val": np.zeros(0, int)}, "The val split is empty"),
    ({"y_val": np.full(6, 0.5)}, "y_val holds non-integer values .*problem=regression"),
])
def test_bad_arrays_fail_with_their_message(tmp_path, change, message):
    with pytest.raises(DataError, match=message):
        build("data=npz", f"data.path={_npz_case(tmp_path, **change)}")


def _csv_case(tmp_path, rows=None, **kw):
    rng = np.random.default_rng(0)
    return write_csv(tmp_path / "bad.csv", rng.normal(size=(30, 2)), rng.integers(0, 3, 30), rows=rows, **kw)


@pytest.mark.parametrize("rows, extra, message", [
    (["0.5,,1"], [], r"holds 1 NaN or Inf values \(empty CSV fields read as NaN\)"),
    (["0.5,inf,1"], [], "NaN or Inf"),
    (["0.5,0.1,7"], ["data.num_classes=3"], r"labels outside \[0, 3\): min \d+, max 7"),
    (["0.5,0.1,-1"], [], r"labels outside \[0, 3\): min -1"),
    (["0.5,0.1,1.5"], [], "non-integer"),
    (["0.5,abc,1"], [], r"bad.csv, line 32: column 2 holds 'abc', not a number\. Fix: correct or remove that row"),
    (["0.5,1"], [], r"bad.csv, line 32: 2 fields where the header has 3"),
    ([], ["data.label_column=target"], r"data.label_column='target': \['target'\] is not a column .*\['f0', 'f1', 'label'\]"),
    ([], ["data.feature_columns=[f0,f9]"], r"names columns \['f9'\]"),
])
def test_bad_csv_fails_before_training_with_its_message(tmp_path, rows, extra, message):
    path = _csv_case(tmp_path, rows=rows)
    with pytest.raises(DataError, match=message):
        build("data=csv", f"data.path={path}", "data.test_fraction=0.1", "data.val_fraction=0.1", *extra)


def test_csv_empty_split_and_mismatched_columns(tmp_path):
    train = _csv_case(tmp_path)
    (tmp_path / "empty.csv").write_text("f0,f1,label\n")
    with pytest.raises(DataError, match="the val split .* is empty"):
        build("data=csv", f"data.path={train}", f"data.val_path={tmp_path / 'empty.csv'}")
    (tmp_path / "other.csv").write_text("f0,label\n1,0\n")
    with pytest.raises(DataError, match="differ from those of"):
        build("data=csv", f"data.path={train}", f"data.test_path={tmp_path / 'other.csv'}")


def test_bad_tfrecords_fail_with_their_message(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 4)), rng.integers(0, 2, 20)
    missing_label = write_tfrecord(tmp_path / "a.tfrecord", x, y, drop=3)
    with pytest.raises(DataError, match="label.*(required|missing)"):
        build("data=tfrecord", f"data.path={missing_label}", "data.features.x.shape=[4]")
    good = write_tfrecord(tmp_path / "b.tfrecord", x, y)
    with pytest.raises(DataError, match="failed after 0 examples"):  # 4 floats stored, spec says 5
        build("data=tfrecord", f"data.path={good}", "data.features.x.shape=[5]")
    (tmp_path / "c.tfrecord").write_bytes(b"not a tfrecord at all")
    with pytest.raises(DataError, match="not a readable TFRecord"):
        build("data=tfrecord", f"data.path={tmp_path / 'c.tfrecord'}")


def test_image_folder_with_one_class_or_mismatched_val_folder(tmp_path):
    one = write_image_folder(tmp_path / "one", classes=("a",))
    with pytest.raises(DataError, match="at least 2"):
        build("data=image_folder", f"data.path={one}")
    two = write_image_folder(tmp_path / "two", classes=("a", "b"))
    other = write_image_folder(tmp_path / "other", classes=("a", "c"))
    with pytest.raises(DataError, match=r"same class sub-folders .*\['a', 'b'\]"):
        build("data=image_folder", f"data.path={two}", f"data.val_path={other}")


@pytest.mark.parametrize("option", [o for o in options("data") if "path" in _fields(o)])
def test_a_missing_path_fails_in_the_schema(tmp_path, option):
    with pytest.raises(ConfigError, match="`data.path`"):
        validate(tftrain.compose([f"data={option}", f"data.path={tmp_path}/none"]))


@pytest.mark.parametrize("override, key", [
    ("data=tfrecord data.path={tmp}/*.tfrecord", "data.path"),  # a pattern that matches no file
    ("data=csv data.path=/etc/hostname data.val_path=/no/val.csv", "data.val_path")])
def test_missing_files_fail_in_the_schema(tmp_path, override, key):
    with pytest.raises(ConfigError, match=f"`{key}`"):
        validate(tftrain.compose(override.format(tmp=tmp_path).split()))


def test_missing_file_fails_before_tensorflow_is_imported(tmp_path):
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "tftrain", "data=csv", f"data.path={tmp_path}/a.csv",
                        f"hydra.run.dir={tmp_path}/run"], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert r.returncode == 2 and "Invalid config `data.path`" in r.stderr
    assert not [ln for ln in r.stderr.splitlines() if ln.startswith("import time:") and ln.endswith("| tensorflow")]


@pytest.mark.parametrize("override, key", [
    ("data.normalize=zscore", "data.normalize"), ("data.augment.flip=diagonal", "data.augment.flip"),
    ("data.augment.translate=0.7", "data.augment.translate"), ("+data.augment.rotate=1", "data.augment.rotate")])
def test_bad_pipeline_settings_name_their_key(override, key):
    with pytest.raises(ConfigError, match=f"`{key}`"):
        validate(tftrain.compose(["data=digits", override]))


def test_batch_size_and_augment_must_fit_the_data():
    with pytest.raises(ConfigError, match="trainer.batch_size.*at most the 100 training examples"):
        build("data=synthetic", "data.num_train=100", batch=128)
    with pytest.raises(ConfigError, match="data.augment.*not images"):
        build("data=synthetic", "data.augment.flip=horizontal")


# ---------------------------------------------------------------- normalization, order, augmentation


def test_standardize_uses_training_statistics_only(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.normal(5.0, 2.0, size=(400, 3))
    x_val = rng.normal(-3.0, 1.0, size=(50, 3))  # a different distribution: must not leak into the stats
    path = write_npz(tmp_path / "d.npz", x_train=x_train, y_train=rng.integers(0, 2, 400), x_val=x_val,
                     y_val=rng.integers(0, 2, 50), x_test=x_val, y_test=rng.integers(0, 2, 50))
    ds = build("data=npz", f"data.path={path}", "data.normalize=standardize", batch=50)
    np.testing.assert_allclose(ds.normalization["offset"], x_train.mean(0), rtol=1e-5)
    np.testing.assert_allclose(1 / ds.normalization["scale"], x_train.std(0), rtol=1e-5)
    # The pipeline gives raw inputs: the normalization is the model's first layer (so the saved
    # model takes raw inputs), which maps the training inputs to mean 0, std 1.
    from tftrain.models import with_preprocessing

    train = np.concatenate([x for x, _ in batches(ds.train(0))])
    np.testing.assert_allclose(np.sort(train, 0), np.sort(x_train.astype("float32"), 0), rtol=1e-6)
    import keras

    model = with_preprocessing(keras.Sequential([keras.Input((3,)), keras.layers.Identity()]), (3,), ds.normalization)
    normalized = np.asarray(model(train))
    np.testing.assert_allclose(normalized.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(normalized.std(0), 1, atol=1e-4)
    val = np.asarray(model(np.concatenate([x for x, _ in batches(ds.val)])))
    np.testing.assert_allclose(val, (x_val - x_train.mean(0)) / x_train.std(0), rtol=1e-4, atol=1e-4)


def test_streamed_csv_scale_uses_training_statistics(tmp_path):
    rng = np.random.default_rng(0)
    train = write_csv(tmp_path / "t.csv", rng.uniform(10, 20, size=(64, 2)), rng.integers(0, 2, 64))
    test = write_csv(tmp_path / "s.csv", rng.uniform(30, 40, size=(8, 2)), rng.integers(0, 2, 8))
    ds = build("data=csv", f"data.path={train}", f"data.test_path={test}", "data.normalize=scale",
               "data.cache=null", batch=2)
    x_all = np.concatenate([x for x, _ in batches(ds.train(0))] + [x for x, _ in batches(ds.val)])
    lo, scale = ds.normalization["offset"], ds.normalization["scale"]
    np.testing.assert_allclose(lo, x_all.min(0), rtol=1e-6)  # min-max of the training split (train + val here)
    np.testing.assert_allclose(1 / scale, x_all.max(0) - x_all.min(0), rtol=1e-5)
    x_test = np.concatenate([x for x, _ in batches(ds.test)])
    assert ((x_test - lo) * scale).min() > 1.0  # test data beyond train's range


def test_epoch_order_is_seeded_and_resume_skips_exactly(tmp_path):
    ds = build("data=synthetic", "data.num_train=96", batch=8)
    e0, again, e1 = batches(ds.train(0)), batches(ds.train(0)), batches(ds.train(1))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(e0, again))
    assert not np.array_equal(e0[0][0], e1[0][0])
    resumed = batches(ds.train(0, 5))
    assert len(resumed) == len(e0) - 5 and all(np.array_equal(a[0], b[0]) for a, b in zip(resumed, e0[5:]))
    rows = np.concatenate([x for x, _ in e0])
    assert len(np.unique(rows, axis=0)) == 96


def _images(tmp_path, n=24):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(n, 6, 6, 1)).astype("float32")
    return x, write_npz(tmp_path / "img.npz", x_train=x, y_train=rng.integers(0, 2, n), x_val=x[:8],
                        y_val=rng.integers(0, 2, 8), x_test=x[:8], y_test=rng.integers(0, 2, 8))


def test_flip_applies_to_training_batches_only(tmp_path):
    x, path = _images(tmp_path)
    ds = build("data=npz", f"data.path={path}", "data.augment.flip=horizontal", batch=8)
    train = np.concatenate([b for b, _ in batches(ds.train(0))])
    raw = {a.tobytes() for a in x}
    flipped = {a[:, ::-1].tobytes() for a in x}
    kinds = ["raw" if a.tobytes() in raw else "flipped" if a.tobytes() in flipped else "other" for a in train]
    assert "other" not in kinds and 0 < kinds.count("flipped") < len(kinds)
    for split in (ds.val, ds.test):
        np.testing.assert_array_equal(np.concatenate([b for b, _ in batches(split)]), x[:8])
    np.testing.assert_array_equal(train, np.concatenate([b for b, _ in batches(ds.train(0))]))  # reproducible


def test_translate_shifts_training_images_only(tmp_path):
    x, path = _images(tmp_path)
    ds = build("data=npz", f"data.path={path}", "data.augment.translate=0.34", batch=8)
    train = np.concatenate([b for b, _ in batches(ds.train(0))])
    assert train.shape == (24, 6, 6, 1)
    raw = {a.tobytes() for a in x}
    assert sum(a.tobytes() not in raw for a in train) >= 12  # most examples moved (shift 0 is possible)
    assert np.isclose(train, 0).sum() > 0  # zero fill where the image moved out
    np.testing.assert_array_equal(np.concatenate([b for b, _ in batches(ds.val)]), x[:8])


def test_batch_at_computes_the_same_batches_in_a_compiled_function():
    # batch_at serves fixed-size batches only: a split the batch size divides (256 / 32); with a last
    # partial batch (the digits' 1149 at 32) there is none.
    assert build("data=digits", batch=32).batch_at is None
    ds = build("data=synthetic", "data.input_shape=[8,8,1]", "data.num_train=256", "data.augment.flip=horizontal",
               "data.augment.translate=0.2", batch=32)
    epoch = batches(ds.train(3))
    assert len(epoch) == 8
    batch_at = tf.function(ds.batch_at)
    for i, (x, y) in enumerate(epoch):
        xb, yb = batch_at(tf.constant(i))
        np.testing.assert_array_equal(xb.numpy(), x)
        np.testing.assert_array_equal(yb.numpy(), y)


# ---------------------------------------------------------------- distribution and end to end


@pytest.mark.slow
def test_mirrored_replicas_split_the_same_global_batches(tmp_path):
    """Two replicas (a split CPU) get the halves of the global batches one replica gets; eval keeps
    partial batches. A subprocess: the CPU split must happen before TensorFlow's first op."""
    code = """
import numpy as np, tensorflow as tf, tftrain
from tftrain.schema import validate
from tftrain.config.factory import build_data
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
for over in (["data=synthetic", "data.num_train=40", "data.num_val=13"],):
    cfg = validate(tftrain.compose(over + ["trainer.batch_size=8"]))
    one, two = build_data(cfg), build_data(cfg, strategy)
    for a, b in zip(one.train(1), two.train(1)):
        parts = strategy.experimental_local_results(b[0])
        assert [p.shape[0] for p in parts] == [4, 4]
        np.testing.assert_array_equal(a[0].numpy(), np.concatenate([p.numpy() for p in parts]))
    n = sum(int(sum(p.shape[0] for p in strategy.experimental_local_results(y))) for _, y in two.val)
    assert n == one.num_val, (n, one.num_val)
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert r.stdout.strip().endswith("ok"), r.stderr[-3000:]


def test_train_end_to_end_on_csv(tmp_path):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 4)) * 3
    y = rng.integers(0, 3, 240)
    path = write_csv(tmp_path / "d.csv", centers[y] + rng.normal(size=(240, 4)), y)
    cfg = tftrain.compose(["data=csv", f"data.path={path}", "model.hidden_units=[16]", "trainer.epochs=3",
                           "trainer.batch_size=16", "trainer.verbose=0", "optimizer.lr=0.01"])
    m = tftrain.train(cfg, output_dir=tmp_path / "run")
    assert m["steps"] == 3 * -(-168 // 16) and m["test_accuracy"] > 0.6  # every example each epoch: 11 steps


# The test that loads each option that is neither bundled nor a keras.datasets set (those have
# BUNDLED and KERAS_CACHES). Every such option in conf/data needs an entry.
LOADED_BY = {"csv": test_csv_loads_with_val_and_test_files, "npz": test_npz_loads_and_holds_out_val,
             "image_folder": test_image_folder_loads, "tfrecord": test_tfrecord_loads, "tfds": test_tfds_by_name,
             "custom": test_custom_loads_the_users_function}


@pytest.mark.parametrize("option", [o for o in options("data") if not (_bundled(o) or _keras_dataset(o))])
def test_every_other_option_has_a_test_that_loads_it(option):
    per_option(LOADED_BY, "data", option, "LOADED_BY")
