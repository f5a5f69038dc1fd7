"""Schemas of the `task` group: what `python -m tftrain` does with the composed config."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainTaskConf:
    name: str = "train"


SCHEMAS = {"task": {"train": TrainTaskConf}}
