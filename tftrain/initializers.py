"""Weight initialization as config: every layer gets its own initializer instance and seed.

A Keras random initializer instance draws its seed once and returns the same values on every
call, so sharing one instance across layers gives same-shaped layers identical weights
(../shared/NOTES.md). `Initializers` hands out a fresh instance per layer instead, seeded from
(trainer.seed, layer index): the same seed gives the same weights, two layers never share them.

The option names are the keys of `SCHEMES` (tftrain/schema/initializer.py validates their keys);
`weight_norm` also swaps the layer classes for tftrain.layers' weight-normalized ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import keras

from tftrain.layers import WeightNormConv2D, WeightNormDense

ki = keras.initializers


def _seeded(cls, **fixed):
    return lambda cfg, seed: cls(seed=seed, **fixed)


# Options without parameters of their own: also the allowed `direction`s of weight_norm.
PLAIN = {
    "glorot_uniform": _seeded(ki.GlorotUniform),
    "glorot_normal": _seeded(ki.GlorotNormal),
    "he_normal": _seeded(ki.HeNormal),
    "he_uniform": _seeded(ki.HeUniform),
    "lecun_normal": _seeded(ki.LecunNormal),
    "lecun_uniform": _seeded(ki.LecunUniform),
}

# option -> (option's config, layer seed) -> kernel initializer.
KERNELS: dict[str, Callable] = {
    "zeros": lambda cfg, seed: ki.Zeros(),
    "constant": lambda cfg, seed: ki.Constant(cfg.value),
    "random_normal": lambda cfg, seed: ki.RandomNormal(cfg.mean, cfg.stddev, seed=seed),
    "random_uniform": lambda cfg, seed: ki.RandomUniform(cfg.minval, cfg.maxval, seed=seed),
    "truncated_normal": lambda cfg, seed: ki.TruncatedNormal(cfg.mean, cfg.stddev, seed=seed),
    **PLAIN,
    "orthogonal": lambda cfg, seed: ki.Orthogonal(cfg.gain, seed=seed),
    "variance_scaling": lambda cfg, seed: ki.VarianceScaling(cfg.scale, cfg.mode, cfg.distribution, seed=seed),
}

BIASES = {"zeros": ki.Zeros, "ones": ki.Ones}


@dataclass(frozen=True)
class Scheme:
    """How one `initializer` option builds layers: the kernel initializer, the layer classes,
    and extra layer arguments taken from the option's config."""

    kernel: Callable
    dense: type = keras.layers.Dense
    conv2d: type = keras.layers.Conv2D
    layer_kwargs: Callable = field(default=lambda cfg: {})


SCHEMES: dict[str, Scheme] = {name: Scheme(make) for name, make in KERNELS.items()}
SCHEMES["weight_norm"] = Scheme(lambda cfg, seed: PLAIN[cfg.direction](cfg, seed), WeightNormDense,
                                WeightNormConv2D, lambda cfg: {"data_init": bool(cfg.data_init)})


def layer_seed(seed: int, index: int) -> int:
    """A well-mixed 31-bit seed for layer `index` of a run seeded with `seed`."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0] & 0x7FFFFFFF)


class Initializers:
    """Builds the kernel layers of one model, each with its own seeded initializer."""

    def __init__(self, cfg_init, seed: int):
        self.cfg, self.seed, self._index = cfg_init, seed, 0
        self.scheme = SCHEMES[cfg_init.name]

    def kernel(self) -> keras.initializers.Initializer:
        self._index += 1
        return self.scheme.kernel(self.cfg, layer_seed(self.seed, self._index))

    def bias(self) -> keras.initializers.Initializer:
        return BIASES[self.cfg.bias]()

    def dense(self, units: int, **kwargs) -> keras.layers.Layer:
        return self.scheme.dense(units, kernel_initializer=self.kernel(), bias_initializer=self.bias(),
                                 **self.scheme.layer_kwargs(self.cfg), **kwargs)

    def conv2d(self, filters: int, kernel_size, **kwargs) -> keras.layers.Layer:
        return self.scheme.conv2d(filters, kernel_size, kernel_initializer=self.kernel(),
                                  bias_initializer=self.bias(), **self.scheme.layer_kwargs(self.cfg), **kwargs)
