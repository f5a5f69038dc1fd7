"""One process at a time in a run directory: a refused start writes and deletes nothing there
(issue 20, "The run lock"), with real processes racing for one directory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_cli, wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fcntl locks and signals as on Linux")

# A first epoch of well over 10 s on 2 cores: the refused starts below happen before its checkpoint.
SLOW = ["data=synthetic", "data.num_train=32768", "data.num_val=64", "data.num_test=64", "data.input_shape=[256]",
        "model.hidden_units=[1024,1024]", "trainer.epochs=1", "trainer.batch_size=32", "trainer.verbose=2",
        "logger=[]"]
WATCHED = [".tftrain.lock", "config.yaml", "preprocessing.json", ".hydra/config.yaml", ".hydra/hydra.yaml",
           ".hydra/overrides.yaml"]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0", "TF_CPP_MIN_LOG_LEVEL": "2",
            "CUDA_VISIBLE_DEVICES": ""}


def _snapshot(run_dir: Path) -> dict:
    return {name: ((run_dir / name).read_bytes(), (run_dir / name).stat().st_mtime_ns) for name in WATCHED}


@pytest.mark.slow
def test_a_refused_start_changes_nothing_and_a_third_process_is_refused_too(tmp_path):
    run_dir = tmp_path / "run"
    with open(tmp_path / "p1.out", "w") as out:
        p1 = subprocess.Popen([sys.executable, "-m", "tftrain", *SLOW, f"hydra.run.dir={run_dir}"], cwd=ROOT,
                              env=_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        # P1 holds the lock and has written its start-up files: it is about to train.
        wait_until(lambda: (run_dir / "preprocessing.json").is_file() and (run_dir / ".hydra/overrides.yaml").is_file(),
                   p1, "its preprocessing.json", timeout=120)
        assert not list(run_dir.glob("checkpoints/ckpt-*.index"))  # no checkpoint yet, as in the report
        assert (run_dir / ".tftrain.lock").read_text().startswith(f"pid {p1.pid} ")
        before = _snapshot(run_dir)
        entries = sorted(p.name for p in run_dir.iterdir())

        p2 = run_cli(*SLOW, f"hydra.run.dir={run_dir}", "trainer.seed=1", timeout=120)  # other overrides
        p3 = run_cli(*SLOW, f"hydra.run.dir={run_dir}", timeout=120)  # the same command
        bad = run_cli(*SLOW, f"hydra.run.dir={run_dir}", "optimizer.lr=-1", timeout=120)  # a bad config too
        assert p1.poll() is None, "P1 ended before the other starts: the test did not race"
        for refused in (p2, p3, bad):
            assert refused.returncode == 2, refused.stderr[-2000:]
            assert f"{run_dir} is in use: pid {p1.pid} on " in refused.stderr, refused.stderr[-2000:]
            assert "Fix:" in refused.stderr and "Traceback" not in refused.stderr
        assert _snapshot(run_dir) == before  # contents and mtimes: not even rewritten
        assert [n for n in sorted(p.name for p in run_dir.iterdir()) if n != "checkpoints"] == \
            [n for n in entries if n != "checkpoints"]
        assert "is in use" not in (run_dir / "tftrain.log").read_text()

        assert p1.wait(timeout=300) == 0, (tmp_path / "p1.out").read_text()[-3000:]
    finally:
        if p1.poll() is None:
            p1.kill()
    log = (run_dir / "tftrain.log").read_text()
    assert log.count("Outputs in") == 1 and "Resumed from" not in log  # one run trained there, once
    assert (run_dir / "model.keras").is_file() and (run_dir / "metrics.json").is_file()
    assert (run_dir / ".tftrain.lock").read_text() == ""  # released


def test_a_reader_asking_who_holds_a_lock_does_not_turn_a_start_away(tmp_path):
    import fcntl
    import threading

    from tftrain.tasks.locks import holder_of
    from tftrain.tasks.resume import RunLock

    lock = tmp_path / ".tftrain.lock"
    lock.write_text("")
    reader = open(lock)
    fcntl.flock(reader, fcntl.LOCK_SH | fcntl.LOCK_NB)  # holder_of's shared probe, caught mid-way
    threading.Timer(0.01, lambda: (fcntl.flock(reader, fcntl.LOCK_UN), reader.close())).start()
    with RunLock(tmp_path):
        assert lock.read_text().startswith(f"pid {os.getpid()} ")
        assert holder_of(lock).startswith(f"pid {os.getpid()} ")
    assert holder_of(lock) is None


def test_a_busy_lock_names_its_holder_on_the_error(tmp_path):
    from tftrain.errors import RunDirBusy
    from tftrain.tasks.resume import RunLock

    lock = tmp_path / ".tftrain.lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"f = open({str(lock)!r}, 'a+'); fcntl.flock(f, fcntl.LOCK_EX)\n"
        "f.write(f'pid {os.getpid()} on here since now'); f.flush(); time.sleep(60)")])
    try:
        end = time.monotonic() + 30
        while not (lock.is_file() and lock.read_text()) and time.monotonic() < end:
            time.sleep(0.05)
        with pytest.raises(RunDirBusy) as refused:
            RunLock(tmp_path).__enter__()
        assert refused.value.holder == f"pid {holder.pid} on here since now"
        assert lock.read_text() == f"pid {holder.pid} on here since now"  # the refused one changed nothing
    finally:
        holder.kill()
        holder.wait()
