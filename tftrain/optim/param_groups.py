"""Parameter groups for any Keras optimizer: weight decay on kernels only, and per-variable
learning-rate multipliers (`lr_multipliers` patterns and layer-wise `layer_decay`).

`apply_param_groups(optimizer, model, ...)` configures an optimizer that is not built yet. It
keeps the optimizer's class (a model.keras saved with it loads as before) and works for every
Keras optimizer, inside `tf.function` and under tf.distribute:

- weight decay on kernels: Keras' own `Optimizer.exclude_from_weight_decay(var_list=...)`.
- multipliers: every Keras optimizer updates each variable in `update_step(gradient, variable,
  learning_rate)` (the TensorFlow backend calls it once per variable, in the strategy's update
  context). The optimizer instance gets its own `update_step`, which calls the class' method with
  `learning_rate * factor`: the variable's update is exactly the one at the scaled rate. A factor
  of 1 passes the rate through untouched, so variables at 1 update bit for bit as without groups.
- decoupled weight decay follows the factor (timm's parameter groups: decay is `lr * wd` of the
  group), so a variable's whole update at multiplier m equals its update at rate `lr * m`, and a
  factor of 0 freezes it. Keras decays with the global rate (`_apply_weight_decay`, with no
  per-variable hook): variables whose factor is not 1 are taken out of Keras' decay and decayed
  in their own `update_step`, by the same formula, before the gradient step as Keras does.

A multiplier scales the rate the optimizer is given; every Keras optimizer whose step is linear
in it (SGD, momentum, Adam, AdamW, Adamax, Nadam, RMSprop, Adagrad, Adadelta, Lion, Lamb, Muon)
then takes exactly the step it takes at the scaled rate. Adafactor (its relative step is
min(rate, 1/sqrt(t))), Ftrl (the rate sits inside its proximal step) and ScheduleFreeAdamW (the
rate weighs its averages) get the scaled rate too, which is not a proportionally scaled step.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping

import keras

from tftrain.errors import ArgumentError
from tftrain.optim.two_pass import TwoPassOptimizer

WEIGHT_DECAY_ON = ("all", "kernels")

# A normalization layer rescales the output of the layer before it: for layer_decay it shares
# that layer's depth rather than counting as a layer of its own.
_NORMALIZATION = (keras.layers.BatchNormalization, keras.layers.LayerNormalization,
                  keras.layers.GroupNormalization, keras.layers.RMSNormalization)


def trainable_variables(model) -> list:
    """The model's variables that training updates now, in the model's order: those whose own
    `trainable` flag is set (not a frozen layer's, nor BatchNorm's moving statistics)."""
    return [v for v in model.variables if v.trainable]


def is_kernel(variable) -> bool:
    """timm's rule (`filter_bias_and_bn`): a variable of 2 or more dimensions is a kernel (Dense
    and Conv kernels, Embedding's `embeddings`, a weight-normed layer's direction `v`); biases,
    normalization scales and offsets and weight norm's `g` are 1-D."""
    return len(variable.shape) >= 2


