"""tftrain.layers: weight-normalized Dense/Conv2D invariants, data-dependent init (one device and
MirroredStrategy), serialization and reload in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import keras
import tftrain
from tftrain.layers import WeightNormConv2D, WeightNormDense, data_dependent_init

from conftest import ROOT, compose_small

RNG = np.random.default_rng(0)


def _randomize(layer):
    # Arbitrary g, v and bias, so the invariants are not checked at the initial g = ||v|| only.
    layer.v.assign(RNG.normal(size=layer.v.shape).astype("float32"))
    layer.g.assign(RNG.uniform(0.5, 2.0, size=layer.g.shape).astype("float32"))
    layer.bias.assign(RNG.normal(size=layer.bias.shape).astype("float32"))


CONVS = [
    dict(filters=4, kernel_size=3, padding="same"),
    dict(filters=3, kernel_size=(3, 2), strides=2, padding="valid", activation="relu"),
    dict(filters=2, kernel_size=3, dilation_rate=2, padding="same", activation="tanh"),
]


def test_dense_kernel_is_g_times_unit_direction_and_output_matches_dense():
    x = RNG.normal(size=(5, 7)).astype("float32")
    layer = WeightNormDense(4, activation="relu")
    layer(x)
    _randomize(layer)
    kernel = np.asarray(layer.kernel)
    np.testing.assert_allclose(np.linalg.norm(kernel, axis=0), np.asarray(layer.g), rtol=1e-5)
    v = np.asarray(layer.v)
    np.testing.assert_allclose(kernel / np.linalg.norm(kernel, axis=0), v / np.linalg.norm(v, axis=0), rtol=1e-5,
                               atol=1e-6)
    dense = keras.layers.Dense(4, activation="relu")
    dense(x)
    dense.set_weights([kernel, np.asarray(layer.bias)])
    np.testing.assert_allclose(layer(x), dense(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs", CONVS)
def test_conv_kernel_norm_per_filter_is_g_and_output_matches_conv2d(kwargs):
    x = RNG.normal(size=(2, 9, 9, 3)).astype("float32")
    layer = WeightNormConv2D(**kwargs)
    out = layer(x)
    _randomize(layer)
    kernel = np.asarray(layer.kernel)
    np.testing.assert_allclose(np.sqrt((kernel ** 2).sum(axis=(0, 1, 2))), np.asarray(layer.g), rtol=1e-5)
    conv = keras.layers.Conv2D(**kwargs)
    conv(x)
    conv.set_weights([kernel, np.asarray(layer.bias)])
    np.testing.assert_allclose(layer(x), conv(x), rtol=1e-4, atol=1e-5)
    assert out.shape == conv(x).shape == layer.compute_output_shape(x.shape)


def test_initial_kernel_is_the_direction_initializers_kernel():
    # g starts at ||v||: without data init the layer starts exactly like Dense with that initializer.
    x = RNG.normal(size=(3, 6)).astype("float32")
    wn = WeightNormDense(5, kernel_initializer=keras.initializers.HeNormal(seed=7))
    dense = keras.layers.Dense(5, kernel_initializer=keras.initializers.HeNormal(seed=7))
    np.testing.assert_allclose(wn(x), dense(x), rtol=1e-5, atol=1e-6)


def test_kernel_regularizer_penalizes_the_effective_kernel():
    layer = WeightNormDense(3, kernel_regularizer=keras.regularizers.L2(0.1))
    layer(np.ones((1, 4), "float32"))
    _randomize(layer)
    (penalty,) = layer.losses
    assert float(penalty) == pytest.approx(0.1 * float(np.sum(np.asarray(layer.kernel) ** 2)), rel=1e-5)
    assert float(penalty) == pytest.approx(0.1 * float(np.sum(np.asarray(layer.g) ** 2)), rel=1e-5)


def test_mixed_precision_computes_in_float16_from_float32_weights():
    layer = WeightNormDense(3, dtype="mixed_float16", data_init=True)
    x = RNG.normal(size=(16, 4)).astype("float32")
    assert layer(x).dtype == "float16" and layer.v.dtype == layer.g.dtype == "float32"
    model = keras.Sequential([keras.Input((4,)), layer])
    assert data_dependent_init(model, None, x) == 1
    pre = np.asarray(layer(x), "float32")
    np.testing.assert_allclose(pre.std(0), 1, atol=2e-3)


@pytest.mark.parametrize("make, bad", [
    (lambda: WeightNormDense(0), "units"),
    (lambda: WeightNormDense(2.5), "units"),
    (lambda: WeightNormConv2D(-1, 3), "filters"),
    (lambda: WeightNormConv2D(4, (3, 0)), "kernel_size"),
    (lambda: WeightNormConv2D(4, 3, padding="full"), "padding"),
    (lambda: WeightNormConv2D(4, 3, strides=2, dilation_rate=2), "dilation_rate"),
    (lambda: WeightNormConv2D(4, 3, data_format="nhwc"), "data_format"),
    (lambda: WeightNormDense(2, kernel_constraint="non_neg"), "kernel_constraint"),
    (lambda: WeightNormDense(2, data_init="yes"), "data_init"),
])
def test_invalid_arguments_raise_value_error_naming_them(make, bad):
    with pytest.raises(ValueError, match=bad):
        make()


@pytest.mark.parametrize("layer", [
    WeightNormDense(3, activation="gelu", use_bias=False, kernel_initializer=keras.initializers.Orthogonal(seed=1),
                    kernel_regularizer=keras.regularizers.L2(0.01), data_init=True, name="wn"),
    WeightNormConv2D(2, (3, 1), strides=(2, 1), padding="same", data_format="channels_first",
                     bias_initializer="ones", data_init=False),
])
def test_get_config_round_trips(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer)).get_config() == config


def _model(data_init=True):
    def init(seed):
        return keras.initializers.GlorotUniform(seed=seed)

    inputs = keras.Input((6, 6, 2))
    x = WeightNormConv2D(4, 3, padding="same", activation="relu", kernel_initializer=init(1), data_init=data_init,
                         name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    x = WeightNormDense(5, activation="relu", kernel_initializer=init(2), data_init=data_init, name="hidden")(x)
    return keras.Model(inputs, WeightNormDense(3, kernel_initializer=init(3), data_init=data_init, name="out")(x))


def _pre_activations(model, x):
    """Each weight-normalized layer's output before its activation, for input x."""
    outs = {}
    for name in ("conv", "hidden", "out"):
        layer = model.get_layer(name)
        layer_in = x if name == "conv" else keras.Model(model.inputs[0], layer.input)(x)
        pre = np.asarray(layer._linear(layer_in, layer.kernel)) + np.asarray(layer.bias)
        outs[name] = pre.reshape(-1, pre.shape[-1])
    return outs


