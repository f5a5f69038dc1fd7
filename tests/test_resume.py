"""Resume you can trust: preemption (SIGTERM) with a checkpoint at the step, damaged checkpoints
falling back, changed configs refused or noted, one process per run directory, outputs consistent
with the checkpoint, early stopping's best weights across a kill, environment faults, bounds.
Signals go to real subprocesses."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tftrain
from conftest import ROOT, SMALL, compose_small, crash_at, pause_at, run_cli, wait_until
from conftest import metrics_of as _metrics, same_numbers as _same_numbers
from tftrain.errors import ConfigError, DataError, TftrainError

LONG = ["data=synthetic", "data.num_train=4096", "data.num_val=64", "data.num_test=64", "model.hidden_units=[64]",
        "model.dropout=0.2", "trainer.epochs=6", "trainer.batch_size=32", "trainer.verbose=2",
        "trainer.deterministic=true", "logger=[]"]
SPE = 4096 // 32


def _start(run_dir, *args):
    log = open(run_dir.parent / f"{run_dir.name}.log", "w")
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests")])  # tests' callbacks (conftest) on the command line
    return subprocess.Popen([sys.executable, "-m", "tftrain", *args, f"hydra.run.dir={run_dir}"], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": path}, stdout=log, stderr=subprocess.STDOUT), log


def _wait_for(path, proc, timeout=180):
    wait_until(path.exists, proc, f"{path} appearing", timeout)


def _epochs_saved(run_dir) -> int:
    """Epochs in history.csv: rewritten at the end of each checkpoint save, its last write, so N rows
    mean epoch N's checkpoint is complete and the run has gone on to epoch N + 1's steps."""
    try:
        return max(len((run_dir / "history.csv").read_text().splitlines()) - 1, 0)
    except FileNotFoundError:
        return 0


def _checkpoint_steps(run_dir) -> list[int]:
    return sorted(int(p.name.split("-")[1].split(".")[0]) for p in (run_dir / "checkpoints").glob("ckpt-*.index"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("whole")
    result = run_cli(*LONG, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return _metrics(run_dir)


# ---------------------------------------------------------------- 1. preemption


@pytest.mark.slow
def test_sigterm_checkpoints_at_the_step_and_the_resumed_run_is_bit_identical(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    # Calls of 5 steps end off the epoch grid (auto may choose whole epochs of these tiny steps);
    # the uninterrupted run it is compared with ran with auto: the grouping changes no number.
    # The signal lands in epoch 2's steps, not in a save: sent while a callback holds the run after
    # its call that reaches batch 50 of epoch 2 (waiting for epoch 1's history.csv row instead raced
    # the background checkpoint writer: on a loaded machine the row came as epoch 2 ended).
    marker = tmp_path / "paused"
    proc, log = _start(run_dir, *LONG, "trainer.steps_per_execution=5", pause_at(1, 50, marker))
    try:
        wait_until(marker.exists, proc, "the pause in epoch 2's steps")
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: "Received SIGTERM" in (tmp_path / "run.log").read_text(), proc, "the signal's log line")
        marker.unlink()
        assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
    out = (tmp_path / "run.log").read_text()
    assert "Received SIGTERM" in out and "tftrain: stopped: Stopped on SIGTERM at step" in out
    assert "rerun the same command" in out and "Traceback" not in out
    # The run's own log ends with the same paragraph (printed, so also appended there).
    assert "tftrain: stopped: Stopped on SIGTERM at step" in (run_dir / "tftrain.log").read_text().splitlines()[-1]
    step = int(out.split("Stopped on SIGTERM at step ")[1].split()[0])
    assert step % SPE != 0, "stopped on the checkpoint grid: the test did not stop it mid-epoch"
    assert (run_dir / "checkpoints" / f"ckpt-{step}.index").is_file()
    resumed = run_cli(*LONG, "trainer.steps_per_execution=5", f"hydra.run.dir={run_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resumed from {run_dir / 'checkpoints' / f'ckpt-{step}'} at step {step}" in resumed.stdout + resumed.stderr
    _same_numbers(uninterrupted, _metrics(run_dir))
    with open(run_dir / "history.csv", newline="") as f:  # one row per epoch: none repeated, none lost
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == list(range(6))


@pytest.mark.slow
def test_a_second_signal_stops_at_once(tmp_path):
    """The first SIGINT asks for a checkpoint at the end of the current compiled call and an exit
    with 130; a second one, sent as soon as the first is logged, kills the process by the signal
    before that checkpoint. Both land while a callback holds the run after epoch 2's first call (a
    pause, not a race with the training's speed). An ignored second signal would leave a checkpoint
    past epoch 1's and the orderly stop's 130 and message."""
    run_dir, marker = tmp_path / "run", tmp_path / "paused"
    proc, log = _start(run_dir, *LONG, "trainer.steps_per_execution=64", pause_at(1, 0, marker))
    # Epoch 1's checkpoint is committed in the background while the pause holds the run: wait for
    # it too (a second signal before the commit loses it, as SIGKILL would).
    wait_until(lambda: marker.exists() and _epochs_saved(run_dir) >= 1, proc,
               "the pause after epoch 2's first call, epoch 1's checkpoint committed")
    proc.send_signal(signal.SIGINT)
    log_file = tmp_path / "run.log"  # two signals sent together can arrive as one: wait for the first
    wait_until(lambda: "Received SIGINT" in log_file.read_text(), proc, "the first SIGINT's log line", timeout=60)
    proc.send_signal(signal.SIGINT)
    try:
        returncode = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = log_file.read_text()
    assert returncode == -signal.SIGINT, f"exit status {returncode}, not killed by the second SIGINT:\n{out[-2000:]}"
    assert out.count("Received SIGINT") == 1
    assert "Stopped on SIGINT" not in out and "tftrain: stopped" not in out  # the orderly stop never ran
    # Nothing written after the first signal: the checkpoint it asked for (at the end of the call
    # after the pause, step 2 * SPE) is not there, nor any later one.
    assert _checkpoint_steps(run_dir) == [SPE] and _epochs_saved(run_dir) == 1
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("state-*.json")) == [f"state-{SPE}.json"]


# ---------------------------------------------------------------- 2. damaged checkpoints


@pytest.fixture
def three_checkpoints(tmp_path):
    """A finished run with checkpoints at steps 8, 12, 16 (every 4 steps, the last 3 kept)."""
    args = ("trainer.checkpoint_every_steps=4", "trainer.deterministic=true", "logger=[]")
    tftrain.train(compose_small(*args), output_dir=tmp_path)
    assert sorted(int(p.stem.split("-")[1]) for p in (tmp_path / "checkpoints").glob("*.index")) == [8, 12, 16]
    return tmp_path, args


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage, reason", [
    (lambda c: (c / "ckpt-16.index").unlink(), "index file is missing"),
    (lambda c: _truncate(next(c.glob("ckpt-16.data-*"))), "does not load"),
    (lambda c: (c / "state-16.json").write_text("{not json"), "state-16.json is unreadable"),
])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(three_checkpoints, damage, reason, caplog):
    run_dir, args = three_checkpoints
    damage(run_dir / "checkpoints")
    with caplog.at_level("INFO", logger="tftrain"):
        metrics = tftrain.train(compose_small(*args, "trainer.epochs=3"), output_dir=run_dir)
    assert "Checkpoint ckpt-16 was skipped: " in caplog.text and reason in caplog.text
    assert f"Resumed from {run_dir / 'checkpoints' / 'ckpt-12'} at step 12" in caplog.text
    assert metrics["steps"] == 24 and len(metrics["history"]["loss"]) == 3
    assert list((run_dir / "checkpoints" / "damaged").glob("*16*"))  # set aside, not deleted
    kept = sorted(int(p.stem.split("-")[1]) for p in (run_dir / "checkpoints").glob("*.index"))
    assert kept == [16, 20, 24] and all((run_dir / "checkpoints" / f"state-{s}.json").is_file() for s in kept)


def _swap(a, b):
    tmp = a.with_name(a.name + ".swap")
    os.replace(a, tmp)
    os.replace(b, a)
    os.replace(tmp, b)


def _swap_files(c, legacy=False):
    """ckpt-16's .index and data files exchanged with ckpt-12's (their state files stay)."""
    _swap(c / "ckpt-16.index", c / "ckpt-12.index")
    _swap(next(c.glob("ckpt-16.data-*")), next(c.glob("ckpt-12.data-*")))
    if legacy:  # state files of the earlier format (no checksum): the restored step alone must catch it
        for step in (12, 16):
            path = c / f"state-{step}.json"
            path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "checksum"}))


def _edit_state(c):
    state = json.loads((c / "state-16.json").read_text())
    state["history"][0]["loss"] = 0.125  # a plausible value, valid JSON: only the checksum can tell
    (c / "state-16.json").write_text(json.dumps(state))


@pytest.mark.parametrize("damage, reasons, resumed_at", [
    (_swap_files, ["ckpt-16 was skipped: state-16.json does not match its checkpoint",
                   "ckpt-12 was skipped: state-12.json does not match"], 8),
    (lambda c: _swap_files(c, legacy=True), ["ckpt-16 was skipped: its variables hold step 12, not 16",
                                             "ckpt-12 was skipped: its variables hold step 16, not 12"], 8),
    (lambda c: shutil.copy(c / "state-12.json", c / "state-16.json"),
     ["ckpt-16 was skipped: state-16.json belongs to step 12"], 12),
    (_edit_state, ["ckpt-16 was skipped: state-16.json does not match its checkpoint"], 12),
])
def test_a_state_file_is_bound_to_its_checkpoint(three_checkpoints, damage, reasons, resumed_at, caplog):
    """Swapped files, another step's state copied over, an edited value: damage, never resumed from."""
    run_dir, args = three_checkpoints
    damage(run_dir / "checkpoints")
    with caplog.at_level("INFO", logger="tftrain"):
        metrics = tftrain.train(compose_small(*args, "trainer.epochs=3"), output_dir=run_dir)
    for reason in reasons:
        assert reason in caplog.text
    assert f"Resumed from {run_dir / 'checkpoints' / f'ckpt-{resumed_at}'} at step {resumed_at}" in caplog.text
    assert metrics["steps"] == 24 and len(metrics["history"]["loss"]) == 3  # no epoch repeated or lost
    assert 0.125 not in metrics["history"]["loss"]
    with open(run_dir / "history.csv", newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1, 2]
    assert (run_dir / "checkpoints" / "damaged" / "state-16.json").is_file()  # set aside, not deleted


