"""Every option of every config group composes, validates and builds; bad values name their key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tftrain
from tftrain.config import config_dir
from tftrain.errors import ConfigError
from tftrain.schema import validate

# hparams_search is a Hydra-level group (it configures the sweeper): tests/test_sweep.py covers it.
GROUPS = sorted(p.name for p in config_dir().iterdir()
                if p.is_dir() and not p.name.startswith(("_", "hydra", "hparams_search")))


def options(group):
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def test_config_dir_has_every_group():
    assert {"data", "model", "optimizer", "schedule", "initializer", "trainer", "callbacks"} <= set(GROUPS)


def _npz(tmp_path: Path) -> str:
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.normal(size=(40, 4)), y_train=rng.integers(0, 3, 40),
             x_test=rng.normal(size=(10, 4)), y_test=rng.integers(0, 3, 10))
    return str(path)


# Options whose file path is required: without one they must fail naming it (tests/test_data.py
# loads each from files it writes).
NEEDS_PATH = {("data", "csv"), ("data", "image_folder"), ("data", "tfrecord")}


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_validates(group, option, tmp_path):
    if (group, option) in NEEDS_PATH:
        with pytest.raises(ConfigError, match="`data.path"):
            validate(tftrain.compose([f"{group}={option}"]))
        return
    extra = [f"data.path={_npz(tmp_path)}"] if (group, option) == ("data", "npz") else []
    cfg = validate(tftrain.compose([f"{group}={option}", *extra]))
    if "name" in cfg[group]:
        assert cfg[group].name == option


@pytest.mark.parametrize("option", options("optimizer"))
def test_every_optimizer_builds_with_its_settings(option):
    from tftrain.optimizers import build_optimizer

    cfg = validate(tftrain.compose([f"optimizer={option}", "optimizer.lr=0.02", "optimizer.clipnorm=1.0"]))
    opt = build_optimizer(cfg.optimizer, cfg.optimizer.lr)
    assert float(opt.learning_rate) == pytest.approx(0.02)
    assert opt.clipnorm == 1.0
    if option == "nesterov":
        assert opt.nesterov and opt.momentum == 0.9


def test_mixed_float16_wraps_optimizer_in_loss_scaling():
    import keras

    from tftrain.optimizers import build_optimizer

    cfg = validate(tftrain.compose(["optimizer=sgd"]))
    assert isinstance(build_optimizer(cfg.optimizer, 0.1, "mixed_float16"), keras.optimizers.LossScaleOptimizer)


@pytest.mark.parametrize("option", options("model"))
def test_every_model_builds(option):
    from tftrain.initializers import Initializers
    from tftrain.models import build_model

    cfg = validate(tftrain.compose([f"model={option}"]))
    model = build_model(cfg.model, (32, 32, 3), 10, Initializers(cfg.initializer, 0))
    assert model.output_shape == (None, 10)


def test_int_learning_rate_becomes_float():
    cfg = validate(tftrain.compose(["optimizer.lr=1"]))
    assert isinstance(cfg.optimizer.lr, float)


@pytest.mark.parametrize("override, key", [
    ("optimizer.lr=-1", "optimizer.lr"),
    ("trainer.batch_size=-4", "trainer.batch_size"),
    ("trainer.epochs=0", "trainer.epochs"),
    ("trainer.seed=x", "trainer.seed"),
    ("+trainer.epoch=3", "trainer.epoch"),
    ("trainer.strategy=tpu", "trainer.strategy"),
    ("trainer.mixed_precision=float8", "trainer.mixed_precision"),
    ("model.dropout=1.5", "model.dropout"),
    ("data.val_fraction=0", "data.val_fraction"),
])
def test_bad_values_name_their_key(override, key):
    with pytest.raises(ConfigError, match=f"`{key}`"):
        validate(tftrain.compose([override]))
