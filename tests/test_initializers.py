"""The `initializer` group: registries, statistics against theory, per-layer seeds, validation,
and the reason it exists (a deep ReLU net learns from He init but not from zeros)."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest

import tftrain
from tftrain.errors import ConfigError
from tftrain.schema import validate
from tftrain.schema import SCHEMAS
from tftrain.schema import initializer as schema

from conftest import compose_small, options, per_option

OPTIONS = options("initializer")
# The options that give the same weights whatever the seed; every other option is random and each
# layer must get its own seed (a new deterministic option fails that test until it is named here).
NOT_RANDOM = {"zeros", "constant", "keep"}
RANDOM = [o for o in OPTIONS if o not in NOT_RANDOM]


# Runs through tftrain.train without the outputs these tests do not read.
QUIET = ("logger=[]",)


@functools.lru_cache(maxsize=None)
def _cfg(*overrides: str):
    # Composing is the slow part (~0.2 s): one small MLP config per option, shared by the tests.
    return validate(tftrain.compose(["model.hidden_units=[16,16,16]", *overrides]))


def _kernel(*overrides: str, seed: int = 0):
    """The option's initializer for one layer (the one with seed `seed`)."""
    from tftrain.config.factory import initializer_of

    return initializer_of(_cfg(*overrides))(seed)


def _build(*overrides: str, seed: int = 0, input_shape=(8,), num_classes: int = 3):
    from tftrain.config.factory import build_model

    return build_model(_cfg(*overrides, f"trainer.seed={seed}"), input_shape, num_classes)


def test_every_option_has_its_schema_and_every_plain_option_is_a_keras_initializer():
    import keras

    assert set(OPTIONS) == set(SCHEMAS["initializer"])
    assert set(OPTIONS) >= {"zeros", "constant", "random_normal", "random_uniform", "truncated_normal",
                            "glorot_uniform", "glorot_normal", "he_normal", "he_uniform", "lecun_normal",
                            "lecun_uniform", "orthogonal", "variance_scaling", "weight_norm", "keep"}
    for option, cls_name in schema.PLAIN.items():
        assert type(keras.initializers.get(option)).__name__ == cls_name


@pytest.mark.parametrize("option", OPTIONS)
def test_every_option_composes_validates_and_builds(option):
    from tftrain.config.factory import initializer_of

    model = _build(f"initializer={option}")
    assert model.output_shape == (None, 3)
    if initializer_of(_cfg(f"initializer={option}")) is None:  # keep: the model's own weights, nothing drawn
        return
    # Conv kernels (4-D) too: fans and orthogonality are computed over their flattened shape.
    kernel = np.asarray(_kernel(f"initializer={option}")((3, 3, 4, 8)))
    assert kernel.shape == (3, 3, 4, 8) and np.all(np.isfinite(kernel))


# option overrides -> theoretical variance of a (fan_in, fan_out) = (800, 400) kernel.
FAN_IN, FAN_OUT = 800, 400
VARIANCES = {
    "glorot_uniform": ([], 2 / (FAN_IN + FAN_OUT)),
    "glorot_normal": ([], 2 / (FAN_IN + FAN_OUT)),
    "he_normal": ([], 2 / FAN_IN),
    "he_uniform": ([], 2 / FAN_IN),
    "lecun_normal": ([], 1 / FAN_IN),
    "lecun_uniform": ([], 1 / FAN_IN),
    "variance_scaling": (["initializer.scale=3.0", "initializer.mode=fan_out",
                          "initializer.distribution=untruncated_normal"], 3 / FAN_OUT),
    "variance_scaling-uniform": (["initializer.mode=fan_avg", "initializer.distribution=uniform"],
                                 2 / (FAN_IN + FAN_OUT)),
    "random_normal": (["initializer.stddev=0.1"], 0.01),
    "random_uniform": (["initializer.minval=-0.3", "initializer.maxval=0.3"], 0.6 ** 2 / 12),
    # A normal cut at 2 stddev keeps 1 - 4 phi(2) / (2 Phi(2) - 1) = 0.774 of the variance.
    "truncated_normal": (["initializer.stddev=0.1"],
                         0.01 * (1 - 4 * math.exp(-2) / math.sqrt(2 * math.pi) / math.erf(2 / math.sqrt(2)))),
}


@pytest.mark.parametrize("case", sorted(VARIANCES))
def test_empirical_variance_matches_theory(case):
    overrides, expected = VARIANCES[case]
    kernel = np.asarray(_kernel(f"initializer={case.split('-')[0]}", *overrides)((FAN_IN, FAN_OUT)))
    # 320k draws: the relative standard error of the variance is ~0.3%, so 10% is a wide margin.
    assert kernel.var() == pytest.approx(expected, rel=0.1)
    assert abs(kernel.mean()) < 0.05 * math.sqrt(expected)