@pytest.mark.parametrize("uncommitted, resumed_at", [((16,), 12), ((8, 12, 16), 0)])
def test_a_checkpoint_never_committed_is_not_a_checkpoint(three_checkpoints, uncommitted, resumed_at, caplog):
    """A kill during a save leaves the checkpoint's files without their state file (the commit, written
    last), a state temporary, TensorFlow's _temp directory. The plain rerun resumes from the newest
    committed checkpoint, or from step 0 when there is none (a kill during the first save), and says so."""
    run_dir, args = three_checkpoints
    ckpt = run_dir / "checkpoints"
    for step in uncommitted:
        os.replace(ckpt / f"state-{step}.json", ckpt / f"state-{step}.json.tmp")
    (ckpt / "ckpt-16_temp").mkdir()
    (ckpt / "ckpt-16_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"partial")
    if resumed_at == 0:
        from tftrain.loop.checkpoints import committed_steps
        from tftrain.schema import validate
        from tftrain.tasks.resume import plan_resume

        assert committed_steps(ckpt) == []
        with pytest.raises(TftrainError, match="trainer.resume=must but there is no checkpoint"):
            plan_resume(run_dir, validate(compose_small(*args, "trainer.resume=must")))
    with caplog.at_level("INFO", logger="tftrain"):
        metrics = tftrain.train(compose_small(*args, "trainer.epochs=3"), output_dir=run_dir)
    names = ", ".join(f"ckpt-{s}" for s in sorted(uncommitted, reverse=True))
    assert f"Not a checkpoint: {names} in {ckpt} never committed" in caplog.text
    if resumed_at:
        assert f"Resuming from the newest committed one, ckpt-{resumed_at}" in caplog.text
        assert f"Resumed from {ckpt / f'ckpt-{resumed_at}'} at step {resumed_at}" in caplog.text
    else:
        assert "Resuming from step 0 (no checkpoint was committed)" in caplog.text and "Resumed" not in caplog.text
    assert "None of the" not in caplog.text
    assert metrics["steps"] == 24 and len(metrics["history"]["loss"]) == 3
    assert not (ckpt / "ckpt-16_temp").exists() and not list(ckpt.glob("*.tmp"))
    assert (ckpt / "damaged" / "ckpt-16.index").is_file()


@pytest.mark.slow
def test_a_stray_higher_step_file_does_not_decide_the_step(three_checkpoints, caplog):
    run_dir, args = three_checkpoints
    (run_dir / "checkpoints" / "ckpt-999999.index").touch()
    result = run_cli(*SMALL, *args, "trainer.epochs=3", f"hydra.run.dir={run_dir}")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "already at step" not in out and "Not a checkpoint: ckpt-999999" in out
    assert f"Resumed from {run_dir / 'checkpoints' / 'ckpt-16'} at step 16" in out
    assert _metrics(run_dir)["steps"] == 24
    assert (run_dir / "checkpoints" / "damaged" / "ckpt-999999.index").is_file()


def test_a_failed_write_removes_its_temporary_directory(tmp_path, monkeypatch):
    """Disk full: TensorFlow's ckpt-N_temp/ goes with the rest of the partial files, not at the next run."""
    import errno

    import tensorflow as tf

    from tftrain.loop.checkpoints import CheckpointError, Checkpointer

    checkpointer = Checkpointer(tmp_path, keep=3, v=tf.Variable(1.0))
    checkpointer.save(4, {"history": []})

    def full(prefix):
        (tmp_path / "ckpt-8_temp").mkdir()
        (tmp_path / "ckpt-8_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpointer.checkpoint, "write", full)
    with pytest.raises(CheckpointError, match="partial files were removed; the last good checkpoint is .*ckpt-4"):
        checkpointer.save(8, {"history": []})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "ckpt-4.data-00000-of-00001", "ckpt-4.index",
                                                          "state-4.json"]


def test_sigterm_before_the_first_step_says_nothing_was_trained(tmp_path, monkeypatch):
    from tftrain.errors import Preempted
    from tftrain.loop.signals import StopSignals

    enter = StopSignals.__enter__

    def signalled_during_setup(self):
        enter(self)
        os.kill(os.getpid(), signal.SIGTERM)  # handled by the handler just installed
        return self

    monkeypatch.setattr(StopSignals, "__enter__", signalled_during_setup)
    with pytest.raises(Preempted) as info:
        tftrain.train(compose_small("logger=[]"), output_dir=tmp_path)
    message = str(info.value)
    assert "Stopped on SIGTERM at step 0" in message and "before its first step" in message
    assert "None" not in message and not list((tmp_path / "checkpoints").glob("*.index"))


def test_sigterm_during_validation_stops_at_the_epoch_end(tmp_path, monkeypatch):
    """No further training call after the signal: the run stops at the epoch's checkpoint (step 8)."""
    from tftrain.errors import Preempted
    from tftrain.loop.trainer import Trainer

    evaluate = Trainer.evaluate

    def signalled_in_validation(self, dataset):
        os.kill(os.getpid(), signal.SIGTERM)
        return evaluate(self, dataset)

    monkeypatch.setattr(Trainer, "evaluate", signalled_in_validation)
    with pytest.raises(Preempted, match="Stopped on SIGTERM at step 8 .*after writing checkpoint .*ckpt-8"):
        tftrain.train(compose_small("logger=[]", "trainer.steps_per_execution=1"), output_dir=tmp_path)
    assert _checkpoint_steps(tmp_path) == [8] and _epochs_saved(tmp_path) == 1


def test_a_missing_bookkeeping_file_does_not_restart_from_zero(three_checkpoints, caplog):
    run_dir, args = three_checkpoints
    (run_dir / "checkpoints" / "checkpoint").unlink()
    with caplog.at_level("INFO", logger="tftrain"):
        metrics = tftrain.train(compose_small(*args, "trainer.epochs=3"), output_dir=run_dir)
    assert "at step 16" in caplog.text and metrics["steps"] == 24 and "skipped" not in caplog.text


@pytest.mark.slow
def test_when_no_checkpoint_loads_it_fails_listing_the_options(three_checkpoints):
    run_dir, args = three_checkpoints
    for state in (run_dir / "checkpoints").glob("state-*.json"):
        state.write_text("]")
    result = run_cli(*SMALL, *args, f"hydra.run.dir={run_dir}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "None of the 3 checkpoint(s)" in result.stderr and "trainer.resume=never" in result.stderr
    assert len(list((run_dir / "checkpoints").glob("*.index"))) == 3  # nothing deleted


def test_resume_never_moves_the_old_checkpoints_aside_and_must_needs_some(three_checkpoints, tmp_path_factory, caplog):
    run_dir, args = three_checkpoints
    with caplog.at_level("INFO", logger="tftrain"):
        metrics = tftrain.train(compose_small(*args, "trainer.resume=never"), output_dir=run_dir)
    assert "moved the 3 earlier checkpoint(s) aside" in caplog.text and "Resumed" not in caplog.text
    assert metrics["steps"] == 16 and len(metrics["history"]["loss"]) == 2
    (aside,) = run_dir.glob("checkpoints.old-*")
    assert len(list(aside.glob("*.index"))) == 3
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(TftrainError, match="trainer.resume=must but there is no checkpoint"):
        tftrain.train(compose_small(*args, "trainer.resume=must"), output_dir=empty)


# ---------------------------------------------------------------- 3. changed config on resume


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-epoch run with the cosine schedule, copied fresh for each test."""
    source = tmp_path_factory.mktemp("finished")
    tftrain.train(compose_small("schedule=cosine", "logger=[]"), output_dir=source)
    return source


@pytest.fixture
def run_copy(finished, tmp_path):
    shutil.copytree(finished, tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.parametrize("change, keys", [
    ("trainer.batch_size=16", ["trainer.batch_size"]),
    ("optimizer=sgd", ["optimizer._target_"]),
    ("model.hidden_units=[48]", ["model.hidden_units"]),
    ("trainer.seed=3", ["trainer.seed"]),
    ("schedule=step", ["schedule._target_"]),
    ("data.noise=2.0", ["data.noise"]),
    ("problem=regression", ["problem._target_"]),
    # Refused up front, not resumed with that state fresh (tftrain.tasks.resume.STATEFUL says why).
    ("optimizer.use_ema=true", ["optimizer.use_ema"]),
    ("callbacks=early_stopping", ["callbacks.early_stopping.enabled"]),
])
@pytest.mark.slow
def test_changes_that_would_corrupt_the_run_are_refused_naming_the_keys(run_copy, change, keys):
    result = run_cli(*SMALL, "schedule=cosine", "logger=[]", change,
                     f"hydra.run.dir={run_copy}")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    for key in keys:
        assert f"`{key}`" in result.stderr
    assert "a new run directory" in result.stderr and "trainer.resume=never" in result.stderr


@pytest.mark.slow
def test_a_different_replica_count_is_refused(run_copy):
    result = run_cli(*SMALL, "schedule=cosine", "logger=[]", "trainer.cpu_devices=2",
                     "trainer.strategy=mirrored", f"hydra.run.dir={run_copy}")
    assert result.returncode == 2 and "on 1 replica(s); this process has 2" in result.stderr


def test_legitimate_changes_go_on_with_a_note_and_the_config_history_is_kept(run_copy, caplog):
    with caplog.at_level("INFO", logger="tftrain"):
        metrics = tftrain.train(compose_small("schedule=cosine", "logger=[]",
                                              "trainer.epochs=4", "trainer.verbose=2"), output_dir=run_copy)
    assert metrics["steps"] == 32
    assert "Resuming with changed settings: trainer.epochs 2 -> 4, trainer.verbose 0 -> 2" in caplog.text
    # cosine over 2 epochs was at its end (rate 0) at step 16; over 4 epochs it is half way up again.
    assert "at step 16 the learning rate goes from 0 to 0.0005" in caplog.text
    (old,) = (run_copy / "config_history").glob("*.yaml")
    assert "epochs: 2" in old.read_text() and "trainer.epochs" in old.read_text().splitlines()[0]
    assert "epochs: 4" in (run_copy / "config.yaml").read_text()


def test_more_epochs_with_a_constant_rate_says_nothing_about_the_rate(caplog):
    from tftrain.tasks.resume import ResumePlan, describe

    plan = ResumePlan(previous=object(), changes={"trainer.epochs": (2, 4)})
    with caplog.at_level("INFO", logger="tftrain"):
        describe(plan, 0.001, 0.001, 16)
        assert "Resuming with changed settings: trainer.epochs 2 -> 4" in caplog.text
        assert "learning rate" not in caplog.text
        describe(plan, 0.001, 0.0005, 16)
    assert "at step 16 the learning rate goes from 0.001 to 0.0005" in caplog.text


@pytest.mark.parametrize("estimate, chosen, expected", [
    ((3e-4, 1e-7), 8, "a step is too short to time against the host's 300.0 µs per call"),
    ((3e-4, 2e-6), 100, "a step takes 2.0 µs, the host 300.0 µs per call: 60.0% of the time"),
    ((0.3, 2e-6), 8, "a step takes 2.0 µs, the host 300.00 ms per call: over 99.9% of the time"),
    ((0.002, 0.004), 1, "a step takes 4.00 ms, the host 2.00 ms per call: 33.3% of the time"),
])
def test_the_pacing_line_reads_sensibly(estimate, chosen, expected):
    from tftrain.loop.pacing import StepsPerCall

    pacer = StepsPerCall("auto", 100)
    pacer.estimate, pacer.chosen = estimate, chosen
    assert expected in pacer.describe() and " 0.00 ms" not in pacer.describe()


@pytest.mark.slow
def test_fewer_epochs_than_the_run_has_done_is_refused(run_copy):
    result = run_cli(*SMALL, "schedule=cosine", "logger=[]", "trainer.epochs=1",
                     f"hydra.run.dir={run_copy}")
    assert result.returncode == 2 and "already at step 16" in result.stderr and "trainer.epochs" in result.stderr


# ---------------------------------------------------------------- 4. one process per run directory


@pytest.mark.slow
def test_a_second_process_on_the_same_run_directory_fails_at_once(tmp_path):
    run_dir = tmp_path / "run"
    proc, log = _start(run_dir, *LONG, "trainer.epochs=1000")  # still running when the second starts
    try:
        _wait_for(run_dir / ".tftrain.lock", proc)
        _wait_for(run_dir / "checkpoints" / f"ckpt-{SPE}.index", proc)
        t0 = time.monotonic()
        second = run_cli(*LONG, f"hydra.run.dir={run_dir}")
        assert second.returncode == 2 and "is in use" in second.stderr and f"pid {proc.pid}" in second.stderr
        assert time.monotonic() - t0 < 60
    finally:
        proc.kill()
        proc.wait()


def test_a_stale_lock_is_taken_over(tmp_path, caplog):
    (tmp_path / ".tftrain.lock").write_text("pid 999999 on gone-host since 2026-01-01 00:00:00")
    with caplog.at_level("INFO", logger="tftrain"):
        tftrain.train(compose_small("trainer.epochs=1"), output_dir=tmp_path)
    assert "Took over the lock of a process that is gone (pid 999999" in caplog.text


# ---------------------------------------------------------------- 6. early stopping's best weights


@pytest.mark.slow
def test_early_stopping_killed_after_its_best_epoch_ends_bit_identical(tmp_path):
    args = ("callbacks=early_stopping", "callbacks.early_stopping.patience=2", "optimizer.lr=0.5", "trainer.epochs=8",
            "trainer.deterministic=true", "logger=[]")
    whole = tftrain.train(compose_small(*args), output_dir=tmp_path / "whole")
    assert whole["stopped_early"]
    best = int(np.argmin(whole["history"]["val_loss"]))
    with pytest.raises(KeyboardInterrupt):  # killed after the best epoch was checkpointed
        tftrain.train(compose_small(*args, crash_at(best + 1)), output_dir=tmp_path / "killed")
    resumed = tftrain.train(compose_small(*args), output_dir=tmp_path / "killed")
    _same_numbers(whole, resumed)  # the best epoch's weights restored, tested and saved as in the whole run


# ---------------------------------------------------------------- 7. environment faults


def _namespaces_available() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "--mount", "--map-root-user", "true"], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _namespaces_available(), reason="needs unshare (a private mount namespace) to mount a tmpfs")
def test_disk_full_during_a_save_is_a_clear_error_and_the_earlier_checkpoint_resumes(tmp_path):
    """A 3 MB tmpfs: the first checkpoints fit, a later one does not (ENOSPC); then more room, and
    the same command resumes from the last good checkpoint."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    tf_args = " ".join([*SMALL, "model.hidden_units=[256,256]", "trainer.epochs=6", "trainer.checkpoint_every_steps=4",
                        "trainer.keep_checkpoints=10", "logger=[]", f"hydra.run.dir={mnt}/run"])
    python = f"{sys.executable} -m tftrain {tf_args}"
    script = (f"mount -t tmpfs -o size=3m tmpfs {mnt} && {python}; echo FIRST_EXIT=$?; "
              f"echo LEFT: $(ls -a {mnt}/run/checkpoints); "
              f"mount -o remount,size=64m {mnt} && {python}; echo SECOND_EXIT=$?")
    r = subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c", script], capture_output=True, text=True,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    out = r.stdout + r.stderr
    assert "FIRST_EXIT=2" in out, out[-3000:]
    assert "Could not write checkpoint" in out and "No space left on device" in out and "Traceback" not in out
    left = out.split("LEFT: ")[1].splitlines()[0].split()
    assert "state-4.json" in left and not [n for n in left if "_temp" in n or n.endswith(".tmp")], left  # as it says
    assert "SECOND_EXIT=0" in out and "Resumed from" in out


