"""scripts/chaos.py's own damages and comparison on one real killed run: each damage kind is handled
(said, set aside or fallen back from) and the resumed run ends bit-identical to the uninterrupted
one. The script's kill points run real processes and take minutes; these run in-process in seconds."""

from __future__ import annotations

import importlib.util
import shutil

import pytest

import tftrain
from conftest import ROOT, compose_small, crash_at

ARGS = ("trainer.epochs=3", "trainer.checkpoint_every_steps=4", "trainer.deterministic=true", "model.dropout=0.2",
        "logger=[]")


def _load_chaos():
    spec = importlib.util.spec_from_file_location("chaos", ROOT / "scripts" / "chaos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


chaos = _load_chaos()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The uninterrupted run's metrics, and a run killed at the end of epoch 3 before its checkpoint
    (checkpoints at steps 12, 16, 20 of 24 kept)."""
    whole = tftrain.train(compose_small(*ARGS), output_dir=tmp_path_factory.mktemp("whole"))
    killed = tmp_path_factory.mktemp("killed")
    with pytest.raises(KeyboardInterrupt):
        tftrain.train(compose_small(*ARGS, crash_at(2)), output_dir=killed)
    assert sorted(int(p.stem.split("-")[1]) for p in (killed / "checkpoints").glob("*.index")) == [12, 16, 20]
    return whole, killed


@pytest.mark.parametrize("kind, said, resumed_at", [
    ("none", None, 20),
    ("index", "Checkpoint ckpt-20 was skipped: its .index file is missing", 16),
    ("truncate", "Checkpoint ckpt-20 was skipped: it does not load", 16),
    ("state", "Checkpoint ckpt-20 was skipped: state-20.json is unreadable", 16),
    ("edit", "Checkpoint ckpt-20 was skipped: state-20.json does not match its checkpoint", 16),
    ("swap", "Checkpoint ckpt-16 was skipped: state-16.json does not match its checkpoint", 12),
    ("stray", "Not a checkpoint: ckpt-999999", 20),
    ("bookkeeping", None, 20),
])
def test_each_damage_kind_resumes_bit_identical(runs, tmp_path, kind, said, resumed_at, caplog):
    whole, killed = runs
    assert set(chaos.DAMAGES) <= {"none", "index", "truncate", "state", "edit", "swap", "stray", "bookkeeping"}
    run_dir = tmp_path / "run"
    shutil.copytree(killed, run_dir)
    done = chaos.damage(run_dir, kind)
    assert done != "none" or kind == "none"
    with caplog.at_level("INFO", logger="tftrain"):
        resumed = tftrain.train(compose_small(*ARGS), output_dir=run_dir)
    if said:
        assert said in caplog.text
    assert f"Resumed from {run_dir / 'checkpoints' / f'ckpt-{resumed_at}'} at step {resumed_at}" in caplog.text
    assert chaos.same_numbers(whole, resumed), (chaos.comparable(whole), chaos.comparable(resumed))


def test_the_comparison_ignores_timings_and_nothing_else(runs):
    whole, _ = runs
    timed = {**whole, "wall_time_s": -1.0, "startup_s": {"data": 99.0}, "first_step_s": 5.0,
             "history": {**whole["history"], "seconds": [0.0] * len(whole["history"]["loss"])}}
    assert chaos.same_numbers(whole, timed)
    assert not chaos.same_numbers(whole, {**whole, "weights_fingerprint": whole["weights_fingerprint"] + 1e-12})
    assert not chaos.same_numbers(whole, {**whole, "history": {**whole["history"], "loss": whole["history"]["loss"][:-1]}})
    assert not chaos.same_numbers(whole, {**whole, "test_loss": None})
