"""Calling a config group's `_target_` through Hydra's `instantiate` with what tftrain supplies,
every error mapped to the config key it came from.

The lower layers (tftrain.data, tftrain.models, tftrain.schedules, tftrain.initializers) raise
their own `ArgumentError` / `DataError`; here they become `ConfigError`s naming `group.key`. A
user's own target (model=custom, data=custom, optimizer=custom, callbacks.extra) gets the same
contract: a target that does not import, a signature that does not take what tftrain passes, a
return value of the wrong kind — one paragraph, no traceback; an exception inside the user's own
code shows the traceback of their frames, since that is what they need to fix.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
import traceback
from pathlib import Path
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from tftrain.errors import ArgumentError, ConfigError, TftrainError, UserCodeError
from tftrain.schema.data import PIPELINE_KEYS

log = logging.getLogger("tftrain")

_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)  # tftrain/
_OURS = ("tftrain.", "keras.")
_LIBRARY_DIRS = tuple(str(Path(importlib.import_module(m).__file__).resolve().parent)
                      for m in ("hydra", "omegaconf"))


def label(node, group: str | None = None) -> str:
    """A short name for a group's option: Hydra's choice on the command line (`adam`), else the
    last part of its `_target_` (`Adam`)."""
    if group is not None:
        try:
            from hydra.core.hydra_config import HydraConfig

            return str(HydraConfig.get().runtime.choices[group])
        except (ValueError, KeyError, ImportError):
            pass
    target = node.get("_target_") if hasattr(node, "get") else None
    return str(target).rsplit(".", 1)[-1] if target else "?"


def _user_dirs() -> list[str]:
    """Where a user's module is looked for besides the installed packages: the directory the
    command runs in (Hydra's original one, should a job have changed directory)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return [HydraConfig.get().runtime.cwd]
    except (ValueError, ImportError):
        return [os.getcwd()]


def locate(path: str, key: str):
    """The object `path` (`module.attr`) names; ConfigError when it does not import."""
    for directory in _user_dirs():
        if directory not in sys.path:
            sys.path.append(directory)
    parts = str(path).split(".")
    error = None
    for i in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:i])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
                error = e
                continue  # not a module: try a shorter prefix
            raise user_error(key, path, f"importing {module_name} failed ({type(e).__name__}: {e})", e) from None
        except Exception as e:  # noqa: BLE001 - the user's module raised while being imported
            raise user_error(key, path, f"importing {module_name} failed ({type(e).__name__}: {e})", e) from None
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                public = sorted(a for a in dir(obj) if not a.startswith("_"))[:30]
                raise ConfigError(key, path, f"an importable `module.name`: {'.'.join(parts[:parts.index(attr)])} has no "
                                  f"attribute {attr!r} (it has {public})", f"correct `{key}`")
            obj = getattr(obj, attr)
        return obj
    searched = ", ".join(_user_dirs())
    raise ConfigError(key, path, f"an importable `module.name`, e.g. mymodule.build ({error or 'no module part'}; "
                      f"searched the directory the command runs in ({searched}) and the installed packages)",
                      f"put {parts[0]}.py in {searched}, or install the package that provides it, and set `{key}` "
                      "to module.function")


def _user_frames(error: BaseException) -> str:
    """The traceback of `error` without tftrain's, Hydra's and OmegaConf's own frames."""
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not f.filename.startswith((_PACKAGE_DIR, *_LIBRARY_DIRS))]
    return "".join(traceback.format_list(frames)) + "".join(traceback.format_exception_only(type(error), error))


def user_error(key: str, target: str, what: str, error: BaseException) -> UserCodeError:
    return UserCodeError(f"`{key}`={target!r}: {what}. Fix: correct your code; its traceback follows.",
                         "Traceback (your code, most recent call last):\n" + _user_frames(error))


def _signature_error(key: str, target: str, fn, args: tuple, kwargs: dict) -> ConfigError | None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without one: let the call decide
        return None
    try:
        signature.bind(*args, **kwargs)
    except TypeError as e:
        given = [*(["<positional>"] * len(args)), *kwargs]
        return ConfigError(key, target, f"a callable taking what tftrain passes ({', '.join(map(str, given))}); "
                           f"{target}{signature} does not: {e}",
                           f"change its signature, or remove the keys it does not take from `{key.rsplit('.', 1)[0]}`")
    return None


def call_target(group: str, node, *args, arg_keys: dict[str, str] | None = None, skip: frozenset = frozenset(),
                **supplied) -> Any:
    """`instantiate(node, *args, **supplied)` (minus the keys in `skip`, which are tftrain's), with
    errors mapped to config keys: a lower layer's ArgumentError(arg) becomes ConfigError naming
    `arg_keys[arg]` or `group.arg`."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    key = f"{group}._target_"
    target = node.get("_target_")
    if not isinstance(target, str) or not target:
        raise ConfigError(key, target, "an importable `module.name`", f"set `{key}=mymodule.name`")
    fn = locate(target, key)
    container = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    own = {k: v for k, v in container.items() if k not in skip}
    kwargs = {k: v for k, v in own.items() if k != "_target_"}
    error = _signature_error(key, target, fn, args, {**kwargs, **supplied})
    if error is not None:
        raise error
    try:
        return instantiate(own, *args, **supplied, _convert_="all")
    except InstantiationException as e:
        cause = e.__cause__ or e
    except Exception as e:  # noqa: BLE001 - classified below
        cause = e
    if isinstance(cause, ArgumentError):
        mapped = (arg_keys or {}).get(cause.arg) or (f"{group}.{cause.arg}" if cause.arg in own else group)
        value = own.get(cause.arg, cause.value) if mapped.startswith(f"{group}.") else cause.value
        raise ConfigError(mapped, value, cause.requirement) from None
    if isinstance(cause, TftrainError):
        raise cause from None
    if not target.startswith(_OURS):
        raise user_error(key, target, f"it raised {type(cause).__name__}: {cause}", cause) from None
    raise cause


def preflight(cfg) -> None:
    """Import every user-facing target and check it takes what tftrain will pass, before any data
    is read: a misspelt `_target_` or a signature mismatch fails at once."""
    from tftrain.schema.model import OWN_KEYS as MODEL_OWN_KEYS
    from tftrain.schema.optimizer import OWN_KEYS as OPTIMIZER_OWN_KEYS

    checks = [("model", cfg.model, (("input_shape", "num_outputs"), MODEL_OWN_KEYS, {})),
              ("data", cfg.data, ((), PIPELINE_KEYS, {})),
              ("optimizer", cfg.optimizer, ((), OPTIMIZER_OWN_KEYS, {"learning_rate": None}))]
    checks += [(f"callbacks.extra[{i}]", node, ((), set(), {})) for i, node in enumerate(cfg.callbacks.get("extra") or [])]
    for key, node, (args, skip, supplied) in checks:
        target = node.get("_target_")
        if not isinstance(target, str) or not target:
            raise ConfigError(f"{key}._target_", target, "an importable `module.name`", f"set `{key}._target_=mymodule.name`")
        fn = locate(target, f"{key}._target_")
        container = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
        kwargs = {k: v for k, v in container.items() if k != "_target_" and k not in skip}
        error = _signature_error(f"{key}._target_", target, fn, tuple(None for _ in args), {**kwargs, **supplied})
        if error is not None:
            raise error


def require_returns(key: str, target: str, value, kind: type | tuple, what: str) -> None:
    if not isinstance(value, kind):
        raise UserCodeError(f"`{key}`={target!r} returned a {type(value).__name__}, not {what}. Fix: return {what}.")
