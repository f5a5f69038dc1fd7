"""Every schedule trains through the real loop: the learning rate written to TensorBoard at each
step is the schedule's; the saved model reloads with it; a resumed run continues it exactly."""

from __future__ import annotations

import numpy as np
import pytest

import tftrain
from conftest import compose_small, crash_at, options

SPE = 256 // 32  # steps per epoch of the SMALL config


def _logged_lrs(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    acc = EventAccumulator(str(run_dir / "tensorboard" / "train"), size_guidance={"tensors": 0}).Reload()
    return {e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors("learning_rate")}


# Settings that make an option's rate change within the 3-epoch run; the other options do so with
# their defaults (a new option needs an entry here only if it does not). Plateau under mode=max
# sees the falling val_loss as no improvement: it halves the rate at the end of epoch 2.
WITHIN_THE_RUN = {"step": ["schedule.step_size=1"], "multistep": ["schedule.milestones=[1,2]"],
                  "cosine_restarts": ["schedule.t0=1", "schedule.t_mult=1"], "cyclic": ["schedule.step_size=0.5"],
                  "warmup": ["schedule.warmup_epochs=1"],
                  "plateau": ["schedule.patience=0", "schedule.factor=0.5", "schedule.mode=max"]}


def _overrides(name):
    return [f"schedule={name}", "optimizer=sgd", "optimizer.lr=0.05", "trainer.epochs=3",
            *WITHIN_THE_RUN.get(name, [])]


def _replayed_rates(schedule, history: dict, epochs: int) -> list[float]:
    """The rate at every step of the run, the schedule told each epoch's logs at its end as the
    loop tells it (a stateful schedule such as plateau follows the losses the run saw)."""
    rates = []
    for epoch in range(epochs):
        rates += [float(schedule(step)) for step in range(epoch * SPE, (epoch + 1) * SPE)]
        schedule.on_epoch_end(epoch, {key: values[epoch] for key, values in history.items()})
    return rates


@pytest.mark.parametrize("name", options("schedule"))
def test_each_schedule_trains_logs_every_step_and_reloads(name, tmp_path):
    import keras

    cfg = compose_small(*_overrides(name))
    metrics = tftrain.train(cfg, output_dir=tmp_path)
    logged = _logged_lrs(tmp_path)
    assert sorted(logged) == list(range(3 * SPE))
    expected = _replayed_rates(tftrain.build_schedule(cfg, SPE), metrics["history"], epochs=3)
    np.testing.assert_allclose([logged[s] for s in range(3 * SPE)], expected, rtol=1e-6)
    schedule = tftrain.build_schedule(cfg, SPE)  # as built at the start (the replayed one saw the run)
    model = keras.models.load_model(tmp_path / "model.keras")
    reloaded = model.optimizer._learning_rate  # the schedule object (learning_rate gives its value)
    # The run's rate multiplier (the linear scaling rule, NaN recovery) wraps the configured schedule.
    assert type(reloaded).__name__ == "Scaled" and float(reloaded.scale.numpy()) == 1.0
    assert type(reloaded.schedule) is type(schedule) and reloaded.schedule.get_config() == schedule.get_config()
    assert np.isfinite(metrics["test_loss"])


@pytest.mark.slow
@pytest.mark.parametrize("name", options("schedule"))
def test_resume_continues_the_schedule_at_the_right_step(name, tmp_path):
    cfg = compose_small(*_overrides(name), "schedule.warmup_epochs=0.5")
    whole = tftrain.train(cfg, output_dir=tmp_path / "whole")

    with pytest.raises(KeyboardInterrupt):  # after epoch 2's steps, before its checkpoint
        tftrain.train(compose_small(*_overrides(name), "schedule.warmup_epochs=0.5", crash_at(1)),
                      output_dir=tmp_path / "resumed")
    resumed = tftrain.train(cfg, output_dir=tmp_path / "resumed")
    assert resumed["steps"] == whole["steps"] == 3 * SPE
    np.testing.assert_allclose(resumed["history"]["learning_rate"], whole["history"]["learning_rate"], rtol=1e-6)
    np.testing.assert_allclose(resumed["history"]["loss"], whole["history"]["loss"], rtol=1e-5)
