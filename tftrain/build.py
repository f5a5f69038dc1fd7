"""Components from a validated config: each group's `_target_` called through Hydra's
`instantiate` with what tftrain supplies, and every error mapped to the config key it came from.

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

_PACKAGE_DIR = str(Path(__file__).resolve().parent)
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
            raise _user_error(key, path, f"importing {module_name} failed ({type(e).__name__}: {e})", e) from None
        except Exception as e:  # noqa: BLE001 - the user's module raised while being imported
            raise _user_error(key, path, f"importing {module_name} failed ({type(e).__name__}: {e})", e) from None
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


def _user_error(key: str, target: str, what: str, error: BaseException) -> UserCodeError:
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
        raise _user_error(key, target, f"it raised {type(cause).__name__}: {cause}", cause) from None
    raise cause


def preflight(cfg) -> None:
    """Import every user-facing target and check it takes what tftrain will pass, before any data
    is read: a misspelt `_target_` or a signature mismatch fails at once."""
    checks = [("model", cfg.model, (("input_shape", "num_outputs"), {"l2"}, {})),
              ("data", cfg.data, ((), PIPELINE_KEYS, {})),
              ("optimizer", cfg.optimizer, ((), {"lr"}, {"learning_rate": None}))]
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


# ---------------------------------------------------------------- data


def pipeline_of(cfg):
    """The data group's pipeline keys as tftrain.data.Pipeline."""
    from tftrain.data.pipeline import Augment, Pipeline

    d = cfg.data
    aug = d.get("augment") or {}
    return Pipeline(val_fraction=d.get("val_fraction"), test_fraction=d.get("test_fraction"),
                    split_seed=int(d.get("split_seed", 0)), normalize=d.get("normalize"),
                    normalize_target=bool(d.get("normalize_target", False)),
                    augment=Augment(aug.get("flip"), float(aug.get("translate", 0.0))), cache=d.get("cache"),
                    shuffle_buffer=d.get("shuffle_buffer"), scan_limit=d.get("scan_limit"), name=label(d))


def build_data(cfg, strategy=None, problem=None):
    """The configured data's checked and split pipelines (tftrain.data.Datasets); `problem`
    (default: the configured one) checks the targets. With trainer.accumulate_steps=N the
    pipeline's batches are batch_size / N and its steps count updates of N batches."""
    from tftrain.data.pipeline import accumulated, build_datasets

    problem = problem or build_problem(cfg)
    source = call_target("data", cfg.data, skip=PIPELINE_KEYS)
    t = cfg.trainer
    n = int(t.get("accumulate_steps", 1))
    try:
        data = build_datasets(source, pipeline_of(cfg), batch_size=t.batch_size // n, seed=t.seed, strategy=strategy,
                              targets=problem)
        return accumulated(data, n)
    except ArgumentError as e:
        key = {"batch_size": "trainer.batch_size", "accumulate_steps": "trainer.accumulate_steps"}.get(
            e.arg, f"data.{e.arg}")
        value = {"trainer.batch_size": t.batch_size, "trainer.accumulate_steps": n}.get(key, e.value)
        requirement = e.requirement + (f" (each of the {n} batches of an update holds batch_size / {n} = "
                                       f"{t.batch_size // n})" if key == "trainer.batch_size" and n > 1 else "")
        raise ConfigError(key, value, requirement) from None


# ---------------------------------------------------------------- model


