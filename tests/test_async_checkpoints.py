"""Checkpoints written in the background (tftrain/loop/checkpoints.py): a write holds the values of
its step although training goes on during it, a failed write still fails the run with the same
error and leaves the earlier checkpoints, loggers hear of an epoch only once its checkpoint is
committed, and a run killed around a background write resumes exactly."""

from __future__ import annotations

import csv
import errno
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import tftrain
from conftest import ROOT, SMALL, compose_small, crash_at, metrics_of, run_cli, same_numbers
from tftrain.loggers import Logger

SPE = 256 // 32  # SMALL's steps per epoch
# Long enough epochs (64 steps) for a kill to land between epoch 1's checkpoint and the end of the run.
ARGS = [*(a for a in SMALL if not a.startswith("data.num_train=")), "data.num_train=2048", "trainer.epochs=3",
        "trainer.deterministic=true", "model.dropout=0.2", "logger=[]"]
KILL_SPE = 2048 // 32


@pytest.fixture
def gate(monkeypatch):
    """Holds every checkpoint write made off the main thread until `gate.set()`, and records which
    thread each write ran on: the background write is then certainly still in flight while the
    test trains on."""
    import tensorflow as tf

    gate = threading.Event()
    gate.threads = []
    write = tf.train.Checkpoint.write

    def held(self, *args, **kwargs):
        gate.threads.append(threading.current_thread().name)
        if threading.current_thread() is not threading.main_thread():
            assert gate.wait(60), "the test never released the write"
        return write(self, *args, **kwargs)

    monkeypatch.setattr(tf.train.Checkpoint, "write", held)
    yield gate
    gate.set()


def _model_and_optimizer(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(2)])
    optimizer = keras.optimizers.Adam(0.1)
    optimizer.build(model.trainable_variables)
    return model, optimizer


def _train(model, optimizer, steps: int) -> None:
    import tensorflow as tf

    x = tf.random.normal([8, 5], seed=1)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x)))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))


def _values(model, optimizer, extra) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in [*model.weights, *optimizer.variables, extra]]


def test_a_background_write_holds_the_values_of_its_step_while_training_goes_on(tmp_path, gate):
    import tensorflow as tf

    from tftrain.loop.checkpoints import Checkpointer

    model, optimizer = _model_and_optimizer(0)
    sums = tf.Variable([1.0, 2.0], dtype=tf.float64)
    checkpointer = Checkpointer(tmp_path, keep=3, model=model, optimizer=optimizer, sums=sums)
    _train(model, optimizer, 2)
    at_save = _values(model, optimizer, sums)
    checkpointer.save(2, {"history": [{"loss": 1.0}]}, background=True)
    assert not (tmp_path / "state-2.json").exists()  # returned before the write: it is held by the gate
    _train(model, optimizer, 3)  # the steps after the save change every variable...
    sums.assign([5.0, 6.0])
    after = _values(model, optimizer, sums)
    changed = [not np.array_equal(a, b) for a, b in zip(at_save, after)]
    assert all(changed[:len(model.weights)]) and changed[-1] and sum(changed) == len(changed) - 1  # all but the rate
    gate.set()
    checkpointer.wait()
    assert gate.threads[-1].startswith("tftrain-checkpoint")
    # ...but not what was written: a fresh model restored from it holds the values at the save.
    fresh_model, fresh_optimizer = _model_and_optimizer(1)
    fresh_sums = tf.Variable([0.0, 0.0], dtype=tf.float64)
    state = Checkpointer(tmp_path, keep=3, model=fresh_model, optimizer=fresh_optimizer, sums=fresh_sums).restore()
    assert state["step"] == 2 and state["history"] == [{"loss": 1.0}]
    restored = _values(fresh_model, fresh_optimizer, fresh_sums)
    assert len(restored) == len(at_save) and all(np.array_equal(a, b) for a, b in zip(at_save, restored))
    # A synchronous write of the same objects has the same keys and values (the background one
    # serializes host copies in place of the variables, under the variables' own names).
    checkpointer.save(5, {"history": []})
    background, synchronous = (tf.train.list_variables(str(tmp_path / f"ckpt-{s}")) for s in (2, 5))
    assert background == synchronous
    reader = tf.train.load_checkpoint(str(tmp_path / "ckpt-5"))
    written = {name: reader.get_tensor(name) for name, _ in synchronous if "VARIABLE_VALUE" in name}
    assert sorted(map(np.ndarray.tolist, map(np.ravel, written.values()))) == \
        sorted(map(np.ndarray.tolist, map(np.ravel, after)))