@pytest.mark.skipif(not _namespaces_available(), reason="needs unshare (a private mount namespace) to mount read-only")
def test_a_read_only_run_directory_is_a_clear_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    script = f"mount -t tmpfs -o ro tmpfs {ro} && {sys.executable} -m tftrain {' '.join(SMALL)} hydra.run.dir={ro}/run"
    r = subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c", script], capture_output=True, text=True,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert r.returncode == 2 and "Read-only file system" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]


def test_a_run_directory_under_a_regular_file_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("")
    result = run_cli(*SMALL, f"hydra.run.dir={tmp_path / 'file' / 'run'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "Fix:" in result.stderr
    with pytest.raises(TftrainError, match="cannot be written"):
        tftrain.train(compose_small(), output_dir=tmp_path / "file" / "api")


# ---------------------------------------------------------------- 8. multi-worker network


@pytest.mark.slow
@pytest.mark.skipif(not _namespaces_available(), reason="needs unshare for a private network namespace")
def test_local_workers_listen_in_a_private_network_namespace(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "launch_local_workers.py"), "--workers", "2",
                             "--timeout", "240", "--", *SMALL, "trainer.epochs=3", f"hydra.run.dir={run_dir}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = []
    reached = []
    for line in proc.stdout:
        lines.append(line)
        if "steps per epoch" in line and not reached:  # the workers' servers are up: try to reach them
            for port in (20000, 20001):
                with socket.socket() as s:
                    s.settimeout(1)
                    reached.append(s.connect_ex(("127.0.0.1", port)) == 0)
    assert proc.wait(timeout=300) == 0, "".join(lines)[-3000:]
    assert "in a private network namespace" in "".join(lines)
    assert reached == [False, False]  # not reachable from this machine's own network
    assert _metrics(run_dir)["steps"] == 24


def _worker_pid(run_dir, index: int) -> int | None:
    """The pid of `python -m tftrain` worker `index` on run_dir (the launcher quiets all but worker 0)."""
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        args = [a.decode(errors="replace") for a in cmd]
        if "tftrain" in args and f"hydra.run.dir={run_dir}" in args and \
                ("hydra.output_subdir=null" in args) == (index != 0):
            return int(proc.name)
    return None


def _launch(run_dir, *args):
    return subprocess.Popen([sys.executable, str(ROOT / "scripts" / "launch_local_workers.py"), "--workers", "2",
                             "--timeout", "240", "--", *args, f"hydra.run.dir={run_dir}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=run_dir.parent,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the workers through /proc")
def test_sigterm_to_one_worker_stops_every_worker_at_the_same_step_and_resumes_bit_identical(tmp_path):
    args = [*LONG, "trainer.epochs=2"]
    whole = _launch(tmp_path / "whole", *args)
    out = whole.communicate(timeout=300)[0]
    assert whole.returncode == 0, out[-3000:]

    run_dir = tmp_path / "run"
    proc = _launch(run_dir, *args)
    _wait_for(run_dir / "checkpoints" / f"ckpt-{SPE}.index", proc)
    pid = _worker_pid(run_dir, 1)
    assert pid is not None
    os.kill(pid, signal.SIGTERM)  # only worker 1 is preempted; worker 0 must stop at the same step
    out = proc.stdout.read()
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM, out[-3000:]
    stopped = {w: [ln for ln in out.splitlines() if ln.startswith(f"[worker {w}]") and "stopped: Stopped on" in ln]
               for w in (0, 1)}
    assert "Stopped on SIGTERM at step" in stopped[1][0]
    assert "Stopped on a stop request from another worker at step" in stopped[0][0]
    step = int(stopped[1][0].split(" at step ")[1].split()[0])
    assert int(stopped[0][0].split(" at step ")[1].split()[0]) == step and SPE < step < 2 * SPE
    assert (run_dir / "checkpoints" / f"ckpt-{step}.index").exists()

    resumed = _launch(run_dir, *args)
    out = resumed.stdout.read()
    assert resumed.wait(timeout=300) == 0, out[-3000:]
    assert f"Resumed from {run_dir / 'checkpoints' / f'ckpt-{step}'} at step {step}" in out
    _same_numbers(_metrics(tmp_path / "whole"), _metrics(run_dir))


# ---------------------------------------------------------------- 9. bounds and messages


def test_epochs_are_bounded():
    from tftrain.schema import validate

    with pytest.raises(ConfigError, match="trainer.epochs.*1,000,000"):
        validate(tftrain.compose(["trainer.epochs=99999999999999999999"]))


def test_a_corrupt_image_is_named(tmp_path):
    import tensorflow as tf

    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(4):
            tf.io.write_file(str(tmp_path / "imgs" / c / f"{i}.png"), tf.io.encode_png(np.zeros((4, 4, 3), np.uint8)))
    bad = tmp_path / "imgs" / "b" / "2.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    with pytest.raises(DataError, match=f"The first unreadable file: {bad}"):
        from tftrain.config.factory import build_data
        from tftrain.schema import validate

        build_data(validate(tftrain.compose(["data=image_folder", f"data.path={tmp_path / 'imgs'}",
                                             "data.image_size=[4,4]", "trainer.batch_size=2"])))


def test_a_file_that_is_not_an_npz_is_told_so(tmp_path):
    path = tmp_path / "data.npz"
    np.save(path, np.zeros(3))  # a .npy under an .npz name
    os.replace(str(path) + ".npy", path)
    with pytest.raises(DataError) as info:
        tftrain.train(compose_small("data=npz", f"data.path={path}"), output_dir=tmp_path / "run")
    assert "is not an .npz file" in str(info.value) and "allow_pickle" not in str(info.value)
