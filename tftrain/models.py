"""Model builders, chosen by `model.name`; each returns a functional keras.Model producing logits.

Every Dense/Conv2D comes from `Initializers`, so the `initializer` group applies to all kernels.
The last layer computes in float32 so logits and the loss stay float32 under mixed precision.
"""

from __future__ import annotations

import keras

from tftrain.initializers import Initializers


def _head(x, num_classes: int, inits: Initializers):
    return inits.dense(num_classes, dtype="float32", name="logits")(x)


def mlp(cfg, input_shape, num_classes: int, inits: Initializers) -> keras.Model:
    inputs = keras.Input(shape=input_shape, name="inputs")
    x = keras.layers.Flatten()(inputs)
    for units in cfg.hidden_units:
        x = inits.dense(units, activation=cfg.activation)(x)
        if cfg.dropout > 0:
            x = keras.layers.Dropout(cfg.dropout)(x)
    return keras.Model(inputs, _head(x, num_classes, inits), name="mlp")


def cnn(cfg, input_shape, num_classes: int, inits: Initializers) -> keras.Model:
    if len(input_shape) != 3:
        from tftrain.errors import ConfigError

        raise ConfigError("model.name", "cnn", f"a model for flat inputs: the data's examples have shape "
                          f"{tuple(input_shape)}, cnn needs images (height, width, channels)", "use model=mlp")
    inputs = keras.Input(shape=input_shape, name="inputs")
    x = inputs
    for filters in cfg.filters:
        x = inits.conv2d(filters, cfg.kernel_size, padding="same", activation=cfg.activation)(x)
        x = inits.conv2d(filters, cfg.kernel_size, padding="same", activation=cfg.activation)(x)
        if x.shape[1] >= 2 and x.shape[2] >= 2:  # 8x8 digits would vanish after three poolings
            x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = inits.dense(cfg.dense_units, activation=cfg.activation)(x)
    if cfg.dropout > 0:
        x = keras.layers.Dropout(cfg.dropout)(x)
    return keras.Model(inputs, _head(x, num_classes, inits), name="cnn")


BUILDERS = {"mlp": mlp, "cnn": cnn}


def build_model(cfg_model, input_shape, num_classes: int, inits: Initializers) -> keras.Model:
    return BUILDERS[cfg_model.name](cfg_model, tuple(input_shape), num_classes, inits)
