"""Schemas of the `initializer` group: how every kernel of the model (built-in or yours) starts.

The target is a `keras.initializers` class (called once per layer, with that layer's own seed
when it takes one) or `tftrain.initializers.WeightNorm`; `bias` is tftrain's: the initializer
of the same layers' biases. `keep` (target null) leaves the model's own initial weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING

from tftrain.errors import require
from tftrain.schema.registry import schema

BIASES = ("zeros", "ones")
MODES = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform")
# The parameter-free variance-scaling options: also the allowed directions of weight_norm.
PLAIN = {"glorot_uniform": "GlorotUniform", "glorot_normal": "GlorotNormal", "he_normal": "HeNormal",
         "he_uniform": "HeUniform", "lecun_normal": "LecunNormal", "lecun_uniform": "LecunUniform"}


@dataclass(kw_only=True)
class InitializerConf:
    _target_: Optional[str] = MISSING
    bias: str = "zeros"  # the biases of the same layers: zeros | ones

    def __post_init__(self):
        require(self.bias in BIASES, "bias", self.bias, f"one of {list(BIASES)}")


@schema("initializer", "keep")
@dataclass(kw_only=True)
class KeepConf(InitializerConf):
    _target_: Optional[str] = None


@schema("initializer", "zeros")
@dataclass(kw_only=True)
class ZerosConf(InitializerConf):
    _target_: Optional[str] = "keras.initializers.Zeros"


@schema("initializer", "constant")
@dataclass(kw_only=True)
class ConstantConf(InitializerConf):
    _target_: Optional[str] = "keras.initializers.Constant"
    value: float = 0.0  # every kernel element


@schema("initializer", "random_normal")
@dataclass(kw_only=True)
class RandomNormalConf(InitializerConf):
    _target_: Optional[str] = "keras.initializers.RandomNormal"
    mean: float = 0.0
    stddev: float = 0.05  # fixed, whatever the layer's size (no fan scaling)

    def __post_init__(self):
        super().__post_init__()
        require(self.stddev > 0, "stddev", self.stddev, "a standard deviation > 0")


@schema("initializer", "truncated_normal")
@dataclass(kw_only=True)
class TruncatedNormalConf(RandomNormalConf):
    _target_: Optional[str] = "keras.initializers.TruncatedNormal"


@schema("initializer", "random_uniform")
@dataclass(kw_only=True)
class RandomUniformConf(InitializerConf):
    _target_: Optional[str] = "keras.initializers.RandomUniform"
    minval: float = -0.05
    maxval: float = 0.05

    def __post_init__(self):
        super().__post_init__()
        require(self.minval < self.maxval, "maxval", self.maxval, f"a number > minval ({self.minval})",
                "set initializer.minval < initializer.maxval, e.g. initializer.minval=-0.05 initializer.maxval=0.05")


def _plain(option: str, cls_name: str) -> type:
    @dataclass(kw_only=True)
    class Plain(InitializerConf):
        _target_: Optional[str] = f"keras.initializers.{cls_name}"

    Plain.__name__ = Plain.__qualname__ = f"{cls_name}Conf"
    return schema("initializer", option)(Plain)


for _option, _cls_name in PLAIN.items():
    _plain(_option, _cls_name)


@schema("initializer", "orthogonal")
@dataclass(kw_only=True)
class OrthogonalConf(InitializerConf):
    _target_: Optional[str] = "keras.initializers.Orthogonal"
    gain: float = 1.0  # multiplies the orthogonal matrix; sqrt(2) suits ReLU

    def __post_init__(self):
        super().__post_init__()
        require(self.gain > 0, "gain", self.gain, "a number > 0 (e.g. sqrt(2) for ReLU)")


@schema("initializer", "variance_scaling")
@dataclass(kw_only=True)
class VarianceScalingConf(InitializerConf):
    _target_: Optional[str] = "keras.initializers.VarianceScaling"
    scale: float = 1.0  # variance = scale / fan
    mode: str = "fan_in"  # fan_in | fan_out | fan_avg
    distribution: str = "truncated_normal"  # truncated_normal | untruncated_normal | uniform

    def __post_init__(self):
        super().__post_init__()
        require(self.scale > 0, "scale", self.scale, "a number > 0 (variance = scale / fan)")
        require(self.mode in MODES, "mode", self.mode, f"one of {list(MODES)}")
        require(self.distribution in DISTRIBUTIONS, "distribution", self.distribution,
                f"one of {list(DISTRIBUTIONS)}")


@schema("initializer", "weight_norm")
@dataclass(kw_only=True)
class WeightNormConf(InitializerConf):
    _target_: Optional[str] = "tftrain.initializers.WeightNorm"
    direction: str = "he_normal"  # initializer of v (and, without data_init, of the whole kernel)
    data_init: bool = True  # rescale g and set the bias from the first training batch (mean 0, std 1)

    def __post_init__(self):
        super().__post_init__()
        require(self.direction in PLAIN, "direction", self.direction, f"one of {list(PLAIN)}")


@schema("initializer", "lsuv")
@dataclass(kw_only=True)
class LSUVConf(InitializerConf):
    _target_: Optional[str] = "tftrain.initializers.LSUV"
    tol: float = 0.1  # stop rescaling a layer once its output variance is within tol of 1 (the paper's Tol_var)
    max_iter: int = 10  # the most rescalings per layer (the paper's T_max)

    def __post_init__(self):
        super().__post_init__()
        require(0 < self.tol < 1, "tol", self.tol, "a number in (0, 1), e.g. 0.1")
        require(self.max_iter >= 1, "max_iter", self.max_iter, "an integer >= 1, e.g. 10")