def test_data_dependent_init_gives_each_unit_mean_0_std_1_on_the_batch():
    model = _model()
    # Far from mean 0 / std 1, so that the init has something to correct.
    x = RNG.normal(3.0, 5.0, size=(64, 6, 6, 2)).astype("float32")
    assert data_dependent_init(model, None, (x, np.zeros(64))) == 3
    for name, pre in _pre_activations(model, x).items():
        np.testing.assert_allclose(pre.mean(0), 0, atol=1e-4, err_msg=name)
        np.testing.assert_allclose(pre.std(0), 1, atol=1e-4, err_msg=name)
        assert bool(model.get_layer(name).initialized.numpy())
    g = [np.asarray(model.get_layer(n).g) for n in ("conv", "hidden", "out")]
    assert data_dependent_init(model, None, x * 2) == 0, "an initialized layer must not be initialized again"
    for n, before in zip(("conv", "hidden", "out"), g):
        np.testing.assert_array_equal(np.asarray(model.get_layer(n).g), before)
    assert data_dependent_init(_model(data_init=False), None, x) == 0


MIRRORED = """
import json, sys
import numpy as np
import tensorflow as tf
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
sys.path.insert(0, {tests!r})
from test_layers import _model, _pre_activations
from tftrain.layers import data_dependent_init

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
rng = np.random.default_rng(1)
# The replicas get the two halves of the batch; give them different statistics, so moments
# that were not all-reduced would leave the global batch off mean 0 / std 1.
x = np.concatenate([rng.normal(4.0, 1.0, (16, 6, 6, 2)), rng.normal(-2.0, 6.0, (16, 6, 6, 2))]).astype("float32")
keras.utils.set_random_seed(0)
with strategy.scope():
    model = _model()
batch = next(iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices(x).batch(32))))
initialized = data_dependent_init(model, strategy, batch)
keras.utils.set_random_seed(0)
single = _model()
data_dependent_init(single, None, x)
out = {{"initialized": initialized, "replicas": strategy.num_replicas_in_sync, "stats": {{}}, "g": {{}}}}
for name, pre in _pre_activations(model, x).items():
    out["stats"][name] = [float(np.abs(pre.mean(0)).max()), float(np.abs(pre.std(0) - 1).max())]
    g = model.get_layer(name).g.value
    components = [np.asarray(c) for c in g.values]
    out["g"][name] = [float(np.abs(components[0] - components[1]).max()),
                      float(np.abs(components[0] - np.asarray(single.get_layer(name).g)).max())]
print("RESULT" + json.dumps(out))
"""


