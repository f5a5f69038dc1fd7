"""Labels that are class names (text in a CSV column, an npz of strings, a custom loader's arrays):
the classes are the training split's names, sorted, kept in preprocessing.json; a name a split
uses that training never saw is one paragraph."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tftrain
from conftest import run_cli
from tftrain.data.labels import class_indices
from tftrain.errors import DataError
from tftrain.schema import validate

tf = pytest.importorskip("tensorflow")

from tftrain.config.factory import build_data  # noqa: E402

NAMES = ["barbera", "cat", "zinfandel"]


def _named(n: int, names=NAMES, seed: int = 0):
    """Separable clusters, one per name: x (n, 3), y (n,) names."""
    rng = np.random.default_rng(seed)
    k = rng.integers(0, len(names), n)
    x = rng.normal(size=(n, 3)) * 0.3 + np.eye(3)[k % 3] * 3
    return x, np.array(names)[k]


def _write_csv(path, x, y):
    path.write_text("f0,f1,f2,wine\n" + "".join(f"{a:.5g},{b:.5g},{c:.5g}, {name}\n" for (a, b, c), name in zip(x, y)))
    return path


def _build(*overrides, batch=16):
    cfg = validate(tftrain.compose([f"trainer.batch_size={batch}", "trainer.seed=0", *overrides]))
    return build_data(cfg)


@pytest.mark.slow
def test_csv_with_class_names_trains_from_the_cli_and_keeps_the_names(tmp_path):
    x, y = _named(120)
    path = _write_csv(tmp_path / "wine.csv", x, y)
    result = run_cli("data=csv", f"data.path={path}", "data.label_column=wine", "model.hidden_units=[8]",
                     "trainer.epochs=5", "trainer.batch_size=16", "trainer.verbose=0", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 0, result.stderr[-2000:]
    facts = json.loads((tmp_path / "run" / "preprocessing.json").read_text())
    assert facts["target_names"] == NAMES and facts["num_outputs"] == 3
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.6  # chance is 1/3: the names map to consistent classes, not to noise


def test_npz_of_string_labels_maps_sorted_names_to_indices(tmp_path):
    x, y = _named(90)
    np.savez(tmp_path / "d.npz", x_train=x[:60], y_train=y[:60], x_test=x[60:], y_test=y[60:])
    ds = _build("data=npz", f"data.path={tmp_path / 'd.npz'}")
    assert ds.target_names == NAMES and ds.num_outputs == 3
    got = np.concatenate([yb.numpy() for _, yb in ds.test])
    assert sorted(got.tolist()) == sorted(class_indices(y[60:], NAMES).tolist())


def test_binary_with_two_names_makes_the_sorted_second_positive(tmp_path):
    x, y = _named(80, names=["yes", "no"])
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    ds = _build("data=npz", f"data.path={tmp_path / 'd.npz'}", "problem=binary")
    assert ds.target_names == ["no", "yes"] and ds.num_outputs == 1
    xs = np.concatenate([xb.numpy() for xb, _ in ds.test])
    ys = np.concatenate([yb.numpy() for _, yb in ds.test])
    expected = (np.array([y[np.flatnonzero(np.all(np.isclose(x, r, atol=1e-5), axis=1))[0]] for r in xs]) == "yes")
    assert np.array_equal(ys, expected.astype("float32"))


def test_unknown_and_unusable_names_are_one_paragraph(tmp_path):
    x, y = _named(60)
    y_test = y[40:].copy()
    y_test[0] = "merlot"
    np.savez(tmp_path / "d.npz", x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y_test)
    with pytest.raises(DataError, match=r"y_test: the class name\(s\) \['merlot'\] that training never saw"):
        _build("data=npz", f"data.path={tmp_path / 'd.npz'}")
    train = _write_csv(tmp_path / "train.csv", x[:40], y[:40])
    test = _write_csv(tmp_path / "test.csv", x[40:], y_test)
    with pytest.raises(DataError, match=r"data.test_path: .*\['merlot'\] that the training files"):
        _build("data=csv", f"data.path={train}", f"data.test_path={test}", "data.label_column=wine")
    np.savez(tmp_path / "three.npz", x_train=x, y_train=y)
    with pytest.raises(DataError, match="problem=binary needs exactly two"):
        _build("data=npz", f"data.path={tmp_path / 'three.npz'}", "problem=binary")
    with pytest.raises(DataError, match="holds text"):
        _build("data=npz", f"data.path={tmp_path / 'three.npz'}", "problem=regression")
    with pytest.raises(DataError, match=r"the class name\(s\) \['merlot'\]"):
        class_indices(["cat", "merlot"], NAMES, "the evaluation labels")
