"""task=init_check (signal propagation at initialization) and initializer=lsuv, through the real
configs: the 30-layer ReLU MLP of width 64 of He et al. (2015, section 2.2) on the bundled digits."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tftrain
from conftest import crash_at, run_cli, same_numbers
from tftrain.tasks.init_check import init_check

DEEP = ["data=digits", f"model.hidden_units=[{','.join(['64'] * 30)}]", "optimizer=momentum", "trainer.verbose=0",
        "logger=[]"]


def check(tmp_path, *overrides):
    return init_check(tftrain.compose(["task=init_check", *DEEP, *overrides]), output_dir=tmp_path)


def per_layer_factor(result) -> float:
    """The hidden layers' activation std, last over first, per layer (geometric mean)."""
    stds = [r["std"] for r in result["rows"][:-1]]
    return (stds[-1] / stds[0]) ** (1 / (len(stds) - 1))


@pytest.mark.slow
@pytest.mark.parametrize("initializer", ["initializer=zeros", "initializer=random_normal initializer.stddev=0.01"])
def test_tiny_and_constant_initializations_are_flagged_as_vanishing(tmp_path, initializer):
    result = check(tmp_path, *initializer.split())
    assert len(result["rows"]) == 31  # 30 hidden layers and the logits
    assert "vanishing signal" in result["summary"][0], result["summary"]
    deep = result["rows"][-2]  # layer 30: nothing of the input is left
    assert deep["std"] < 1e-12 and deep["verdict"] != "ok"


@pytest.mark.slow
def test_he_keeps_the_std_and_glorot_halves_the_variance_per_relu_layer(tmp_path):
    he = check(tmp_path / "he", "initializer=he_normal")
    glorot = check(tmp_path / "glorot", "initializer=glorot_uniform")  # the command line's: tests/test_readme.py
    # He et al. 2015, section 2.2: a ReLU layer keeps the variance with std sqrt(2 / fan_in); Glorot's
    # sqrt(2 / (fan_in + fan_out)) = sqrt(1 / 64) here halves it: the std shrinks by 1/sqrt(2) per layer.
    assert 0.9 < per_layer_factor(he) < 1.1, per_layer_factor(he)
    assert 0.64 < per_layer_factor(glorot) < 0.77, per_layer_factor(glorot)
    stds = [r["std"] for r in he["rows"]]
    assert max(stds) / min(stds) < 10 and he["summary"][0].startswith("the signal keeps its scale")
    assert all(r["verdict"] == "ok" for r in he["rows"]), [r["verdict"] for r in he["rows"]]
    assert "vanishing signal" in glorot["summary"][0] and "between layer 1 and layer 30" in glorot["summary"][0]
    # One step of SGD with momentum 0.9 at lr 0.05: the first update is lr * gradient.
    for row in he["rows"]:
        assert row["update_ratio"] == pytest.approx(0.05 * row["grad_norm"] / row["weight_norm"], rel=1e-3)
        assert row["dead_fraction"] is None or 0 <= row["dead_fraction"] < 0.5


@pytest.mark.slow
def test_two_replicas_see_the_global_batch(tmp_path):
    args = ["task=init_check", *DEEP[:1], "model.hidden_units=[32,32,32]", "initializer=lsuv"]
    two = run_cli(*args, "trainer.cpu_devices=2", "trainer.strategy=mirrored", f"hydra.run.dir={tmp_path / 'two'}")
    assert two.returncode == 0, two.stderr[-3000:]
    one = init_check(tftrain.compose([*args, "trainer.verbose=0"]), output_dir=tmp_path / "one")
    rows_two = json.loads((tmp_path / "two" / "init_check.json").read_text())["rows"]
    assert json.loads((tmp_path / "two" / "init_check.json").read_text())["replicas"] == 2
    for a, b in zip(one["rows"], rows_two, strict=True):
        for key in ("mean", "std", "dead_fraction", "grad_norm", "update_ratio"):
            want = a[key] if a[key] is None else pytest.approx(a[key], rel=1e-4, abs=1e-7)
            assert b[key] == want, (a["layer"], key)


# ---------------------------------------------------------------- LSUV


@pytest.mark.slow
def test_lsuv_gives_every_layer_unit_output_variance_on_the_batch(tmp_path):
    result = check(tmp_path / "mlp", "initializer=lsuv")
    assert all(abs(r["std"] ** 2 - 1) < 0.1 for r in result["rows"]), [r["std"] for r in result["rows"]]
    assert result["summary"][0].startswith("the signal keeps its scale")
    # Conv layers too (inference mode: the statistics LSUV itself measures, dropout off).
    cnn = init_check(tftrain.compose(["task=init_check", "data=digits", "model=cnn", "model.filters=[8,16]",
                                      "model.dense_units=32", "initializer=lsuv", "task.training=false",
                                      "trainer.verbose=0"]), output_dir=tmp_path / "cnn")
    assert [r["type"] for r in cnn["rows"]] == ["Conv2D", "Conv2D", "Dense", "Dense"]
    assert all(abs(r["std"] ** 2 - 1) < 0.1 for r in cnn["rows"]), [r["std"] for r in cnn["rows"]]


