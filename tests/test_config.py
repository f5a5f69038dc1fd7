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
# groups of the run's config: tests/test_search.py and tests/test_experiments.py cover them
# (test_no_default_is_stated_twice checks hparams_search and conf/hydra/ too).
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


def _unknown(presets: dict, defaults: dict, prefix: str = "") -> list[str]:
    """Keys of `presets` (recursing into mappings the schema nests) that the schema lacks."""
    out = []
    for key, value in presets.items():
        if key == "defaults":
            continue
        if key not in defaults:
            out.append(prefix + key)
        elif isinstance(value, dict) and isinstance(defaults[key], dict):
            out += _unknown(value, defaults[key], f"{prefix}{key}.")
    return out


# The presets under conf/ that preset no schema, and why; every other YAML is checked below.
UNCHECKED = {
    "config.yaml": "the root: it chooses the groups' options",
    # Hydra's logging configs are logging.config.dictConfig dicts (HydraConf types them Dict[str, Any]).
    "hydra/hydra_logging/tftrain.yaml": "no schema", "hydra/job_logging/tftrain.yaml": "no schema",
    # Presets of a whole experiment: they pin the settings the experiment was run with, defaults or not
    # (tests/test_experiments.py).
    **{f"experiment/{p.name}": "an experiment's pinned settings" for p in (config_dir() / "experiment").glob("*.yaml")},
}


def _hydra_schema(path: str):
    """The structured config (a dataclass from Hydra's ConfigStore: a plugin's or tftrain's) that
    `path` (a group path under Hydra's config tree, "hydra/launcher/joblib") names."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins
    from omegaconf import OmegaConf

    Plugins.instance()  # imports hydra_plugins/*: the launchers' and the sweeper's configs register
    cls = OmegaConf.get_type(ConfigStore.instance().load(f"{path}.yaml").node)
    assert dataclasses.is_dataclass(cls), f"{path}: {cls} is no dataclass"
    return cls


def _presets_and_schemas(rel: str) -> list[tuple[str, dict, type]]:
    """(where, the presets, the schema class they preset) for the YAML at conf/`rel`: a run group's
    option, a Hydra preset extending a plugin's config (conf/hydra/<group>/), or a `_global_` preset
    that chooses a Hydra plugin (`override /hydra/sweeper: ...`) and presets its node."""
    data = yaml.safe_load((config_dir() / rel).read_text()) or {}
    group, option = rel.rsplit("/", 1)
    option = option.removesuffix(".yaml")
    if group in SCHEMAS:
        return [(rel, data, type(_schema(group, option)))]
    defaults = data.get("defaults", [])
    if group.startswith("hydra/"):  # conf/hydra/launcher/slurm.yaml: `defaults: [submitit_slurm, _self_]`
        base = [e for e in defaults if isinstance(e, str) and e != "_self_"]
        assert len(base) == 1, f"{rel}: extends {base}, expected one plugin config"
        node = group.split("/", 1)[1]
        if base[0] == f"/{group}/{base[0].rsplit('/', 1)[-1].split('@')[0]}@hydra.{node}":
            # A _global_ preset (parallel.yaml: `/hydra/launcher/joblib@hydra.launcher`) presets
            # hydra.<node>, and may quiet the plugin's logger (hydra.hydra_logging) beside it.
            outside = (set(data) - {"defaults", "hydra"}) | (set(data.get("hydra", {})) - {node, "hydra_logging"})
            assert not outside, f"{rel} sets {sorted(outside)}, which the plugin's schema does not cover"
            name = base[0].rsplit("/", 1)[-1].split("@")[0]
            return [(f"{rel}: hydra.{node}", data["hydra"][node], _hydra_schema(f"{group}/{name}"))]
        return [(rel, data, _hydra_schema(f"{group}/{base[0]}"))]
    out = []
    chosen = [(k.split("/")[-1], v) for e in defaults if isinstance(e, dict) for k, v in e.items()
              if k.startswith("override /hydra/")]
    for node, name in chosen:  # hparams_search/optuna.yaml: hydra.sweeper presets tftrain_optuna's schema
        out.append((f"{rel}: hydra.{node}", data.get("hydra", {}).get(node, {}), _hydra_schema(f"hydra/{node}/{name}")))
    outside = (set(data) - {"defaults", "hydra"}) | (set(data.get("hydra", {})) - {n for n, _ in chosen})
    assert not outside, f"{rel} sets {sorted(outside)}, which no schema it chooses covers"
    return out


PRESET_FILES = sorted(str(p.relative_to(config_dir())) for p in config_dir().rglob("*.yaml")
                      if str(p.relative_to(config_dir())) not in UNCHECKED)


def test_every_preset_file_is_checked_for_restated_defaults():
    checked = {f.split("/", 1)[0] for f in PRESET_FILES}
    assert checked >= set(GROUPS) | {"hparams_search", "hydra"}, checked
    assert {"hparams_search/optuna.yaml", "hydra/launcher/parallel.yaml",
            "hydra/launcher/slurm.yaml"} <= set(PRESET_FILES)
    assert all((config_dir() / rel).is_file() for rel in UNCHECKED), "UNCHECKED names a file that is gone"


@pytest.mark.parametrize("rel", PRESET_FILES)
def test_no_default_is_stated_twice(rel):
    """Each preset holds only its own settings: no key restates its schema's default (nested keys
    included), and it sets no key its schema lacks. Run groups' options against tftrain's schemas;
    hparams_search/optuna.yaml against the sweeper's (TftrainOptunaSweeperConf); the Hydra
    launcher presets against their plugins' (JobLibLauncherConf, SlurmQueueConf)."""
    found = _presets_and_schemas(rel)
    assert found, f"{rel} presets no schema"
    for where, presets, cls in found:
        defaults = _defaults(cls)
        restated = _restated(presets, defaults)
        assert not restated, f"{where} restates {cls.__name__}'s defaults: {restated}"
        assert not _unknown(presets, defaults), f"{where} sets keys {cls.__name__} lacks: {_unknown(presets, defaults)}"