def build_model(cfg, input_shape, num_outputs: int, normalization: dict | None = None,
                target_normalization: dict | None = None):
    """The configured model with the initializer group and `model.l2` applied, inside the
    preprocessing layers that make it take raw inputs (tftrain.models.with_preprocessing; call
    inside the strategy's scope). A saved model is used as it is: it takes raw inputs already."""
    import keras

    from tftrain.initializers import add_l2
    from tftrain.models import with_preprocessing

    node = cfg.model
    model = call_target("model", node, tuple(input_shape), int(num_outputs), skip=frozenset({"l2"}))
    require_returns("model._target_", node._target_, model, keras.Model, "a keras.Model")
    outputs = _outputs_of(model, tuple(input_shape), node._target_)
    add_l2(model, float(node.get("l2", 0.0)))
    model = call_initializer(cfg, model)
    if outputs != num_outputs:
        raise UserCodeError(f"`model._target_`={node._target_!r} built a model with {outputs} outputs, but the data "
                            f"has {num_outputs} (one per class, label or target value). Fix: give the last layer "
                            f"{num_outputs} units (use the `num_outputs` argument tftrain passes).")
    if str(node._target_) == "tftrain.models.saved":
        if normalization is not None or target_normalization is not None:
            log.warning("model=saved: data.normalize and data.normalize_target do not apply (a saved model takes raw "
                        "inputs and gives outputs in the targets' units already).")
        return model
    return with_preprocessing(model, input_shape, normalization, target_normalization)


def _outputs_of(model, input_shape: tuple, target: str) -> int:
    """The size of the model's last output axis (building a subclassed model on a zero batch)."""
    import numpy as np

    try:
        return int(model.output_shape[-1])
    except (AttributeError, ValueError, TypeError):
        pass
    try:
        return int(model(np.zeros((1, *input_shape), "float32")).shape[-1])
    except Exception as e:  # noqa: BLE001 - the user's model failed on an input of the data's shape
        raise _user_error("model._target_", target, f"the model failed on a batch of the data's input shape "
                          f"{input_shape} ({type(e).__name__}: {e})", e) from None


def initializer_of(cfg):
    """The initializer group as tftrain.initializers.initialize takes it: None (keep), a
    WeightNorm, or a function seed -> a fresh Keras initializer."""
    from tftrain.initializers import WeightNorm

    node = cfg.initializer
    if node.get("_target_") is None:  # initializer=keep
        return None
    fn = locate(node._target_, "initializer._target_")
    if isinstance(fn, type) and issubclass(fn, WeightNorm):
        return call_target("initializer", node, skip=frozenset({"bias"}))
    takes_seed = "seed" in inspect.signature(fn).parameters

    def kernel(seed: int):  # a fresh initializer per layer, with that layer's seed
        made = call_target("initializer", node, skip=frozenset({"bias"}), **({"seed": seed} if takes_seed else {}))
        require_returns("initializer._target_", node._target_, made, Callable, "an initializer")
        return made

    return kernel


def call_initializer(cfg, model):
    """Apply the initializer group to `model` (tftrain.initializers.initialize)."""
    from tftrain.initializers import initialize

    try:
        return initialize(model, initializer_of(cfg), bias=cfg.initializer.get("bias", "zeros"),
                          seed=int(cfg.trainer.seed))
    except ArgumentError as e:
        raise ConfigError("initializer", cfg.initializer._target_, e.requirement) from None


# ---------------------------------------------------------------- problem


def build_problem(cfg):
    """The configured problem (tftrain.problems): loss, metrics, what the targets must be."""
    return call_target("problem", cfg.problem)


def prepare_problem(problem, model, data) -> None:
    """Give `problem` the targets' statistics and create its metrics' state from one validation
    batch (call inside the strategy's scope)."""
    import tensorflow as tf

    if data.target_normalization is not None:
        problem.target_normalization = (data.target_normalization["mean"], data.target_normalization["std"])
    first = tf.nest.map_structure(lambda v: v.values[0] if hasattr(v, "values") else v, next(iter(data.val)))
    try:
        problem.build(first[1], model(first[0]))
    except ArgumentError as e:
        raise ConfigError(f"problem.{e.arg}", e.value, e.requirement) from None


# ---------------------------------------------------------------- schedule and optimizer

# Schedule class arguments that do not come from a `schedule.<same name>` key.
_SCHEDULE_KEYS = {"lr": "optimizer.lr", "value": "optimizer.lr", "decay_steps": "trainer.epochs",
                  "total_steps": "trainer.epochs", "warmup_steps": "schedule.warmup_epochs",
                  "start_factor": "schedule.warmup_start_factor"}


