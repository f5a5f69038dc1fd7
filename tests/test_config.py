"""Every option of every config group composes, validates and builds; each default is written once;
the schemas match their targets' signatures; bad values name their key."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import MISSING

import tftrain
from tftrain.config.files import config_dir
from tftrain.errors import ConfigError
from tftrain.schema import MULTI, SCHEMAS, default_target, is_open, validate
from tftrain.schema.data import PIPELINE_KEYS

# hparams_search (it configures the sweeper) and experiment (presets over several groups) are not
# groups of the run's config: tests/test_search.py and tests/test_experiments.py cover them.
GROUPS = sorted(p.name for p in config_dir().iterdir()
                if p.is_dir() and not p.name.startswith(("_", "hydra", "hparams_search", "experiment")))


def options(group):
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def test_config_dir_has_every_group_and_every_group_a_schema():
    assert {"data", "model", "optimizer", "schedule", "initializer", "trainer", "callbacks", "task"} <= set(GROUPS)
    assert set(GROUPS) <= set(SCHEMAS)


def _npz(tmp_path: Path) -> str:
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.normal(size=(40, 4)), y_train=rng.integers(0, 3, 40),
             x_test=rng.normal(size=(10, 4)), y_test=rng.integers(0, 3, 10))
    return str(path)


def _saved_model(tmp_path: Path) -> str:
    import keras

    path = tmp_path / "m.keras"
    keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]).save(path)
    return str(path)


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_yaml_opens_with_the_command_that_runs_it(group, option):
    first = (config_dir() / group / f"{option}.yaml").read_text().splitlines()[0]
    assert first.startswith("# python -m tftrain"), first
    assert option == "default" or f"{group}={option}" in first, first


# What an option needs besides its YAML: a file, or the user's own target.
NEEDS = {("data", "npz"): lambda p: [f"data.path={_npz(p)}"],
         ("data", "custom"): lambda p: ["data._target_=tftrain.data.sources.digits"],
         ("model", "custom"): lambda p: ["model._target_=tftrain.models.mlp"],
         ("model", "saved"): lambda p: [f"model.path={_saved_model(p)}"],
         ("optimizer", "custom"): lambda p: ["optimizer._target_=keras.optimizers.SGD"],
         ("task", "predict"): lambda p: [f"task.run={p}", f"task.input={p}"],
         ("task", "evaluate"): lambda p: [f"task.run={p}"]}
# Options whose file path is required: without one they must fail naming it (tests/test_data.py
# loads each from files it writes).
NEEDS_PATH = {("data", "csv"), ("data", "image_folder"), ("data", "tfrecord")}


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_validates(group, option, tmp_path):
    if (group, option) in NEEDS_PATH:
        with pytest.raises(ConfigError, match="`data.path"):
            validate(tftrain.compose([f"{group}={option}"]))
        return
    extra = NEEDS.get((group, option), lambda p: [])(tmp_path)
    cfg = validate(tftrain.compose([f"{group}={option}", *extra]))
    node = cfg[group][option] if group in MULTI else cfg[group]  # logger=[a,b]: each option under its name
    assert set(node) >= {f.name for f in dataclasses.fields(type(_schema(group, option)))} - {"OPEN"}


def _schema(group: str, option: str):
    """The schema instance the option's YAML extends (from its defaults list)."""
    data = yaml.safe_load((config_dir() / group / f"{option}.yaml").read_text()) or {}
    for entry in data.get("defaults", []):
        if isinstance(entry, str) and entry.startswith("/schema/"):
            name = entry.split("@")[0].split("/")[-1]
            cls = SCHEMAS[group][name]
            return cls.__new__(cls)
    if "defaults" in data:  # extends another option of the group (callbacks=early_stopping)
        base = next(e for e in data["defaults"] if isinstance(e, str) and e != "_self_")
        return _schema(group, base)
    raise AssertionError(f"{group}/{option}.yaml extends no schema")


def _defaults(cls) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return out


def _restated(presets: dict, defaults: dict, prefix: str = "") -> list[str]:
    """Keys whose preset equals the schema's default (recursing into nested mappings)."""
    out = []
    for key, value in presets.items():
        if key == "defaults" or key not in defaults:
            continue
        default = defaults[key]
        if isinstance(value, dict) and isinstance(default, dict):
            out += _restated(value, default, f"{prefix}{key}.")
        elif value == default and default is not MISSING and value != "???":
            out.append(prefix + key)
    return out


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options(g)])
def test_no_default_is_stated_twice(group, option):
    """Each option's YAML holds only its own presets: no key restates its schema's default."""
    presets = yaml.safe_load((config_dir() / group / f"{option}.yaml").read_text()) or {}
    defaults = _defaults(type(_schema(group, option)))
    assert not _restated(presets, defaults), f"{group}/{option}.yaml restates its schema's defaults"
    assert set(presets) - {"defaults"} <= set(defaults), f"{group}/{option}.yaml sets keys its schema lacks"


# Keys tftrain consumes itself, per group (never passed to the target).
OWN_KEYS = {"optimizer": {"lr"}, "model": {"l2"}, "data": set(PIPELINE_KEYS), "initializer": {"bias"},
            "schedule": {"warmup_epochs", "warmup_start_factor"}}


def _target_schemas():
    for group, schemas in SCHEMAS.items():
        for name, cls in schemas.items():
            if default_target(cls):
                yield pytest.param(group, cls, id=f"{group}/{name}")


