"""Learning-rate-free optimizers (issue 22, part 3): optimizer=prodigy and optimizer=dadapt_adam
follow the authors' PyTorch code step by step (a recorded trajectory, and live where torch is
installed), resume exactly, agree on 2 replicas, save and load with a model, refuse bad settings."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import tftrain
from conftest import ROOT, SMALL, compose_small, crash_at, metrics_of, run_cli, same_numbers
from tftrain.errors import ConfigError
from tftrain.optim.dadapt_adam import DAdaptAdam
from tftrain.optim.prodigy import Prodigy

SCRIPT = ROOT / "scripts" / "lr_free_vs_pytorch.py"
REFERENCE = ROOT / "tests" / "data" / "lr_free_reference.npz"


def _script():
    spec = importlib.util.spec_from_file_location("lr_free_vs_pytorch", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_keras_optimizers_reproduce_the_recorded_pytorch_trajectory():
    """200 steps of each setting (defaults; weight decay coupled and decoupled, bias correction,
    safeguard warmup, d_coef, growth_rate, beta_3, no momentum), in float64 so that rounding is
    far below the tolerance: weights, their norms and d agree with prodigyopt / dadaptation to 1e-5."""
    script = _script()
    weights, index, reference = script.load(REFERENCE)
    x, y = script.digits()
    assert set(reference) == set(script.SETTINGS)
    for setting, (kept, trace) in reference.items():
        assert trace.shape == (script.NUM_STEPS, 5) and trace[-1, 0] > 100 * trace[0, 0]  # d did adapt
        got = script.run_keras(setting, weights, x[index], y[index], "float64")
        w, d = script.largest_difference(*got, kept, trace)
        assert w <= 1e-5 and d <= 1e-5, f"{setting}: weights differ by {w:.2e}, d by {d:.2e} (relative)"


def test_the_keras_optimizers_agree_with_pytorch_live():
    """Where torch, prodigyopt and dadaptation are installed (not in CI): the script's own check.
    In a subprocess: PyTorch running after TensorFlow in one process crashes it."""
    missing = [m for m in ("torch", "prodigyopt", "dadaptation") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"not installed: {missing}")
    result = subprocess.run([sys.executable, str(SCRIPT), "--dtype", "float64"], capture_output=True, text=True,
                            timeout=300, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    rows = [ln.split() for ln in result.stdout.splitlines() if ln.split() and ln.split()[0] in _script().SETTINGS]
    assert len(rows) == 5 and all(float(r[1]) <= 1e-5 and float(r[2]) <= 1e-5 for r in rows), result.stdout


@pytest.mark.slow
def test_a_killed_run_resumes_exactly_and_the_saved_model_reloads(tmp_path):
    """Prodigy (d, its maximum, the running sums and p0 in optimizer variables); DAdaptAdam keeps its
    state the same way (TwoPassOptimizer), its saved form is checked in test_config_round_trip_..."""
    import keras

    args = ("optimizer=prodigy", "trainer.epochs=2", "schedule=cosine", "trainer.deterministic=true")
    whole = tftrain.train(compose_small(*args), output_dir=tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        tftrain.train(compose_small(*args, crash_at(0)), output_dir=tmp_path / "killed")
    resumed = tftrain.train(compose_small(*args), output_dir=tmp_path / "killed")
    same_numbers(whole, resumed)
    same_numbers(whole, metrics_of(tmp_path / "killed"))
    model = keras.models.load_model(tmp_path / "killed" / "model.keras")  # safe mode: a registered class
    optimizer = model.optimizer
    assert type(optimizer) is Prodigy
    saved = keras.models.load_model(tmp_path / "whole" / "model.keras").optimizer
    # d was estimated (grew from d0), and is the uninterrupted run's to the last bit.
    assert float(optimizer.d.numpy()) > 100 * optimizer.d0
    assert float(optimizer.d.numpy()) == float(saved.d.numpy())


@pytest.mark.slow
def test_two_replicas_agree_with_one(tmp_path):
    args = [*SMALL, "optimizer=prodigy", "trainer.epochs=1", "trainer.verbose=2"]
    two = run_cli(*args, "trainer.cpu_devices=2", "trainer.strategy=mirrored", f"hydra.run.dir={tmp_path / 'two'}")
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 replica(s) (mirrored), global batch 32 (16 per replica)" in two.stdout + two.stderr
    one = tftrain.train(tftrain.compose([*args, "trainer.verbose=0"]), output_dir=tmp_path / "one")
    b = metrics_of(tmp_path / "two")
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        np.testing.assert_allclose(one["history"][key], b["history"][key], rtol=1e-5)
    np.testing.assert_allclose(one["weights_fingerprint"], b["weights_fingerprint"], rtol=1e-5)


@pytest.mark.parametrize("cls", [Prodigy, DAdaptAdam])
def test_config_round_trip_and_state_in_variables(cls):
    import keras

    optimizer = cls(learning_rate=0.5, beta_1=0.8, weight_decay=0.01, d0=1e-5, growth_rate=1.02, decouple=True)
    config = optimizer.get_config()
    again = cls.from_config(config)
    assert again.get_config() == config
    assert config["growth_rate"] == 1.02 and config["d0"] == 1e-5 and config["weight_decay"] == 0.01
    assert cls().get_config()["growth_rate"] == math.inf
    # Through Keras' registry, as model.keras stores it.
    revived = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(revived) is cls and revived.get_config() == config
    variables = [keras.Variable(np.ones((3, 2), "float32")), keras.Variable(np.zeros(2, "float32"))]
    optimizer.build(variables)
    names = {v.name for v in optimizer.variables}
    assert "d" in names and float(optimizer.d.numpy()) == 1e-5  # exactly d0, not rounded through float32
    optimizer.apply([np.full((3, 2), 0.1, "float32"), np.full(2, -0.2, "float32")], variables)
    assert float(optimizer.d.numpy()) >= 1e-5 and not np.array_equal(variables[0].numpy(), np.ones((3, 2)))


@pytest.mark.parametrize("cls, kwargs, message", [
    (Prodigy, {"d0": 0.0}, "Argument `d0` must be > 0. Received: d0=0.0"),
    (Prodigy, {"beta_3": 1.0}, "Argument `beta_3` must be None or in [0, 1). Received: beta_3=1.0"),
    (Prodigy, {"d_coef": -1}, "Argument `d_coef` must be > 0"),
    (DAdaptAdam, {"growth_rate": 0.5}, "Argument `growth_rate` must be >= 1"),
    (DAdaptAdam, {"beta_2": 1.0}, "Argument `beta_2` must be in [0, 1)"),
    (DAdaptAdam, {"epsilon": 0}, "Argument `epsilon` must be > 0"),
])
def test_bad_arguments_are_refused_keras_style(cls, kwargs, message):
    with pytest.raises(ValueError) as e:
        cls(**kwargs)
    assert message in str(e.value)


@pytest.mark.parametrize("override, key", [
    ("optimizer.d0=0", "optimizer.d0"),
    ("optimizer.growth_rate=0.9", "optimizer.growth_rate"),
    ("optimizer.beta_3=1.5", "optimizer.beta_3"),
])
def test_bad_values_name_their_key(override, key):
    from tftrain.schema import validate

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(tftrain.compose(["optimizer=prodigy", override]))


@pytest.mark.parametrize("cls", [Prodigy, DAdaptAdam])
def test_a_rate_factor_of_zero_freezes_a_variable_and_one_changes_nothing(cls):
    """`set_rate_factors` is how parameter groups (lr_multipliers, layer_decay) reach these
    optimizers: 0 freezes a variable (the authors' group lr of 0); DAdaptAdam takes any factor as
    the authors' layer_scale, Prodigy only 0 and 1 (the authors' code refuses others)."""
    import keras

    def run(factors):
        variables = [keras.Variable(np.linspace(-1, 1, 6, dtype="float32").reshape(3, 2)),
                     keras.Variable(np.full(2, 0.5, "float32"))]
        optimizer = cls(weight_decay=0.1, decouple=True)
        if factors is not None:
            optimizer.set_rate_factors({optimizer._var_key(v): f for v, f in zip(variables, factors)})
        for step in range(5):
            optimizer.apply([v * 0.3 + 0.1 * (step + 1) for v in variables], variables)
        return [v.numpy() for v in variables]

    plain, frozen = run(None), run([1.0, 0.0])
    for a, b in zip(plain, run([1.0, 1.0])):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(frozen[1], np.full(2, 0.5, "float32"))  # never moved, not even decayed
    assert not np.array_equal(plain[1], frozen[1]) and not np.array_equal(frozen[0], run([0.0, 0.0])[0])
    if cls is Prodigy:
        with pytest.raises(ValueError, match="rate factors of 0 .frozen. or 1 only"):
            cls().set_rate_factors({"x": 0.5})
    else:
        half = run([1.0, 0.5])
        assert np.all(np.abs(half[1] - 0.5) < np.abs(plain[1] - 0.5))  # a smaller step at a smaller factor
