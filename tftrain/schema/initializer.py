"""Schemas of the `initializer` group (see tftrain/schema/__init__.py for the conventions)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class InitializerConf:
    name: str = "glorot_uniform"
    bias: str = "zeros"


SCHEMAS = {"initializer": {"glorot_uniform": InitializerConf, "he_normal": InitializerConf}}
