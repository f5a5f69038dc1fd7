"""Population-based training (`-m hparams_search=pbt`): Ray Tune's explore rules (quantiles,
perturbation, resampling), segmenting without exploitation equals independent runs, a killed
member and a rerun of the whole command continue exactly, and an exploitation copies the top
member's checkpoint and records the lineage."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from conftest import ROOT, SMALL, compose_small, crash_at, metrics_of, run_cli, same_numbers
from tftrain.errors import ConfigError

pytest.importorskip("optuna")  # the search-space syntax parses to Optuna's distributions
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution  # noqa: E402

from tftrain.sweep.pbt import (PbtSearch, _check_resumable, explore, perturb, quantiles,  # noqa: E402
                               schedule_of)
from tftrain.sweep.search_space import parse_search_space  # noqa: E402

TINY = [o for o in SMALL if not o.startswith("model.hidden_units")] + ["model.hidden_units=[8]"]
PBT = ["-m", "hparams_search=pbt", *TINY, "trainer.epochs=2", "hydra.sweeper.population=2",
       "hydra.sweeper.perturbation_interval=1"]


# ---------------------------------------------------------------- explore rules


def test_quantiles_follow_rays_rule():
    # P=4, 25%: one member each way; P=8: two; higher scores are better; ties keep member order.
    assert quantiles([0.3, 0.1, 0.9, 0.5], 0.25) == ([1], [2])
    assert quantiles([5, 1, 7, 3, 8, 2, 6, 4], 0.25) == ([1, 5], [2, 4])
    assert quantiles([0.5, 0.5], 0.25) == ([0], [1])
    # 40% of 4 rounds up to 2, at most half the population.
    assert quantiles([1, 2, 3, 4, 5], 0.5) == ([0, 1], [3, 4])
    # A failed member (None) is always in the bottom, even beyond the quantile; none copies it.
    assert quantiles([0.2, None, 0.9, None], 0.25) == ([1, 3], [2])
    assert quantiles([None, None], 0.25) == ([0, 1], [])
    assert quantiles([0.1, 0.2, 0.3, 0.4], 0.0) == ([], [])  # quantile 0: no exploitation


def test_perturbation_multiplies_by_the_factors_clips_and_moves_integers():
    lr_log = FloatDistribution(1e-4, 1e-1, log=True)
    seen = {perturb(lr_log, 0.01, random.Random(s), 0.0, [1.2, 0.8]) for s in range(40)}
    assert {v for v, _ in seen} == {0.01 * 1.2, 0.01 * 0.8} and {h for _, h in seen} == {"x1.2", "x0.8"}
    linear = FloatDistribution(0.0, 0.5)
    assert perturb(linear, 0.45, random.Random(0), 0.0, [1.2])[0] == 0.5  # clipped to the bound
    stepped = FloatDistribution(0.0, 1.0, step=0.1)
    assert perturb(stepped, 0.5, random.Random(0), 0.0, [1.2])[0] == pytest.approx(0.6)
    ints = IntDistribution(1, 64)
    assert perturb(ints, 10, random.Random(0), 0.0, [1.2])[0] == 12
    assert perturb(ints, 2, random.Random(0), 0.0, [1.2])[0] == 3  # 2 x 1.2 rounds back to 2: moved by 1
    assert perturb(ints, 2, random.Random(0), 0.0, [0.8])[0] == 1
    assert perturb(ints, 1, random.Random(0), 0.0, [0.8])[0] == 1  # stays within the bounds
    assert isinstance(perturb(ints, 10, random.Random(0), 0.0, [0.8])[0], int)


def test_choices_shift_to_a_neighbour_and_resampling_draws_afresh():
    sizes = CategoricalDistribution((32, 64, 128))
    moved = {perturb(sizes, 64, random.Random(s), 0.0, [1.2, 0.8]) for s in range(40)}
    assert moved == {(32, "shifted -1"), (128, "shifted +1")}
    ends = {perturb(sizes, 32, random.Random(s), 0.0, [1.2, 0.8])[0] for s in range(40)}
    assert ends == {32, 64}  # clamped at the first choice
    # With resample_probability 0.25, about a quarter of the keys are drawn afresh (seeded).
    rng = random.Random(7)
    space = parse_search_space({"optimizer.lr": "tag(log, interval(1e-4, 1e-1))",
                                "model.dropout": "interval(0.1, 0.5)"})
    hows = [h for _ in range(400) for h in explore(space, {"optimizer.lr": 0.01, "model.dropout": 0.3}, rng, 0.25,
                                                   [1.2, 0.8])[1].values()]
    assert 0.2 < hows.count("resampled") / len(hows) < 0.3
    rng = random.Random(1)
    draws = [perturb(FloatDistribution(1e-4, 1e-1, log=True), 0.01, rng, 1.0, [1.2])[0] for _ in range(2000)]
    assert all(1e-4 <= d <= 1e-1 for d in draws)
    assert 0.4 < sum(d < 10 ** -2.5 for d in draws) / len(draws) < 0.6  # log-uniform: half below the log midpoint


def test_the_winners_schedule_follows_its_lineage_back():
    state = {"rounds": [
        {"round": 1, "epochs": [0, 2], "values": [{"lr": 0.1}, {"lr": 0.2}], "objectives": [0.5, 0.6],
         "exploits": [{"member": 0, "source": 1}]},
        {"round": 2, "epochs": [2, 4], "values": [{"lr": 0.24}, {"lr": 0.2}], "objectives": [0.9, 0.7],
         "exploits": []}]}
    assert [(s["member"], s["values"]["lr"]) for s in schedule_of(state, 0)] == [(1, 0.2), (0, 0.24)]
    assert [(s["member"], s["values"]["lr"]) for s in schedule_of(state, 1)] == [(1, 0.2), (1, 0.2)]


@pytest.mark.parametrize("params", [{"model.hidden_units": "choice([8],[16])"}, {"model.dropout": "interval(0, 0.5)"},
                                    {"trainer.batch_size": "choice(32, 64)"}, {"optimizer.use_ema": "true,false"}])
def test_keys_a_resume_refuses_are_refused_in_the_search_space(params):
    from tftrain.tasks.resume import retunable

    with pytest.raises(ConfigError, match="hydra.sweeper.params"):
        _check_resumable(parse_search_space(params))
    # A resume accepts a new dropout rate only between rates above 0 (at 0 there is no Dropout layer).
    assert retunable("model.dropout", (0.2, 0.3)) and not retunable("model.dropout", (0.0, 0.3))
    assert not retunable("model.hidden_units", ([8], [8]))
    _check_resumable(parse_search_space({"model.dropout": "interval(0.1, 0.5)",
                                         "optimizer.momentum": "interval(0.5, 0.99)"}))


def test_bad_settings_name_the_key():
    base = {"direction": "maximize", "population": 4, "perturbation_interval": 2, "quantile_fraction": 0.25,
            "resample_probability": 0.25, "perturbation_factors": [1.2, 0.8], "exploit": True, "seed": 0}
    for key, bad in [("population", 1), ("perturbation_interval", 0), ("quantile_fraction", 0.6),
                     ("resample_probability", 2), ("perturbation_factors", [1.2, -1]), ("exploit", "yes")]:
        with pytest.raises(ConfigError, match=f"hydra.sweeper.{key}"):
            PbtSearch({**base, key: bad})


def test_a_population_continues_only_with_the_settings_it_started_with(tmp_path):
    from tftrain.errors import TftrainError

    settings = {"direction": "maximize", "population": 4, "perturbation_interval": 2, "quantile_fraction": 0.25,
                "resample_probability": 0.25, "perturbation_factors": [1.2, 0.8], "exploit": True, "seed": 0}
    space = parse_search_space({"optimizer.lr": "tag(log, interval(1e-4, 1e-1))"})
    first = PbtSearch(settings)._state(tmp_path, space)
    assert len(first["initial"]) == 4 and all(1e-4 <= v["optimizer.lr"] <= 1e-1 for v in first["initial"])
    assert PbtSearch(settings)._state(tmp_path, space) == first  # read back, not drawn again
    with pytest.raises(TftrainError, match="population 4 -> 8"):
        PbtSearch({**settings, "population": 8})._state(tmp_path, space)


# ---------------------------------------------------------------- the population


def _state(sweep: Path) -> dict:
    return json.loads((sweep / "pbt.json").read_text())


@pytest.mark.slow
def test_members_without_exploitation_equal_independent_runs_even_killed_and_rerun(tmp_path):
    import tftrain

    sweep = tmp_path / "pbt"
    # Deterministic ops: bit-identity across processes must not hang on how oneDNN's threads split a sum
    # (under a loaded machine the last bits differed: 18.397322411 against 18.397322316).
    args = [*PBT, "hydra.sweeper.exploit=false", "optimizer.weight_decay=0.0", "trainer.deterministic=true",
            f"hydra.sweep.dir={sweep}"]
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    # Killed at the end of member 0's second epoch (round 2), before its checkpoint: the command dies.
    killed = run_cli(*args, crash_at(1), env=env)
    assert killed.returncode != 0 and "simulated kill" in killed.stdout + killed.stderr
    assert len(_state(sweep)["rounds"]) == 1
    # The whole command again: round 1 is not run again; the members resume from their checkpoints.
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "PBT round 1 " not in rerun.stderr + rerun.stdout and "PBT round 2 " in rerun.stderr + rerun.stdout
    state = _state(sweep)
    assert [r["round"] for r in state["rounds"]] == [1, 2] and not any(r["exploits"] for r in state["rounds"])
    assert state["values"] == state["initial"]
    for i, values in enumerate(state["initial"]):
        cfg = compose_small("model.hidden_units=[8]", "trainer.epochs=2", "optimizer.weight_decay=0.0",
                            "trainer.deterministic=true",
                            f"optimizer.lr={values['optimizer.lr']!r}")
        alone = tftrain.train(cfg, output_dir=tmp_path / f"alone{i}")
        member = metrics_of(sweep / f"member_{i}")
        assert member["weights_fingerprint"] == alone["weights_fingerprint"]
        same_numbers(member, metrics_of(tmp_path / f"alone{i}"))


@pytest.mark.slow
def test_the_bottom_member_copies_the_top_members_checkpoint_and_perturbs_its_values(tmp_path):
    sweep = tmp_path / "pbt"
    done = run_cli(*PBT, "model.dropout=interval(0.1, 0.5)", "hydra.sweeper.seed=3", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-3000:]
    state = _state(sweep)
    first, second = state["rounds"]
    [event] = first["exploits"]
    member, source = event["member"], event["source"]
    assert {member, source} == {0, 1} and first["objectives"][source] >= first["objectives"][member]
    assert event["step"] == 8 and event["old"] == first["values"][member]
    assert event["source_values"] == first["values"][source]
    space = {"optimizer.lr": (1e-4, 1e-1), "optimizer.weight_decay": (1e-6, 1e-2), "model.dropout": (0.1, 0.5)}
    for key, (low, high) in space.items():
        how, new, was = event["how"][key], event["new"][key], event["source_values"][key]
        assert how in ("x1.2", "x0.8", "resampled"), how
        assert low <= new <= high
        if how != "resampled":
            assert new == pytest.approx(min(max(was * float(how[1:]), low), high), rel=1e-12)
    # The copy: the source's checkpoint of step 8, file for file; then the member trained on with the new values.
    ours, theirs = sweep / f"member_{member}" / "checkpoints", sweep / f"member_{source}" / "checkpoints"
    names = sorted(p.name for p in theirs.iterdir() if p.name.startswith(("ckpt-8.", "state-8.")))
    assert len(names) >= 3
    for name in names:
        assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name
    assert second["values"][member] == event["new"] and state["values"][member] == event["new"]
    config = (sweep / f"member_{member}" / "config.yaml").read_text()
    assert f"lr: {event['new']['optimizer.lr']!r}" in config and f"dropout: {event['new']['model.dropout']!r}" in config
    history = metrics_of(sweep / f"member_{member}")["history"]
    assert history["val_accuracy"][0] == metrics_of(sweep / f"member_{source}")["history"]["val_accuracy"][0]
    report = (sweep / "pbt.md").read_text()
    assert f"member {member} ({event['objective']:.4g}) copied member {source}'s checkpoint at step 8" in report
    assert (sweep / "pbt.png").stat().st_size > 0 and (sweep / "summary.md").is_file()