def test_the_restated_default_check_sees_nested_keys_and_keeps_the_different_ones():
    """The check the presets go through: the sweeper's nested defaults are seen, so a restated
    sampler seed fails and hparams_search/optuna.yaml's own values (params) pass."""
    (where, presets, cls), = _presets_and_schemas("hparams_search/optuna.yaml")
    defaults = _defaults(cls)
    assert cls.__name__ == "TftrainOptunaSweeperConf" and defaults["sampler"]["seed"] == 0
    assert _restated({"sampler": {"seed": 0, "n_startup_trials": 3}, "n_trials": 20, "pruning": {"max_resource": 5}},
                     defaults) == ["sampler.seed", "n_trials"]
    assert _unknown({"sampler": {"sed": 1}, "n_trial": 2}, defaults) == ["sampler.sed", "n_trial"]
    assert defaults["pruning"]["max_resource"] == "${trainer.epochs}" and "pruning" not in presets
    assert set(presets["params"]) == {"optimizer.lr", "optimizer.weight_decay", "trainer.batch_size"}


def _trainer_defaults() -> tuple[set, dict]:
    from tftrain.schema.trainer import TrainerConf

    return {f.name for f in dataclasses.fields(TrainerConf)}, _defaults(TrainerConf)


def test_the_loop_options_state_no_default_of_the_trainer_schema():
    """tftrain.loop.LoopOptions is filled from `trainer.<same name>` (tftrain.config.factory.loop_options):
    each field is a TrainerConf field, and none has a default of its own (the schema's is the one)."""
    from tftrain.loop.controller import LoopOptions

    trainer_keys, trainer_defaults = _trainer_defaults()
    fields = {f.name for f in dataclasses.fields(LoopOptions)}
    assert fields and fields <= trainer_keys, f"LoopOptions fields no trainer key has: {sorted(fields - trainer_keys)}"
    assert not _defaults(LoopOptions), f"LoopOptions restates trainer defaults: {_defaults(LoopOptions)}"
    assert fields <= set(trainer_defaults)  # the schema states them all


# StepOptions field -> the trainer key it is filled from (tftrain.config.factory.step_options);
# the others are the caller's (a logger's update_freq, whether loggers want a step log).
STEP_KEYS = {"global_batch_size": "batch_size", "accumulate_steps": "accumulate_steps", "jit_compile": "jit_compile"}
STEP_OWN = {"update_freq", "record_steps"}


def test_the_step_options_state_no_default_of_the_trainer_schema():
    from tftrain.loop.trainer import StepOptions

    trainer_keys, _ = _trainer_defaults()
    fields = {f.name for f in dataclasses.fields(StepOptions)}
    assert fields == set(STEP_KEYS) | STEP_OWN, f"StepOptions has fields this test does not place: {fields}"
    assert set(STEP_KEYS.values()) <= trainer_keys and not STEP_OWN & trainer_keys
    restated = set(_defaults(StepOptions)) & set(STEP_KEYS)
    assert not restated, f"StepOptions restates trainer defaults: {sorted(restated)}"


from tftrain.schema.optimizer import OWN_KEYS as OPTIMIZER_OWN_KEYS  # noqa: E402

# Keys tftrain consumes itself, per group (never passed to the target).
OWN_KEYS = {"optimizer": set(OPTIMIZER_OWN_KEYS), "model": {"l2", "trainable", "unfreeze"}, "data": set(PIPELINE_KEYS), "initializer": {"bias"},
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
        if default_target(cls).startswith(("keras.", "tftrain.optim.")):  # Keras' defaults, or the authors' (Prodigy)
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
    ("optimizer.lr_multipliers={logits:0.1}", "write `++optimizer.lr_multipliers={logits:0.1}`"),
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