def _python(code: str, timeout: float = 120) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_data_dependent_init_all_reduces_moments_under_mirrored_strategy():
    stdout = _python(MIRRORED.format(tests=str(ROOT / "tests")))
    result = json.loads(stdout.split("RESULT")[-1])
    assert result["replicas"] == 2 and result["initialized"] == 3
    for name, (mean_err, std_err) in result["stats"].items():
        assert mean_err < 1e-4 and std_err < 1e-4, (name, result)
    for name, (between_replicas, vs_one_device) in result["g"].items():
        assert between_replicas == 0, (name, result)
        assert vs_one_device < 1e-4, (name, result)


@pytest.mark.slow
def test_model_saves_and_reloads_in_a_fresh_process_with_only_import_tftrain(tmp_path: Path):
    model = _model()
    x = RNG.normal(size=(8, 6, 6, 2)).astype("float32")
    data_dependent_init(model, None, x)
    model.save(tmp_path / "wn.keras")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", np.asarray(model(x)))
    code = textwrap.dedent(f"""
        import numpy as np, keras, tftrain
        m = keras.models.load_model({str(tmp_path / 'wn.keras')!r})
        np.save({str(tmp_path / 'got.npy')!r}, np.asarray(m(np.load({str(tmp_path / 'x.npy')!r}))))
        print("RESULT", [type(l).__name__ for l in m.layers], bool(m.get_layer("out").initialized.numpy()))
    """)
    stdout = _python(code)
    assert "WeightNormConv2D" in stdout and "WeightNormDense" in stdout and stdout.strip().endswith("True")
    np.testing.assert_allclose(np.load(tmp_path / "got.npy"), np.load(tmp_path / "expected.npy"), rtol=1e-5,
                               atol=1e-6)


def test_training_with_weight_norm_runs_the_data_init_and_saves_initialized_layers(tmp_path: Path):
    metrics = tftrain.train(compose_small("initializer=weight_norm", "trainer.epochs=1", "model.hidden_units=[16]",
                                          "logger=[]"), output_dir=tmp_path)
    model = keras.models.load_model(tmp_path / "model.keras")
    layers = [layer for layer in model.layers if isinstance(layer, WeightNormDense)]
    assert len(layers) == 2 and metrics["steps"] == 8
    assert all(bool(layer.initialized.numpy()) for layer in layers), (
        "tftrain/train.py must call tftrain.layers.data_dependent_init before training")