def test_tftrain_sync_checkpoints_writes_on_the_calling_thread(tmp_path, gate, monkeypatch):
    import tensorflow as tf

    from tftrain.loop.checkpoints import Checkpointer

    monkeypatch.setenv("TFTRAIN_SYNC_CHECKPOINTS", "1")
    checkpointer = Checkpointer(tmp_path, keep=3, v=tf.Variable(1.0))
    checkpointer.save(4, {"history": []}, background=True)
    assert (tmp_path / "state-4.json").is_file() and gate.threads == [threading.main_thread().name]


def _disk_full(monkeypatch, directory, step: int) -> None:
    """The next write of `step` fails as a full disk would, after leaving partial files."""
    import tensorflow as tf

    write = tf.train.Checkpoint.write

    def full(self, prefix, *args, **kwargs):
        if prefix.endswith(f"ckpt-{step}"):
            (directory / f"ckpt-{step}_temp").mkdir()
            (directory / f"ckpt-{step}_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"half")
            (directory / f"ckpt-{step}.index").write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(self, prefix, *args, **kwargs)

    monkeypatch.setattr(tf.train.Checkpoint, "write", full)


@pytest.mark.parametrize("next_call", ["save", "close", "latest", "restore"])
def test_a_failed_background_write_fails_at_the_next_call_and_leaves_the_earlier_checkpoints(tmp_path, monkeypatch,
                                                                                              next_call):
    import tensorflow as tf

    from tftrain.loop.checkpoints import CheckpointError, Checkpointer

    v = tf.Variable(1.0)
    checkpointer = Checkpointer(tmp_path, keep=3, v=v)
    checkpointer.save(4, {"history": []}, background=True)
    _disk_full(monkeypatch, tmp_path, 8)
    then = []
    v.assign(2.0)
    checkpointer.save(8, {"history": []}, background=True, then=lambda: then.append(8))  # returns: in flight
    calls = {"save": lambda: checkpointer.save(12, {"history": []}, background=True), "close": checkpointer.close,
             "latest": lambda: checkpointer.latest, "restore": checkpointer.restore}
    with pytest.raises(CheckpointError, match=r"Could not write checkpoint ckpt-8 in .*No space left on device .*"
                                              r"partial files were removed; the last good checkpoint is .*ckpt-4\."):
        calls[next_call]()
    assert then == []  # history.csv (the controller's `then`) is not written for a write that failed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "ckpt-4.data-00000-of-00001", "ckpt-4.index",
                                                          "state-4.json"]
    monkeypatch.undo()
    w = tf.Variable(0.0)
    assert Checkpointer(tmp_path, keep=3, v=w).restore()["step"] == 4 and float(w.numpy()) == 1.0
    checkpointer.close()  # reported once: nothing left to raise


class CommitSpy(Logger):
    """A user's logger (`+logger.spy._target_=test_async_checkpoints.CommitSpy`): for each epoch it
    is told about, whether that epoch's checkpoint was committed by then, and history.csv's rows."""

    seen: list = []

    def __init__(self):
        self.step_freq, self.run_dir = 0, None

    def start(self, run):
        self.run_dir = run.run_dir

    def log_epoch(self, epoch, logs):
        from tftrain.loop.checkpoints import committed_steps

        rows = len((self.run_dir / "history.csv").read_text().splitlines()) - 1
        CommitSpy.seen.append((epoch, (epoch + 1) * SPE in committed_steps(self.run_dir / "checkpoints"), rows))


