"""Fast by default: steps per call chosen from measured times (the same numbers as one step per
call), XLA where it pays, gradient accumulation equal to the larger batch (1 and 2 replicas, with
a schedule, clipping and EMA, across a kill), and the start-up breakdown in metrics.json."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import tftrain
from conftest import SMALL, compose_small, crash_at, run_cli
from tftrain.errors import ConfigError
from tftrain.loop.pacing import MAX_CALL_SECONDS, PROBE, REPEATS, TARGET_OVERHEAD, StepsPerCall
from tftrain.schema import validate

EXACT = ("trainer.deterministic=true", "logger=[]")


def _calibrate(overhead: float, step: float, steps_per_epoch: int = 10_000) -> StepsPerCall:
    pacer = StepsPerCall("auto", steps_per_epoch)
    while pacer.chosen is None:
        n = pacer.next()
        pacer.observe(n, overhead + n * step)
    return pacer


def test_auto_steps_per_call_keeps_the_host_share_under_the_target():
    pacer = _calibrate(overhead=1e-3, step=1e-4)
    n = pacer.chosen
    assert 1e-3 / (1e-3 + n * 1e-4) <= TARGET_OVERHEAD < 1e-3 / (1e-3 + (n - 1) * 1e-4)  # the fewest that do
    assert pacer.estimate == pytest.approx((1e-3, 1e-4))
    assert _calibrate(overhead=0.1, step=0.05).chosen == int(MAX_CALL_SECONDS / 0.05)  # a call ends every 0.2 s
    assert _calibrate(overhead=1e-3, step=1e-4, steps_per_epoch=30).chosen == 30  # within an epoch
    assert _calibrate(overhead=0.0, step=1e-3).chosen == 1  # no overhead: nothing to amortize
    fixed = StepsPerCall(7, 100)
    assert fixed.next() == 7 and fixed.chosen == 7


def test_calibration_uses_repeated_probes_after_the_tracing_call():
    pacer = StepsPerCall("auto", 1000)
    seen = []
    while pacer.chosen is None:
        n = pacer.next()
        seen.append(n)
        pacer.observe(n, 10.0 if len(seen) == 1 else 1e-3 + n * 1e-4)  # the first call traces: slow, ignored
    assert seen == [1] * (1 + REPEATS) + [PROBE] * REPEATS
    assert pacer.estimate == pytest.approx((1e-3, 1e-4))


@pytest.mark.slow
def test_auto_steps_per_call_trains_exactly_like_one_step_per_call(tmp_path, caplog):
    one = tftrain.train(compose_small(*EXACT, "trainer.steps_per_execution=1", "trainer.epochs=3"),
                        output_dir=tmp_path / "one")
    with caplog.at_level("INFO", logger="tftrain"):
        auto = tftrain.train(compose_small(*EXACT, "trainer.epochs=3", "trainer.checkpoint_every_steps=5"),
                             output_dir=tmp_path / "auto")
    assert "trainer.steps_per_execution=auto: " in caplog.text and "step(s) per call" in caplog.text
    assert auto["history"]["loss"] == one["history"]["loss"] and auto["weights_fingerprint"] == one["weights_fingerprint"]
    # Checkpoint steps stay exact whatever the count per call: the last 3 of every 5th step and the epoch ends.
    steps = sorted(int(p.stem.split("-")[1]) for p in (tmp_path / "auto" / "checkpoints").glob("*.index"))
    assert steps == [16, 20, 24]


def test_xla_is_off_by_default_on_a_cpu_and_logged(tmp_path, caplog):
    from tftrain.loop.distribute import use_xla

    assert use_xla("auto", deterministic=False) == (False, "trainer.jit_compile=auto, without a GPU")
    assert use_xla("auto", deterministic=True)[0] is False and use_xla(True, deterministic=False)[0] is True
    with pytest.raises(ConfigError, match="trainer.jit_compile"):
        validate(compose_small("trainer.jit_compile=sometimes"))
    with pytest.raises(ConfigError, match="trainer.steps_per_execution"):
        validate(compose_small("trainer.steps_per_execution=0"))
    with caplog.at_level("INFO", logger="tftrain"):
        tftrain.train(compose_small("trainer.epochs=1", "logger=[]"), output_dir=tmp_path)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("XLA ")]
    assert said == ["XLA off (trainer.jit_compile=auto, without a GPU); steps per call: chosen early in the run "
                    "(trainer.steps_per_execution=auto)"]


ACCUMULATE = (*EXACT, "schedule=cosine", "optimizer.global_clipnorm=0.5", "optimizer.use_ema=true", "trainer.epochs=3")


@pytest.mark.slow
def test_accumulating_gradients_equals_the_larger_batch(tmp_path):
    big = tftrain.train(compose_small(*ACCUMULATE), output_dir=tmp_path / "big")  # batch 32
    acc = tftrain.train(compose_small(*ACCUMULATE, "trainer.accumulate_steps=4"), output_dir=tmp_path / "acc")
    assert acc["steps"] == big["steps"] == 24  # updates: 256 // 32 per epoch
    for key in ("loss", "val_loss", "accuracy", "learning_rate"):
        np.testing.assert_allclose(acc["history"][key], big["history"][key], rtol=1e-5)
    assert acc["weights_fingerprint"] == pytest.approx(big["weights_fingerprint"], rel=1e-6)


@pytest.mark.slow
def test_accumulation_under_two_replicas_equals_one_replica_with_the_larger_batch(tmp_path):
    big = tftrain.train(compose_small(*ACCUMULATE), output_dir=tmp_path / "big")
    result = run_cli(*SMALL, *ACCUMULATE, "trainer.accumulate_steps=2", "trainer.cpu_devices=2",
                     "trainer.strategy=mirrored", "trainer.verbose=2", f"hydra.run.dir={tmp_path / 'two'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 replica(s) (mirrored), global batch 32 (16 per replica, 2 batches of 16 per update)" in result.stdout
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    for key in ("loss", "val_loss", "learning_rate"):
        np.testing.assert_allclose(two["history"][key], big["history"][key], rtol=1e-5)
    assert two["weights_fingerprint"] == pytest.approx(big["weights_fingerprint"], rel=1e-6)


@pytest.mark.slow
def test_a_kill_during_accumulation_resumes_exactly_and_steps_count_updates(tmp_path):
    args = (*ACCUMULATE, "trainer.accumulate_steps=4", "logger=csv", "trainer.checkpoint_every_steps=5")
    whole = tftrain.train(compose_small(*args), output_dir=tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        tftrain.train(compose_small(*args, crash_at(1)), output_dir=tmp_path / "killed")
    resumed = tftrain.train(compose_small(*args), output_dir=tmp_path / "killed")
    assert resumed["history"] == {**whole["history"], "seconds": resumed["history"]["seconds"]}
    assert resumed["weights_fingerprint"] == whole["weights_fingerprint"]
    with open(tmp_path / "killed" / "steps.csv", newline="") as f:  # one row per update, none twice
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(24))


def test_accumulate_steps_must_divide_the_batch():
    with pytest.raises(ConfigError, match=r"`trainer.accumulate_steps`.*a divisor of trainer.batch_size \(32\)"):
        validate(compose_small("trainer.accumulate_steps=5"))


def test_metrics_hold_the_start_up_breakdown(tmp_path):
    metrics = tftrain.train(compose_small("logger=[]", "trainer.epochs=1"), output_dir=tmp_path)
    phases = metrics["startup_s"]
    assert list(phases)[-1] == "first_step" and {"validate", "import_tensorflow_and_check_targets", "data",
                                                  "model_and_optimizer"} <= set(phases)
    assert all(v >= 0 for v in phases.values())