@pytest.mark.slow
def test_lsuv_on_a_conv_net_is_seeded_and_exact_on_resume(tmp_path):
    run = ["data=digits", "model=cnn", "model.filters=[8,16]", "trainer.epochs=2", "trainer.verbose=0", "logger=[]",
           "initializer=lsuv", "trainer.deterministic=true"]
    whole = tftrain.train(tftrain.compose(run), output_dir=tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        tftrain.train(tftrain.compose([*run, crash_at(1)]), output_dir=tmp_path / "killed")
    resumed = tftrain.train(tftrain.compose(run), output_dir=tmp_path / "killed")
    same_numbers(whole, resumed)
    other = tftrain.train(tftrain.compose([*run, "trainer.epochs=1", "trainer.seed=1"]), output_dir=tmp_path / "seed1")
    assert other["weights_fingerprint"] != whole["weights_fingerprint"]


def test_lsuv_options_are_checked(tmp_path):
    proc = run_cli("initializer=lsuv", "initializer.tol=2", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2 and "initializer.tol" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_the_verdicts_in_words():
    from tftrain.diagnose.verdicts import row_verdict, summary

    def row(depth, std, grad, ratio, dead=0.0):
        return {"depth": depth, "std": std, "grad_norm": grad, "update_ratio": ratio, "weight_norm": 1.0,
                "dead_fraction": dead}

    rows = [row(1, 1.0, 800.0, 0.3), row(2, 0.5, 40.0, 0.2), row(3, 4e-4, 2.0, 1e-3, dead=0.6),
            row(4, 3e-4, 0.5, 2e-6, dead=None)]
    said = summary(rows)
    assert said[0] == "activations shrink 3.33e+03x between layer 1 and layer 4: vanishing signal"
    assert "gradients grow 1.6e+03x from layer 4 back to layer 1: exploding gradients" in said
    assert "at least 50% of the units are dead in layer 3" in said
    assert any(s.startswith("one step moves the kernel of layers 1-2 by more than 0.1") for s in said)
    assert any(s.startswith("one step moves the kernel of layer 4 by less than 1e-05") for s in said)
    assert row_verdict(rows[2], 1.0).startswith("vanishing: activations 2.5e+03x smaller than at layer 1; 60% of units dead")
    assert row_verdict(row(1, 0.9, 1.0, 1e-3), 1.0) == "ok"
    assert row_verdict({**row(2, 0.9, 0.0, 0.0), "trainable": False}, 1.0) == "frozen (model.trainable): not trained"
    assert summary([row(1, 1.0, 1.0, 1e-3), row(2, 0.8, 1.0, 1e-3), row(3, 1.2, 1.0, 1e-3)])[0] == \
        "the signal keeps its scale through the depth (within 10x)"


import keras  # noqa: E402


class Residual(keras.Model):
    """A user's subclassed model (no functional graph for the probe to read)."""

    def __init__(self, num_outputs: int, **kwargs):
        super().__init__(**kwargs)
        self.flatten = keras.layers.Flatten()
        self.a = keras.layers.Dense(32, activation="relu")
        self.b = keras.layers.Dense(32, activation="relu")
        self.head = keras.layers.Dense(num_outputs)

    def call(self, x):
        h = self.a(self.flatten(x))
        return self.head(h + self.b(h))


def residual(input_shape, num_outputs):
    return Residual(num_outputs)


@pytest.mark.slow
def test_a_subclassed_custom_model_and_a_saved_one(tmp_path):
    custom = ["task=init_check", "data=digits", "model=custom", "model._target_=test_init_check.residual",
              "initializer=lsuv", "trainer.verbose=0"]
    result = init_check(tftrain.compose(custom), output_dir=tmp_path / "custom")
    assert [(r["layer"], r["activation"]) for r in result["rows"]] == [("dense", "relu"), ("dense_1", "relu"),
                                                                        ("dense_2", "linear")]
    # LSUV made each layer's own output (after its ReLU) unit-variance in inference mode; init_check ran the
    # batch in training mode, the same here (no dropout, no BatchNorm).
    assert all(abs(r["std"] ** 2 - 1) < 0.1 for r in result["rows"]), [r["std"] for r in result["rows"]]
    # model=saved: a trained run's model.keras, checked as it would start fine-tuning.
    tftrain.train(tftrain.compose(["data=digits", "model.hidden_units=[32,32]", "trainer.epochs=1",
                                   "trainer.verbose=0", "logger=[]"]), output_dir=tmp_path / "run")
    saved = init_check(tftrain.compose(["task=init_check", "data=digits", "model=saved",
                                        f"model.path={tmp_path / 'run' / 'model.keras'}", "trainer.verbose=0"]),
                       output_dir=tmp_path / "saved")
    assert [r["layer"] for r in saved["rows"]] == ["dense", "dense_1", "logits"]
    assert all(r["grad_norm"] > 0 and r["update_ratio"] > 0 for r in saved["rows"])


def test_a_model_inside_the_preprocessing_wrapper_is_checked_input_to_output(tmp_path):
    # data=diabetes standardizes inputs and targets: the model sits inside tftrain's wrapper, whose layers
    # Keras' own walk lists last to first. LSUV must go input to output, or the first layers undo the last.
    result = init_check(tftrain.compose(["task=init_check", "data=diabetes", "initializer=lsuv", "trainer.verbose=0"]),
                        output_dir=tmp_path)
    assert [r["layer"] for r in result["rows"]] == ["dense", "dense_1", "logits"]
    assert all(abs(r["std"] ** 2 - 1) < 0.1 for r in result["rows"]), [r["std"] for r in result["rows"]]
