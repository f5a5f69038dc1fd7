"""Schemas of the `schedule` group (see tftrain/schema/__init__.py for the conventions)."""

from __future__ import annotations

from dataclasses import dataclass

from tftrain.errors import require


@dataclass
class ScheduleConf:
    name: str = "constant"
    warmup_epochs: float = 0.0
    warmup_start_factor: float = 0.1

    def __post_init__(self):
        require(self.warmup_epochs >= 0, "warmup_epochs", self.warmup_epochs, "a number of epochs >= 0")
        require(0 <= self.warmup_start_factor <= 1, "warmup_start_factor", self.warmup_start_factor,
                "a number in [0, 1]")


SCHEMAS = {"schedule": {"constant": ScheduleConf}}
