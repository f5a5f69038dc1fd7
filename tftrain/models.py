"""Model builders, chosen by `model.name`; each returns a functional keras.Model producing logits.

Every Dense/Conv2D comes from `Initializers`, so the `initializer` group applies to all kernels
(and `initializer=weight_norm` makes them all weight-normalized). The last layer computes in
float32 so logits and the loss stay float32 under mixed precision.

Shared options: `batch_norm` puts BatchNormalization between each hidden kernel layer and its
activation (the layer then has no bias: BN's beta replaces it); `dropout` follows the dense
hidden layers (cnn, mlp) or the pooled features (resnet); `l2` penalizes every kernel, logits
included.
"""

from __future__ import annotations

import keras

from tftrain.errors import ConfigError
from tftrain.initializers import Initializers


def _l2(cfg):
    return keras.regularizers.L2(cfg.l2) if cfg.l2 > 0 else None


def _kernel_layer(x, make, cfg, *, activate: bool = True):
    """`make(**kwargs)` (a Dense or Conv2D from Initializers), then batch norm, then the activation."""
    bn = cfg.batch_norm
    fused = cfg.activation if activate and not bn else None
    x = make(use_bias=not bn, activation=fused, kernel_regularizer=_l2(cfg))(x)
    if bn:
        x = keras.layers.BatchNormalization()(x)
        if activate:
            x = keras.layers.Activation(cfg.activation)(x)
    return x


def _head(x, cfg, num_classes: int, inits: Initializers):
    return inits.dense(num_classes, dtype="float32", name="logits", kernel_regularizer=_l2(cfg))(x)


def _require_images(name: str, input_shape):
    if len(input_shape) != 3:
        raise ConfigError("model.name", name, f"a model for flat inputs: the data's examples have shape "
                          f"{tuple(input_shape)}, {name} needs images (height, width, channels)", "use model=mlp")


def mlp(cfg, input_shape, num_classes: int, inits: Initializers) -> keras.Model:
    inputs = keras.Input(shape=input_shape, name="inputs")
    x = keras.layers.Flatten()(inputs)
    for units in cfg.hidden_units:
        x = _kernel_layer(x, lambda **kw: inits.dense(units, **kw), cfg)
        if cfg.dropout > 0:
            x = keras.layers.Dropout(cfg.dropout)(x)
    return keras.Model(inputs, _head(x, cfg, num_classes, inits), name="mlp")


def cnn(cfg, input_shape, num_classes: int, inits: Initializers) -> keras.Model:
    _require_images("cnn", input_shape)
    inputs = keras.Input(shape=input_shape, name="inputs")
    x = inputs
    for filters in cfg.filters:
        for _ in range(2):
            x = _kernel_layer(x, lambda **kw: inits.conv2d(filters, cfg.kernel_size, padding="same", **kw), cfg)
        if x.shape[1] >= 2 and x.shape[2] >= 2:  # 8x8 digits would vanish after three poolings
            x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = _kernel_layer(x, lambda **kw: inits.dense(cfg.dense_units, **kw), cfg)
    if cfg.dropout > 0:
        x = keras.layers.Dropout(cfg.dropout)(x)
    return keras.Model(inputs, _head(x, cfg, num_classes, inits), name="cnn")


def _basic_block(x, filters: int, strides: int, cfg, inits: Initializers):
    """Two 3x3 convs plus a shortcut (He et al. 2016); a 1x1 projection where the shape changes."""
    y = _kernel_layer(x, lambda **kw: inits.conv2d(filters, 3, strides=strides, padding="same", **kw), cfg)
    y = _kernel_layer(y, lambda **kw: inits.conv2d(filters, 3, padding="same", **kw), cfg, activate=False)
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _kernel_layer(x, lambda **kw: inits.conv2d(filters, 1, strides=strides, **kw), cfg,
                                 activate=False)
    return keras.layers.Activation(cfg.activation)(keras.layers.Add()([y, shortcut]))


def resnet(cfg, input_shape, num_classes: int, inits: Initializers) -> keras.Model:
    """ResNet for small images (CIFAR-style, He et al. 2016 sec. 4.2): a 3x3 stem, then one stage
    per `filters` entry of `blocks_per_stage` basic blocks, each stage after the first halving
    the resolution; global average pooling; logits. [16, 32, 64] x 3 blocks: ResNet-20."""
    _require_images("resnet", input_shape)
    inputs = keras.Input(shape=input_shape, name="inputs")
    x = _kernel_layer(inputs, lambda **kw: inits.conv2d(cfg.filters[0], 3, padding="same", **kw), cfg)
    for stage, filters in enumerate(cfg.filters):
        for block in range(cfg.blocks_per_stage):
            x = _basic_block(x, filters, 2 if stage > 0 and block == 0 else 1, cfg, inits)
    x = keras.layers.GlobalAveragePooling2D()(x)
    if cfg.dropout > 0:
        x = keras.layers.Dropout(cfg.dropout)(x)
    return keras.Model(inputs, _head(x, cfg, num_classes, inits), name="resnet")


BUILDERS = {"mlp": mlp, "cnn": cnn, "resnet": resnet}


def build_model(cfg_model, input_shape, num_classes: int, inits: Initializers) -> keras.Model:
    return BUILDERS[cfg_model.name](cfg_model, tuple(input_shape), num_classes, inits)
