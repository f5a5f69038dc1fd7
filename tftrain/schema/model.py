"""Schemas of the `model` group (see tftrain/schema/__init__.py for the conventions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from tftrain.errors import require



@dataclass
class MlpConf:
    name: str = "mlp"
    hidden_units: List[int] = field(default_factory=lambda: [256, 128])
    activation: str = "relu"
    dropout: float = 0.0

    def __post_init__(self):
        require(all(u > 0 for u in self.hidden_units), "hidden_units", self.hidden_units,
                "a list of positive integers (may be empty)")
        require(0 <= self.dropout < 1, "dropout", self.dropout, "a rate in [0, 1)")


@dataclass
class CnnConf:
    name: str = "cnn"
    filters: List[int] = field(default_factory=lambda: [32, 64])
    kernel_size: int = 3
    dense_units: int = 128
    activation: str = "relu"
    dropout: float = 0.0

    def __post_init__(self):
        require(len(self.filters) > 0 and all(f > 0 for f in self.filters), "filters", self.filters,
                "a non-empty list of positive integers")
        require(self.kernel_size > 0, "kernel_size", self.kernel_size, "an integer > 0")
        require(self.dense_units > 0, "dense_units", self.dense_units, "an integer > 0")
        require(0 <= self.dropout < 1, "dropout", self.dropout, "a rate in [0, 1)")


SCHEMAS = {"model": {"mlp": MlpConf, "cnn": CnnConf}}