@pytest.mark.parametrize("group, cls", list(_target_schemas()))
def test_schemas_match_their_targets_signatures(group, cls):
    """Every key a schema passes on is a parameter of its target; Keras' own classes keep Keras'
    defaults (`lr` is Keras' learning_rate), tftrain's own targets have none (the schema is the
    one place for them)."""
    module, _, attr = default_target(cls).rpartition(".")
    target = getattr(importlib.import_module(module), attr)
    params = inspect.signature(target).parameters
    if group == "task":  # a task gets the whole config and reads its own keys from cfg.task
        assert list(params)[:2] == ["cfg", "output_dir"]
        return
    keys = {f.name for f in dataclasses.fields(cls)} - {"_target_"} - OWN_KEYS.get(group, set())
    assert keys <= set(params), f"{cls.__name__} has keys {sorted(keys - set(params))} its target lacks"
    defaults = _defaults(cls)
    for key in keys:
        p = params[key]
        if default_target(cls).startswith("keras."):
            assert p.default == defaults[key], f"{cls.__name__}.{key}: {defaults[key]!r}, Keras: {p.default!r}"
        else:
            assert p.default is inspect.Parameter.empty, f"{default_target(cls)} restates the default of {key}"
    if group == "optimizer":
        assert defaults["lr"] == params["learning_rate"].default


@pytest.mark.parametrize("option", [o for o in options("optimizer") if o != "custom"])
def test_every_optimizer_builds_with_its_settings(option):
    import keras

    from tftrain.config.factory import build_optimizer

    cfg = validate(tftrain.compose([f"optimizer={option}", "optimizer.lr=0.02", "optimizer.clipnorm=1.0"]))
    opt = build_optimizer(cfg, cfg.optimizer.lr)
    assert type(opt).__name__ == cfg.optimizer._target_.rsplit(".", 1)[1]
    assert isinstance(opt, keras.optimizers.Optimizer)
    assert float(opt.learning_rate) == pytest.approx(0.02)
    assert opt.clipnorm == 1.0
    if option == "nesterov":
        assert opt.nesterov and opt.momentum == 0.9


def test_the_option_is_chosen_by_the_group_choice_alone():
    # There is no `name` key to disagree with the choice: the option's schema rejects it.
    with pytest.raises(ConfigError, match="optimizer.name"):
        tftrain.compose(["optimizer=sgd", "optimizer.name=adamw"])


def test_mixed_float16_wraps_optimizer_in_loss_scaling():
    import keras

    from tftrain.config.factory import build_optimizer

    cfg = validate(tftrain.compose(["optimizer=sgd", "trainer.mixed_precision=mixed_float16"]))
    assert isinstance(build_optimizer(cfg, 0.1), keras.optimizers.LossScaleOptimizer)


@pytest.mark.parametrize("option", ["mlp", "cnn", "resnet"])
def test_every_builtin_model_builds(option):
    from tftrain.config.factory import build_model

    cfg = validate(tftrain.compose([f"model={option}"]))
    model = build_model(cfg, (32, 32, 3), 10)
    assert model.output_shape == (None, 10)


def test_int_learning_rate_becomes_float():
    cfg = validate(tftrain.compose(["optimizer.lr=1"]))
    assert isinstance(cfg.optimizer.lr, float)


@pytest.mark.parametrize("override, key", [
    ("optimizer.lr=-1", "optimizer.lr"),
    ("trainer.batch_size=-4", "trainer.batch_size"),
    ("trainer.epochs=0", "trainer.epochs"),
    ("trainer.seed=x", "trainer.seed"),
    ("trainer.epoch=3", "trainer.epoch"),
    ("+trainer.epoch=3", "trainer.epoch"),
    ("trainer.strategy=tpu", "trainer.strategy"),
    ("trainer.mixed_precision=float8", "trainer.mixed_precision"),
    ("model.dropout=1.5", "model.dropout"),
    ("data.val_fraction=0", "data.val_fraction"),
])
def test_bad_values_name_their_key(override, key):
    with pytest.raises(ConfigError, match=f"`{key}`"):
        validate(tftrain.compose([override]))


@pytest.mark.parametrize("override, hint", [
    ("optimiser=adam", "did you mean `optimizer`?"),
    ("optimizer=adma", "did you mean `optimizer=adam`?"),
    ("trainer.epoch=3", "did you mean `trainer.epochs`?"),
    ("optimizer.learning_rate=0.1", "did you mean `optimizer.lr`?"),
    ("schedule=cosin", "did you mean `schedule=cosine`?"),
])
def test_compose_errors_suggest_the_intended_name(override, hint):
    with pytest.raises(ConfigError) as info:
        tftrain.compose([override])
    assert hint in str(info.value) and "Fix:" in str(info.value)


def test_open_options_take_the_users_own_keys():
    cfg = validate(tftrain.compose(["model=custom", "model._target_=mymodule.build", "++model.width=64"]))
    assert cfg.model.width == 64 and cfg.model.l2 == 0.0
    assert is_open(SCHEMAS["model"]["custom"]) and not is_open(SCHEMAS["model"]["mlp"])
    assert cfg.initializer._target_ is None  # a user's model keeps its own initial weights by default
    cfg = validate(tftrain.compose(["model=custom", "model._target_=m.b", "initializer=he_normal"]))
    assert cfg.initializer._target_ == "keras.initializers.HeNormal"


def test_a_loaded_config_validates_like_a_composed_one(tmp_path):
    from omegaconf import OmegaConf

    cfg = validate(tftrain.compose(["optimizer=momentum", "schedule=warmup"]))
    OmegaConf.save(cfg, tmp_path / "config.yaml")
    loaded = validate(OmegaConf.load(tmp_path / "config.yaml"))
    assert OmegaConf.to_container(loaded) == OmegaConf.to_container(cfg)
    broken = OmegaConf.load(tmp_path / "config.yaml")
    broken.optimizer.momentum = 2.0
    with pytest.raises(ConfigError, match="optimizer.momentum"):
        validate(broken)
