"""Stochastic weight averaging (callbacks.swa): the average of the per-epoch weights, its rate
schedule, BatchNorm statistics recomputed over the training data, the averaged model evaluated and
saved, exact resume, and the checks of its keys."""

from __future__ import annotations

import doctest
import importlib
import math

import keras
import numpy as np
import pytest

import tftrain
from conftest import crash_at, metrics_of, run_cli, same_numbers
from tftrain.errors import ConfigError, ResumeRefused
from tftrain.schema import validate

EPOCHS, START = 4, 2  # epochs 2, 3 and 4 (1-based) averaged
SWA = ["model.batch_norm=true", "model.hidden_units=[32,16]", f"trainer.epochs={EPOCHS}", "trainer.batch_size=64",
       "trainer.verbose=0", "trainer.deterministic=true", "logger=[]", "optimizer.lr=0.01",
       "callbacks.swa.enabled=true", f"callbacks.swa.swa_epoch_start={START}", "callbacks.swa.swa_lr=0.005",
       "callbacks.swa.annealing_epochs=1"]

RECORDED: dict[int, list[np.ndarray]] = {}  # epoch -> the parameters at its end (Recorder)


class Recorder(keras.callbacks.Callback):
    """Through callbacks.extra: keeps the parameters at each epoch end, as SWA sees them."""

    def on_epoch_end(self, epoch, logs=None):
        RECORDED[epoch] = [np.array(v.numpy(), np.float64) for v in self.model.weights if v.trainable]


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    RECORDED.clear()
    run_dir = tmp_path_factory.mktemp("whole")
    metrics = tftrain.train(tftrain.compose([*SWA, "callbacks.extra=[{_target_:test_swa.Recorder}]"]),
                            output_dir=run_dir)
    return run_dir, metrics, dict(RECORDED)


def _data():
    from tftrain.config.factory import build_data

    return build_data(validate(tftrain.compose(SWA)))


def test_the_saved_model_holds_the_mean_of_the_weights_of_each_epoch_from_the_start(whole):
    run_dir, _, recorded = whole
    assert sorted(recorded) == list(range(EPOCHS))
    saved = [np.asarray(v.numpy(), np.float64) for v in keras.models.load_model(run_dir / "model.keras").weights
             if v.trainable]
    averaged = range(START - 1, EPOCHS)
    for i, w in enumerate(saved):
        np.testing.assert_allclose(w, np.mean([recorded[e][i] for e in averaged], axis=0), rtol=1e-5, atol=1e-6)
    # ... which is far from the last epoch's weights (the test could tell them apart).
    assert max(np.abs(w - last).max() for w, last in zip(saved, recorded[EPOCHS - 1])) > 1e-3


