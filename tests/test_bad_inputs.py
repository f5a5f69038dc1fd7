"""Bad input (issue 20 §5): each case stops before training with one paragraph that names the
key or file at fault and says how to fix it (the CLI prints it and exits 2, no traceback); a
refused resume changes nothing in the run directory."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest

import tftrain
from conftest import compose_small, run_cli
from tftrain.errors import TftrainError
from tftrain.schema import validate


def reshaped_model(input_shape, num_outputs):
    """A user's model=custom whose output is (N, 8, 8, num_outputs), not (N, num_outputs)."""
    import keras

    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Dense(64 * num_outputs)(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Reshape((8, 8, num_outputs))(x))


def _csv(path, header="a,b,label", rows=None):
    lines = [header.encode() if isinstance(header, str) else header]
    lines += [f"{i},{i * 2},{i % 2}".encode() for i in range(40)] if rows is None else rows
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _images(root, per_class=10, empty=()):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(0 if c in empty else per_class):
            Image.fromarray((rng.random((8, 8, 3)) * 255).astype("uint8")).save(root / c / f"{i}.png")
    return root


def _data(overrides):
    from tftrain.config.factory import build_data

    return build_data(validate(tftrain.compose(overrides)))


# ---------------------------------------------------------------- each case: (make(tmp) -> error, words)


def latin1_header(tmp):
    path = _csv(tmp / "latin.csv", header="caf\xe9,b,label".encode("latin-1"))
    return lambda: _data(["data=csv", f"data.path={path}", "data.label_column=label"]), \
        [f"{path}, line 1", "not UTF-8", "iconv"]


def latin1_value(tmp):
    rows = [f"{i},{i * 2},{i % 2}".encode() for i in range(40)]
    rows[20] = "\xe9,1,0".encode("latin-1")
    path = _csv(tmp / "latin.csv", rows=rows)
    return lambda: _data(["data=csv", f"data.path={path}", "data.label_column=label"]), [f"{path}, line 22", "UTF-8"]


def empty_arrays_npz(tmp):
    np.savez(tmp / "zero.npz", x_train=np.zeros((0, 4), "float32"), y_train=np.zeros((0,), "int64"))
    return lambda: _data(["data=npz", f"data.path={tmp / 'zero.npz'}"]), ["zero.npz", "x_train has no examples"]


def complex_npz(tmp):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(50, 4)) + 1j * rng.normal(size=(50, 4))).astype("complex64")
    np.savez(tmp / "c.npz", x_train=x, y_train=rng.integers(0, 2, 50))
    return lambda: _data(["data=npz", f"data.path={tmp / 'c.npz'}"]), ["c.npz", "x_train holds complex numbers"]


def empty_class_folder(tmp):
    root = _images(tmp / "imgs", empty=("b",))
    return lambda: _data(["data=image_folder", f"data.path={root}", "data.image_size=[8,8]",
                          "trainer.batch_size=8"]), [f"{root / 'b'}", "holds no image"]


def empty_class_folder_at_batch_64(tmp):
    root = _images(tmp / "imgs", empty=("b",))
    return lambda: _data(["data=image_folder", f"data.path={root}", "data.image_size=[8,8]",
                          "trainer.batch_size=64"]), [f"{root / 'b'}", "holds no image"]


def ragged_csv(tmp):
    rows = [f"{i},{i * 2},{i % 2}".encode() for i in range(40)]
    rows[20] = b"1,2"
    path = _csv(tmp / "ragged.csv", rows=rows)
    return lambda: _data(["data=csv", f"data.path={path}", "data.label_column=label"]), \
        [f"{path}, line 22: 2 fields where the header has 3"]


def string_features_csv(tmp):
    path = _csv(tmp / "words.csv", rows=[f"{i},x{i},{i % 2}".encode() for i in range(40)])
    return lambda: _data(["data=csv", f"data.path={path}", "data.label_column=label"]), \
        [f"{path}, line 2: column 2 holds 'x0', not a number"]


def non_image_file(tmp):
    root = _images(tmp / "imgs")
    (root / "a" / "notes.png").write_text("not an image\n")
    return lambda: _data(["data=image_folder", f"data.path={root}", "data.image_size=[8,8]",
                          "trainer.batch_size=8"]), [f"The first unreadable file: {root / 'a' / 'notes.png'}"]


