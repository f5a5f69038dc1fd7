"""Validating a composed (or loaded) config once, before TensorFlow is imported: every group
merged into its schema (types, unknown keys, range checks); a ConfigError names the key."""

from __future__ import annotations

import dataclasses

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError

from tftrain.errors import ConfigError
from tftrain.schema.problem import check_outputs
from tftrain.schema.registry import MULTI, ROOT_KEYS, SCHEMAS, field_types, is_open, schema_of, type_name
from tftrain.schema.spelling import did_you_mean


def _unknown_key(prefix: str, key: str, known, value=None) -> ConfigError:
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
    check_outputs(result)  # the objective and monitors against the problem's metrics
    return result
