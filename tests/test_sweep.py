"""Sweeps: the summary a Hydra callback writes at the end, failed runs that do not stop the sweep,
the parallel (joblib) and SLURM (submitit) launchers, and the Optuna search."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import SMALL
from tftrain.sweep import record_failure, write_summary


def _rows(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def _fake_run(sweep_dir: Path, name: str, num: int, overrides: list[str], metrics: dict | None) -> Path:
    run = sweep_dir / name
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), run / ".hydra" / "overrides.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"job": {"num": num}}}), run / ".hydra" / "hydra.yaml")
    OmegaConf.save(OmegaConf.create({"trainer": {"objective": "val_accuracy", "objective_mode": "max"}}),
                   run / ".hydra" / "config.yaml")
    if metrics is not None:
        (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def _metrics(val_acc: float, val_loss: float) -> dict:
    return {"val_loss": val_loss, "val_accuracy": val_acc, "best_val_loss": val_loss, "best_val_accuracy": val_acc,
            "test_loss": val_loss + 0.1, "test_accuracy": val_acc - 0.01, "epochs": 2, "wall_time_s": 3.5,
            "train_loss": 0.5, "history": {"val_accuracy": [val_acc / 2, val_acc], "val_loss": [2.0, val_loss]}}


def test_summary_reads_run_dirs_sorts_by_objective_and_lists_failures(tmp_path):
    common = ["trainer.epochs=2"]
    _fake_run(tmp_path, "0_optimizer=sgd", 0, ["optimizer=sgd", *common], _metrics(0.80, 0.7))
    _fake_run(tmp_path, "1_optimizer=adam", 1, ["optimizer=adam", *common], _metrics(0.95, 0.2))
    failed = _fake_run(tmp_path, "2_optimizer.lr=-1", 2, ["optimizer.lr=-1", *common], None)
    try:
        raise ValueError("Invalid config `optimizer.lr`: received -1")
    except ValueError as e:
        record_failure(failed, e, wall_time_s=0.1)
    _fake_run(tmp_path, "3_optimizer=nadam", 3, ["optimizer=nadam", *common], None)  # killed: no metrics

    rows = write_summary(tmp_path)
    assert [r["run"] for r in rows] == ["1_optimizer=adam", "0_optimizer=sgd", "2_optimizer.lr=-1", "3_optimizer=nadam"]
    csv_rows = _rows(tmp_path)
    assert [r["status"] for r in csv_rows] == ["completed", "completed", "failed", "failed"]
    assert [r["rank"] for r in csv_rows] == ["1", "2", "3", "4"]
    assert csv_rows[0]["overrides"] == "optimizer=adam trainer.epochs=2"
    assert float(csv_rows[0]["val_accuracy"]) == 0.95 and float(csv_rows[0]["test_accuracy"]) == 0.94
    assert {"best_val_loss", "best_val_accuracy", "test_loss", "wall_time_s", "error"} <= set(csv_rows[0])
    assert "Invalid config `optimizer.lr`" in csv_rows[2]["error"]
    assert "ValueError" in (failed / "error.txt").read_text()
    assert "did not finish" in csv_rows[3]["error"]

    md = (tmp_path / "summary.md").read_text()
    assert "sorted by `val_accuracy` (highest first)" in md and "`trainer.epochs=2`" in md
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| # | overrides | status |")
    assert lines[1].startswith("| 1 | optimizer=adam | completed | 0.2000 | 0.9500 |")
    assert "| failed |" in lines[3] and "Invalid config" in lines[3]
    assert (tmp_path / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Another objective and direction; one that is no column of its own gets one.
    rows = write_summary(tmp_path, objective="val_loss", mode="min")
    assert rows[0]["run"] == "1_optimizer=adam"
    write_summary(tmp_path, objective="train_loss", mode="min")
    assert "train_loss" in _rows(tmp_path)[0]


def test_multirun_records_failed_runs_and_writes_the_summary(cli, tmp_path):
    sweep = tmp_path / "sweep"
    # One good run, one whose loss becomes NaN, one with an invalid value: the sweep goes on.
    result = cli("-m", *SMALL, "optimizer=sgd", "optimizer.lr=0.05,1e12,-1", "data.noise=0.0",
                 f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _rows(sweep)
    assert len(rows) == 3
    by_lr = {r["overrides"].split("optimizer.lr=")[1].split()[0]: r for r in rows}
    assert by_lr["0.05"]["status"] == "completed" and by_lr["0.05"]["rank"] == "1"
    assert 0 <= float(by_lr["0.05"]["val_accuracy"]) <= 1 and float(by_lr["0.05"]["test_loss"]) > 0
    assert by_lr["1000000000000.0"]["status"] == "failed" and "loss became nan" in by_lr["1000000000000.0"]["error"]
    assert by_lr["-1"]["status"] == "failed" and "Invalid config `optimizer.lr`" in by_lr["-1"]["error"]
    for row in rows:  # readable run directories: the job number and its overrides
        assert row["run"].startswith(("0_", "1_", "2_")) and "optimizer.lr=" in row["run"]
    failed = sweep / by_lr["-1"]["run"]
    assert json.loads((failed / "metrics.json").read_text())["status"] == "failed"
    assert "ConfigError" in (failed / "error.txt").read_text()
    md = (sweep / "summary.md").read_text()
    assert "3 run(s), 1 completed, 2 failed" in md
    assert (sweep / "summary.png").stat().st_size > 0


def test_parallel_launcher_runs_two_jobs(cli, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    result = cli("-m", "hydra/launcher=parallel", *SMALL, "optimizer=sgd,adam", "optimizer.lr=0.05",
                 f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    rows = _rows(sweep)
    assert sorted(o for r in rows for o in r["overrides"].split() if o.startswith("optimizer=")) == \
        ["optimizer=adam", "optimizer=sgd"]
    assert all(r["status"] == "completed" for r in rows)
    for row in rows:
        assert json.loads((sweep / row["run"] / "metrics.json").read_text())["epochs"] == 2


def test_optuna_search_optimizes_the_objective(cli, tmp_path):
    pytest.importorskip("optuna")
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "sweep"
    result = cli("-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3", *SMALL, f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Directions: ['maximize']" in result.stdout + result.stderr
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    rows = _rows(sweep)
    assert len(rows) == 3 and all(r["status"] == "completed" for r in rows)
    assert float(rows[0]["val_accuracy"]) == pytest.approx(best.best_value)  # the summary agrees with Optuna
    assert float(rows[0]["val_accuracy"]) >= max(float(r["val_accuracy"]) for r in rows)
    for row in rows:
        params = dict(o.split("=", 1) for o in row["overrides"].split())
        assert 1e-4 <= float(params["optimizer.lr"]) <= 1e-1
        assert 1e-6 <= float(params["optimizer.weight_decay"]) <= 1e-2
        assert params["trainer.batch_size"] in ("32", "64", "128")


def test_optuna_search_goes_on_after_a_failed_trial(cli, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "sweep"
    # A dimension given on the command line replaces the config's; with this seed the sampler
    # draws lr 0.05, -1, -1 (Optuna 2.10): one completed trial, then two invalid ones.
    result = cli("-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.seed=2",
                 "optimizer.lr=choice(0.05,-1)", *SMALL, "trainer.epochs=1", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _rows(sweep)
    assert len(rows) == 3
    for row in rows:
        lr = dict(o.split("=", 1) for o in row["overrides"].split())["optimizer.lr"]
        assert row["status"] == ("failed" if lr == "-1" else "completed"), row
    assert [r["status"] for r in rows].count("failed") >= 1
    assert "Invalid config `optimizer.lr`" in rows[-1]["error"]
    assert OmegaConf.load(sweep / "optimization_results.yaml").best_params["optimizer.lr"] == 0.05


def _hydra_cfg(*overrides: str):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tftrain.config import config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def test_optuna_direction_follows_the_objective_mode():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    cfg = _hydra_cfg("hparams_search=optuna")
    assert cfg.hydra.sweeper.direction == "maximize" and cfg.hydra.sweeper.sampler.seed == 0
    assert cfg.hydra.sweeper.params["optimizer.lr"] == "tag(log, interval(1.0e-4, 1.0e-1))"
    cfg = _hydra_cfg("hparams_search=optuna", "trainer.objective=val_loss", "trainer.objective_mode=min")
    assert cfg.hydra.sweeper.direction == "minimize"


def test_launcher_configs_compose():
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    parallel = _hydra_cfg("hydra/launcher=parallel").hydra.launcher
    assert parallel._target_.endswith("JoblibLauncher") and parallel.n_jobs == 2
    slurm = _hydra_cfg("hydra/launcher=slurm", "hydra.launcher.partition=gpu").hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher")
    assert slurm.partition == "gpu" and slurm.gpus_per_node == 1 and slurm.timeout_min > 0
    assert slurm.submitit_folder.endswith("/.submitit/%j")  # logs inside the sweep directory
