"""What predict and evaluate say about inputs unlike the training data (issue 21): inputs far
outside the training inputs' range are named in a warning, and a class name training never saw
is one paragraph."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tftrain
from conftest import run_cli


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("digits_run")
    tftrain.train(tftrain.compose(["trainer.epochs=1", "trainer.verbose=0", "logger=[]"]), output_dir=run)
    return run


@pytest.mark.slow
def test_raw_inputs_far_outside_the_training_range_are_warned_about(digits_run, tmp_path):
    from sklearn.datasets import load_digits

    raw = load_digits()  # 0..16, where training saw the digits scaled to [0, 1]
    x, y = raw.images[..., None].astype("float32"), raw.target
    np.savez(tmp_path / "raw.npz", x=x, y=y)
    np.savez(tmp_path / "scaled.npz", x=x / 16.0, y=y)
    warned = run_cli("task=evaluate", f"task.run={digits_run}", f"task.input={tmp_path / 'raw.npz'}",
                     f"hydra.run.dir={tmp_path / 'eval_raw'}")
    assert warned.returncode == 0, warned.stderr[-2000:]
    assert "far outside the range the model was trained on" in warned.stdout + warned.stderr
    quiet = run_cli("task=evaluate", f"task.run={digits_run}", f"task.input={tmp_path / 'scaled.npz'}",
                    f"hydra.run.dir={tmp_path / 'eval_scaled'}")
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "far outside" not in quiet.stdout + quiet.stderr


@pytest.mark.slow
def test_a_class_name_training_never_saw_is_one_paragraph(tmp_path):
    rng = np.random.default_rng(0)
    names = np.array(["barbera", "cat", "zinfandel"])
    x = rng.normal(size=(120, 4)).astype("float32")
    y = names[rng.integers(0, 3, size=120)]
    x[np.arange(120), np.searchsorted(names, y)] += 3.0  # learnable
    np.savez(tmp_path / "train.npz", x_train=x, y_train=y)
    run = tmp_path / "run"
    tftrain.train(tftrain.compose(["data=npz", f"data.path={tmp_path / 'train.npz'}", "trainer.epochs=1",
                                   "trainer.verbose=0", "logger=[]"]), output_dir=run)
    np.savez(tmp_path / "new.npz", x=x[:8], y=np.array(["cat", "merlot"] * 4))
    result = run_cli("task=evaluate", f"task.run={run}", f"task.input={tmp_path / 'new.npz'}",
                     f"hydra.run.dir={tmp_path / 'eval'}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "tftrain: error:" in result.stderr and "'merlot'" in result.stderr and "Traceback" not in result.stderr
    np.savez(tmp_path / "known.npz", x=x[:8], y=y[:8])
    known = run_cli("task=evaluate", f"task.run={run}", f"task.input={tmp_path / 'known.npz'}",
                    f"hydra.run.dir={tmp_path / 'eval_known'}")
    assert known.returncode == 0, known.stderr[-2000:]
    assert json.loads((tmp_path / "eval_known" / "evaluation.json").read_text())["examples"] == 8
