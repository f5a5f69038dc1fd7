"""The `model` group: mlp, cnn and resnet with batch_norm, dropout, l2 and activation options."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest

import keras
import tftrain
from tftrain.errors import ConfigError
from tftrain.schema import validate
from tftrain.schema.model import ACTIVATIONS

from conftest import ROOT

# Each model shrunk to a few small layers (shapes still exercise every code path).
TINY = {
    "mlp": ("model=mlp", "model.hidden_units=[8,8]"),
    "cnn": ("model=cnn", "model.filters=[4,8]", "model.dense_units=8"),
    "resnet": ("model=resnet", "model.filters=[4,8,8]", "model.blocks_per_stage=1"),
}
IMAGE = (8, 8, 1)  # the digits' shape


@functools.lru_cache(maxsize=None)
def _cfg(*overrides: str):
    return validate(tftrain.compose(list(overrides)))


def _build(*overrides: str, input_shape=IMAGE, num_classes: int = 10, seed: int = 0):
    from tftrain.config.factory import build_model

    return build_model(_cfg(*overrides, f"trainer.seed={seed}"), input_shape, num_classes)


def _kernel_layers(model):
    return [layer for layer in model.layers if hasattr(layer, "kernel")]


def test_every_option_has_its_schema():
    from tftrain.schema import SCHEMAS

    options = {p.stem for p in (ROOT / "conf" / "model").glob("*.yaml")}
    assert options == set(SCHEMAS["model"]) == {"mlp", "cnn", "resnet", "custom", "saved"}


def test_every_listed_activation_is_a_keras_activation():
    for name in ACTIVATIONS:
        assert callable(keras.activations.get(name)), name


# Defaults, then each option away from its default (checked one by one below).
OPTION_SETS = [(), ("model.batch_norm=true", "model.dropout=0.3", "model.l2=0.01", "model.activation=tanh"),
               ("model.batch_norm=false", "model.dropout=0.2", "model.l2=1e-4", "model.activation=gelu",
                "initializer=weight_norm")]


@pytest.mark.parametrize("name, options", list(itertools.product(TINY, OPTION_SETS)),
                         ids=lambda v: v if isinstance(v, str) else " ".join(v) or "defaults")
def test_every_model_and_option_composes_validates_builds_and_runs(name, options):
    model = _build(*TINY[name], *options)
    x = np.random.default_rng(0).normal(size=(4, *IMAGE)).astype("float32")
    logits = model(x, training=True)
    assert logits.shape == (4, 10) and np.all(np.isfinite(logits))
    cfg = _cfg(*TINY[name], *options).model
    kernels = _kernel_layers(model)
    batch_norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    # Every hidden kernel layer is followed by batch norm and has no bias; the logits keep theirs.
    assert len(batch_norms) == (len(kernels) - 1 if cfg.batch_norm else 0)
    assert all((layer.bias is None) == cfg.batch_norm for layer in kernels if layer.name != "logits")
    assert any(isinstance(layer, keras.layers.Dropout) for layer in model.layers) == (cfg.dropout > 0)
    assert len(model.losses) == (len(kernels) if cfg.l2 > 0 else 0)
    activations = {getattr(layer, "activation", None) for layer in model.layers} - {None}
    assert keras.activations.get(cfg.activation) in activations


def test_l2_penalty_is_l2_times_the_squared_kernels():
    model = _build(*TINY["cnn"], "model.l2=0.01")
    expected = sum(0.01 * float(np.sum(np.square(layer.kernel))) for layer in _kernel_layers(model))
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("blocks", [1, 3])
def test_resnet_depth_and_resolution(blocks):
    # ResNet-20 (blocks 3): 1 stem conv + 3 stages x 3 blocks x 2 convs + the logits = 20 weighted layers,
    # plus two 1x1 projection shortcuts where the shape changes; 32x32 input -> 8x8 at the last stage.
    model = _build("model=resnet", f"model.blocks_per_stage={blocks}", input_shape=(32, 32, 3))
    kernels = _kernel_layers(model)
    convs3 = [layer for layer in kernels if getattr(layer, "kernel_size", None) == (3, 3)]
    convs1 = [layer for layer in kernels if getattr(layer, "kernel_size", None) == (1, 1)]
    assert len(convs3) + 1 == 6 * blocks + 2 and len(convs1) == 2
    last_features = model.get_layer(index=len(model.layers) - 3).output  # before pooling
    assert tuple(last_features.shape[1:]) == (8, 8, 64)
    if blocks == 3:
        assert 0.26e6 < model.count_params() < 0.28e6  # the paper's 0.27M


def test_all_kernels_come_from_the_initializer_group():
    from tftrain.layers import WeightNormConv2D, WeightNormDense

    for name in TINY:
        kernels = _kernel_layers(_build(*TINY[name], "initializer=weight_norm"))
        assert all(isinstance(layer, (WeightNormDense, WeightNormConv2D)) for layer in kernels), name


def test_logits_stay_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        for name in TINY:
            model = _build(*TINY[name], "model.batch_norm=true")
            assert model.output.dtype == "float32", name
            assert model.get_layer(index=2).compute_dtype == "float16", name
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("name", ["cnn", "resnet"])
def test_image_models_reject_flat_inputs_naming_the_model(name):
    with pytest.raises(ConfigError, match="Invalid config `model`.*use model=mlp"):
        _build(*TINY[name], input_shape=(16,))


def test_same_seed_same_weights_across_models():
    a, b = _build(*TINY["resnet"], seed=5), _build(*TINY["resnet"], seed=5)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


@pytest.mark.parametrize("override, key", [
    ("model.l2=-0.1", "model.l2"),
    ("model.dropout=1.0", "model.dropout"),
    ("model.activation=relu7", "model.activation"),
    ("model.batch_norm=sometimes", "model.batch_norm"),
    ("model=resnet model.blocks_per_stage=0", "model.blocks_per_stage"),
    ("model=resnet model.filters=[]", "model.filters"),
    ("model=resnet model.filters=[16,-32]", "model.filters"),
    ("model=cnn model.kernel_size=0", "model.kernel_size"),
    ("model=resnet +model.hidden_units=[3]", "model.hidden_units"),
])
def test_bad_values_fail_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=f"`{key}`"):
        validate(tftrain.compose(override.split()))
