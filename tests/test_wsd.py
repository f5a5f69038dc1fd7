"""schedule=wsd: warmup-stable-decay (tftrain.schedules.WarmupStableDecay), its values against the
formula computed by hand, serialization, argument checks, and a training run that follows it."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

import tftrain
from conftest import compose_small
from tftrain.errors import ConfigError
from tftrain.schedules import ScheduleArgumentError, WarmupStableDecay

LR = 0.1


def rates(schedule, steps):
    return [float(schedule(t)) for t in steps]


@pytest.mark.parametrize("shape, g", [("linear", lambda p: 1 - p), ("cosine", lambda p: (1 + math.cos(math.pi * p)) / 2),
                                      ("1-sqrt", lambda p: 1 - math.sqrt(p))])
def test_each_shape_holds_then_decays_over_the_last_fraction(shape, g):
    # T = 100, decay_fraction 0.25: D = 25 steps from S = 75; final rate 0.2 * LR.
    s = WarmupStableDecay(LR, total_steps=100, decay_fraction=0.25, final_lr_factor=0.2, shape=shape)
    assert s.decay_steps == 25 and s.decay_start == 75
    steps = [0, 1, 50, 74, 75, 80, 87.5, 99, 100, 150]
    expected = [LR if t < 75 else LR * (0.2 + 0.8 * g(min(t - 75, 25) / 25)) for t in steps]
    np.testing.assert_allclose(rates(s, steps), expected, rtol=1e-6)
    # By hand, the middle of the decay (p = 1/2) and the end (held after it):
    middle = {"linear": 0.5, "cosine": 0.5, "1-sqrt": 1 - 0.5 ** 0.5}[shape]
    assert float(s(87.5)) == pytest.approx(LR * (0.2 + 0.8 * middle), rel=1e-6)
    assert float(s(100)) == float(s(1000)) == pytest.approx(0.2 * LR, rel=1e-6)


def test_1_sqrt_to_zero_is_peak_times_one_minus_sqrt_t():
    s = WarmupStableDecay(LR, total_steps=40, decay_fraction=1.0, shape="1-sqrt")
    assert rates(s, [0, 10, 30, 40]) == pytest.approx([LR, LR * 0.5, LR * (1 - 0.75 ** 0.5), 0.0], rel=1e-6)


@pytest.mark.parametrize("start_factor", [0.0, 0.1])
def test_warmup_is_tftrains_warmup_around_it(start_factor):
    # schedule.warmup_epochs=1 at 10 steps per epoch of a 6-epoch run: 10 warmup steps from start_factor * lr,
    # then the schedule over the remaining 50 steps, decaying over its last 20 % (steps 50..60 of the run).
    cfg = tftrain.compose(["schedule=wsd", "trainer.epochs=6", "schedule.warmup_epochs=1", "schedule.shape=linear",
                           f"schedule.warmup_start_factor={start_factor}", f"optimizer.lr={LR}"])
    s = tftrain.build_schedule(cfg, steps_per_epoch=10)
    assert type(s) is tftrain.schedules.Warmup and type(s.schedule) is WarmupStableDecay
    assert (s.warmup_steps, s.schedule.total_steps, s.schedule.decay_start) == (10, 50, 40)
    expected = [LR * (start_factor + (1 - start_factor) * t / 10) for t in (0, 4, 9)] + [LR, LR, LR * 0.5, 0.0]
    np.testing.assert_allclose(rates(s, [0, 4, 9, 10, 50, 55, 60]), expected, rtol=1e-6, atol=1e-12)


def test_get_config_is_the_arguments_and_round_trips():
    s = WarmupStableDecay(LR, total_steps=30, decay_fraction=0.3, final_lr_factor=0.05, shape="cosine")
    config = s.get_config()
    assert config == {"lr": LR, "total_steps": 30, "decay_fraction": 0.3, "final_lr_factor": 0.05, "shape": "cosine"}
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(s))
    assert type(again) is WarmupStableDecay and again.get_config() == config
    assert rates(again, range(32)) == rates(s, range(32))


@pytest.mark.parametrize("keys, arg", [
    ({"decay_fraction": 0.0}, "decay_fraction"),
    ({"decay_fraction": 1.5}, "decay_fraction"),
    ({"decay_fraction": 0.001}, "decay_fraction"),  # rounds to no step of a 100-step run
    ({"shape": "exponential"}, "shape"),
    ({"total_steps": 0}, "total_steps"),
    ({"final_lr_factor": 1.5}, "final_lr_factor"),
    ({"final_lr_factor": -0.1}, "final_lr_factor"),
])
def test_bad_arguments_raise_one_message_naming_the_argument(keys, arg):
    with pytest.raises(ScheduleArgumentError) as e:
        WarmupStableDecay(LR, **{"total_steps": 100, **keys})
    assert e.value.arg == arg and arg in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("override, key", [("schedule.decay_fraction=0", "schedule.decay_fraction"),
                                           ("schedule.decay_fraction=1.5", "schedule.decay_fraction"),
                                           ("schedule.shape=exp", "schedule.shape"),
                                           ("schedule.final_lr_factor=-0.5", "schedule.final_lr_factor"),
                                           ("schedule.warmup_epochs=2", "schedule.warmup_epochs")])
def test_the_config_reports_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        tftrain.build_schedule(tftrain.compose(["schedule=wsd", "trainer.epochs=2", override]), 10)
    assert e.value.key == key


def _logged_lrs(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    acc = EventAccumulator(str(run_dir / "tensorboard" / "train"), size_guidance={"tensors": 0}).Reload()
    return {e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors("learning_rate")}


def test_a_training_run_follows_the_schedule(tmp_path):
    # SMALL: 256 examples in batches of 32, 8 steps per epoch; 2 epochs = 16 steps. Warmup 4 steps from
    # 0.1 * lr; the schedule's 12 steps hold the peak for 9 (run steps 4..12), then 1-sqrt over
    # round(0.25 * 12) = 3 steps to 0.1 * lr at run step 16.
    cfg = compose_small("schedule=wsd", "trainer.epochs=2", "optimizer=sgd", "optimizer.lr=0.05",
                        "schedule.warmup_epochs=0.5", "schedule.decay_fraction=0.25", "schedule.shape=1-sqrt",
                        "schedule.final_lr_factor=0.1")
    metrics = tftrain.train(cfg, output_dir=tmp_path)

    def by_hand(t):
        if t < 4:
            return 0.05 * (0.1 + 0.9 * t / 4)
        return 0.05 * (0.1 + 0.9 * (1 - math.sqrt(min(max(t - 13, 0), 3) / 3)))

    logged = _logged_lrs(tmp_path)
    assert sorted(logged) == list(range(16))
    np.testing.assert_allclose([logged[t] for t in range(16)], [by_hand(t) for t in range(16)], rtol=1e-6)
    # The history's rate is read at each epoch's end: the optimizer's next step, 8 and 16.
    np.testing.assert_allclose(metrics["history"]["learning_rate"], [by_hand(8), by_hand(16)], rtol=1e-6)
    assert metrics["history"]["learning_rate"] == pytest.approx([0.05, 0.005], rel=1e-6)
    assert np.isfinite(metrics["test_loss"])


@pytest.mark.slow
def test_the_cli_refuses_an_unknown_shape_in_one_paragraph(tmp_path):
    from conftest import run_cli

    result = run_cli("schedule=wsd", "schedule.shape=exp", "data=synthetic", "trainer.epochs=1",
                     f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    error = result.stderr.split("tftrain: error: ", 1)[1].strip()
    assert "`schedule.shape`" in error and "['linear', 'cosine', '1-sqrt']" in error and "\n" not in error
    assert "Traceback" not in result.stderr and not (tmp_path / "run" / "model.keras").exists()
