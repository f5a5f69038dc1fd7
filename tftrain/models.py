"""The built-in models, and loading a saved one: the `model` options' targets.

Each is called as `fn(input_shape, num_outputs, **keys)` and returns a functional keras.Model
with raw outputs (logits), computed in float32 so the loss stays float32 under mixed precision.
A user's own model function has the same signature (`model=custom`). Initialization, weight
normalization and the L2 penalty are not the builders' business: tftrain.initializers applies
them to any model after it is built.

Shared keys: `batch_norm` puts BatchNormalization between each hidden kernel layer and its
activation (the layer then has no bias: BN's beta replaces it); `dropout` follows the dense
hidden layers (cnn, mlp) or the pooled features (resnet).
"""

from __future__ import annotations

import os
import zipfile

import keras

from tftrain.errors import ArgumentError, TftrainError


def _kernel_layer(x, layer, *, activation: str, batch_norm: bool, activate: bool = True):
    """`layer(use_bias=..., activation=...)` (a Dense or Conv2D factory), then batch norm, then the activation."""
    fused = activation if activate and not batch_norm else None
    x = layer(use_bias=not batch_norm, activation=fused)(x)
    if batch_norm:
        x = keras.layers.BatchNormalization()(x)
        if activate:
            x = keras.layers.Activation(activation)(x)
    return x


def _outputs(x, num_outputs: int):
    return keras.layers.Dense(num_outputs, dtype="float32", name="logits")(x)


def _require_images(name: str, input_shape):
    if len(input_shape) != 3:
        raise ArgumentError("input_shape", tuple(input_shape),
                            f"(height, width, channels) for the {name} model (an image model); the data's examples "
                            "are not images: use model=mlp")


def mlp(input_shape, num_outputs: int, *, hidden_units, activation: str, batch_norm: bool,
        dropout: float) -> keras.Model:
    inputs = keras.Input(shape=tuple(input_shape), name="inputs")
    x = keras.layers.Flatten()(inputs)
    for units in hidden_units:
        x = _kernel_layer(x, lambda **kw: keras.layers.Dense(units, **kw), activation=activation,
                          batch_norm=batch_norm)
        if dropout > 0:
            x = keras.layers.Dropout(dropout)(x)
    return keras.Model(inputs, _outputs(x, num_outputs), name="mlp")


def cnn(input_shape, num_outputs: int, *, filters, kernel_size: int, convs_per_block: int, dense_units: int,
        global_pool: bool, activation: str, batch_norm: bool, dropout: float) -> keras.Model:
    """A small conv net for images. Defaults: Keras' "Simple MNIST convnet" example (two blocks of a
    3x3 conv and 2x2 max pooling, 32 then 64 filters, flatten, dropout 0.5, the outputs).
    `convs_per_block` convs ('valid' padding) before each pooling; `global_pool` averages the last
    feature map instead of flattening it; `dense_units` > 0 adds a hidden dense layer."""
    _require_images("cnn", input_shape)
    inputs = keras.Input(shape=tuple(input_shape), name="inputs")
    x = inputs
    for n in filters:
        for _ in range(convs_per_block):
            if x.shape[1] >= kernel_size and x.shape[2] >= kernel_size:  # 8x8 digits: the map shrinks to 1x1
                x = _kernel_layer(x, lambda **kw: keras.layers.Conv2D(n, kernel_size, **kw), activation=activation,
                                  batch_norm=batch_norm)
        if x.shape[1] >= 2 and x.shape[2] >= 2:
            x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x) if global_pool else keras.layers.Flatten()(x)
    if dense_units:
        x = _kernel_layer(x, lambda **kw: keras.layers.Dense(dense_units, **kw), activation=activation,
                          batch_norm=batch_norm)
    if dropout > 0:
        x = keras.layers.Dropout(dropout)(x)
    return keras.Model(inputs, _outputs(x, num_outputs), name="cnn")


def _basic_block(x, filters: int, strides: int, activation: str, batch_norm: bool):
    """Two 3x3 convs plus a shortcut (He et al. 2016); a 1x1 projection where the shape changes."""
    kw = {"activation": activation, "batch_norm": batch_norm}
    y = _kernel_layer(x, lambda **k: keras.layers.Conv2D(filters, 3, strides=strides, padding="same", **k), **kw)
    y = _kernel_layer(y, lambda **k: keras.layers.Conv2D(filters, 3, padding="same", **k), **kw, activate=False)
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _kernel_layer(x, lambda **k: keras.layers.Conv2D(filters, 1, strides=strides, **k), **kw,
                                 activate=False)
    return keras.layers.Activation(activation)(keras.layers.Add()([y, shortcut]))


