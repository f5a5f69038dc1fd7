"""`task=noise_scale`: the gradient noise scale B_simple against its closed form, on 1 and 2
replicas, from a run's checkpoint, its bad inputs; and `trainer.lr_reference_batch`, the linear
scaling rule the batch_size experiment sweeps with.

The closed form: linear regression y = w*.x + eps, x ~ N(0, I_d), eps ~ N(0, sigma^2), a linear
model without bias at w, per-example loss (w.x - y)^2 (Keras' mean squared error of one output).
With delta = w - w*, the per-example gradient is 2 x (x.delta - eps), so G = 2 delta and
tr(Sigma) = 4 ((d + 1) |delta|^2 + d sigma^2) (Isserlis: E[x x^T delta delta^T x x^T] =
2 delta delta^T + |delta|^2 I), B_simple = ((d + 1) |delta|^2 + d sigma^2) / |delta|^2.
"""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

import tftrain
from conftest import run_cli
from tftrain.errors import ConfigError

D, SIGMA, N = 8, 1.0, 65536
TRUE_B = ((D + 1) * 1.0 + D * SIGMA ** 2) / 1.0  # |delta| = 1: the zero initial weights minus a unit w*

LINEAR = textwrap.dedent('''
    import keras


    def linear(input_shape, num_outputs):
        """w.x without bias, from w = 0 (model=custom keeps the model's own initializers)."""
        return keras.Sequential([keras.Input(shape=input_shape),
                                 keras.layers.Dense(num_outputs, use_bias=False, kernel_initializer="zeros")])
''')


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    """The directory holding the data (linear.npz) and the model's module (linear_model.py)."""
    d = tmp_path_factory.mktemp("linear")
    rng = np.random.default_rng(0)
    w_star = rng.normal(size=D)
    w_star /= np.linalg.norm(w_star)
    x = rng.normal(size=(N + 512, D)).astype("float32")
    y = (x @ w_star + SIGMA * rng.normal(size=N + 512)).astype("float32")
    np.savez(d / "linear.npz", x_train=x[:N], y_train=y[:N], x_val=x[N:N + 256], y_val=y[N:N + 256],
             x_test=x[N + 256:], y_test=y[N + 256:])
    (d / "linear_model.py").write_text(LINEAR)
    return d


def overrides(d, *extra):
    return ["task=noise_scale", "problem=regression", "data=npz", f"data.path={d / 'linear.npz'}",
            "model=custom", "model._target_=linear_model.linear", "trainer.batch_size=256",
            "task.micro_batches=8", "task.num_steps=200", "trainer.verbose=0", "logger=[]", *extra]


@pytest.fixture(scope="module")
def one_replica(problem, tmp_path_factory):
    """The estimate on one replica (in this process), and its run directory."""
    import sys

    from tftrain.tasks.noise_scale import noise_scale

    out = tmp_path_factory.mktemp("one")
    sys.path.insert(0, str(problem))
    try:
        return noise_scale(tftrain.compose(overrides(problem)), output_dir=out), out
    finally:
        sys.path.remove(str(problem))


def test_the_estimate_is_within_10_percent_of_the_closed_form(one_replica):
    result, tmp_path = one_replica
    assert result["b_simple"] == pytest.approx(TRUE_B, rel=0.10)
    lo, hi = result["interval"]
    assert lo < TRUE_B < hi
    assert result["grad_sq_norm"] == pytest.approx(4.0, rel=0.10)  # |G|^2 = 4 |delta|^2
    assert result["trace_sigma"] == pytest.approx(4 * TRUE_B, rel=0.10)
    assert (result["b_big"], result["b_small"], result["steps"]) == (256, 32, 200)
    assert json.loads((tmp_path / "noise_scale.json").read_text())["b_simple"] == result["b_simple"]
    # B_simple ~ 17: the nearest power of two, the rate scaled down 256 -> 16 by the linear scaling rule.
    s = result["suggestion"]
    assert s["batch_size"] == 16 and s["lr"] == pytest.approx(0.001 * 16 / 256, rel=1e-3)
    assert s["command"] == "python -m tftrain trainer.batch_size=16 optimizer.lr=6.25e-05"


@pytest.mark.slow
def test_two_replicas_give_the_same_estimate(problem, one_replica, tmp_path):
    result = run_cli(*overrides(problem, "trainer.cpu_devices=2", "trainer.strategy=mirrored",
                                f"hydra.run.dir={tmp_path / 'two'}"), cwd=problem)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((tmp_path / "two" / "noise_scale.json").read_text())
    assert out["replicas"] == 2 and out["b_simple"] == pytest.approx(TRUE_B, rel=0.10)
    # The same micro-batches (each replica takes 4 of the 8), summed across replicas: the same numbers.
    assert out["b_simple"] == pytest.approx(one_replica[0]["b_simple"], rel=1e-4)
    assert "suggested trainer.batch_size=16" in result.stderr + result.stdout