@pytest.mark.parametrize("shape", [(600, 300), (3, 3, 16, 32)])
def test_orthogonal_kernels_have_orthogonal_columns_times_gain(shape):
    gain = 1.7
    kernel = np.asarray(_kernel("initializer=orthogonal", f"initializer.gain={gain}")(shape))
    w = kernel.reshape(-1, shape[-1]).astype("float64")  # conv kernels: (kh * kw * in, out)
    np.testing.assert_allclose(w.T @ w, gain ** 2 * np.eye(shape[-1]), atol=1e-4)


def test_lsuv_kernels_start_orthogonal_then_each_layer_is_scaled_to_unit_output_variance():
    import tensorflow as tf

    from tftrain.config.factory import initializer_of

    model = _build("initializer=lsuv", input_shape=(8,), num_classes=3)
    dense = [layer for layer in model.layers if hasattr(layer, "kernel")]
    for layer in dense:  # orthogonal (gain 1) as drawn: orthonormal columns, or rows for a widening layer
        w = np.asarray(layer.kernel, dtype="float64")
        gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
        np.testing.assert_allclose(gram, np.eye(min(w.shape)), atol=1e-4)
    before = [np.asarray(layer.kernel) for layer in dense]
    x = np.random.default_rng(0).normal(size=(256, 8)).astype("float32") * 3.0
    lsuv = initializer_of(_cfg("initializer=lsuv", "initializer.tol=0.01"))
    report = lsuv.rescale(model, tf.distribute.get_strategy(), (x, np.zeros(256)))
    assert [r["layer"] for r in report] == [layer.name for layer in dense] and all(r["converged"] for r in report)
    h = x
    for layer, w0 in zip(dense, before):
        h = np.asarray(layer(h))  # each layer's own output (ReLU included), on the same batch
        assert abs(h.var() - 1) < 0.01, (layer.name, h.var())
        # Only rescaled: the kernel is still orthogonal up to one positive factor.
        factor = float(np.linalg.norm(np.asarray(layer.kernel)) / np.linalg.norm(w0))
        np.testing.assert_allclose(np.asarray(layer.kernel), factor * w0, rtol=1e-5, atol=1e-7)


def test_zeros_constant_and_bias_options():
    assert not np.any(np.asarray(_kernel("initializer=zeros")((5, 3))))
    np.testing.assert_array_equal(_kernel("initializer=constant", "initializer.value=0.3")((5, 3)),
                                  np.full((5, 3), 0.3, "float32"))
    model = _build("initializer.bias=ones")
    biases = [np.asarray(layer.bias) for layer in model.layers if getattr(layer, "bias", None) is not None]
    assert len(biases) == 4 and all(np.all(b == 1.0) for b in biases)


def sevens(input_shape, num_outputs):
    """A user's model (model._target_=test_initializers.sevens) whose own initial kernels are all 0.7."""
    import keras

    seven = keras.initializers.Constant(0.7)
    return keras.Sequential([keras.Input(input_shape), keras.layers.Dense(4, kernel_initializer=seven),
                             keras.layers.Dense(num_outputs, kernel_initializer=seven)])


def test_keep_leaves_the_models_own_initial_weights_and_other_options_redraw_them():
    from tftrain.config.factory import build_model

    def kernels(option):
        cfg = validate(tftrain.compose(["model=custom", "model._target_=test_initializers.sevens",
                                        f"initializer={option}"]))
        return [np.asarray(layer.kernel) for layer in build_model(cfg, (5,), 3).layers if hasattr(layer, "kernel")]

    kept, redrawn = kernels("keep"), kernels("he_normal")
    assert len(kept) == len(redrawn) == 2
    assert all(np.all(k == np.float32(0.7)) for k in kept)
    assert not any(np.any(k == np.float32(0.7)) for k in redrawn)


def _same_shaped_kernels(model):
    # hidden_units=[16, 16, 16]: the second and third hidden layers both have (16, 16) kernels.
    kernels = [np.asarray(layer.kernel) for layer in model.layers if hasattr(layer, "kernel")]
    return [k for k in kernels if k.shape == (16, 16)]


@pytest.mark.parametrize("option", RANDOM)
def test_each_layer_has_its_own_seed_and_equal_seeds_give_equal_weights(option):
    args = (f"initializer={option}",)
    model = _build(*args, seed=3)
    first, second = _same_shaped_kernels(model)
    assert not np.allclose(first, second), "two same-shaped layers got the same weights"
    for a, b in zip(model.get_weights(), _build(*args, seed=3).get_weights()):
        np.testing.assert_array_equal(a, b)
    other = _same_shaped_kernels(_build(*args, seed=4))[0]
    assert not np.allclose(first, other), "a different trainer.seed gave the same weights"


