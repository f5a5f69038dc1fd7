"""Sweeps under signals and side by side (issue 20): a second copy of a sweep skips the jobs the
first one runs (counted as running there, not failed, and completed once they are), a SIGTERM
stops a sweep after the running job's checkpoint, and a parallel sweep's workers end with it
when it is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, SMALL, wait_until

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


def _status(run: Path) -> str | None:
    try:
        return json.loads((run / "metrics.json").read_text())["status"]
    except (OSError, ValueError):
        return None


def _summary_line(out: str) -> str:
    return out.split("Sweep summary of", 1)[-1].split("\n")[0]


@pytest.mark.slow
def test_a_sweep_skips_a_job_another_process_holds_without_failing_and_the_rerun_completes_it(tmp_path):
    from tftrain.sweep.rundirs import short_dirname
    from tftrain.tasks.resume import RunLock

    sweep = tmp_path / "sweep"
    args = ["-m", *SMALL, "optimizer=sgd,adam", f"hydra.sweep.dir={sweep}"]
    name = "1_" + short_dirname([*SMALL, "optimizer=adam"], first=["optimizer"])
    held = sweep / name
    (held / ".hydra").mkdir(parents=True)
    (held / ".hydra" / "overrides.yaml").write_text("- optimizer=adam\n")  # as its holder wrote it
    with RunLock(held):  # this test process is the other copy of the sweep, training job 1
        first = subprocess.run([sys.executable, "-m", "tftrain", *args], cwd=ROOT, env=_env(), capture_output=True,
                               text=True, timeout=300)
        out = first.stdout + first.stderr
        assert first.returncode == 0, out[-3000:]
        assert f"Job {name} skipped, not failed: it is running in another process (pid {os.getpid()} " in out, \
            out[-3000:]
        assert _summary_line(out).startswith(" 2 run(s) (0 failed, 1 running in another process)"), out[-3000:]
        summary = (sweep / "summary.md").read_text()
        assert "1 completed, 1 running in another process, 0 failed" in summary
        assert f"running in another process (pid {os.getpid()} " in summary
        # The skipping copy wrote nothing there: no failure record, no outcome, no line in its log.
        assert sorted(p.name for p in held.iterdir()) in ([".hydra", ".tftrain.lock"],
                                                          [".hydra", ".tftrain.lock", "tftrain.log"])
        assert not (held / "tftrain.log").exists() or (held / "tftrain.log").read_text() == ""
        assert (held / ".tftrain.lock").read_text().startswith(f"pid {os.getpid()} ")
    (job0,) = sweep.glob("0_*")
    assert _status(job0) == "completed"

    rerun = subprocess.run([sys.executable, "-m", "tftrain", *args], cwd=ROOT, env=_env(), capture_output=True,
                           text=True, timeout=300)
    out = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, out[-3000:]
    assert "completed in an earlier run of this sweep" in out and "skipped, not failed" not in out
    assert [_status(j) for j in (job0, held)] == ["completed", "completed"]
    assert _summary_line(out).startswith(" 2 run(s) (0 failed)"), out[-3000:]
    assert not list(sweep.glob("*/error.txt"))


@pytest.mark.slow
def test_two_copies_of_a_sweep_at_once_complete_every_job_without_failing(tmp_path):
    # Whether and where the copies meet depends on timing; what must hold in every interleaving
    # is asserted: each job completed once, no failure anywhere, both copies exit 0.
    sweep = tmp_path / "sweep"
    args = ["-m", *SMALL, "trainer.epochs=1", "optimizer=sgd,adam", "trainer.seed=0,1,2", f"hydra.sweep.dir={sweep}"]
    copies = [_start(tmp_path / f"copy{i}.out", *args) for i in range(2)]
    try:
        codes = [p.wait(timeout=600) for p in copies]
    finally:
        for p in copies:
            if p.poll() is None:
                p.kill()
    outs = [(tmp_path / f"copy{i}.out").read_text() for i in range(2)]
    assert codes == [0, 0], "\n".join(o[-3000:] for o in outs)
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 6 and {_status(j) for j in jobs} == {"completed"}
    assert not list(sweep.glob("*/error.txt"))
    for out in outs:
        assert _summary_line(out).startswith(" 6 run(s) (0 failed"), out[-3000:]
    for job in jobs:  # trained once: one copy's run, the other's skip or reuse
        assert (job / "tftrain.log").read_text().count("Outputs in") == 1, job
    skipped = sum(o.count("skipped, not failed: it is running in another process (pid ") for o in outs)
    print(f"the copies met on {skipped} job(s)")


@pytest.mark.slow
def test_sigterm_stops_a_sweep_after_the_running_jobs_checkpoint_and_the_rerun_resumes(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *LONGER, "trainer.epochs=5", "optimizer=sgd,adam", f"hydra.sweep.dir={sweep}"]
    proc = _start(tmp_path / "first.out", *args)
    try:
        wait_until(lambda: any(sweep.glob("0_*/checkpoints/ckpt-*.index")), proc, "job 0's first checkpoint")
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


@pytest.mark.slow
def test_sigkill_to_a_parallel_sweep_ends_its_workers(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    proc = _start(tmp_path / "sweep.out", "-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", *LONGER,
                  "trainer.epochs=50", "optimizer=sgd,adam", f"hydra.sweep.dir={sweep}")
    try:
        wait_until(lambda: len(list(sweep.glob("*/preprocessing.json"))) == 2, proc, "both jobs training")
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
