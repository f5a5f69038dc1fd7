"""Initialization and L2 as transformations of any built model, the built-in ones and yours.

`initialize(model, kernel, bias, seed)` re-draws every kernel of the model's Dense, Conv1D/2D/3D
(and transposed), depthwise and separable convolution and Embedding layers, each with an
initializer of its own seeded from (seed, layer index): the same seed gives the same weights,
and two same-shaped layers never share them. (A Keras random initializer instance draws its seed
once and returns the same values on every call, so sharing one instance across layers would give
same-shaped layers identical weights.) Their biases get `bias`.

`LSUV` (the `initializer=lsuv` option) draws orthogonal kernels, then rescales them on one batch.
`WeightNorm` (the `initializer=weight_norm` option) first turns the Dense and Conv layers into
tftrain.layers' weight-normalized ones (a functional or Sequential model is rebuilt with
`keras.models.clone_model`), then draws each `v` with `direction`. `add_l2` adds an L2 penalty on
every kernel.
"""

from __future__ import annotations

from typing import Callable, Iterator

import keras
import numpy as np

from tftrain.errors import ArgumentError
from tftrain.layers import WeightNormConv1D, WeightNormConv2D, WeightNormConv3D, WeightNormDense, _WeightNorm

# Layers whose kernels the `initializer` group sets, and each one's kernel attributes with the
# matching regularizer attribute (for add_l2).
KERNEL_LAYERS = (keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Conv1D, keras.layers.Conv2D,
                 keras.layers.Conv3D, keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
                 keras.layers.Conv3DTranspose, keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D,
                 keras.layers.SeparableConv1D, keras.layers.SeparableConv2D, keras.layers.Embedding, _WeightNorm)
KERNELS = {"kernel": "kernel_regularizer", "depthwise_kernel": "depthwise_regularizer",
           "pointwise_kernel": "pointwise_regularizer", "embeddings": "embeddings_regularizer"}

# Plain layers -> their weight-normalized versions (groups == 1 only).
_WEIGHT_NORMED = {keras.layers.Dense: WeightNormDense, keras.layers.Conv1D: WeightNormConv1D,
                  keras.layers.Conv2D: WeightNormConv2D, keras.layers.Conv3D: WeightNormConv3D}


