"""The learning-rate range test: `python -m tftrain task=lr_find`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from omegaconf import OmegaConf

import tftrain
from tftrain.errors import ConfigError
from tftrain.tasks.range_test import minimum, ramp_lrs, steepest, suggest, valley
from tftrain.schema import validate


def test_ramp_is_exponential_from_min_to_max():
    lrs = ramp_lrs(1e-6, 1.0, 61)
    assert lrs[0] == pytest.approx(1e-6) and lrs[-1] == pytest.approx(1.0)
    assert np.allclose(lrs[1:] / lrs[:-1], 10 ** 0.1)  # a constant ratio: one decade per 10 steps


def test_suggestions_on_a_known_curve():
    lrs = ramp_lrs(1e-5, 10.0, 61)
    x = np.log10(lrs)
    # Flat at 2.3, falls along a tanh centred at 1e-2 (steepest there), lowest near 1e-1, then blows up.
    losses = 1.3 - np.tanh((x + 2) * 2) + np.where(x > -1, (x + 1) ** 2 * 8, 0.0)
    assert steepest(lrs, losses) == pytest.approx(1e-2, rel=0.3)
    lowest = lrs[np.argmin(losses)]
    assert minimum(lrs, losses) == pytest.approx(lowest / 10)
    # The loss falls all the way from the first rate to `lowest`: the valley is about half-way (log scale).
    assert 1e-4 < valley(lrs, losses) < 1e-2
    # With a divergence the last points are left out of every suggestion.
    assert set(suggest(lrs, losses, num_steps=61, diverged=True)) == {"valley", "steepest", "minimum", "slide"}


def test_task_options_are_validated():
    cfg = validate(tftrain.compose(["task=lr_find"]))
    assert cfg.task.min_lr < cfg.task.max_lr and cfg.task.suggestion == "minimum"
    with pytest.raises(ConfigError, match=r"task\.max_lr"):
        validate(tftrain.compose(["task=lr_find", "task.min_lr=1.0", "task.max_lr=0.1"]))
    with pytest.raises(ConfigError, match=r"task\.suggestion"):
        validate(tftrain.compose(["task=lr_find", "task.suggestion=best"]))
    with pytest.raises(ConfigError, match=r"task\.smoothing"):
        validate(tftrain.compose(["task=lr_find", "task.smoothing=1.0"]))


@pytest.fixture(scope="module")
def lr_find_run(tmp_path_factory):
    from conftest import run_cli

    run_dir = tmp_path_factory.mktemp("lr_find")
    result = run_cli("task=lr_find", "optimizer=adam", f"hydra.run.dir={run_dir}")
    return run_dir, result


@pytest.mark.slow
def test_cli_writes_json_and_plot(lr_find_run):
    run_dir, result = lr_find_run
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((run_dir / "lr_find.json").read_text())
    assert out["suggested"] == "minimum" and set(out["suggestions"]) == {"valley", "steepest", "minimum", "slide"}
    assert out["suggested_lr"] == out["suggestions"]["minimum"]
    assert len(out["lrs"]) == len(out["losses"]) == len(out["raw_losses"]) == out["steps"]
    assert out["lrs"][0] == pytest.approx(1e-7)
    assert np.all(np.diff(out["lrs"]) > 0)
    assert (run_dir / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "optimizer.lr=" in result.stdout + result.stderr  # says what to train with
    # The weights are thrown away: nothing of a training run is left behind.
    assert not (run_dir / "model.keras").exists() and not (run_dir / "checkpoints").exists()


def test_adam_suggestion_is_sensible_on_digits(lr_find_run):
    run_dir, _ = lr_find_run
    out = json.loads((run_dir / "lr_find.json").read_text())
    assert out["data"] == "digits" and out["optimizer"] == "adam"
    for name, lr in out["suggestions"].items():
        assert 1e-4 <= lr <= 1e-1, (name, lr)
    # The loss fell well below its start (ln 10 = 2.30 for 10 classes) before diverging.
    assert out["best_loss"] < 0.8 * out["losses"][0]


def test_divergence_stops_the_test_early(lr_find_run):
    run_dir, _ = lr_find_run
    out = json.loads((run_dir / "lr_find.json").read_text())
    assert out["stopped_early"] and out["steps"] < out["num_steps"] == 100
    assert out["lrs"][-1] < out["max_lr"]
    assert "diverged" in out["stop_reason"] or "loss became" in out["stop_reason"]
    if "diverged" in out["stop_reason"]:
        assert out["losses"][-1] > out["divergence_threshold"] * out["best_loss"]


@pytest.mark.slow
def test_train_with_find_lr_trains_at_the_suggestion_and_a_resume_reuses_it(tmp_path, caplog):
    from conftest import compose_small

    with caplog.at_level("INFO", logger="tftrain"):
        metrics = tftrain.train(compose_small("task.find_lr=true", "optimizer=sgd", "trainer.epochs=1"), output_dir=tmp_path)
    found = json.loads((tmp_path / "lr_find" / "lr_find.json").read_text())
    assert metrics["found_lr"] == pytest.approx(found["suggested_lr"], rel=5e-3)  # 3 significant digits
    assert OmegaConf.load(tmp_path / "config.yaml").optimizer.lr == metrics["found_lr"]
    assert metrics["history"]["learning_rate"][0] == pytest.approx(metrics["found_lr"])
    assert (tmp_path / "lr_find" / "lr_find.png").is_file()
    assert f"task.find_lr: training at the range test's suggestion optimizer.lr={metrics['found_lr']:g}" in caplog.text

    caplog.clear()
    with caplog.at_level("INFO", logger="tftrain"):
        again = tftrain.train(compose_small("task.find_lr=true", "optimizer=sgd", "trainer.epochs=2"), output_dir=tmp_path)
    assert "task.find_lr: reusing the range test" in caplog.text and "Resumed from" in caplog.text
    assert again["found_lr"] == metrics["found_lr"] and again["epochs"] == 2
