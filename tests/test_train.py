"""`tftrain.train` through the library API: outputs, reloading, TensorBoard scalars, divergence."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import tftrain
from conftest import ROOT
from tftrain.errors import ConfigError, DivergenceError

METRIC_KEYS = {"train_loss", "val_loss", "val_accuracy", "test_loss", "test_accuracy", "epochs", "steps",
               "wall_time_s", "steps_per_s"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import compose_small

    run_dir = tmp_path_factory.mktemp("run")
    metrics = tftrain.train(compose_small("optimizer=adam", "optimizer.lr=0.01"), output_dir=run_dir)
    return run_dir, metrics


def test_train_returns_and_writes_metrics(trained):
    run_dir, metrics = trained
    assert METRIC_KEYS <= set(metrics)
    assert json.loads((run_dir / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert metrics["epochs"] == 2 and metrics["steps"] == 16
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["steps_per_s"] > 0
    # Learnable synthetic data: two epochs already beat chance (0.1) by far.
    assert metrics["val_accuracy"] > 0.5
    assert len(metrics["history"]["val_loss"]) == 2
    assert metrics["history"]["loss"][1] < metrics["history"]["loss"][0]


def test_tensorboard_has_step_and_epoch_scalars(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    run_dir, _ = trained
    train = EventAccumulator(str(run_dir / "tensorboard" / "train"), size_guidance={"tensors": 0}).Reload()
    val = EventAccumulator(str(run_dir / "tensorboard" / "validation"), size_guidance={"tensors": 0}).Reload()
    tags = set(train.Tags()["tensors"])
    assert {"batch_loss", "learning_rate", "grad_norm", "epoch_loss", "epoch_accuracy"} <= tags
    lr = train.Tensors("learning_rate")
    assert [e.step for e in lr] == list(range(16))  # every step
    assert np.allclose([float(tensor_util.make_ndarray(e.tensor_proto)) for e in lr], 0.01)
    assert len(val.Tensors("epoch_accuracy")) == 2


@pytest.mark.slow
def test_saved_model_reloads_in_new_process_with_same_predictions(trained, tmp_path):
    import keras

    run_dir, _ = trained
    x = np.random.default_rng(0).normal(size=(8, 16)).astype("float32")
    model = keras.models.load_model(run_dir / "model.keras")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", model.predict(x, verbose=0))
    code = (
        "import sys, numpy as np, keras, tftrain\n"
        f"m = keras.models.load_model({str(run_dir / 'model.keras')!r})\n"
        f"p = m.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0)\n"
        f"np.testing.assert_allclose(p, np.load({str(tmp_path / 'expected.npy')!r}), rtol=1e-5, atol=1e-6)\n"
        "print(type(m.optimizer).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                            env={**__import__("os").environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("Adam")


def test_checkpoints_resume_where_the_run_stopped(tmp_path):
    from conftest import compose_small

    first = tftrain.train(compose_small(), output_dir=tmp_path)
    assert first["steps"] == 16
    more = tftrain.train(compose_small("trainer.epochs=3"), output_dir=tmp_path)
    assert more["epochs"] == 3 and more["steps"] == 24  # one more epoch, not three
    assert more["history"]["loss"][:2] == first["history"]["loss"]  # the history carries over
    assert len(more["history"]["loss"]) == 3


def test_batch_larger_than_data_is_a_config_error(tmp_path):
    from conftest import compose_small

    with pytest.raises(ConfigError, match="trainer.batch_size"):
        tftrain.train(compose_small("trainer.batch_size=1000"), output_dir=tmp_path)


def test_nan_loss_stops_with_step_lr_and_checkpoint(tmp_path):
    from conftest import compose_small

    cfg = compose_small("optimizer=sgd", "optimizer.lr=1e12", "data.noise=0.0")
    with pytest.raises(DivergenceError, match=r"at step \d+ \(learning rate 1e\+12\)") as info:
        tftrain.train(cfg, output_dir=tmp_path)
    assert "last good checkpoint" in str(info.value)
    assert not list((tmp_path / "checkpoints").glob("*.index"))  # no NaN weights written


def test_nan_recovery_restores_and_lowers_the_learning_rate(tmp_path, caplog):
    from conftest import compose_small

    cfg = compose_small("optimizer=sgd", "optimizer.lr=1e12", "data.noise=0.0", "trainer.nan_recovery=2",
                        "trainer.nan_lr_factor=1e-11")
    with caplog.at_level("WARNING", logger="tftrain"):
        metrics = tftrain.train(cfg, output_dir=tmp_path)
    assert metrics["nan_recoveries"] == 1 and metrics["steps"] == 16
    assert np.isfinite(metrics["test_loss"]) and metrics["history"]["learning_rate"][-1] == pytest.approx(10.0)
    assert "Recovering (trainer.nan_recovery)" in caplog.text


def test_tensorboard_can_be_turned_off(tmp_path):
    from conftest import compose_small

    tftrain.train(compose_small("logger=[]"),
                  output_dir=tmp_path)
    assert not list((tmp_path / "tensorboard").rglob("events.*"))