def test_weight_norm_option_builds_weight_normalized_layers():
    from tftrain.layers import WeightNormDense

    model = _build("initializer=weight_norm", "initializer.direction=lecun_uniform", "initializer.data_init=false")
    kernel_layers = [layer for layer in model.layers if hasattr(layer, "kernel")]
    assert len(kernel_layers) == 4 and all(isinstance(layer, WeightNormDense) for layer in kernel_layers)
    assert {layer.data_init for layer in kernel_layers} == {False}
    # Without data_init the initial kernel is v itself, drawn by lecun_uniform: U(-l, l), l = sqrt(3 / fan_in).
    logits = model.get_layer("logits")
    np.testing.assert_allclose(np.asarray(logits.kernel), np.asarray(logits.v), rtol=1e-5, atol=1e-7)
    assert np.abs(np.asarray(logits.v)).max() <= math.sqrt(3 / 16)


@pytest.mark.parametrize("override, key", [
    ("initializer=random_normal initializer.stddev=0", "initializer.stddev"),
    ("initializer=truncated_normal initializer.stddev=-1", "initializer.stddev"),
    ("initializer=random_uniform initializer.minval=0.1 initializer.maxval=0.1", "initializer.maxval"),
    ("initializer=orthogonal initializer.gain=0", "initializer.gain"),
    ("initializer=variance_scaling initializer.scale=0", "initializer.scale"),
    ("initializer=variance_scaling initializer.mode=fan_sum", "initializer.mode"),
    ("initializer=variance_scaling initializer.distribution=normal", "initializer.distribution"),
    ("initializer=weight_norm initializer.direction=zeros", "initializer.direction"),
    ("initializer=weight_norm initializer.data_init=maybe", "initializer.data_init"),
    ("initializer=constant initializer.value=big", "initializer.value"),
    ("initializer=lsuv initializer.tol=0", "initializer.tol"),
    ("initializer=lsuv initializer.max_iter=0", "initializer.max_iter"),
    ("initializer.bias=twos", "initializer.bias"),
    ("initializer=he_normal +initializer.stddev=1", "initializer.stddev"),
    ("initializer.name=xavier", "initializer.name"),
])
def test_bad_values_fail_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=f"`{key}`"):
        validate(tftrain.compose(override.split()))


@pytest.mark.slow
def test_deep_relu_net_learns_from_he_init_but_not_from_zeros(tmp_path: Path):
    # All-zero kernels: every hidden ReLU outputs 0, so no kernel gets a gradient (ReLU's slope at 0
    # is 0 in TensorFlow); only the logits' bias learns, and the logits cannot depend on the input.
    common = ("model.hidden_units=[32,32,32,32,32,32]", "optimizer.lr=0.01", *QUIET)
    zeros = tftrain.train(compose_small("initializer=zeros", *common), output_dir=tmp_path / "zeros")
    he = tftrain.train(compose_small("initializer=he_normal", *common), output_dir=tmp_path / "he")
    assert zeros["val_accuracy"] < 0.25 and zeros["train_loss"] > 0.95 * math.log(10)
    assert he["val_accuracy"] > 0.45 and he["train_loss"] < 0.75 * zeros["train_loss"]


# The tests that check the weights of the options no variance formula describes.
OWN_TESTS = {"zeros": test_zeros_constant_and_bias_options, "constant": test_zeros_constant_and_bias_options,
             "orthogonal": test_orthogonal_kernels_have_orthogonal_columns_times_gain,
             "weight_norm": test_weight_norm_option_builds_weight_normalized_layers,
             "lsuv": test_lsuv_kernels_start_orthogonal_then_each_layer_is_scaled_to_unit_output_variance,
             "keep": test_keep_leaves_the_models_own_initial_weights_and_other_options_redraw_them}


@pytest.mark.parametrize("option", OPTIONS)
def test_every_option_has_its_weights_checked(option):
    """Against theory (its variance in VARIANCES, keyed `option` or `option-variant`) or by its own test."""
    checks = {**{case.split("-")[0]: test_empirical_variance_matches_theory for case in VARIANCES}, **OWN_TESTS}
    per_option(checks, "initializer", option, "VARIANCES (its theoretical variance) or OWN_TESTS")


def test_the_option_tables_name_only_options_in_conf():
    assert NOT_RANDOM | set(OWN_TESTS) | {case.split("-")[0] for case in VARIANCES} <= set(OPTIONS)
