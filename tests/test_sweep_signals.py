"""Sweeps under signals and side by side (issue 20): a second copy of a sweep skips the jobs the
first one runs, a SIGTERM stops a sweep after the running job's checkpoint, and a parallel
sweep's workers end with it when it is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, SMALL

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals and /proc as on Linux")

# Epochs of about a second on 2 cores: a signal lands inside a job, not after it.
LONGER = ["data=synthetic", "data.num_train=8192", "data.num_val=64", "data.num_test=64",
          "model.hidden_units=[512,512]", "trainer.batch_size=32", "trainer.verbose=2", "logger=[]"]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0", "TF_CPP_MIN_LOG_LEVEL": "2",
            "CUDA_VISIBLE_DEVICES": ""}


def _start(out: Path, *args: str) -> subprocess.Popen:
    with open(out, "w") as f:
        return subprocess.Popen([sys.executable, "-m", "tftrain", *args], cwd=ROOT, env=_env(), stdout=f,
                                stderr=subprocess.STDOUT)


def _wait_for(condition, proc, what: str, timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the sweep ended (exit {proc.returncode}) before {what}"
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


def _status(run: Path) -> str | None:
    try:
        return json.loads((run / "metrics.json").read_text())["status"]
    except (OSError, ValueError):
        return None


def test_sigterm_stops_a_sweep_after_the_running_jobs_checkpoint_and_the_rerun_resumes(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *LONGER, "trainer.epochs=5", "optimizer=sgd,adam", f"hydra.sweep.dir={sweep}"]
    proc = _start(tmp_path / "first.out", *args)
    try:
        _wait_for(lambda: any(sweep.glob("0_*/checkpoints/ckpt-*.index")), proc, "job 0's first checkpoint")
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = (tmp_path / "first.out").read_text()
    assert code == 143, out[-3000:]
    assert "tftrain: stopped: Stopped on SIGTERM" in out and "after writing checkpoint" in out
    assert f"hydra.sweep.dir={sweep}" in out  # how to resume
    (job0,) = sweep.glob("0_*")
    assert _status(job0) == "stopped" and not (job0 / "error.txt").exists()
    assert not list(sweep.glob("1_*/.hydra")) and not list(sweep.glob("1_*/checkpoints"))  # job 1 never started
    summary = (sweep / "summary.md").read_text()
    assert "stopped" in summary and "0 failed" in summary
    assert out.count("epoch 5/5") == 0  # no job trained to the end

    rerun = subprocess.run([sys.executable, "-m", "tftrain", *args], cwd=ROOT, env=_env(), capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "Resumed from" in (job0 / "tftrain.log").read_text()
    assert [_status(j) for j in sorted(p for p in sweep.iterdir() if p.is_dir())] == ["completed", "completed"]
    assert json.loads((job0 / "metrics.json").read_text())["epochs"] == 5


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has ended (its reaper is not this test)


def test_sigkill_to_a_parallel_sweep_ends_its_workers(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    proc = _start(tmp_path / "sweep.out", "-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", *LONGER,
                  "trainer.epochs=50", "optimizer=sgd,adam", f"hydra.sweep.dir={sweep}")
    try:
        _wait_for(lambda: len(list(sweep.glob("*/preprocessing.json"))) == 2, proc, "both jobs training")
        workers = sorted(int(p.read_text().split()[1]) for p in sweep.glob("*/.tftrain.lock"))
        assert len(workers) == 2 and proc.pid not in workers and all(_alive(w) for w in workers)
        proc.kill()
        proc.wait(timeout=30)
        end = time.monotonic() + 20
        while any(_alive(w) for w in workers) and time.monotonic() < end:
            time.sleep(0.2)
        assert not [w for w in workers if _alive(w)], (tmp_path / "sweep.out").read_text()[-3000:]
    finally:
        for w in workers if "workers" in locals() else []:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
    assert not [j for j in sweep.glob("*/metrics.json") if _status(j.parent) == "completed"]