def layer_seed(seed: int, index: int) -> int:
    """A well-mixed 31-bit seed for layer `index` of a run seeded with `seed`."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0] & 0x7FFFFFFF)


def kernel_layers(model) -> Iterator[keras.layers.Layer]:
    """The model's kernel layers, nested ones included, in the model's order."""
    # _flatten_layers: Keras has no public recursive walk that also reaches the layers nested in a
    # user's own custom layers (Model.layers stops at the first level).
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, KERNEL_LAYERS):
            yield layer


def layers_in_order(model) -> Iterator[keras.layers.Layer]:
    """Every layer inside `model`, depth first, each container's layers in their own order (the
    order a Sequential or functional model calls them). Keras' _flatten_layers, which
    `kernel_layers` follows (its order fixes each layer's seed, so it stays), lists a nested
    model's layers last to first (it extends a deque on the left): tftrain's preprocessing wrapper
    nests the model, and layer-by-layer work (LSUV, init_check) must go input to output."""
    seen = set()

    def walk(layer):
        for child in layer._layers:  # noqa: SLF001 - what _flatten_layers walks; no public equivalent
            if id(child) not in seen:
                seen.add(id(child))
                yield child
                yield from walk(child)

    yield from walk(model)


def _kernel_variables(layer):
    if isinstance(layer, _WeightNorm):
        return [("v", layer.v)]
    return [(name, getattr(layer, name)) for name in KERNELS
            if isinstance(getattr(layer, name, None), keras.Variable)]


def kernel_of(layer) -> keras.Variable:
    """The variable that scales `layer`'s output: its kernel (a weight-normalized layer's `v`; a
    separable convolution's depthwise kernel)."""
    return _kernel_variables(layer)[0][1]


class WeightNorm:
    """The `initializer=weight_norm` option: weight-normalized Dense/Conv layers whose directions
    `v` are drawn by `direction` (a plain Keras initializer name, e.g. he_normal); `g` starts at
    ||v||, so the layer starts out computing what `direction` alone would. With `data_init`, the
    training loop then rescales g and sets the bias from the first batch (tftrain.layers)."""

    def __init__(self, direction: str, data_init: bool):
        self.direction, self.data_init = direction, bool(data_init)
        self._cls = type(keras.initializers.get(direction))

    def __call__(self, seed: int) -> keras.initializers.Initializer:
        return self._cls(seed=seed)

    def convert(self, model) -> keras.Model:
        """`model` with its Dense and Conv layers weight-normalized (a rebuilt copy)."""
        data_init = self.data_init

        def clone(layer):
            cls = _WEIGHT_NORMED.get(type(layer))
            config = layer.get_config()
            if cls is None or config.get("groups", 1) != 1:
                return layer.__class__.from_config(config)
            config = {k: v for k, v in config.items() if not k.startswith(("lora", "quantization", "groups"))}
            try:
                return cls.from_config({**config, "data_init": data_init})
            except ValueError as e:  # e.g. a kernel_constraint, which a weight-normalized kernel cannot honour
                raise ArgumentError("weight_norm", layer.name, f"a layer weight normalization can replace: {e}") from None

        try:
            return keras.models.clone_model(model, clone_function=clone, recursive=True)
        except ValueError as e:
            if "Functional" not in str(e):
                raise
            raise ArgumentError("weight_norm", type(model).__name__,
                                "a functional or Sequential model: weight normalization rebuilds the model with its "
                                "Dense/Conv layers replaced, which Keras cannot do for a subclassed model") from None


class LSUV:
    """The `initializer=lsuv` option: layer-sequential unit-variance initialization (Mishkin &
    Matas 2016, "All you need is a good init", algorithm 1). Every kernel starts orthogonal (each
    layer its own seed); then `rescale` takes the Dense and Conv layers one at a time in the
    model's order and divides each one's kernel by the standard deviation of its output on one
    batch, until the output's variance is within `tol` of 1 or `max_iter` rescalings were made.
    The output is the layer's own (after its activation when it has one), as in the authors' Keras
    code; the biases are left as they are. Statistics are the global batch's (all-reduced across
    replicas), in inference mode (no dropout), so the result depends on the seed and the batch alone.

    >>> lsuv = LSUV(tol=0.1, max_iter=10)
    >>> model = initialize(model, lsuv, seed=0)  # orthogonal kernels  # doctest: +SKIP
    >>> lsuv.rescale(model, strategy, first_batch)  # doctest: +SKIP
    """

    def __init__(self, tol: float, max_iter: int):  # the defaults: tftrain.schema.initializer.LSUVConf
        if not (isinstance(tol, (int, float)) and 0 < tol < 1):
            raise ArgumentError("tol", tol, "a number in (0, 1): how far the output variance may stay from 1")
        if not (isinstance(max_iter, int) and not isinstance(max_iter, bool) and max_iter >= 1):
            raise ArgumentError("max_iter", max_iter, "an integer >= 1: the most rescalings per layer")
        self.tol, self.max_iter = float(tol), int(max_iter)

    def __call__(self, seed: int) -> keras.initializers.Initializer:
        return keras.initializers.Orthogonal(seed=seed)

    def rescale(self, model, strategy, dist_batch) -> list[dict]:
        """Rescale `model`'s Dense and Conv kernels on `dist_batch` (a batch of `strategy`'s
        distributed dataset; every worker of a multi-worker run must call it); returns, per
        layer, its name, the output variance before and after, and the rescalings made."""
        from tftrain.diagnose.probe import Probe, statistics_fn

        layers = [layer for layer in layers_in_order(model)
                  if isinstance(layer, KERNEL_LAYERS) and not isinstance(layer, keras.layers.Embedding)]
        probe = Probe(layers)
        report = []
        with probe.open():
            measure = statistics_fn(model, probe, strategy, training=False)
            for index, layer in enumerate(layers):
                kernel = kernel_of(layer)
                before = variance = measure(dist_batch)[0].get(index, {}).get("var")
                rescalings = 0
                while variance is not None and np.isfinite(variance) and variance > 1e-14 \
                        and abs(variance - 1.0) >= self.tol and rescalings < self.max_iter:
                    kernel.assign(kernel * (1.0 / np.sqrt(variance)))
                    rescalings += 1
                    variance = measure(dist_batch)[0][index]["var"]
                report.append({"layer": layer.name, "variance_before": before, "variance": variance,
                               "rescalings": rescalings,
                               "converged": variance is not None and abs(variance - 1.0) < self.tol})
        return report


def initialize(model, kernel: Callable[[int], keras.initializers.Initializer] | WeightNorm | None,
               bias: str = "zeros", seed: int = 0) -> keras.Model:
    """Re-initialize every kernel layer of `model` (see the module docstring) and return it (a new
    model when `kernel` is a WeightNorm). `kernel(seed)` gives a fresh initializer per kernel;
    None keeps the model's own initial weights. `bias`: a Keras initializer name for the biases."""
    if kernel is None:
        return model
    if isinstance(kernel, WeightNorm):
        model = kernel.convert(model)
    biases = keras.initializers.get(bias)
    index = 0
    for layer in kernel_layers(model):
        for _, variable in _kernel_variables(layer):
            index += 1
            variable.assign(kernel(layer_seed(seed, index))(tuple(variable.shape), dtype=variable.dtype))
        if isinstance(layer, _WeightNorm):
            layer.g.assign(layer._v_norm())
        b = getattr(layer, "bias", None)
        if isinstance(b, keras.Variable):
            b.assign(biases(tuple(b.shape), dtype=b.dtype))
    return model


def add_l2(model, l2: float) -> None:
    """Add `l2 * sum(w**2)` of every kernel of `model` to its losses (and to its saved config)."""
    if l2 <= 0:
        return
    for layer in kernel_layers(model):
        regularizer = keras.regularizers.L2(l2)
        for name, variable in _kernel_variables(layer):
            setattr(layer, KERNELS.get(name, "kernel_regularizer"), regularizer)
            if isinstance(layer, _WeightNorm):  # penalize the effective kernel, as the layer does when built with it
                layer.g.regularizer = lambda _, layer=layer, r=regularizer: r(layer._kernel_float32())
            else:
                variable.regularizer = regularizer