def test_batchnorm_statistics_are_recomputed_over_the_training_data_for_the_averaged_weights(whole):
    run_dir, _, _ = whole
    model = keras.models.load_model(run_dir / "model.keras")
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 2
    saved = [(bn.moving_mean.numpy(), bn.moving_variance.numpy()) for bn in bns]  # the passes below move them
    # Each BatchNorm layer's input in training mode (the first one normalizing with its batch's
    # statistics), batch by batch over the epoch after the run's last, the batch's moments averaged.
    inputs = keras.Model(model.inputs, [bn.input for bn in bns])
    moments = [([], []) for _ in bns]
    for x, _ in _data().train(EPOCHS, 0):
        for (means, variances), h in zip(moments, inputs(x, training=True)):
            h = np.asarray(h, np.float64)
            means.append(h.mean(axis=0))
            variances.append(h.var(axis=0))
    for bn, (mean, variance), (means, variances) in zip(bns, saved, moments):
        np.testing.assert_allclose(mean, np.mean(means, axis=0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(variance, np.mean(variances, axis=0), rtol=1e-5, atol=1e-6)
        assert bn.momentum == 0.99  # the layer's own momentum is back (saved in model.keras)


def test_val_and_test_metrics_are_the_averaged_models(whole):
    run_dir, metrics, _ = whole
    model = keras.models.load_model(run_dir / "model.keras")
    data = _data()
    for split in ("val", "test"):
        xs, ys = zip(*getattr(data, split))
        scored = model.evaluate(np.concatenate(xs), np.concatenate(ys), verbose=0, return_dict=True)
        assert metrics[f"{split}_loss"] == pytest.approx(scored["loss"], rel=1e-5)
        assert metrics[f"{split}_accuracy"] == pytest.approx(scored["accuracy"], abs=1e-6)
    # The last epoch's validation (the raw weights) stays in the history, and differs.
    assert metrics["history"]["val_loss"][-1] != pytest.approx(metrics["val_loss"], rel=1e-4)


def test_the_rate_follows_the_schedule_then_anneals_to_swa_lr(whole):
    _, metrics, _ = whole
    # The rate logged at each epoch's end: lr 0.01 until epoch 2 starts, then cos-annealed to
    # 0.005 over one epoch: epoch 2 ends at swa_lr.
    np.testing.assert_allclose(metrics["history"]["learning_rate"], [0.01, 0.005, 0.005, 0.005], rtol=1e-6)


@pytest.mark.slow
def test_a_run_killed_while_averaging_resumes_to_the_same_numbers(whole, tmp_path):
    _, metrics, _ = whole
    with pytest.raises(KeyboardInterrupt):  # the end of epoch 3: its average update is lost with the process
        tftrain.train(tftrain.compose([*SWA, crash_at(2)]), output_dir=tmp_path)
    resumed = tftrain.train(tftrain.compose(SWA), output_dir=tmp_path)
    same_numbers(metrics, resumed)
    # Without the average the checkpoint holds, the run cannot go on: turning SWA off is refused.
    with pytest.raises(ResumeRefused, match="callbacks.swa.enabled"):
        tftrain.train(tftrain.compose([*SWA, "callbacks.swa.enabled=false", "trainer.epochs=5"]), output_dir=tmp_path)


def test_the_rate_schedule_values():
    from tftrain.config.factory import build_schedule, swa_schedule
    from tftrain.schedules import SWALR, Constant, Cosine

    cos = SWALR(Cosine(0.1, decay_steps=1000), swa_lr=0.01, start_step=100, annealing_steps=40)
    r0 = 0.1 * (1 + math.cos(math.pi * 100 / 1000)) / 2  # the schedule's rate where the averaging starts
    for t, want in [(0, 0.1), (99, 0.1 * (1 + math.cos(math.pi * 99 / 1000)) / 2), (100, r0),
                    (110, 0.01 * (1 - math.cos(math.pi / 4)) / 2 + r0 * (1 + math.cos(math.pi / 4)) / 2),
                    (120, (0.01 + r0) / 2), (140, 0.01), (999, 0.01)]:
        assert float(cos(t)) == pytest.approx(want, rel=1e-6), t
    linear = SWALR(Constant(0.1), swa_lr=0.02, start_step=10, annealing_steps=20, annealing_strategy="linear")
    assert [round(float(linear(t)), 6) for t in (9, 10, 15, 30, 50)] == [0.1, 0.1, 0.08, 0.02, 0.02]
    at_once = SWALR(Constant(0.1), swa_lr=0.02, start_step=10, annealing_steps=0)
    assert [round(float(at_once(t)), 6) for t in (9, 10)] == [0.1, 0.02]
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(cos))
    assert [float(again(t)) for t in (0, 110, 500)] == [float(cos(t)) for t in (0, 110, 500)]
    result = doctest.testmod(importlib.import_module("tftrain.schedules.swa"))
    assert result.attempted > 0 and result.failed == 0

    # From the config: a fraction of the run reads as Lightning reads it (epoch int(0.8 * 10) = 8).
    cfg = validate(tftrain.compose(["trainer.epochs=10", "callbacks.swa.enabled=true", "callbacks.swa.swa_lr=0.01",
                                    "callbacks.swa.annealing_epochs=2", "callbacks.swa.annealing_strategy=linear"]))
    s = swa_schedule(cfg, build_schedule(cfg, 10), 10)
    assert (s.start_step, s.annealing_steps, s.annealing_strategy) == (70, 20, "linear")
    # swa_lr null keeps the configured schedule.
    cfg = validate(tftrain.compose(["schedule=cosine", "callbacks.swa.enabled=true"]))
    plain = build_schedule(cfg, 10)
    assert swa_schedule(cfg, plain, 10) is plain


@pytest.mark.parametrize("override, key", [
    ("callbacks.swa.swa_epoch_start=0", "callbacks.swa.swa_epoch_start"),
    ("callbacks.swa.swa_epoch_start=2.5", "callbacks.swa.swa_epoch_start"),
    ("callbacks.swa.swa_lr=0", "callbacks.swa.swa_lr"),
    ("callbacks.swa.swa_lr=inf", "callbacks.swa.swa_lr"),
    ("callbacks.swa.annealing_epochs=-1", "callbacks.swa.annealing_epochs"),
    ("callbacks.swa.annealing_strategy=exp", "callbacks.swa.annealing_strategy"),
])
def test_bad_values_name_their_key(override, key):
    with pytest.raises(ConfigError) as e:
        validate(tftrain.compose(["callbacks.swa.enabled=true", override]))
    assert e.value.key == key


def test_a_start_past_the_run_is_refused():
    from tftrain.config.factory import swa_start_epoch

    with pytest.raises(ConfigError) as e:
        swa_start_epoch(validate(tftrain.compose(["trainer.epochs=5", "callbacks.swa.swa_epoch_start=6"])))
    assert e.value.key == "callbacks.swa.swa_epoch_start" and "trainer.epochs=5" in str(e.value)


def test_with_use_ema_the_optimizers_moving_averages_are_what_is_averaged():
    import tensorflow as tf

    from tftrain.loop.swa import StochasticWeightAveraging

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.BatchNormalization()])
    optimizer = keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.5)
    model.compile(optimizer=optimizer, loss="mse")
    optimizer.build(model.trainable_variables)
    swa = StochasticWeightAveraging(start_epoch=1)
    swa.set_model(model)
    assert [v.path for v in swa.parameters] == [v.path for v in model.trainable_variables]  # not BN's statistics
    ema, raw = [], []
    for epoch in range(3):
        for _ in range(epoch + 1):
            optimizer.apply([tf.random.normal(v.shape) for v in model.trainable_variables], model.trainable_variables)
        swa.on_epoch_end(epoch)
        raw.append([v.numpy() for v in model.trainable_variables])
        optimizer.finalize_variable_values(model.trainable_variables)  # the EMA weights, read through Keras
        ema.append([v.numpy() for v in model.trainable_variables])
        for v, w in zip(model.trainable_variables, raw[-1]):
            v.assign(w)
    assert int(swa.count.numpy()) == 2
    for i, avg in enumerate(swa.average):
        np.testing.assert_allclose(avg.numpy(), (ema[1][i] + ema[2][i]) / 2, rtol=1e-6, atol=1e-7)
    assert max(np.abs(avg.numpy() - (raw[1][i] + raw[2][i]) / 2).max() for i, avg in enumerate(swa.average)) > 1e-3


def test_the_cli_exits_2_naming_the_key(tmp_path):
    result = run_cli("callbacks.swa.enabled=true", "callbacks.swa.swa_lr=-0.1",
                     "logger=[]", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2, result.stderr
    assert "callbacks.swa.swa_lr" in result.stderr and "Traceback" not in result.stderr
