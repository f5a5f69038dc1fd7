"""Optimizers by short name: a Keras class plus the arguments that define the option."""

from __future__ import annotations

import keras

# option -> (Keras class, fixed arguments). `momentum` and `nesterov` are SGD variants.
OPTIMIZERS = {
    "sgd": (keras.optimizers.SGD, {}),
    "momentum": (keras.optimizers.SGD, {}),
    "nesterov": (keras.optimizers.SGD, {"nesterov": True}),
    "adagrad": (keras.optimizers.Adagrad, {}),
    "rmsprop": (keras.optimizers.RMSprop, {}),
    "adam": (keras.optimizers.Adam, {}),
    "adamw": (keras.optimizers.AdamW, {}),
    "nadam": (keras.optimizers.Nadam, {}),
}


def build_optimizer(cfg_opt, learning_rate, mixed_precision: str | None = None) -> keras.optimizers.Optimizer:
    """The configured optimizer with `learning_rate` (a float or a LearningRateSchedule).

    Under mixed_float16 it is wrapped in a LossScaleOptimizer (dynamic loss scaling), since
    float16 gradients underflow without it.
    """
    cls, fixed = OPTIMIZERS[cfg_opt.name]
    kwargs = {k: v for k, v in cfg_opt.items() if k not in ("name", "lr") and v is not None}
    optimizer = cls(learning_rate=learning_rate, **fixed, **kwargs)
    if mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
