"""The schema registry: each group's dataclasses by name (Hydra's ConfigStore holds them too)."""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

# group -> {schema name: dataclass}
SCHEMAS: dict[str, dict[str, type]] = {}

# Top-level keys that are not groups.
ROOT_KEYS = {"output_dir"}

# Groups whose options are chosen together (`logger=[tensorboard,mlflow]`): the group's node maps
# each chosen option's name to its node, and may be absent (`logger=[]`).
MULTI = {"logger"}


def schema(group: str, name: str):
    """Class decorator: register a dataclass as the schema `schema/<group>/<name>`."""

    def register(cls):
        ConfigStore.instance().store(group=f"schema/{group}", name=name, node=cls)
        SCHEMAS.setdefault(group, {})[name] = cls
        return cls

    return register


def default_target(cls: type) -> str | None:
    field = {f.name: f for f in dataclasses.fields(cls)}.get("_target_")
    return None if field is None or field.default is MISSING else field.default


def is_open(cls: type) -> bool:
    """Whether the schema takes extra keys (passed on to a user's own `_target_`)."""
    return bool(getattr(cls, "OPEN", False))


def schema_of(group: str, node) -> type | None:
    """The schema of a group's node: its structured type when Hydra composed it, else the schema
    whose `_target_` it names (a user's own target: the group's open schema, if any)."""
    options = SCHEMAS.get(group, {})
    kind = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
    if kind in options.values():
        return kind
    if len(options) == 1 and default_target(next(iter(options.values()))) is None:
        return next(iter(options.values()))
    target = node.get("_target_") if hasattr(node, "get") else None
    by_target = [cls for cls in options.values() if default_target(cls) == target]
    if by_target:
        return by_target[0]
    open_ones = [cls for cls in options.values() if is_open(cls)]
    return open_ones[0] if open_ones else None


def type_name(tp) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (list, typing.List):
        return f"a list of {type_name(args[0])}" if args else "a list"
    if typing.get_origin(tp) in (dict, typing.Dict):
        return "a mapping"
    if args:  # Optional[X] / Union
        return " or ".join(type_name(a) for a in args) + " or null"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def field_types(cls: type) -> dict[str, typing.Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}



def meanings(cls: type) -> dict[str, str]:
    """Each field's one-line meaning: the comment after it in the schema's source (`lr: float =
    0.001  # the learning rate`), inherited fields included. `--help` shows them."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for m in re.finditer(r"^\s+(\w+)\s*:[^#\n]*#\s*(.+)$", source, re.M):
            out[m.group(1)] = m.group(2).strip()
    return out
