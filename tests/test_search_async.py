"""Asynchronous Optuna search (`-m hparams_search=optuna hydra.sweeper.n_jobs=2`, workers that
each start their next trial the moment their last one ends): no batch barrier, n_trials exact,
summaries, continuing, pruning, a killed trial retried in its own run directory, workers joining
by hand (a SLURM array's tasks) against a real PostgreSQL server this file starts (pgserver), and a
bad storage URL. Studies are read back with optuna's own API."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_cli

optuna = pytest.importorskip("optuna")
from optuna.distributions import CategoricalDistribution  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

LONG = 60  # epochs of the long trial
# Trials differ only in their epochs and learning rate (a constant one: epoch 1 of every lr=0.05
# trial ends at the same validation accuracy, so the median pruner never prunes those).
SEARCH = ["-m", "hparams_search=optuna", "data=synthetic", "data.num_train=128", "data.num_val=64",
          "data.num_test=64", "model.hidden_units=[8]", "trainer.batch_size=32", "trainer.verbose=0",
          "schedule=constant", "optimizer.weight_decay=0", f"trainer.epochs=choice(1,3,{LONG})",
          "optimizer.lr=choice(0.05,1e-7)", "hydra.sweeper.n_jobs=2", "hydra.sweeper.pruner=median",
          "hydra.sweeper.pruning.n_startup_trials=1"]
SPACE = {"trainer.epochs": CategoricalDistribution((1, 3, LONG)), "optimizer.lr": CategoricalDistribution((0.05, 1e-7))}


def _queue(storage, *points, study_name: str = "tftrain"):
    """The study with `points` (epochs, lr) queued: the workers run them in this order."""
    study = optuna.create_study(storage=storage, study_name=study_name, direction="maximize", load_if_exists=True)
    for epochs, lr in points:
        study.enqueue_trial({"trainer.epochs": epochs, "optimizer.lr": lr})
    return study


def _sqlite(sweep: Path) -> str:
    return f"sqlite:///{sweep}/optuna.db"


def _trials(storage: str, study_name: str = "tftrain"):
    return optuna.load_study(study_name=study_name, storage=storage).trials


def _rows(sweep: Path) -> list[dict]:
    with open(sweep / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def _metrics(trial) -> dict:
    return json.loads((Path(trial.user_attrs["run_dir"]) / "metrics.json").read_text())


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """On 2 asynchronous workers: a trial a killed search left running, then a short trial, a long
    one (the second worker's first: it starts while this process runs the short one, whose job
    imports TensorFlow), a short one, and one that learns nothing."""
    sweep = tmp_path_factory.mktemp("async") / "sweep"
    sweep.mkdir()
    killed = _queue(_sqlite(sweep), (1, 0.05)).ask(SPACE)  # trial 0, left RUNNING in this sweep directory
    killed.set_user_attr("sweep_dir", str(sweep.resolve()))
    _queue(_sqlite(sweep), (1, 0.05), (LONG, 0.05), (1, 0.05), (3, 1e-7))
    result = run_cli(*SEARCH, "hydra.sweeper.n_trials=5", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep, result.stdout + result.stderr


@pytest.mark.slow
def test_a_worker_starts_its_next_trial_while_the_long_one_runs(searched):
    sweep, output = searched
    trials = _trials(_sqlite(sweep))
    assert "Starting 1 more worker process(es)" in output and "2 asynchronous worker(s)" in output
    first, long, second = trials[1:4]
    assert [t.params["trainer.epochs"] for t in (long, first, second)] == [LONG, 1, 1]
    # No barrier: trial 3 started after trial 1 ended while trial 2, started before trial 1 ended,
    # still ran. Batches of 2 would have started it only after trial 2 ended.
    assert long.datetime_start < first.datetime_complete <= second.datetime_start < long.datetime_complete
    assert [_metrics(t)["epochs"] for t in (long, first, second)] == [LONG, 1, 1]


@pytest.mark.slow  # the module's search (the fixture) runs for it
def test_n_trials_exactly_pruning_and_a_killed_trial_retried_in_its_run_directory(searched):
    sweep, _ = searched
    trials = _trials(_sqlite(sweep))
    # 5 counted: the killed trial by its retry
    assert [t.state for t in trials] == [TrialState.FAIL] + [TrialState.COMPLETE] * 3 + [TrialState.PRUNED,
                                                                                          TrialState.COMPLETE]
    pruned, retry = trials[4], trials[5]
    assert _metrics(pruned)["status"] == "pruned" and _metrics(pruned)["epochs"] == 1  # after its first epoch
    assert retry.user_attrs["retry_of"] == 0 and retry.params == trials[0].params
    assert Path(retry.user_attrs["run_dir"]).name.startswith("0_")  # the killed trial's run directory
    runs = sorted(Path(t.user_attrs["run_dir"]).name.split("_")[0] for t in trials[1:])
    assert runs == ["0", "1", "2", "3", "4"]
    rows = _rows(sweep)  # the summary, written once every worker ended, lists every trial
    assert sorted(r["status"] for r in rows) == ["completed"] * 4 + ["pruned"]


@pytest.mark.slow
def test_continuing_adds_only_the_new_trials(searched, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(searched[0], sweep)
    before = _trials(_sqlite(sweep))
    _queue(_sqlite(sweep), (1, 0.05))
    result = run_cli(*SEARCH, "hydra.sweeper.n_trials=6", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    trials = _trials(_sqlite(sweep))
    assert [(t.params, t.state, t.value) for t in trials[:6]] == [(t.params, t.state, t.value) for t in before]
    assert len(trials) == 7 and trials[6].state == TrialState.COMPLETE
    assert len(_rows(sweep)) == 6


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """A real PostgreSQL server in a temporary directory (pgserver's wheel), stopped at the end."""
    pgserver = pytest.importorskip("pgserver")
    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    yield server.get_uri().replace("postgresql://", "postgresql+psycopg2://", 1)
    server.cleanup()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning", "ignore:Heartbeat of storage:UserWarning")
def test_workers_started_by_hand_share_a_postgresql_study(postgres, tmp_path):
    """The SLURM array's command: each task a worker of the same sweep directory, no coordinator.
    A trial whose worker died (its heartbeat stopped) is retried in its own run directory."""
    sweep, name = tmp_path / "sweep", "pg_search"
    storage = optuna.storages.RDBStorage(postgres, heartbeat_interval=1)
    study = _queue(storage, (1, 0.05), (1, 0.05), study_name=name)
    killed = study.ask(SPACE)
    killed.set_user_attr("sweep_dir", str(sweep.resolve()))
    storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(name),
                                                                          killed.number))
    command = [sys.executable, "-m", "tftrain", *SEARCH, "hydra.sweeper.n_jobs=1", "hydra.sweeper.worker=true",
               "hydra.sweeper.n_trials=2", "hydra.sweeper.heartbeat_s=1", f"hydra.sweeper.study_name={name}",
               f"hydra.sweeper.storage='{postgres}'", f"hydra.sweep.dir={sweep}"]
    time.sleep(2.5)  # the killed trial's heartbeat is stale (2 x heartbeat_s) before any worker asks
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    workers = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(2)]
    outputs = [w.communicate(timeout=240)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    trials = _trials(postgres, name)  # read back from the server
    assert trials[0].state == TrialState.FAIL and len(trials) == 3  # 2 counted: the killed one by its retry
    assert [t.state for t in trials[1:]] == [TrialState.COMPLETE] * 2
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == 0)
    assert Path(retry.user_attrs["run_dir"]).name.startswith("0_")
    assert sum("lost its worker (no heartbeat)" in out for out in outputs) == 1
    assert not (sweep / "optuna.db").exists()
    results = (sweep / "optimization_results.yaml").read_text()
    assert "postgresql+psycopg2://" in results and "best_value: 0." in results


def test_a_bad_storage_url_is_one_paragraph(cli, tmp_path):
    result = cli(*SEARCH, "hydra.sweeper.storage=nosuchdb://here/x", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Invalid config `hydra.sweeper.storage`" in result.stderr and "Fix:" in result.stderr
    assert "Traceback" not in result.stderr and "Starting" not in result.stdout + result.stderr