def test_from_a_runs_checkpoint(problem, tmp_path, monkeypatch):
    """After training, w is near w*: |G|^2 shrinks to the label noise's share, B_simple grows."""
    from tftrain.tasks.noise_scale import noise_scale

    monkeypatch.syspath_prepend(str(problem))
    train = [o for o in overrides(problem) if not o.startswith("task")]
    tftrain.train(tftrain.compose([*train, "optimizer=sgd", "optimizer.lr=0.01", "trainer.epochs=1",
                                   "trainer.checkpoint_at_steps=[8]",
                                   f"output_dir={tmp_path / 'run'}"]))
    result = noise_scale(tftrain.compose(overrides(problem, f"task.run={tmp_path / 'run'}", "task.step=8")),
                         output_dir=tmp_path / "later")
    assert result["checkpoint"] == str((tmp_path / "run" / "checkpoints" / "ckpt-8").resolve())
    assert result["at"].startswith("checkpoint")
    # 8 SGD steps at lr 0.01 move delta by a factor (1 - 2 * 0.01) ** 8 = 0.85: B_simple grows by ~1/0.85^2.
    expected = ((D + 1) * 0.85 ** 2 + D) / 0.85 ** 2
    assert result["b_simple"] > TRUE_B * 1.1
    assert result["b_simple"] == pytest.approx(expected, rel=0.10)
    # A checkpoint of another model: one paragraph naming task.run.
    with pytest.raises(ConfigError, match=r"Invalid config `task.run`.*does not \(.*shape"):
        mlp = [o for o in overrides(problem, f"task.run={tmp_path / 'run'}") if not o.startswith("model")]
        noise_scale(tftrain.compose([*mlp, "model.hidden_units=[4]"]), output_dir=tmp_path / "other")


@pytest.mark.parametrize("args, key", [
    (["trainer.batch_size=100"], "trainer.batch_size"),
    (["task.run=/nonexistent/run"], "task.run"),
])
def test_bad_input_is_one_paragraph_naming_the_key(args, key, tmp_path):
    result = run_cli("task=noise_scale", "logger=[]", *args, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"Invalid config `{key}`" in result.stderr
    assert "Traceback" not in result.stderr


def test_lr_reference_batch_scales_the_rate_with_the_batch(tmp_path):
    cfg = tftrain.compose(["data=synthetic", "data.num_train=256", "data.num_val=64", "data.num_test=64",
                           "model.hidden_units=[8]", "trainer.epochs=1", "trainer.verbose=0", "logger=[]",
                           "optimizer=sgd", "optimizer.lr=0.05", "trainer.lr_reference_batch=32",
                           "trainer.batch_size=128", f"output_dir={tmp_path}"])
    metrics = tftrain.train(cfg)
    assert metrics["history"]["learning_rate"] == [pytest.approx(0.2)]  # 0.05 x 128 / 32


def test_study_script_reads_a_sweep_and_fits_the_noise_scale(tmp_path):
    """scripts/batch_size_study.py on a sweep whose steps follow S = 10 (1 + 100 / B) exactly."""
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("batch_size_study", ROOT / "scripts" / "batch_size_study.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    for b in (10, 20, 50, 100, 200, 400, 1000):
        steps = round(10 * (1 + 100 / b))  # one step per epoch: the target's epoch is its step
        run = tmp_path / f"b{b}"
        run.mkdir()
        (run / "config.yaml").write_text(f"trainer:\n  batch_size: {b}\n  seed: 0\n")
        accuracy = [0.5] * (steps - 1) + [0.95] * 3
        n = len(accuracy)
        (run / "metrics.json").write_text(json.dumps({
            "status": "completed", "steps": n, "epochs": n,
            "history": {"val_accuracy": accuracy, "seconds": [0.5] * n, "learning_rate": [0.1] * n}}))
    text, means = study.table(study.runs_of(tmp_path), "val_accuracy", 0.9)
    assert means == [(10, 110), (20, 60), (50, 30), (100, 20), (200, 15), (400, 12), (1000, 11)]
    assert "| 100 | 0.1 | 1 | 0.950 | 20 | 33% | 10.00 | 2000 |" in text
    s_min, b_noise = study.fit_noise_scale(means)
    assert s_min == pytest.approx(10, rel=0.05) and b_noise == pytest.approx(100, rel=0.05)
    assert study.knee(means) == (200, pytest.approx(0.25))  # the first batch past B_noise = 100
