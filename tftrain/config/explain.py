"""Hydra's composition errors as tftrain's one-paragraph messages, with "did you mean" hints.

Hydra raises these while it composes the config from the overrides (before any job runs): an
unknown group or key, an unknown option, a value of the wrong type, override syntax it cannot
parse. `explain(error, overrides)` turns each into a ConfigError/ComposeError naming the key,
the value and the fix; the CLI prints it and exits with status 2.
"""

from __future__ import annotations

import re

from tftrain.errors import ComposeError, ConfigError
from tftrain.schema.spelling import did_you_mean

def _value(text: str):
    """An override's value as YAML reads it (3 -> 3, 0.1 -> 0.1, abc -> 'abc')."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


# Keys that moved: the old key's prefix -> what to write instead.
MOVED = {
    "callbacks.tensorboard": "TensorBoard is a logger now: `logger.tensorboard.<key>` (e.g. "
                             "logger.tensorboard.update_freq=10); turn it off with `logger=[]` or choose other loggers "
                             "with `logger=[csv,mlflow]`",
    "callbacks.csv_logger": "history.csv is always written now; per-step values go to steps.csv with `logger=csv` "
                            "(or 'logger=[tensorboard,csv]')",
    "trainer.seeds": "trainer.seeds=N is a command-line shorthand for a sweep over trainer.seed=0..N-1 "
                     "(`python -m tftrain trainer.seeds=3 ...`); in a composed config set trainer.seed, one run per seed",
}


def _moved(key: str) -> str | None:
    return next((fix for old, fix in MOVED.items() if key == old or key.startswith(old + ".")), None)


def _hint(key: str, candidates) -> str:
    hint = did_you_mean(key.rsplit(".", 1)[-1], candidates)
    if hint is None:
        return ""
    return f"did you mean `{key.rsplit('.', 1)[0] + '.' + hint if '.' in key else hint}`? "


def _override_of(key: str, overrides: list[str]) -> str:
    for o in overrides:
        if o.lstrip("+~").split("=", 1)[0] == key:
            return o
    return key


def _node_at(path: str, overrides: list[str], bad: str):
    """The composed config's node at `path` (the root for ""), composed without the override that
    failed; None when that does not compose either."""
    from tftrain.config.files import compose_raw

    try:
        node = compose_raw([o for o in overrides if o != bad])
    except Exception:  # noqa: BLE001 - a second bad override: no hint, the message stands
        return None
    for part in [p for p in path.split(".") if p]:
        node = node.get(part) if hasattr(node, "get") else None
    return node if hasattr(node, "keys") else None


def _keys_at(path: str, overrides: list[str], bad: str) -> list[str]:
    node = _node_at(path, overrides, bad)
    return [str(k) for k in node.keys()] if node is not None else []


def _groups() -> list[str]:
    from tftrain.config.files import config_dir

    return sorted(p.name for p in config_dir().iterdir() if p.is_dir() and not p.name.startswith(("_", "hydra")))


def _options(group: str) -> list[str]:
    from tftrain.config.files import config_dir

    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def _not_a_list(key: str, value, overrides: list[str], bad: str) -> ConfigError:
    """A single value given to a list key (`model.hidden_units=128`): the same value in brackets."""
    parent, _, leaf = key.rpartition(".")
    node = _node_at(parent, overrides, bad)
    current = node.get(leaf) if node is not None else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        example = f"[{value}]"
    elif current is not None and hasattr(current, "__len__") and len(current):
        example = f"[{current[-1]}]"
    else:
        example = "[...]"
    several = f"[{','.join(str(v) for v in current)}]" if current is not None and len(current) > 1 else None
    return ConfigError(key, value, "a list in brackets" + (f" (its default: {several})" if several else ""),
                       f"write `{key}={example}`" + (f" (several: `{key}={several}`" if several else " (") +
                       "; none: `[]`)")


def explain(error: BaseException, overrides: list[str]) -> ConfigError | ComposeError:
    """A one-paragraph error for Hydra's exception `error`, raised composing `overrides`."""
    text = str(error)
    cause = error.__cause__
    cause_text = str(cause) if cause is not None else ""
    name = type(error).__name__

    if name == "MissingConfigException":  # an unknown option: Could not find 'optimizer/adma'
        m = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
        if m:
            group, option = m.group(1), m.group(2)
            options = _options(group)
            hint = did_you_mean(option, options)
            return ConfigError(group, option, f"one of the {group} options: {', '.join(options)}",
                               (f"did you mean `{group}={hint}`? " if hint else "") +
                               f"choose an option with `{group}=<option>`")
        m = re.search(r"Could not find '([^']+)'", text)
        if m:
            hint = did_you_mean(m.group(1), _groups())
            return ComposeError(f"There is no config `{m.group(1)}`. Fix: " +
                                (f"did you mean `{hint}`? " if hint else "") +
                                f"the config groups are {', '.join(_groups())}.")

    m = re.search(r"Could not override '([^']+)'", text)
    if m:  # an unknown key or group
        key = m.group(1)
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        override = _override_of(key, overrides)
        if _moved(key):
            return ConfigError(key, _value(override.split("=", 1)[-1]) if "=" in override else None,
                               "a key of the current config (this one moved)", _moved(key))
        if not parent:
            known = sorted(set(_groups()) | set(_keys_at("", overrides, override)) - {"hydra"})
            return ConfigError(key, _value(override.split("=", 1)[-1]) if "=" in override else None,
                               f"a config group or top-level key: {', '.join(known)}",
                               _hint(key, known) + f"correct the spelling of `{key}` in `{override}`")
        from tftrain.schema import SCHEMAS, is_open, schema_of

        node = _node_at(parent, overrides, override)
        head, _, rest = key.partition(".")
        top = sorted(set(_groups()) | set(_keys_at("", overrides, override)) - {"hydra"})
        if node is None and head not in top:  # the group itself misspelt: optimzer.lr
            hint = did_you_mean(head, top)
            return ConfigError(key, _value(override.split("=", 1)[-1]) if "=" in override else None,
                               f"a key under a config group or top-level key: {', '.join(top)}",
                               (f"did you mean `{hint}.{rest}`? " if hint else "") +
                               f"correct the spelling of `{head}` in `{override}`")
        known = sorted(str(k) for k in (node.keys() if node is not None else []) if k != "_target_")
        raw = override.split("=", 1)[-1] if "=" in override else None
        if key.rsplit(".", 1)[-1] in known and f"full_key: {key}." in cause_text:
            # The key exists and holds a mapping: Hydra adds keys to it only with `++`.
            return ConfigError(key, _value(raw) if raw is not None else None,
                               "a mapping, set with `++` (Hydra adds keys to a mapping only with ++)",
                               f"write `++{key}={raw or '{...}'}`")
        open_schema = node is not None and parent in SCHEMAS and is_open(schema_of(parent, node) or object)
        return ConfigError(key, _value(raw) if raw is not None else None,
                           f"a key of `{parent}`: {', '.join(known)}" if known else f"a key of `{parent}`",
                           _hint(key, known) + f"correct the spelling of `{key}` (see `python -m tftrain --help`)" +
                           (f"; a key your own _target_ takes is added with ++: `++{key}={raw or '...'}`"
                            if open_schema else ""))

    m = re.search(r"Error merging override (\S+?)=(.*)", text)
    if m:  # a value of the wrong type for the schema
        key, value = m.group(1), m.group(2)
        if "is not a ListConfig, list or tuple" in cause_text:
            return _not_a_list(key.lstrip("+~"), _value(value), overrides, _override_of(key, overrides))
        want = re.search(r"could not be converted to (\w+)", cause_text)
        allowed = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false",
                   "String": "a string"}.get(want.group(1), want.group(1)) if want else cause_text.split("\n")[0]
        return ConfigError(key.lstrip("+~"), _value(value), allowed)

    if name == "OverrideParseException" or "LexerNoViableAltException" in text or "mismatched input" in text:
        bad = next((o for o in overrides if "~" in o or any(ord(c) > 127 for c in o)), None)
        quote = (f" Quote the value, and the whole override for the shell: `'{bad.split('=', 1)[0]}=\"{bad.split('=', 1)[-1]}\"'`"
                 if bad and "=" in bad else "")
        first = text.split("\n")[0]
        return ComposeError(f"Cannot read the override{f' `{bad}`' if bad else ''}: {first}. Fix: Hydra's override "
                            f"grammar treats characters such as ~ * ? [ ] {{ }} and non-ASCII letters specially.{quote}"
                            " (https://hydra.cc/docs/advanced/override_grammar/basic)")

    first = " ".join(line.strip() for line in text.splitlines() if line.strip())[:600]
    more = f" ({cause_text.splitlines()[0]})" if cause_text else ""
    return ComposeError(f"Hydra could not compose the config: {first}{more}. Fix: check the overrides "
                        "(`python -m tftrain --help` lists the groups, options and keys).")