def corrupt_png(tmp):
    root = _images(tmp / "imgs")
    data = (root / "b" / "3.png").read_bytes()
    (root / "b" / "3.png").write_bytes(data[: len(data) // 2])
    return lambda: _data(["data=image_folder", f"data.path={root}", "data.image_size=[8,8]",
                          "trainer.batch_size=8"]), [f"The first unreadable file: {root / 'b' / '3.png'}"]


def _lr(value):
    def make(tmp):
        return lambda: validate(tftrain.compose([f"optimizer.lr={value}"])), \
            ["`optimizer.lr`", "finite learning rate > 0 that float32 holds"]
    make.__name__ = f"lr_{value}"
    return make


def _hidden_units(value):
    def make(tmp):
        return lambda: validate(tftrain.compose([f"model.hidden_units={value}"])), \
            ["`model.hidden_units`", "`model.hidden_units=[128]`"]
    make.__name__ = f"hidden_units_{value}"
    return make


def fractions_adding_up_to_1(tmp):
    return lambda: validate(tftrain.compose(["data.test_fraction=0.99"])), \
        ["Invalid config `data.test_fraction`: received 0.99", "data.val_fraction=0.15", "less than 0.85"]


def empty_milestones(tmp):
    from tftrain.config.factory import build_schedule

    cfg = validate(tftrain.compose(["schedule=multistep", "schedule.milestones=[]"]))
    return lambda: build_schedule(cfg, steps_per_epoch=10), ["`schedule.milestones`", "non-empty", "schedule=constant"]


def custom_model_output_8x8(tmp):
    from tftrain.config.factory import build_model

    cfg = validate(tftrain.compose(["model=custom", "model._target_=test_bad_inputs.reshaped_model"]))
    return lambda: build_model(cfg, (16,), 10), ["test_bad_inputs.reshaped_model", "(None, 8, 8, 10)",
                                                  "(None, 10)"]


CASES = [latin1_header, latin1_value, empty_arrays_npz, complex_npz, empty_class_folder,
         empty_class_folder_at_batch_64, ragged_csv, string_features_csv, non_image_file, corrupt_png,
         _lr("1e-46"), _lr("inf"), _lr("1e300"), _hidden_units("abc"), _hidden_units("128"), fractions_adding_up_to_1,
         empty_milestones, custom_model_output_8x8]


@pytest.mark.parametrize("make", CASES, ids=lambda f: f.__name__)
def test_bad_input_is_one_paragraph_naming_the_key_or_file(tmp_path, make):
    call, words = make(tmp_path)
    with pytest.raises(TftrainError) as e:
        call()
    text = str(e.value)
    assert "\n" not in text.strip() and "Fix:" in text, text
    assert "function_node" not in text and "Traceback" not in text, text
    for word in words:
        assert word in text, (word, text)
    assert "batch_size" not in text or "batch_size" in make.__name__, text


# ---------------------------------------------------------------- against a finished run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished small run (synthetic data: 16 features, 10 classes, 1 epoch: a checkpoint)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    tftrain.train(compose_small("trainer.epochs=1"), output_dir=run)
    return run


def test_evaluate_with_a_label_outside_the_runs_classes_is_one_paragraph(trained, tmp_path):
    from tftrain.tasks.evaluate import evaluate

    np.savez(tmp_path / "x.npz", x=np.zeros((4, 16), "float32"), y=np.array([0, 1, 2, 99]))
    with pytest.raises(TftrainError) as e:
        evaluate(tftrain.compose(["task=evaluate", f"task.run={trained}", f"task.input={tmp_path / 'x.npz'}"]),
                 output_dir=tmp_path / "e")
    text = str(e.value)
    assert "\n" not in text.strip() and "Fix:" in text, text
    assert "x.npz" in text and "[0, 10)" in text and "max 99" in text, text
    assert not (tmp_path / "e" / "evaluation.json").exists()


def _digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_resume_with_a_garbage_config_yaml_is_refused_and_changes_nothing(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "config.yaml").write_text("problem: [unclosed\n  : :\n")
    before = _digest(run)
    with pytest.raises(TftrainError) as e:
        tftrain.train(compose_small("trainer.epochs=2"), output_dir=run)
    text = str(e.value)
    assert "\n" not in text.strip() and "Fix:" in text, text
    assert f"{run / 'config.yaml'} cannot be read" in text and "trainer.resume=never" in text, text
    assert _digest(run) == before
    # The fix it names works: trainer.resume=never starts the run again and writes a config.yaml.
    tftrain.train(compose_small("trainer.epochs=1", "trainer.resume=never"), output_dir=run)
    import yaml

    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["resume"] == "never"


@pytest.mark.slow
def test_a_resume_refused_at_the_cli_changes_nothing_but_the_log(trained, tmp_path):
    from conftest import SMALL

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "config.yaml").write_text("problem: [unclosed\n  : :\n")
    before = _digest(run)
    result = run_cli(*SMALL, "trainer.epochs=2", f"hydra.run.dir={run}")
    assert result.returncode == 2 and "cannot be read" in result.stderr, result.stderr[-3000:]
    after = _digest(run)
    assert after.pop("tftrain.log", None) is not None  # the log says why, as the console did
    assert after == before  # no .hydra record, config.yaml as it was


@pytest.mark.slow
def test_a_bad_input_exits_2_from_the_cli_with_one_paragraph(tmp_path):
    path = _csv(tmp_path / "latin.csv", header="caf\xe9,b,label".encode("latin-1"))
    result = run_cli("data=csv", f"data.path={path}", "data.label_column=label", "trainer.epochs=1",
                     "trainer.verbose=0", "logger=[]", f"hydra.run.dir={tmp_path / 'out'}")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("tftrain: error:")]
    assert len(errors) == 1 and f"{path}, line 1" in errors[0] and "Fix:" in errors[0], result.stderr[-3000:]
    assert not (tmp_path / "out" / "metrics.json").exists()
