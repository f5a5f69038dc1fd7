"""Schemas of the `model` group (see tftrain/schema/__init__.py for the conventions).

Options every model shares (`ModelConf`): `activation` of the hidden layers, `batch_norm` after
every hidden kernel layer (before the activation), `dropout` rate, `l2` penalty on every kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from tftrain.errors import require

# Keras activation names (checked against keras.activations by a test; not imported here,
# because validation runs before TensorFlow is loaded).
ACTIVATIONS = ("relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "silu", "swish", "mish", "tanh",
               "sigmoid", "hard_sigmoid", "softplus", "softsign", "linear")


@dataclass
class ModelConf:
    name: str = "mlp"
    activation: str = "relu"
    batch_norm: bool = False
    dropout: float = 0.0
    l2: float = 0.0  # adds l2 * sum(kernel**2) per kernel to the loss (gradient 2 * l2 * kernel)

    def __post_init__(self):
        require(self.activation in ACTIVATIONS, "activation", self.activation, f"one of {list(ACTIVATIONS)}")
        require(0 <= self.dropout < 1, "dropout", self.dropout, "a rate in [0, 1)")
        require(self.l2 >= 0, "l2", self.l2, "a number >= 0 (0: no penalty)")


@dataclass
class MlpConf(ModelConf):
    hidden_units: List[int] = field(default_factory=lambda: [256, 128])

    def __post_init__(self):
        super().__post_init__()
        require(all(u > 0 for u in self.hidden_units), "hidden_units", self.hidden_units,
                "a list of positive integers (may be empty)")


@dataclass
class CnnConf(ModelConf):
    name: str = "cnn"
    filters: List[int] = field(default_factory=lambda: [32, 64])
    kernel_size: int = 3
    dense_units: int = 128

    def __post_init__(self):
        super().__post_init__()
        require(len(self.filters) > 0 and all(f > 0 for f in self.filters), "filters", self.filters,
                "a non-empty list of positive integers")
        require(self.kernel_size > 0, "kernel_size", self.kernel_size, "an integer > 0")
        require(self.dense_units > 0, "dense_units", self.dense_units, "an integer > 0")


@dataclass
class ResnetConf(ModelConf):
    name: str = "resnet"
    batch_norm: bool = True
    filters: List[int] = field(default_factory=lambda: [16, 32, 64])  # one stage each
    blocks_per_stage: int = 3  # depth 6 * blocks_per_stage + 2 with 3 stages: 3 -> ResNet-20

    def __post_init__(self):
        super().__post_init__()
        require(len(self.filters) > 0 and all(f > 0 for f in self.filters), "filters", self.filters,
                "a non-empty list of positive integers (the filters of each stage)")
        require(self.blocks_per_stage > 0, "blocks_per_stage", self.blocks_per_stage, "an integer > 0")


SCHEMAS = {"model": {"mlp": MlpConf, "cnn": CnnConf, "resnet": ResnetConf}}