def _layer_of(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _normalization_variables(model) -> set[int]:
    # Keras' own walk over every layer at every depth (nested models: with_preprocessing's core).
    return {id(v) for layer in model._flatten_layers(include_self=False)
            if isinstance(layer, _NORMALIZATION) for v in layer.weights}


def matches(path: str, pattern: str) -> bool:
    """Whether the glob `pattern` matches the variable path `path` or a tail of it after a `/`:
    `logits/*` matches `logits/kernel` and `sequential/logits/kernel` (a Sequential's variables
    carry the model's name first); `*` crosses `/`."""
    parts = path.split("/")
    return any(fnmatch.fnmatchcase("/".join(parts[i:]), pattern) for i in range(len(parts)))


def layer_depths(model, variables=None) -> dict[str, int]:
    """Variable path -> its layer's distance from the output: 0 for the last layer that owns
    trainable variables, 1 for the one before it, ... in the model's order. A layer is the
    owner of the variables (the path before the variable's name: each Dense, Conv, Embedding);
    a normalization layer (BatchNormalization, LayerNormalization, ...) shares the depth of the
    layer before it."""
    variables = trainable_variables(model) if variables is None else variables
    norm_ids = _normalization_variables(model)
    norms = {_layer_of(v.path) for v in variables if id(v) in norm_ids}
    groups: list[str] = []  # owner of each depth, input side first
    group_of: dict[str, int] = {}
    for v in variables:
        owner = _layer_of(v.path)
        if owner not in group_of:
            if owner in norms and groups:
                group_of[owner] = group_of[groups[-1]]
            else:
                groups.append(owner)
                group_of[owner] = len(groups) - 1
    return {v.path: len(groups) - 1 - group_of[_layer_of(v.path)] for v in variables}


def _check_factor(arg: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ArgumentError(arg, value, "a finite number >= 0")
    return float(value)


def rate_factors(model, lr_multipliers: Mapping[str, float] | None = None,
                 layer_decay: float | None = None, variables=None) -> dict[str, float]:
    """Variable path -> the factor its learning rate is multiplied by: the product of every
    `lr_multipliers` pattern (fnmatch glob on `variable.path`, see `matches`) it matches,
    times `layer_decay ** depth` (`layer_depths`). Raises ArgumentError for a pattern that
    matches no variable, a factor that is not a finite number >= 0, a layer_decay outside (0, 1]."""
    variables = trainable_variables(model) if variables is None else variables
    paths = [v.path for v in variables]
    factors = dict.fromkeys(paths, 1.0)
    for pattern, value in (lr_multipliers or {}).items():
        value = _check_factor(f"lr_multipliers[{pattern!r}]", value)
        matched = [p for p in paths if matches(p, str(pattern))]
        if not matched:
            shown = ", ".join(paths[:8]) + (", ..." if len(paths) > 8 else "")
            raise ArgumentError("lr_multipliers", pattern,
                                f"a glob matching at least one trainable variable path (e.g. `logits/*`); "
                                f"the model's are: {shown}")
        for p in matched:
            factors[p] *= value
    if layer_decay is not None:
        if isinstance(layer_decay, bool) or not isinstance(layer_decay, (int, float)) or not 0 < layer_decay <= 1:
            raise ArgumentError("layer_decay", layer_decay, "null or a number in (0, 1]")
        for p, depth in layer_depths(model, variables).items():
            factors[p] *= float(layer_decay) ** depth
    return factors


def _decay_of(optimizer, variable):
    """The decoupled weight decay Keras' `_apply_weight_decay` gives `variable` (Muon uses its
    AdamW decay on the variables AdamW updates)."""
    if isinstance(optimizer, keras.optimizers.Muon) and optimizer._should_use_adamw(variable):
        return optimizer.adam_weight_decay
    return optimizer.weight_decay


def apply_param_groups(optimizer, model, *, weight_decay_on: str = "all",
                       lr_multipliers: Mapping[str, float] | None = None,
                       layer_decay: float | None = None, variables=None) -> dict[str, float]:
    """Configure `optimizer` (not built yet; a LossScaleOptimizer's inner one is configured) for
    `model`'s variables: weight decay on `all` variables or on `kernels` only (`is_kernel`), and
    the per-variable rate factors of `rate_factors`. Returns {variable path: factor}.

    `variables`: those to group, in the model's order (default: `trainable_variables(model)`, the
    ones trainable now). A variable outside them (a layer frozen now and unfrozen later) updates
    at factor 1 with Keras' own decay: pass every variable that may train to group it too."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    if weight_decay_on not in WEIGHT_DECAY_ON:
        raise ArgumentError("weight_decay_on", weight_decay_on, f"one of {', '.join(WEIGHT_DECAY_ON)}")
    if optimizer.built:
        raise ArgumentError("optimizer", type(optimizer).__name__, "an optimizer that is not built yet")
    variables = trainable_variables(model) if variables is None else list(variables)
    factors = rate_factors(model, lr_multipliers, layer_decay, variables)
    key = optimizer._var_key  # how Keras itself identifies a variable (a mirrored one too)
    decayed = [v for v in variables if weight_decay_on == "all" or is_kernel(v)]
    by_key = {key(v): factors[v.path] for v in variables if factors[v.path] != 1.0}
    # Prodigy and D-Adapt Adam never call update_step per variable: they take the factors
    # themselves (their decay, inside their step, follows the factor already).
    two_pass = isinstance(optimizer, TwoPassOptimizer)
    own_decay = {} if two_pass else {key(v): wd for v in decayed
                                     if key(v) in by_key and (wd := _decay_of(optimizer, v)) is not None}
    # `exclude_from_weight_decay` replaces its list: one call with every variable Keras must not
    # decay (not a kernel, or decayed at its own rate in update_step).
    kept = {key(v) for v in decayed} - set(own_decay)
    excluded = [v for v in variables if key(v) not in kept]
    if excluded:
        optimizer.exclude_from_weight_decay(var_list=excluded)
    if by_key and two_pass:
        try:
            optimizer.set_rate_factors(by_key)
        except ValueError as e:  # Prodigy: a group's rate is 0 or 1, as in the authors' code
            arg, value = ("layer_decay", layer_decay) if layer_decay is not None else ("lr_multipliers", lr_multipliers)
            raise ArgumentError(arg, value, f"factors of 0 or 1 with {type(optimizer).__name__} ({e})") from None
    elif by_key:
        _scale_updates(optimizer, by_key, own_decay)
    return factors


def _scale_updates(optimizer, factors: dict, decays: dict) -> None:
    class_update_step = type(optimizer).update_step

    def update_step(gradient, variable, learning_rate):
        k = optimizer._var_key(variable)
        factor = factors.get(k)
        if factor is None:
            return class_update_step(optimizer, gradient, variable, learning_rate)
        rate = keras.ops.multiply(keras.ops.cast(learning_rate, variable.dtype), factor)
        if k in decays:  # Keras' decoupled decay, at this variable's rate
            wd = keras.ops.cast(decays[k], variable.dtype)
            optimizer.assign(variable, variable - variable * wd * rate)
        return class_update_step(optimizer, gradient, variable, rate)

    # On the instance, not the class: the optimizer keeps its class, config and saved form.
    optimizer.update_step = update_step
