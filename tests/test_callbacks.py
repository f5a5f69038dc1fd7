"""The `callbacks` group: which Keras callbacks a config builds; the per-epoch CSV log and the
TensorBoard logger's optional weight histograms of a real run."""

from __future__ import annotations

import csv

import pytest

import tftrain
from conftest import compose_small
from tftrain.errors import ConfigError
from tftrain.schema import validate


def _types(cfg, tmp_path):
    from tftrain.config.factory import build_callbacks

    return [type(cb).__name__ for cb in build_callbacks(cfg, tmp_path)]


def test_default_callbacks(tmp_path):
    cfg = validate(compose_small())
    assert _types(cfg, tmp_path) == []  # history.csv: the loop writes it after each checkpoint; metrics: the loggers


def test_options_add_callbacks(tmp_path):
    from tftrain.config.factory import build_callbacks

    cfg = validate(compose_small("callbacks.early_stopping.enabled=true", "callbacks.early_stopping.monitor=val_accuracy",
                                 "callbacks.best_checkpoint.enabled=true"))
    assert _types(cfg, tmp_path) == ["EarlyStopping", "BestCheckpoint"]
    early = build_callbacks(cfg, tmp_path)[0]
    assert early.monitor == "val_accuracy" and early.mode == "max"


def test_histogram_freq_is_validated():
    with pytest.raises(ConfigError, match=r"logger\.tensorboard\.histogram_freq"):
        validate(compose_small("logger.tensorboard.histogram_freq=0"))


def test_params_are_the_flattened_config():
    from tftrain.config.run_info import flat_params

    hp = flat_params(validate(compose_small("optimizer=adam", "optimizer.lr=0.01")))
    assert hp["optimizer._target_"] == "keras.optimizers.Adam" and hp["optimizer.lr"] == 0.01
    assert hp["model.hidden_units"] == "[32]" and hp["trainer.batch_size"] == 32
    assert hp["data._target_"] == "tftrain.data.sources.synthetic"
    assert "optimizer.weight_decay" not in hp  # null: left out rather than given a fake value
    assert not [k for k in hp if k.startswith(("trainer.verbose", "logger", "task"))]
    assert all(isinstance(v, (bool, int, float, str)) for v in hp.values())


@pytest.fixture(scope="module")
def run_with_histograms(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    metrics = tftrain.train(compose_small("logger.tensorboard.histograms=true"), output_dir=run_dir)
    return run_dir, metrics


def test_csv_log_has_one_row_per_epoch(run_with_histograms):
    run_dir, metrics = run_with_histograms
    with open(run_dir / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(rows[0])
    assert [float(r["val_accuracy"]) for r in rows] == pytest.approx(metrics["history"]["val_accuracy"])


def test_weight_histograms_every_epoch(run_with_histograms):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = run_with_histograms
    acc = EventAccumulator(str(run_dir / "tensorboard" / "train"), size_guidance={"tensors": 0}).Reload()
    histograms = [t for t in acc.Tags()["tensors"]
                  if acc.SummaryMetadata(t).plugin_data.plugin_name == "histograms"]
    assert any(t.endswith("kernel") for t in histograms) and any(t.endswith("bias") for t in histograms)
    assert [e.step for e in acc.Tensors(histograms[0])] == [1, 2]
