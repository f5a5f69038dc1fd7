"""Schemas of the `data` group (see tftrain/schema/__init__.py for the conventions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List

from tftrain.errors import require



@dataclass
class DigitsConf:
    name: str = "digits"
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    split_seed: int = 0

    def __post_init__(self):
        for key in ("val_fraction", "test_fraction"):
            require(0 < getattr(self, key) < 1, key, getattr(self, key), "a fraction in (0, 1)")
        require(self.val_fraction + self.test_fraction < 1, "val_fraction", self.val_fraction,
                "val_fraction + test_fraction < 1, leaving examples to train on")


@dataclass
class SyntheticConf:
    name: str = "synthetic"
    num_train: int = 2048
    num_val: int = 256
    num_test: int = 512
    input_shape: List[int] = field(default_factory=lambda: [16])
    num_classes: int = 10
    noise: float = 1.0

    def __post_init__(self):
        for key in ("num_train", "num_val", "num_test"):
            require(getattr(self, key) > 0, key, getattr(self, key), "an integer > 0")
        require(len(self.input_shape) > 0 and all(d > 0 for d in self.input_shape), "input_shape",
                self.input_shape, "a non-empty list of positive integers, e.g. [16] or [32, 32, 3]")
        require(self.num_classes >= 2, "num_classes", self.num_classes, "an integer >= 2")
        require(self.noise >= 0, "noise", self.noise, "a number >= 0")


@dataclass
class NpzConf:
    name: str = "npz"
    path: str = "???"
    val_fraction: float = 0.1
    split_seed: int = 0

    def __post_init__(self):
        require(Path(self.path).expanduser().is_file(), "path", self.path,
                "the path of an existing .npz file with x_train, y_train, x_test, y_test "
                "(and optionally x_val, y_val)", "pass data.path=/absolute/path/to/file.npz")
        require(0 < self.val_fraction < 1, "val_fraction", self.val_fraction, "a fraction in (0, 1)")


SCHEMAS = {"data": {"digits": DigitsConf, "synthetic": SyntheticConf, "npz": NpzConf}}
