"""Seed groups (hydra/launcher=tftrain, tftrain.cli.launcher): the jobs of a sweep that differ only
in trainer.seed train together in one process, and each member's run directory holds what its
separate run (hydra.launcher.seed_groups=false) writes: the same weights, metrics and history, its
own log, its own exact resume after a kill, its own early stopping."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, wait_until

from tftrain.cli.launcher import plan_groups

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals as on Linux")

SEEDS = "trainer.seed=0,1,2"
# The default digits MLP, shrunk: a group of three trains in a few seconds on 2 cores. verbose=2:
# one line per epoch in each member's log.
TINY = ["model.hidden_units=[32]", "trainer.epochs=4", "trainer.verbose=2"]
APART = "hydra.launcher.seed_groups=false"
RTOL = 1e-5


class SlowEpochs:
    """A Keras callback (through callbacks.extra, imported from this module by the CLI's process)
    that sleeps at each epoch end: a signal sent after the first checkpoints lands mid-run."""

    def __new__(cls, seconds: float):
        import keras

        class _Slow(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                time.sleep(seconds)

        return _Slow()


SLOW = "callbacks.extra=[{_target_:test_seed_groups.SlowEpochs,seconds:0.4}]"


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "HYDRA_FULL_ERROR": "0",
            "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def _sweep(*args: str) -> str:
    """`python -m tftrain -m ARGS`, which must succeed; its console output."""
    done = subprocess.run([sys.executable, "-m", "tftrain", "-m", *args], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    return out


def _members(sweep: Path) -> list[Path]:
    """The sweep's job directories, in job order (job number first in each name)."""
    jobs = sorted((p for p in sweep.iterdir() if p.is_dir()), key=lambda p: int(p.name.split("_", 1)[0]))
    assert len(jobs) == 3, jobs
    return jobs


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _history(run: Path) -> list[dict]:
    with open(run / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def _weights(run: Path) -> list[np.ndarray]:
    import keras

    return keras.models.load_model(run / "model.keras", compile=False).get_weights()


def _close(a: float, b: float, what: str) -> None:
    assert abs(a - b) <= RTOL * max(abs(a), abs(b), 1e-12), f"{what}: {a} != {b}"


def _same_run(a: Path, b: Path) -> None:
    """Runs `a` and `b` end with the same weights, metrics and history (to RTOL)."""
    wa, wb = _weights(a), _weights(b)
    assert [w.shape for w in wa] == [w.shape for w in wb]
    for i, (x, y) in enumerate(zip(wa, wb)):
        np.testing.assert_allclose(x, y, rtol=RTOL, atol=RTOL * float(np.abs(y).max() or 1.0),
                                   err_msg=f"{a.name} vs {b.name}: weight {i}")
    ma, mb = _metrics(a), _metrics(b)
    assert ma["status"] == mb["status"] == "completed"
    assert ma["epochs"] == mb["epochs"] and ma["steps"] == mb["steps"]
    assert ma["stopped_early"] == mb["stopped_early"]
    keys = [k for k in mb if k in ("loss", "accuracy") or k.startswith(("val_", "test_", "best_val_"))]
    assert {"loss", "accuracy", "val_loss", "test_loss", "test_accuracy"} <= set(keys)
    for key in keys:
        _close(ma[key], mb[key], f"{a.name} vs {b.name}: metrics.json {key}")
    ha, hb = _history(a), _history(b)
    assert len(ha) == len(hb) and ha and list(ha[0]) == list(hb[0]), (ha, hb)
    for row_a, row_b in zip(ha, hb):
        assert row_a["epoch"] == row_b["epoch"]
        for col in row_b:
            if col not in ("epoch", "seconds"):
                _close(float(row_a[col]), float(row_b[col]), f"{a.name} vs {b.name}: history.csv {col}")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """The same 3-seed sweep, grouped and one job after another (default logger: tensorboard)."""
    root = tmp_path_factory.mktemp("seed_groups")
    grouped, apart = root / "grouped", root / "apart"
    out = _sweep(*TINY, SEEDS, f"hydra.sweep.dir={grouped}")
    out_apart = _sweep(*TINY, SEEDS, APART, f"hydra.sweep.dir={apart}")
    return grouped, apart, out, out_apart


def _step_scalars(run: Path) -> tuple[list[int], list[float]]:
    """(steps, batch_loss) as TensorBoard reads them from the run's train/ events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard" / "train"), size_guidance={"tensors": 0}).Reload()
    events = acc.Tensors("batch_loss")
    return [e.step for e in events], [float(tf_value(e)) for e in events]


def tf_value(event) -> float:
    from tensorboard.util import tensor_util

    return float(tensor_util.make_ndarray(event.tensor_proto))


@pytest.mark.slow
def test_a_grouped_sweep_writes_what_separate_runs_write(baseline):
    grouped, apart, out, out_apart = baseline
    assert "Jobs #0, #1, #2 (trainer.seed=0, 1, 2) train together" in out, out[-4000:]
    assert "train together" not in out_apart and "train one after another" not in out_apart
    members = _members(grouped)
    for member, alone in zip(members, _members(apart)):
        _same_run(member, alone)
        assert (member / "checkpoints").is_dir() and list((member / "checkpoints").glob("state-*.json"))
        assert list((member / "tensorboard").rglob("events.out.tfevents.*")), member
        # The per-step scalars written inside the group's compiled call: each member's own, in its own file.
        steps, losses = _step_scalars(member)
        steps_alone, losses_alone = _step_scalars(alone)
        assert steps == steps_alone and len(steps) == 4 * 19, (member.name, steps[:5], len(steps))
        np.testing.assert_allclose(losses, losses_alone, rtol=1e-5)
    for member in members:
        text = (member / "tftrain.log").read_text()
        for epoch in range(1, 5):
            assert f"epoch {epoch}/4" in text, (member.name, text)
        assert f"Run directory: {member}" in text and text.count("Outputs in ") == 1
        for other in members:
            if other != member:
                assert str(other) not in text, (member.name, other.name, text)
    with open(grouped / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["run"] for r in rows) == [m.name for m in members]
    assert {r["status"] for r in rows} == {"completed"}


def _all_checkpointed(sweep: Path) -> bool:
    return len([j for j in sweep.glob("*_*/checkpoints") if any(j.glob("state-*.json"))]) == 3


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_group_stopped_after_its_first_checkpoints_resumes_exactly(baseline, tmp_path, signum):
    grouped = baseline[0]
    sweep = tmp_path / "sweep"
    args = ["-m", *TINY, "logger=[]", SLOW, SEEDS, f"hydra.sweep.dir={sweep}"]
    with open(tmp_path / "first.out", "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "tftrain", *args], cwd=ROOT, env=_env(), stdout=f,
                                stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _all_checkpointed(sweep), proc, "every member's first committed checkpoint")
        proc.send_signal(signum)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = (tmp_path / "first.out").read_text()
    assert "train together" in out, out[-4000:]
    members = _members(sweep)
    if signum == signal.SIGKILL:
        assert code == -signal.SIGKILL
        assert not any((m / "metrics.json").exists() for m in members)  # killed before any member's end
    else:
        assert code == 143, out[-4000:]
        assert "Stopped on SIGTERM" in out, out[-4000:]
        for m in members:
            assert _metrics(m)["status"] == "stopped", m.name
            assert not (m / "error.txt").exists()
        assert "epoch 4/4" not in out

    rerun = subprocess.run([sys.executable, "-m", "tftrain", *args], cwd=ROOT, env=_env(), capture_output=True,
                           text=True, timeout=300)
    out = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, out[-4000:]
    assert "train together" in out, out[-4000:]
    for member, uninterrupted in zip(members, _members(grouped)):
        assert "Resumed from" in (member / "tftrain.log").read_text(), member.name
        _same_run(member, uninterrupted)


@pytest.mark.slow
def test_each_member_stops_early_at_its_own_epoch(tmp_path):
    # patience 1 on val_accuracy with a large min_delta: on digits, seeds 0 and 1 stop after epoch 5,
    # seed 2 after epoch 6, so one member leaves the group while the others go on.
    args = ["model.hidden_units=[32]", "trainer.epochs=8", "trainer.verbose=0", "logger=[]", "callbacks=early_stopping",
            "callbacks.early_stopping.monitor=val_accuracy", "callbacks.early_stopping.patience=1",
            "callbacks.early_stopping.min_delta=0.08"]
    out = _sweep(*args, "trainer.seeds=3", f"hydra.sweep.dir={tmp_path / 'grouped'}")  # the shorthand for seed=0,1,2
    assert "Jobs #0, #1, #2 (trainer.seed=0, 1, 2) train together" in out, out[-4000:]
    _sweep(*args, SEEDS, APART, f"hydra.sweep.dir={tmp_path / 'apart'}")
    members, apart = _members(tmp_path / "grouped"), _members(tmp_path / "apart")
    rows = [len(_history(m)) for m in members]
    assert rows == [len(_history(m)) for m in apart]
    assert len(set(rows)) > 1, f"every seed stopped after the same epoch ({rows}): choose settings where they differ"
    for member, alone in zip(members, apart):
        assert _metrics(member)["stopped_early"] is True
        _same_run(member, alone)


@pytest.mark.slow
def test_a_group_that_cannot_train_together_runs_one_job_after_another(tmp_path):
    out = _sweep("model.hidden_units=[32]", "trainer.epochs=1", "trainer.verbose=0", "logger=[]", "task.find_lr=true",
                 "trainer.seed=0,1", f"hydra.sweep.dir={tmp_path}")
    assert ("Jobs #0, #1 differ only in trainer.seed but train one after another: "
            "task.find_lr runs its range test in each job") in out, out[-4000:]
    assert "train together" not in out
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(jobs) == 2 and all(_metrics(j)["status"] == "completed" for j in jobs)
    assert all((j / "lr_find").is_dir() for j in jobs)


def _jobs(*rows: str) -> list[list[str]]:
    return [row.split() for row in rows]


def test_plan_groups_groups_jobs_that_differ_only_in_their_seed():
    jobs = _jobs("optimizer=sgd trainer.seed=0", "optimizer=adam trainer.seed=0", "optimizer=sgd trainer.seed=1",
                 "optimizer=adam trainer.seed=1", "optimizer=sgd trainer.seed=2")
    assert plan_groups(jobs) == [[0, 2, 4], [1, 3]]  # in the order each configuration first comes
    # The overrides' order within a job does not matter; any other difference does.
    assert plan_groups(_jobs("a=1 trainer.seed=0", "trainer.seed=1 a=1", "a=2 trainer.seed=2")) == [[0, 1], [2]]


def test_plan_groups_splits_groups_to_max_group():
    jobs = _jobs(*(f"trainer.seed={s}" for s in range(7)))
    assert plan_groups(jobs, max_group=3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert plan_groups(jobs, max_group=1) == [[i] for i in range(7)]


def test_plan_groups_without_seed_groups_runs_every_job_alone():
    jobs = _jobs("trainer.seed=0", "trainer.seed=1", "trainer.seed=2")
    assert plan_groups(jobs, seed_groups=False) == [[0], [1], [2]]


def test_plan_groups_keeps_jobs_without_a_seed_override_alone():
    # Same overrides, no seed among them: the same run twice (a repeat), not seeds of one configuration.
    assert plan_groups(_jobs("optimizer=sgd", "optimizer=sgd", "optimizer=adam")) == [[0], [1], [2]]
    assert plan_groups(_jobs("a=1", "a=1 trainer.seed=1", "a=1 trainer.seed=2")) == [[0], [1, 2]]


def test_plan_groups_counts_an_added_seed():
    jobs = _jobs("a=1 +trainer.seed=0", "a=1 +trainer.seed=1", "a=1 ++trainer.seed=2")
    assert plan_groups(jobs) == [[0, 1, 2]]


def test_a_members_config_is_what_hydra_composes_for_it():
    """The launcher composes a group's first member only and derives the others (tftrain.cli.launcher
    ._with_seed): each derived config equals Hydra's own composition of that job."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from omegaconf import OmegaConf, open_dict

    from tftrain.cli.launcher import _with_seed
    from tftrain.config.files import config_dir

    jobs = [["optimizer=sgd", f"trainer.seed={s}", "model.hidden_units=[8]"] for s in (0, 7)] + \
           [["optimizer=sgd", "+trainer.seed=3", "model.hidden_units=[8]"]]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", ["hydra.sweep.dir=/tmp/x"], RunMode.MULTIRUN)
        composed = []
        for i, overrides in enumerate(jobs[:2]):
            cfg = loader.load_sweep_config(master, overrides)
            with open_dict(cfg):
                cfg.hydra.job.id = cfg.hydra.job.num = i
            composed.append(cfg)
        derived = _with_seed(composed[0], jobs[1], 1)
        keep = lambda c: OmegaConf.to_container(c, resolve=False)  # noqa: E731
        assert keep(derived) == keep(composed[1])
        assert derived.trainer.seed == 7 and derived.hydra.job.override_dirname == composed[1].hydra.job.override_dirname
        assert _with_seed(composed[0], jobs[2], 2).trainer.seed == 3


def test_a_batch_is_composed_once_for_the_sweepers_check_and_the_launch():
    """remember_compositions: the sweeper's check and the launcher share the loader's compositions;
    jobs that differ only in trainer.seed are derived, each equal to its own composition; the
    launcher's forget_compositions makes the next batch compose again."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from tftrain.cli.launcher import forget_compositions, remember_compositions
    from tftrain.config.files import config_dir

    jobs = [["optimizer=sgd", f"trainer.seed={s}"] for s in (0, 1, 2)] + [["optimizer=adam", "trainer.seed=0"]]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", ["hydra.sweep.dir=/tmp/x"], RunMode.MULTIRUN)
        expected = [loader.load_sweep_config(master, job) for job in jobs]
        composed = []
        original = loader.load_sweep_config

        def counted(master_config, overrides):
            composed.append(list(overrides))
            return original(master_config, overrides)

        loader.load_sweep_config = counted
        remember_compositions(loader)
        keep = lambda c: OmegaConf.to_container(c, resolve=False)  # noqa: E731
        for _ in range(2):  # the sweeper's check, then the launch
            for job, want in zip(jobs, expected):
                assert keep(loader.load_sweep_config(master, job)) == keep(want)
        assert composed == [jobs[0], jobs[3]]
        mine = loader.load_sweep_config(master, jobs[1])
        mine.trainer.seed = 99  # a caller's changes stay its own
        assert loader.load_sweep_config(master, jobs[1]).trainer.seed == 1
        forget_compositions(loader)
        loader.load_sweep_config(master, jobs[2])
        assert composed == [jobs[0], jobs[3], jobs[2]]