def build_schedule(cfg, steps_per_epoch: int):
    """The LearningRateSchedule `cfg.schedule` describes, for a run of `cfg.trainer.epochs` epochs of
    `steps_per_epoch` steps from the base rate `cfg.optimizer.lr` (durations in the config are
    epochs; tftrain.schedules.build_for_run converts them). Bad values raise ConfigError naming
    the key (e.g. `schedule.milestones`).

    >>> import tftrain
    >>> cfg = tftrain.compose(["schedule=cosine", "schedule.warmup_epochs=1", "trainer.epochs=10"])
    >>> s = build_schedule(cfg, steps_per_epoch=100)
    >>> type(s).__name__, s.warmup_steps, type(s.schedule).__name__, s.schedule.decay_steps
    ('Warmup', 100, 'Cosine', 900)
    """
    from tftrain.schedules import build_for_run

    node = cfg.schedule
    target = locate(node._target_, "schedule._target_")
    container = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    keys = {k: v for k, v in container.items() if k != "_target_"}
    if keys.get("mode") == "auto" and "monitor" in keys:  # plateau: the monitored metric's direction
        from tftrain.schema.problem import lower_is_better

        keys["mode"] = "min" if lower_is_better(keys["monitor"]) else "max"
    params = inspect.signature(target).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = [k for k in keys if k not in params and k not in ("warmup_epochs", "warmup_start_factor")]
        if unknown:
            raise ConfigError(f"schedule.{unknown[0]}", keys[unknown[0]],
                              f"a key of this schedule: {sorted(set(params) - {'run'})} and warmup_epochs, "
                              "warmup_start_factor", f"remove `schedule.{unknown[0]}`")
    try:
        return build_for_run(target, lr=float(cfg.optimizer.lr), epochs=int(cfg.trainer.epochs),
                             steps_per_epoch=int(steps_per_epoch), **keys)
    except ArgumentError as e:
        key = _SCHEDULE_KEYS.get(e.arg, f"schedule.{e.arg}")
        value = {"optimizer.lr": cfg.optimizer.lr, "trainer.epochs": cfg.trainer.epochs}.get(key, keys.get(e.arg, e.value))
        raise ConfigError(key, value, e.requirement if e.arg in keys else
                          f"a value giving {e.arg} {e.requirement} at {steps_per_epoch} steps per epoch") from None


def build_optimizer(cfg, learning_rate):
    """The configured optimizer with `learning_rate` (a LearningRateSchedule); wrapped in a
    LossScaleOptimizer under mixed_float16 (float16 gradients underflow without loss scaling)."""
    import keras

    node = cfg.optimizer
    optimizer = call_target("optimizer", node, skip=frozenset({"lr"}), learning_rate=learning_rate)
    require_returns("optimizer._target_", node._target_, optimizer, keras.optimizers.Optimizer,
                    "a keras.optimizers.Optimizer")
    if cfg.trainer.mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def build_extra_callbacks(cfg) -> list:
    """`callbacks.extra`: the user's own Keras callbacks."""
    import keras

    out = []
    for i, node in enumerate(cfg.callbacks.get("extra") or []):
        callback = call_target(f"callbacks.extra[{i}]", node)
        require_returns(f"callbacks.extra[{i}]._target_", node["_target_"], callback, keras.callbacks.Callback,
                        "a keras.callbacks.Callback")
        out.append(callback)
    return out



def build_loggers(cfg) -> list:
    """`logger.<name>` for each chosen logger: tftrain.loggers.Logger instances (a user's own too)."""
    from tftrain.loggers import Logger

    out = []
    for name, node in (cfg.get("logger") or {}).items():
        logger = call_target(f"logger.{name}", node)
        require_returns(f"logger.{name}._target_", node["_target_"], logger, Logger, "a tftrain.loggers.Logger")
        out.append(logger)
    return out
