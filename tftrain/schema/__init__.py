"""Validation of a composed config, once, before TensorFlow is imported.

Each config group has a schema: a dataclass per option (selected by the option's `name` key) or
one dataclass for the whole group. Merging the YAML into the dataclass catches unknown keys and
wrong types; the dataclass' `__post_init__` checks ranges. Errors become `ConfigError`s that name
the full key, the value received and what is allowed.

Schemas live beside this file, one module per group family, each exposing `SCHEMAS`:
`{group: {option_name: dataclass}}` for groups with options, `{group: dataclass}` otherwise.
"""

from __future__ import annotations

import dataclasses
import typing

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError

from tftrain.errors import ConfigError
from tftrain.schema import callbacks, core, data, initializer, model, schedule, task

SCHEMAS: dict[str, dict | type] = {
    **data.SCHEMAS, **model.SCHEMAS, **core.SCHEMAS, **schedule.SCHEMAS, **initializer.SCHEMAS,
    **callbacks.SCHEMAS, **task.SCHEMAS}

# Top-level keys that are not groups.
ROOT_KEYS = {"output_dir"}


def _type_name(tp) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (list, typing.List):
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if args:  # Optional[X] / Union
        return " or ".join(_type_name(a) for a in args) + " or null"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _field_types(schema: type) -> dict[str, typing.Any]:
    hints = typing.get_type_hints(schema)
    return {f.name: hints[f.name] for f in dataclasses.fields(schema)}


def _check_node(prefix: str, node: DictConfig, schema: type) -> DictConfig:
    fields = _field_types(schema)
    for key in node.keys():
        if key not in fields:
            raise ConfigError(
                f"{prefix}.{key}", node[key], f"the keys of {prefix} are {sorted(fields)}",
                f"remove `{key}` or correct its spelling (add a new key with `+{prefix}.{key}=...` "
                "only where the schema has it)",
            )
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        OmegaConf.to_object(merged)  # runs __post_init__ range checks
    except ConfigError as e:
        raise e.under(prefix) from None
    except MissingMandatoryValue as e:
        raise ConfigError(f"{prefix}.{e.full_key}", "???", "a value: this key is required",
                          f"pass it on the command line, e.g. `{prefix}.{e.full_key}=...`") from None
    except ConfigKeyError as e:
        raise ConfigError(f"{prefix}.{e.full_key}", None, "a key the schema defines",
                          "remove it or correct its spelling (see `python -m tftrain --cfg job`)") from None
    except (ValidationError, OmegaConfBaseException) as e:
        key = str(e.full_key or "")
        leaf = key.split(".")[0].split("[")[0]
        allowed = _type_name(fields[leaf]) if leaf in fields else "a value of the schema's type"
        raise ConfigError(f"{prefix}.{key}" if key else prefix, e.value if hasattr(e, "value") else None,
                          allowed) from None
    return merged


def validate(cfg: DictConfig) -> DictConfig:
    """Return `cfg` with every group checked against its schema and typed; raise ConfigError."""
    out = {}
    for key in cfg.keys():
        if key not in SCHEMAS and key not in ROOT_KEYS and key != "hydra":
            raise ConfigError(key, "...", f"top-level keys are {sorted(set(SCHEMAS) | ROOT_KEYS)}",
                              f"remove `{key}` or correct its spelling")
    for group, schema in SCHEMAS.items():
        if group not in cfg:
            raise ConfigError(group, None, "a config group present in conf/config.yaml defaults",
                              f"add `- {group}: <option>` to the defaults list")
        node = cfg[group]
        if isinstance(schema, dict):
            name = node.get("name")
            if name not in schema:
                raise ConfigError(f"{group}.name", name, f"one of {sorted(schema)}",
                                  f"choose an option with `{group}=<option>`")
            schema = schema[name]
        out[group] = _check_node(group, node, schema)
    for key in ROOT_KEYS:
        if key in cfg:
            out[key] = cfg[key]
    result = OmegaConf.create(out)
    return result
