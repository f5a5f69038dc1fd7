"""The config's schemas, and validating a composed config once, before TensorFlow is imported.

Hydra's structured-config schema pattern: each schema is a dataclass registered in Hydra's
ConfigStore as `schema/<group>/<name>`, and each option's YAML file extends it:

    # conf/optimizer/momentum.yaml
    defaults:
      - /schema/optimizer/sgd@_here_
    lr: 0.05
    momentum: 0.9

The dataclass holds every key's type, default and meaning (a comment) and its range checks
(`__post_init__`); the YAML holds only the option's own presets. So each default is written
once, and Hydra rejects unknown keys and wrong types while composing (`--cfg job` and a sweep
fail before any job starts). `validate(cfg)` then runs the range checks of every group (and
checks configs that were not composed by Hydra, e.g. a loaded config.yaml) and raises a
`ConfigError` naming the key, the value and the fix.

A schema's `_target_` default names what the option builds (`hydra.utils.instantiate`
convention); options that share a target share a schema (sgd, momentum and nesterov are all
`keras.optimizers.SGD`). Schemas marked `OPEN` (the `custom` options) accept extra keys: they go
to the user's own `_target_`. Adding an option: one YAML file, plus one schema class (decorated
with `@schema`) where the target is new.
"""

from __future__ import annotations

import dataclasses
import typing

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError

from tftrain.errors import ConfigError

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


def _unknown_key(prefix: str, key: str, known, value=None) -> ConfigError:
    from tftrain.schema.explain import did_you_mean

    hint = did_you_mean(key, known)
    return ConfigError(f"{prefix}.{key}", value, f"the keys of {prefix}: {sorted(k for k in known if k != '_target_')}",
                       (f"did you mean `{prefix}.{hint}`? " if hint else "") +
                       f"remove `{key}` or correct its spelling (see `python -m tftrain --cfg job`)")


def check_node(prefix: str, node, cls: type):
    """`node` merged into its schema `cls`, range checks run; ConfigError naming the key otherwise.
    An open schema keeps the keys it does not know (for the user's target)."""
    types = field_types(cls)
    data = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    extra = {k: v for k, v in data.items() if k not in types}
    if extra and not is_open(cls):
        key = next(iter(extra))
        raise _unknown_key(prefix, key, types, extra[key])
    known = {k: v for k, v in data.items() if k in types}
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), known)
        # __post_init__ runs the range checks (and may normalize a value, e.g. a column 4 -> "4").
        merged = OmegaConf.structured(OmegaConf.to_object(merged))
    except ConfigError as e:
        raise e.under(prefix) from None
    except MissingMandatoryValue as e:
        raise ConfigError(f"{prefix}.{e.full_key}", "???", "a value: this key is required",
                          f"pass it on the command line, e.g. `{prefix}.{e.full_key}=...`") from None
    except ConfigKeyError as e:  # an unknown key inside a nested node (data.augment.rotate)
        full = str(e.full_key or e.key)
        nested = getattr(e, "object_type", None)
        known = field_types(nested) if dataclasses.is_dataclass(nested) else types
        parent, _, leaf = full.rpartition(".")
        raise _unknown_key(f"{prefix}.{parent}" if parent else prefix, leaf, known) from None
    except (ValidationError, OmegaConfBaseException) as e:
        key = str(e.full_key or "")
        leaf = key.split(".")[0].split("[")[0]
        allowed = type_name(types[leaf]) if leaf in types else "a value of the schema's type"
        value = known.get(leaf, getattr(e, "value", None))
        raise ConfigError(f"{prefix}.{key}" if key else prefix, value, allowed) from None
    if extra:
        merged = OmegaConf.merge(OmegaConf.create(OmegaConf.to_container(merged)), extra)
    return merged


def _check_option(prefix: str, group: str, node):
    cls = schema_of(group, node)
    if cls is None:  # a user's own target in a group without an open schema: its signature checks it
        if not hasattr(node, "keys"):
            raise ConfigError(prefix, node, "a mapping of the option's keys (with `_target_` for your own class)")
        return OmegaConf.create(OmegaConf.to_container(node, resolve=True))
    return check_node(prefix, node, cls)


def validate(cfg: DictConfig) -> DictConfig:
    """Return `cfg` with every group checked against its schema (types, unknown keys, ranges)
    and the interpolations resolved; raise ConfigError naming the key otherwise."""
    from tftrain.schema.explain import did_you_mean

    groups = set(SCHEMAS)
    for key in cfg.keys():
        if key not in groups and key not in ROOT_KEYS and key != "hydra":
            hint = did_you_mean(str(key), groups | ROOT_KEYS)
            raise ConfigError(key, "...", f"top-level keys are {sorted(groups | ROOT_KEYS)}",
                              (f"did you mean `{hint}`? " if hint else "") + f"remove `{key}` or correct its spelling")
    out = {}
    for group in SCHEMAS:
        if group in MULTI:
            nodes = cfg.get(group) or {}
            out[group] = {name: _check_option(f"{group}.{name}", group, node) for name, node in nodes.items()}
            continue
        if group not in cfg:
            raise ConfigError(group, None, "a config group present in conf/config.yaml's defaults",
                              f"add `- {group}: <option>` to the defaults list")
        out[group] = _check_option(group, group, cfg[group])
    for key in ROOT_KEYS:
        if key in cfg:
            out[key] = cfg[key]
    result = OmegaConf.create(out)
    problem.check_outputs(result)  # the objective and monitors against the problem's metrics
    return result


# Importing the schema modules registers them (each module: one group family).
from tftrain.schema import callbacks, data, initializer, logger, model, optimizer, problem, schedule, task, trainer  # noqa: E402,F401,I001

# ${tftrain_direction:${trainer.objective},${trainer.objective_mode},${problem.metrics}}: maximize | minimize
OmegaConf.register_new_resolver("tftrain_direction", problem.direction, replace=True)


def _dirname(overrides, exclude, params=None) -> str:
    import os

    from tftrain.rundirs import short_dirname

    # What the sweep varies: its sweeper's params (presets, Optuna's space) and the command line's
    # sweeps (TFTRAIN_SWEPT_KEYS, set by tftrain's CLI).
    first = [str(k) for k in (params or {})] + [k for k in os.environ.get("TFTRAIN_SWEPT_KEYS", "").split(",") if k]
    return short_dirname(list(overrides), list(exclude or ()), first)


# ${tftrain_dirname:${hydra.overrides.task},<keys to leave out>,<the sweeper's params>}: a sweep
# job's short directory name
OmegaConf.register_new_resolver("tftrain_dirname", _dirname, replace=True)


def meanings(cls: type) -> dict[str, str]:
    """Each field's one-line meaning: the comment after it in the schema's source (`lr: float =
    0.001  # the learning rate`), inherited fields included. `--help` shows them."""
    import inspect
    import re

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
