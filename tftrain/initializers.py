"""Weight initialization as config: every layer gets its own initializer instance and seed.

A Keras random initializer instance draws its seed once and returns the same values on every
call, so sharing one instance across layers gives same-shaped layers identical weights
(../shared/NOTES.md). `Initializers` hands out a fresh instance per layer instead, seeded from
(trainer.seed, layer index): the same seed gives the same weights, two layers never share them.
"""

from __future__ import annotations

import numpy as np

import keras

# Short config names -> Keras initializer classes.
KERNELS = {
    "glorot_uniform": keras.initializers.GlorotUniform,
    "he_normal": keras.initializers.HeNormal,
}
BIASES = {"zeros": keras.initializers.Zeros}


def layer_seed(seed: int, index: int) -> int:
    """A well-mixed 31-bit seed for layer `index` of a run seeded with `seed`."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0] & 0x7FFFFFFF)


class Initializers:
    """Builds kernel and bias initializers for successive layers of one model."""

    def __init__(self, cfg_init, seed: int):
        self.cfg, self.seed, self._index = cfg_init, seed, 0

    def kernel(self) -> keras.initializers.Initializer:
        self._index += 1
        return KERNELS[self.cfg.name](seed=layer_seed(self.seed, self._index))

    def bias(self) -> keras.initializers.Initializer:
        return BIASES[self.cfg.bias]()

    def dense(self, units: int, **kwargs) -> keras.layers.Layer:
        return keras.layers.Dense(units, kernel_initializer=self.kernel(), bias_initializer=self.bias(), **kwargs)

    def conv2d(self, filters: int, kernel_size, **kwargs) -> keras.layers.Layer:
        return keras.layers.Conv2D(filters, kernel_size, kernel_initializer=self.kernel(),
                                   bias_initializer=self.bias(), **kwargs)
