"""Resume edge cases of issue 20 §3 that tests/test_resume.py does not reach: a real SIGKILL inside
the first checkpoint write, resumed from the command line, and a kill while a checkpoint's files are
being removed (a re-save of the same step, rotation)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, SMALL, metrics_of, run_cli, same_numbers

ARGS = [*SMALL, "trainer.checkpoint_every_steps=4", "trainer.deterministic=true", "logger=[]"]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGKILL as on Linux")
def test_sigkill_in_the_first_checkpoint_write_reruns_from_step_0_or_the_committed_one(tmp_path):
    """Killed as soon as the first checkpoint's first file appears (TensorFlow's ckpt-4_temp/): the
    plain rerun exits 0, says where it starts (step 0 when nothing was committed, else the committed
    checkpoint) and ends with the numbers of an uninterrupted run."""
    whole = tmp_path / "whole"
    assert run_cli(*ARGS, f"hydra.run.dir={whole}").returncode == 0
    run_dir, ckpt = tmp_path / "run", tmp_path / "run" / "checkpoints"
    with open(tmp_path / "run.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tftrain", *ARGS, f"hydra.run.dir={run_dir}"], cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while proc.poll() is None and time.monotonic() < deadline:
            if ckpt.is_dir() and any(n.startswith("ckpt-") for n in os.listdir(ckpt)):
                break
            time.sleep(0.0002)  # the write takes milliseconds
        proc.send_signal(signal.SIGKILL)
    finally:
        assert proc.wait(timeout=60) == -signal.SIGKILL
    committed = sorted(int(p.stem.split("-")[1]) for p in ckpt.glob("state-*.json"))
    rerun = run_cli(*ARGS, f"hydra.run.dir={run_dir}")
    out = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0 and "None of the" not in out, out[-3000:]
    if committed:  # the kill landed after the commit: an ordinary resume
        assert f"Resumed from {ckpt / f'ckpt-{committed[-1]}'} at step {committed[-1]}" in out
    else:
        assert "Not a checkpoint: ckpt-4 " in out and "Resuming from step 0 (no checkpoint was committed)" in out
        assert "Resumed from" not in out and (ckpt / "damaged").is_dir()
    assert not list(ckpt.glob("*_temp*")) and not list(ckpt.glob("*.tmp"))
    same_numbers(metrics_of(whole), metrics_of(run_dir))


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


def _kill_after_unlinks(monkeypatch, n: int) -> None:
    from pathlib import Path

    unlink, count = Path.unlink, [0]

    def dying_unlink(self, missing_ok=False):
        if count[0] == n:
            raise _Killed(self.name)
        count[0] += 1
        unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", dying_unlink)


def test_a_kill_while_a_step_is_saved_again_leaves_no_committed_checkpoint_without_its_files(tmp_path, monkeypatch,
                                                                                             caplog):
    """Saving a step again first clears that step's old files; killed after the first removal, what
    remains must not be a committed checkpoint whose index is gone (once "None of the 1 checkpoint(s)
    can be restored", exit 2): the state file, the commit, goes first."""
    import tensorflow as tf

    from tftrain.loop.checkpoints import Checkpointer, committed_steps

    Checkpointer(tmp_path, keep=3, v=tf.Variable(1.0)).save(4, {"history": []})
    _kill_after_unlinks(monkeypatch, 1)
    with pytest.raises(_Killed):
        Checkpointer(tmp_path, keep=3, v=tf.Variable(2.0)).save(4, {"history": []})
    monkeypatch.undo()
    assert committed_steps(tmp_path) == [] and (tmp_path / "ckpt-4.index").exists()  # uncommitted, not damaged
    with caplog.at_level("INFO", logger="tftrain"):
        assert Checkpointer(tmp_path, keep=3, v=tf.Variable(3.0)).restore() is None
    assert "Resuming from step 0 (no checkpoint was committed)" in caplog.text


def test_a_kill_while_rotating_leaves_the_old_checkpoint_uncommitted(tmp_path, monkeypatch, caplog):
    import tensorflow as tf

    from tftrain.loop.checkpoints import Checkpointer, committed_steps

    v = tf.Variable(1.0)
    checkpointer = Checkpointer(tmp_path, keep=1, v=v)
    checkpointer.save(4, {"history": []})
    v.assign(2.0)
    # save(8): its own leftovers' removal finds nothing to unlink; then 2 unlinks (tmp files
    # replaced, not unlinked) before rotation: kill at rotation's first removal + 1.
    original = Checkpointer._remove

    def rotate_then_die(step, directory):
        if step == 4:
            _kill_after_unlinks(monkeypatch, 1)
        original(step, directory)

    monkeypatch.setattr(Checkpointer, "_remove", staticmethod(rotate_then_die))
    with pytest.raises(_Killed):
        checkpointer.save(8, {"history": []})
    monkeypatch.undo()
    assert committed_steps(tmp_path) == [8] and (tmp_path / "ckpt-4.index").exists()
    w = tf.Variable(0.0)
    with caplog.at_level("INFO", logger="tftrain"):
        state = Checkpointer(tmp_path, keep=1, v=w).restore()
    assert state["step"] == 8 and float(w.numpy()) == 2.0 and "skipped" not in caplog.text
    assert "Not a checkpoint: ckpt-4" in caplog.text and (tmp_path / "damaged" / "ckpt-4.index").is_file()
