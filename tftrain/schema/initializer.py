"""Schemas of the `initializer` group (see tftrain/schema/__init__.py for the conventions).

Every option sets the kernels of all Dense/Conv2D layers; `bias` sets their biases. Names here
must match tftrain/initializers.py's registries (a test checks), which this module cannot import:
validation runs before TensorFlow is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from tftrain.errors import require

BIASES = ("zeros", "ones")
MODES = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform")
# The parameter-free options: the allowed directions of weight_norm.
PLAIN = ("glorot_uniform", "glorot_normal", "he_normal", "he_uniform", "lecun_normal", "lecun_uniform")


@dataclass
class InitializerConf:
    name: str = "glorot_uniform"
    bias: str = "zeros"

    def __post_init__(self):
        require(self.bias in BIASES, "bias", self.bias, f"one of {list(BIASES)}")


@dataclass
class ConstantConf(InitializerConf):
    value: float = 0.1


@dataclass
class RandomNormalConf(InitializerConf):
    mean: float = 0.0
    stddev: float = 0.05

    def __post_init__(self):
        super().__post_init__()
        require(self.stddev > 0, "stddev", self.stddev, "a standard deviation > 0")


@dataclass
class RandomUniformConf(InitializerConf):
    minval: float = -0.05
    maxval: float = 0.05

    def __post_init__(self):
        super().__post_init__()
        require(self.minval < self.maxval, "maxval", self.maxval, f"a number > minval ({self.minval})",
                "set initializer.minval < initializer.maxval, e.g. initializer.minval=-0.05 initializer.maxval=0.05")


@dataclass
class OrthogonalConf(InitializerConf):
    gain: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        require(self.gain > 0, "gain", self.gain, "a number > 0 (e.g. sqrt(2) for ReLU)")


@dataclass
class VarianceScalingConf(InitializerConf):
    scale: float = 1.0
    mode: str = "fan_in"
    distribution: str = "truncated_normal"

    def __post_init__(self):
        super().__post_init__()
        require(self.scale > 0, "scale", self.scale, "a number > 0 (variance = scale / fan)")
        require(self.mode in MODES, "mode", self.mode, f"one of {list(MODES)}")
        require(self.distribution in DISTRIBUTIONS, "distribution", self.distribution,
                f"one of {list(DISTRIBUTIONS)}")


@dataclass
class WeightNormConf(InitializerConf):
    direction: str = "he_normal"  # initializer of v (and, without data_init, of the whole kernel)
    data_init: bool = True  # rescale g and set the bias from the first training batch

    def __post_init__(self):
        super().__post_init__()
        require(self.direction in PLAIN, "direction", self.direction, f"one of {list(PLAIN)}")


SCHEMAS = {"initializer": {
    "zeros": InitializerConf,
    "constant": ConstantConf,
    "random_normal": RandomNormalConf,
    "random_uniform": RandomUniformConf,
    "truncated_normal": RandomNormalConf,
    **{name: InitializerConf for name in PLAIN},
    "orthogonal": OrthogonalConf,
    "variance_scaling": VarianceScalingConf,
    "weight_norm": WeightNormConf,
}}
