"""Distribution, exact resume after SIGKILL, reproducibility. Strategies that fix TensorFlow's
devices (a split CPU, multi-worker) run in subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import tftrain
from conftest import ROOT, SMALL, compose_small, run_cli
from conftest import metrics_of as _metrics, same_numbers as _same_numbers



@pytest.mark.slow
def test_batch_norm_on_replicas_left_without_examples_is_refused_before_training(tmp_path):
    # digits' 1167 training examples in batches of 64 end with 15: all on the first of 2 replicas.
    result = run_cli("model.batch_norm=true", "trainer.cpu_devices=2", "trainer.strategy=mirrored",
                     f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "`data.drop_remainder`" in result.stderr and "1167 examples in batches of 64 end with 15" in result.stderr
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_two_replicas_agree_with_one(tmp_path):
    args = [*SMALL, "trainer.epochs=3", "trainer.verbose=2"]
    one = run_cli(*args, f"hydra.run.dir={tmp_path / 'one'}")
    two = run_cli(*args, "trainer.cpu_devices=2", "trainer.strategy=mirrored", f"hydra.run.dir={tmp_path / 'two'}")
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]
    assert "2 replica(s) (mirrored), global batch 32 (16 per replica)" in two.stdout + two.stderr
    a, b = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        np.testing.assert_allclose(a["history"][key], b["history"][key], rtol=1e-5)
    np.testing.assert_allclose(a["weights_fingerprint"], b["weights_fingerprint"], rtol=1e-5)


@pytest.mark.slow
def test_two_local_workers_end_in_sync_and_only_the_chief_writes(tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "launch_local_workers.py"), "--workers", "2", "--timeout", "240",
         "--", *SMALL, "trainer.verbose=2", f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stdout[-4000:]
    prints = {w: [ln for ln in result.stdout.splitlines() if ln.startswith(f"[worker {w}]") and "fingerprint" in ln]
              for w in (0, 1)}
    assert prints[0] and prints[1]
    assert prints[0][-1].split()[-1] == prints[1][-1].split()[-1]  # identical weights on both workers
    m = _metrics(run_dir)
    assert m["epochs"] == 2 and m["steps"] == 16
    for name in ("model.keras", "config.yaml", ".hydra/config.yaml", "checkpoints/ckpt-16.index"):
        assert (run_dir / name).exists(), name
    assert list((run_dir / "tensorboard" / "train").glob("events.*"))
    assert not list(run_dir.glob("tftrain-worker-*"))


def test_multi_worker_without_tf_config_is_a_clear_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    result = subprocess.run([sys.executable, "-m", "tftrain", *SMALL, "trainer.strategy=multi_worker",
                             f"hydra.run.dir={tmp_path}"], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "TF_CONFIG" in result.stderr and "Traceback" not in result.stderr


KILL_ARGS = ["data=synthetic", "data.num_train=4096", "data.num_val=64", "data.num_test=64",
             "model.hidden_units=[64]", "model.dropout=0.2", "trainer.epochs=3", "trainer.batch_size=32",
             "trainer.verbose=0", "trainer.deterministic=true", "trainer.checkpoint_every_steps=10"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("whole")
    whole = run_cli(*KILL_ARGS, f"hydra.run.dir={run_dir}")
    assert whole.returncode == 0, whole.stderr[-3000:]
    return _metrics(run_dir)


@pytest.mark.slow
@pytest.mark.parametrize("after", [10, 250])  # steps off the epoch grid (128), in epochs 1 and 2
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path, uninterrupted, after):
    run_dir = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "tftrain", *KILL_ARGS, f"hydra.run.dir={run_dir}"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    index = run_dir / "checkpoints" / f"state-{after}.json"  # written last: the checkpoint is committed
    deadline = time.monotonic() + 120
    while not index.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"

    resumed = run_cli(*KILL_ARGS, f"hydra.run.dir={run_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    step = int(log.split("Resumed from")[1].split("step ")[1].split()[0])
    assert 0 < step < 3 * 128 and step % 128 != 0  # resumed inside an epoch
    _same_numbers(uninterrupted, _metrics(run_dir))


def test_same_command_twice_is_bit_identical(tmp_path):
    args = ("model.dropout=0.3", "trainer.deterministic=true")
    a = tftrain.train(compose_small(*args), output_dir=tmp_path / "a")
    b = tftrain.train(compose_small(*args), output_dir=tmp_path / "b")
    _same_numbers(a, b)


def test_steps_per_execution_does_not_change_the_numbers(tmp_path):
    a = tftrain.train(compose_small("trainer.steps_per_execution=1"), output_dir=tmp_path / "a")
    b = tftrain.train(compose_small("trainer.steps_per_execution=3"), output_dir=tmp_path / "b")
    np.testing.assert_allclose(a["history"]["loss"], b["history"]["loss"], rtol=1e-6)
    assert a["steps"] == b["steps"] == 16


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_and_xla_train_on_cpu(tmp_path, precision):
    m = tftrain.train(compose_small(f"trainer.mixed_precision={precision}", "trainer.jit_compile=true",
                                    "model.hidden_units=[64]", "optimizer.lr=0.01"), output_dir=tmp_path)
    assert np.isfinite(m["test_loss"]) and m["history"]["loss"][1] < m["history"]["loss"][0]


@pytest.mark.slow
def test_scale_lr_multiplies_the_rate_by_the_replicas(tmp_path):
    result = run_cli(*SMALL, "trainer.epochs=1", "optimizer=sgd", "optimizer.lr=0.05", "trainer.cpu_devices=2",
                     "trainer.strategy=mirrored", "trainer.scale_lr=true", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert _metrics(tmp_path)["history"]["learning_rate"] == [pytest.approx(0.1)]
