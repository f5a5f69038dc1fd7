"""Optuna search (`-m hparams_search=optuna`, tftrain's sweeper plugin on current optuna): the
search space syntax, a seeded search and its results, reproducibility, failed trials, continuing
a study in its sweep directory, pruning, and the composed config. Studies are read back from the
sweep directory's optuna.db with optuna's own API."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import SMALL, run_cli
from tftrain.errors import ConfigError

optuna = pytest.importorskip("optuna")
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from tftrain.sweep.search_space import parse_search_space  # noqa: E402

SEARCH = ["-m", "hparams_search=optuna", *SMALL, "trainer.epochs=1"]


def _study(sweep: Path):
    return optuna.load_study(study_name="tftrain", storage=f"sqlite:///{sweep}/optuna.db")


def _rows(sweep: Path) -> list[dict]:
    with open(sweep / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def _metrics(trial) -> dict:
    return json.loads((Path(trial.user_attrs["run_dir"]) / "metrics.json").read_text())


# ---------------------------------------------------------------- the search space


def test_search_space_syntax_parses_to_optuna_distributions():
    params = {"a": "interval(0, 1)", "b": "tag(log, interval(1e-4, 1e-1))", "c": "int(interval(1, 8))",
              "d": "tag(log, int(interval(1, 64)))", "e": "choice(32, 64)", "f": "range(1, 10, 3)",
              "g": "range(0.1, 0.5, 0.1)", "h": 3, "i": "x,y", "j": "interval(0, 1)"}
    space = parse_search_space(params, ["j=0.5", "k=choice([32],[64, 64],'a b')", "+l=shuffle(range(3))"])
    d = space.distributions
    assert d["a"] == FloatDistribution(0.0, 1.0)
    assert d["b"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert d["c"] == IntDistribution(1, 8)
    assert d["d"] == IntDistribution(1, 64, log=True)
    assert d["e"] == CategoricalDistribution((32, 64))
    assert d["f"] == IntDistribution(1, 7, step=3)  # range's stop is excluded, as Hydra's basic sweeper's
    assert d["g"] == FloatDistribution(0.1, 0.4, step=0.1)
    assert d["i"] == CategoricalDistribution(("x", "y"))
    assert d["+l"] == CategoricalDistribution((0, 1, 2))
    assert "j" not in d and space.fixed == {"h": "h=3", "j": "j=0.5"}  # the command line replaces the config's
    # A trial's overrides: its values in Hydra's syntax (lists, quoted strings), then the fixed ones.
    overrides = space.overrides({"a": 0.25, "k": "[64,64]", "+l": 2})
    assert overrides[:3] == ["a=0.25", "k=[64,64]", "+l=2"] and overrides[3:] == ["h=3", "j=0.5"]
    assert space.overrides({"k": "a b"})[0] == "k=a\\ b"


@pytest.mark.parametrize("params, arguments, key, says", [
    ({}, ["optimizer.lr=tag(log, interval(0, 0.1))"], "optimizer.lr", "above 0"),
    ({}, ["optimizer.lr=interval(0.1, 0.01)"], "optimizer.lr", "start is below its end"),
    ({}, ["trainer.batch_size=tag(log, choice(32, 64))"], "trainer.batch_size", "on an interval only"),
    ({}, ["trainer.epochs=range(5, 1)"], "trainer.epochs", "at least one value"),
    # hydra.sweeper.params entries are named where they are written
    ({"optimizer.lr": "interval(1)"}, [], "hydra.sweeper.params.optimizer.lr", "interval(a, b)"),
    ({"optimizer.lr": "tag(log, interval(-1, 1))"}, [], "hydra.sweeper.params.optimizer.lr", "above 0"),
])
def test_bad_search_space_entries_name_the_key(params, arguments, key, says):
    with pytest.raises(ConfigError) as e:
        parse_search_space(params, arguments)
    assert e.value.key == key and says in str(e.value) and "Fix:" in str(e.value)


def test_bad_search_input_on_the_command_line_is_one_paragraph(cli, tmp_path):
    for bad, key in (("optimizer.lr=tag(log, interval(0, 0.1))", "optimizer.lr"),
                     ("hydra.sweeper.pruner=mediam", "hydra.sweeper.pruner")):
        result = cli("-m", "hparams_search=optuna", bad, f"hydra.sweep.dir={tmp_path / 'sweep'}")
        assert result.returncode == 2, result.stderr[-3000:]
        assert f"Invalid config `{key}`" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------- searches


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One seeded 2-trial search (lr and weight decay; SMALL fixes the batch size)."""
    sweep = tmp_path_factory.mktemp("search") / "sweep"
    result = run_cli(*SEARCH, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep, result.stdout + result.stderr


@pytest.mark.slow
def test_seeded_search_records_every_trial_and_the_best(searched):
    sweep, output = searched
    trials = _study(sweep).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for t in trials:
        assert 1e-4 <= t.params["optimizer.lr"] <= 1e-1 and 1e-6 <= t.params["optimizer.weight_decay"] <= 1e-2
        run_dir = Path(t.user_attrs["run_dir"])
        assert run_dir.parent == sweep.resolve() and run_dir.name.startswith(f"{t.number}_")  # numbered by trial
        assert _metrics(t)["val_accuracy"] == pytest.approx(t.value)
        overrides = OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")
        assert not [o for o in overrides if "TFTRAIN_OPTUNA" in o] and "TFTRAIN_OPTUNA" not in run_dir.name
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    study = _study(sweep)
    assert best.best_value == pytest.approx(study.best_value) and dict(best.best_params) == study.best_params
    assert float(_rows(sweep)[0]["val_accuracy"]) == pytest.approx(best.best_value)  # the summary agrees
    # One line per trial; none of Optuna's own.
    assert [f"Trial {n} value" in output for n in range(2)] == [True] * 2
    assert "finished with value" not in output and "A new study created" not in output


@pytest.mark.slow
def test_the_same_seed_draws_the_same_trials(searched, tmp_path):
    sweep, _ = searched
    again = tmp_path / "again"
    result = run_cli(*SEARCH, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={again}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [t.params for t in _study(again).trials] == [t.params for t in _study(sweep).trials]


@pytest.mark.slow
def test_rerun_continues_the_study_and_retries_an_interrupted_trial(searched, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(searched[0], sweep)
    before = _study(sweep).trials
    # A sweep killed while trial 2 ran: the trial is left RUNNING in the study.
    study = _study(sweep)
    interrupted = study.ask(before[0].distributions)
    interrupted.set_user_attr("sweep_dir", str(sweep.resolve()))
    result = run_cli(*SEARCH, "hydra.sweeper.n_trials=4", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    trials = _study(sweep).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL] + [TrialState.COMPLETE] * 2
    assert [(t.params, t.value) for t in trials[:2]] == [(t.params, t.value) for t in before]  # not rerun
    retry, new = trials[3], trials[4]
    assert retry.user_attrs["retry_of"] == 2 and retry.params == trials[2].params
    assert Path(retry.user_attrs["run_dir"]).name.startswith("2_")  # the interrupted job's run directory
    assert new.params not in [t.params for t in trials[:3]]  # a continued study draws new points
    assert (result.stdout + result.stderr).count("Launching 1 jobs") == 2


@pytest.mark.slow
def test_a_failed_trial_is_told_fail_and_the_search_goes_on(cli, tmp_path):
    sweep = tmp_path / "sweep"
    # Seed 0 draws lr -1, 0.05, -1: an invalid value fails its run. n_jobs=2 in batches (Hydra's
    # launcher): a batch of 2, then 1.
    result = cli(*SEARCH, "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2", "hydra.sweeper.asynchronous=false",
                 "optimizer.lr=choice(0.05,-1)", f"hydra.sweep.dir={sweep}")
    # 1: the CLI reports that some jobs failed (the search itself went on)
    assert result.returncode in (0, 1) and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "Launching 2 jobs" in result.stdout + result.stderr
    trials = _study(sweep).trials
    assert len(trials) == 3 and {t.params["optimizer.lr"] for t in trials} == {0.05, -1}
    for t in trials:
        assert t.state == (TrialState.FAIL if t.params["optimizer.lr"] == -1 else TrialState.COMPLETE)
    rows = _rows(sweep)
    assert all("Invalid config `optimizer.lr`" in r["error"] for r in rows if r["status"] == "failed")
    assert OmegaConf.load(sweep / "optimization_results.yaml").best_params["optimizer.lr"] == 0.05


@pytest.mark.slow
def test_a_median_pruner_stops_the_clearly_bad_trials(cli, tmp_path):
    sweep = tmp_path / "sweep"
    # Seed 0 draws lr 1e-7 (learns nothing), 0.05, 1e-7, 1e-7: after the first two complete, a
    # trial with 1e-7 is below the median after its first epoch.
    result = cli("-m", "hparams_search=optuna", *SMALL, "trainer.epochs=3", "hydra.sweeper.n_trials=4",
                 "optimizer.lr=choice(0.05,1e-7)", "hydra.sweeper.pruner=median",
                 "hydra.sweeper.pruning.n_startup_trials=1", "hydra.sweeper.pruning.n_warmup_steps=0",
                 f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    trials = _study(sweep).trials
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, f"no trial was pruned (is the train task missing tftrain.sweep.pruning.pruning_callback?): " \
                   f"{[(t.params['optimizer.lr'], t.state.name) for t in trials]}"
    assert all(t.params["optimizer.lr"] == 1e-7 for t in pruned)
    assert any(t.state == TrialState.COMPLETE and t.params["optimizer.lr"] == 0.05 for t in trials)
    for t in pruned:
        metrics = _metrics(t)
        assert metrics["status"] == "pruned" and metrics["epochs"] == 1  # stopped after its first epoch
        assert list(t.intermediate_values) == [0]
    for t in trials:
        if t.state == TrialState.COMPLETE:
            assert _metrics(t)["status"] == "completed" and list(t.intermediate_values) == [0, 1, 2]
    assert "Pruned by Optuna at epoch 1" in result.stdout + result.stderr


# ---------------------------------------------------------------- the composed config


def _hydra_cfg(*overrides: str):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tftrain.config.files import config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def test_the_search_config_composes_with_the_direction_of_the_objective():
    sweeper = _hydra_cfg("hparams_search=optuna").hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.tftrain_optuna_sweeper.TftrainOptunaSweeper"
    assert sweeper.direction == "maximize" and sweeper.sampler.seed == 0 and sweeper.pruner is None
    assert sweeper.params["optimizer.lr"] == "tag(log, interval(1.0e-4, 1.0e-1))"
    assert sweeper.pruning.max_resource == 30  # hyperband's: trainer.epochs
    sweeper = _hydra_cfg("hparams_search=optuna", "trainer.objective=val_loss", "hydra.sweeper.pruner=hyperband",
                         "trainer.epochs=4").hydra.sweeper
    assert sweeper.direction == "minimize" and sweeper.pruner == "hyperband" and sweeper.pruning.max_resource == 4