def test_loggers_hear_of_an_epoch_only_after_its_checkpoint_is_committed(tmp_path, gate):
    """With a logger the checkpoint is still written in the background, and the loop sends the
    epoch's logs only once its checkpoint is committed (at the next save, or at the end)."""
    gate.set()
    CommitSpy.seen = []
    tftrain.train(compose_small("logger=[]", "+logger.spy._target_=test_async_checkpoints.CommitSpy"),
                  output_dir=tmp_path)
    assert CommitSpy.seen == [(0, True, 1), (1, True, 2)]
    assert gate.threads and threading.main_thread().name not in set(gate.threads)


def test_history_csv_never_runs_ahead_of_the_checkpoints(tmp_path, gate):
    """Epoch 1's write held while epoch 2 trains and the run crashes: until the write is let go
    there is neither its commit nor a history.csv row; the crash waits for the write, which then
    commits and writes the row."""
    from tftrain.loop.checkpoints import committed_steps

    before_release = []

    def release_soon():
        time.sleep(0.5)  # only orders the events: what is seen before the release holds however long it takes
        before_release.append((committed_steps(tmp_path / "checkpoints"), (tmp_path / "history.csv").exists()))
        gate.set()

    releaser = threading.Thread(target=release_soon)
    releaser.start()
    with pytest.raises(KeyboardInterrupt):
        tftrain.train(compose_small("logger=[]", "trainer.epochs=3", crash_at(1)), output_dir=tmp_path)
    releaser.join()
    assert before_release == [([], False)]
    assert committed_steps(tmp_path / "checkpoints") == [SPE]
    with open(tmp_path / "history.csv", newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("whole")
    result = run_cli(*ARGS, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return metrics_of(run_dir)


def _first_write_of_epoch_1(ckpt):
    return ckpt.is_dir() and any(n.startswith(f"ckpt-{KILL_SPE}") for n in os.listdir(ckpt))


def _epoch_1_committed(ckpt):
    return (ckpt / f"state-{KILL_SPE}.json").is_file() and (ckpt.parent / "history.csv").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGKILL as on Linux")
@pytest.mark.parametrize("kill_when", [_first_write_of_epoch_1, _epoch_1_committed], ids=["in-the-write", "after-it"])
def test_a_run_killed_right_after_an_epoch_resumes_exactly(tmp_path, uninterrupted, kill_when):
    """SIGKILL while epoch 1's checkpoint is written in the background (its first file just
    appeared) or just after its commit (epoch 2 training): the plain rerun ends with the numbers of
    the uninterrupted run and one history row per epoch."""
    run_dir, ckpt = tmp_path / "run", tmp_path / "run" / "checkpoints"
    with open(tmp_path / "run.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tftrain", *ARGS, f"hydra.run.dir={run_dir}"], cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while proc.poll() is None and time.monotonic() < deadline and not kill_when(ckpt):
            time.sleep(0.0002)  # the write takes milliseconds
        proc.send_signal(signal.SIGKILL)
    finally:
        assert proc.wait(timeout=60) == -signal.SIGKILL, (tmp_path / "run.log").read_text()[-3000:]
    rerun = run_cli(*ARGS, f"hydra.run.dir={run_dir}")
    out = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0 and "None of the" not in out, out[-3000:]
    if kill_when is _epoch_1_committed:
        assert f"Resumed from {ckpt / f'ckpt-{KILL_SPE}'} at step {KILL_SPE}" in out
    assert not list(ckpt.glob("*_temp*")) and not list(ckpt.glob("*.tmp"))
    same_numbers(uninterrupted, metrics_of(run_dir))
    with open(run_dir / "history.csv", newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1, 2]