def resnet(input_shape, num_outputs: int, *, filters, blocks_per_stage: int, activation: str, batch_norm: bool,
           dropout: float) -> keras.Model:
    """ResNet for small images (CIFAR-style, He et al. 2016 sec. 4.2): a 3x3 stem, then one stage
    per `filters` entry of `blocks_per_stage` basic blocks, each stage after the first halving
    the resolution; global average pooling; outputs. [16, 32, 64] x 3 blocks: ResNet-20."""
    _require_images("resnet", input_shape)
    inputs = keras.Input(shape=tuple(input_shape), name="inputs")
    x = _kernel_layer(inputs, lambda **k: keras.layers.Conv2D(filters[0], 3, padding="same", **k),
                      activation=activation, batch_norm=batch_norm)
    for stage, n in enumerate(filters):
        for block in range(blocks_per_stage):
            x = _basic_block(x, n, 2 if stage > 0 and block == 0 else 1, activation, batch_norm)
    x = keras.layers.GlobalAveragePooling2D()(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout)(x)
    return keras.Model(inputs, _outputs(x, num_outputs), name="resnet")


def with_preprocessing(core: keras.Model, input_shape, normalization: dict | None = None,
                       target_normalization: dict | None = None) -> keras.Model:
    """`core` inside a model that takes raw inputs and gives outputs in the targets' units: a
    Normalization layer in front (`normalization`: per-channel offset and scale, from the
    training split), an inverted one behind (`target_normalization`: the targets' mean and std).
    Both are float32 Keras layers saved with the model; `core` itself when neither is given."""
    if normalization is None and target_normalization is None:
        return core
    inputs = keras.Input(shape=tuple(input_shape), name="inputs")
    x = inputs
    if normalization is not None:
        scale = [float(v) for v in normalization["scale"]]
        x = keras.layers.Normalization(mean=[float(v) for v in normalization["offset"]],
                                       variance=[1.0 / s ** 2 for s in scale], dtype="float32",
                                       name="normalize_inputs")(x)
    x = core(x)
    if target_normalization is not None:
        x = keras.layers.Normalization(mean=[float(v) for v in target_normalization["mean"]],
                                       variance=[float(v) ** 2 for v in target_normalization["std"]], invert=True,
                                       dtype="float32", name="denormalize_outputs")(x)
    return keras.Model(inputs, x, name=core.name)


def saved(input_shape, num_outputs: int, *, path: str, safe_mode: bool) -> keras.Model:
    """A saved .keras model (e.g. an earlier run's model.keras), loaded without its optimizer, to
    continue training or fine-tune. Its input shape must be the data's. `safe_mode=False` (the
    user's word on the command line, as Keras' own switch) lets a Lambda layer's code load."""
    import tftrain.layers  # noqa: F401 - tftrain's registered layers and schedules deserialize
    import tftrain.schedules  # noqa: F401

    if not zipfile.is_zipfile(path):
        what = "does not exist" if not os.path.exists(path) else "is not a .keras zip archive (truncated, or not a model)"
        raise TftrainError(f"model.path={path!r} {what}. Fix: give the model.keras of a finished run, e.g. "
                           "model.path=outputs/<date>/<time>/model.keras.")
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=bool(safe_mode))
    except Exception as e:  # noqa: BLE001 - Keras' errors for a file it will not rebuild, classified below
        text = " ".join(str(e).split())
        if "Lambda" in text or "safe_mode" in text:
            # The file is data: its Python code (a Lambda layer's) is never loaded from here.
            raise TftrainError(f"model.path={path!r} holds a Lambda layer, Python code that Keras' safe mode does not "
                               "load (a model file is data, and code in it could do anything). Fix: rebuild the model "
                               "with a registered custom layer (keras.saving.register_keras_serializable) instead of "
                               "a Lambda layer; or, only if you trust the file and whoever made it, load it with "
                               "model.safe_mode=false.") from None
        if "locate" in text or "Unknown" in text or "custom_objects" in text:
            raise TftrainError(f"model.path={path!r} uses a class or function that is not tftrain's or Keras' own "
                               f"({text[:300]}). Fix: register it with keras.saving.register_keras_serializable in "
                               "your own code and train it with model=custom (your code named on the command "
                               "line).") from None
        raise TftrainError(f"model.path={path!r} is not a model Keras can load ({text[:300]}). Fix: give the "
                           "model.keras of a finished run.") from None
    want = tuple(input_shape)
    have = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else None
    if have is not None and have != want:
        raise ArgumentError("path", path, f"a model taking inputs of the data's shape {want}; this one takes {have}")
    return model
