"""Sweeps: the summary and the seed aggregate a Hydra callback writes at the end, failed runs that
do not stop the sweep (which then exits 1), rerun sweeps, short run directory names, the parallel
(joblib) and SLURM (submitit) launchers. (The Optuna search: tests/test_search.py.)"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import SMALL
from tftrain.sweep.summary import record_failure, write_summary


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
    assert "sorted by `val_accuracy` (highest first, ties by `val_loss` (lowest first))" in md
    assert "`trainer.epochs=2`" in md
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


@pytest.mark.slow
def test_multirun_records_failed_runs_and_writes_the_summary(cli, tmp_path):
    sweep = tmp_path / "sweep"
    # One good run, one whose loss becomes NaN, one with an invalid value: the sweep goes on.
    result = cli("-m", *SMALL, "optimizer=sgd", "optimizer.lr=0.05,1e12,-1", "data.noise=0.0",
                 f"hydra.sweep.dir={sweep}")
    # Every job ran and the summaries are written; then the sweep exits 1 for its failed jobs.
    assert result.returncode == 1, result.stderr[-3000:]
    assert f"2 of 3 job(s) failed: see {sweep}/summary.md" in result.stderr
    rows = _rows(sweep)
    assert len(rows) == 3
    by_lr = {r["overrides"].split("optimizer.lr=")[1].split()[0]: r for r in rows}
    assert by_lr["0.05"]["status"] == "completed" and by_lr["0.05"]["rank"] == "1"
    assert 0 <= float(by_lr["0.05"]["val_accuracy"]) <= 1 and float(by_lr["0.05"]["test_loss"]) > 0
    assert by_lr["1000000000000.0"]["status"] == "failed" and "loss became nan" in by_lr["1000000000000.0"]["error"]
    assert by_lr["-1"]["status"] == "failed" and "Invalid config `optimizer.lr`" in by_lr["-1"]["error"]
    for row in rows:  # short readable run directories: the job number and its overrides (keys shortened)
        assert row["run"].startswith(("0_lr=", "1_lr=", "2_lr=")) and len(row["run"]) <= 66  # the swept key first
    failed = sweep / by_lr["-1"]["run"]
    assert json.loads((failed / "metrics.json").read_text())["status"] == "failed"
    assert "ConfigError" in (failed / "error.txt").read_text()
    md = (sweep / "summary.md").read_text()
    assert "3 run(s), 1 completed, 2 failed" in md
    assert (sweep / "summary.png").stat().st_size > 0


@pytest.mark.slow
def test_parallel_launcher_runs_two_jobs(cli, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    result = cli("-m", "hydra/launcher=parallel", *SMALL, "optimizer=sgd,adam", "optimizer.lr=0.05",
                 f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    # The plugin's INFO line listing every joblib setting is quieted (conf/hydra/launcher/parallel.yaml).
    assert "Parallel(" not in result.stdout + result.stderr
    rows = _rows(sweep)
    assert sorted(o for r in rows for o in r["overrides"].split() if o.startswith("optimizer=")) == \
        ["optimizer=adam", "optimizer=sgd"]
    assert all(r["status"] == "completed" for r in rows)
    for row in rows:
        assert json.loads((sweep / row["run"] / "metrics.json").read_text())["epochs"] == 2


def _hydra_cfg(*overrides: str):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tftrain.config.files import config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def test_launcher_configs_compose():
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    parallel = _hydra_cfg("hydra/launcher=parallel").hydra.launcher
    assert parallel._target_.endswith("JoblibLauncher") and parallel.n_jobs == 2
    slurm = _hydra_cfg("hydra/launcher=slurm", "hydra.launcher.partition=gpu").hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher")
    assert slurm.partition == "gpu" and slurm.gpus_per_node == 1 and slurm.timeout_min > 0
    assert slurm.submitit_folder.endswith("/.submitit/%j")  # logs inside the sweep directory


# ---------------------------------------------------------------- seeds, ties, aggregates


def _seed_runs(sweep_dir: Path, config: str, values: list[float], start: int) -> None:
    for i, v in enumerate(values):
        num = start + i
        _fake_run(sweep_dir, f"{num}_{config},seed={i}", num, [config, f"trainer.seed={i}"], _metrics(v, 1.0 - v))


def _aggregate(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "aggregate.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_ties_on_the_objective_are_broken_by_the_validation_loss(tmp_path):
    _fake_run(tmp_path, "0_a", 0, ["optimizer=sgd"], {**_metrics(0.9704, 0.30), "test_accuracy": 0.90})
    _fake_run(tmp_path, "1_b", 1, ["optimizer=adam"], {**_metrics(0.9704, 0.10), "test_accuracy": 0.97})
    _fake_run(tmp_path, "2_c", 2, ["optimizer=nadam"], {**_metrics(0.9704, 0.20), "test_accuracy": 0.95})
    rows = write_summary(tmp_path)
    assert [r["run"] for r in rows] == ["1_b", "2_c", "0_a"]


def test_seeds_of_a_configuration_are_aggregated_with_student_t_intervals(tmp_path):
    from scipy import stats

    _seed_runs(tmp_path, "optimizer=adam", [0.95, 0.96, 0.97], 0)
    _seed_runs(tmp_path, "optimizer=sgd", [0.80, 0.82, 0.81], 3)
    _seed_runs(tmp_path, "optimizer=nadam", [0.93, 0.97, 0.96], 6)  # within noise of adam
    write_summary(tmp_path)
    rows = _aggregate(tmp_path)
    assert [r["config"] for r in rows] == ["optimizer=adam", "optimizer=nadam", "optimizer=sgd"]
    adam = rows[0]
    assert adam["n"] == "3" and adam["seeds"] == "0 1 2" and adam["failed"] == "0"
    half = stats.t.ppf(0.975, 2) * 0.01 / 3 ** 0.5  # std of 0.95, 0.96, 0.97 is 0.01
    assert float(adam["val_accuracy_mean"]) == pytest.approx(0.96)
    assert float(adam["val_accuracy_std"]) == pytest.approx(0.01)
    assert float(adam["val_accuracy_ci95_low"]) == pytest.approx(0.96 - half)
    assert float(adam["val_accuracy_ci95_high"]) == pytest.approx(0.96 + half)
    assert {"test_accuracy_mean", "best_val_loss_ci95_high", "wall_time_s_mean"} <= set(adam)
    # Welch's t-test: nadam is tied with adam, so adam is not called best; sgd is worse.
    assert adam["verdict"] == "tied for best within noise"
    assert rows[1]["verdict"].startswith("tied with #1 (p=") and float(rows[1]["p_vs_best"]) > 0.05
    assert rows[2]["verdict"].startswith("worse (p=") and float(rows[2]["p_vs_best"]) < 0.05
    md = (tmp_path / "aggregate.md").read_text()
    assert "tied within noise with 1 other configuration(s)" in md and "0.9600 ± " in md


def test_the_best_is_called_best_only_beyond_noise(tmp_path):
    _seed_runs(tmp_path, "optimizer=adam", [0.95, 0.96, 0.97], 0)
    _seed_runs(tmp_path, "optimizer=sgd", [0.80, 0.82, 0.81], 3)
    write_summary(tmp_path)
    assert _aggregate(tmp_path)[0]["verdict"].startswith("best (beats #2, p <= ")
    assert "`optimizer=adam` is best on val_accuracy" in (tmp_path / "aggregate.md").read_text()


@pytest.mark.slow
def test_a_2x3_seed_sweep_writes_the_aggregate(cli, tmp_path):
    sweep = tmp_path / "sweep"
    result = cli(*SMALL, "trainer.seeds=3", "optimizer=sgd,adam", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _aggregate(sweep)
    assert sorted(r["config"].split()[-1] for r in rows) == ["optimizer=adam", "optimizer=sgd"]
    for row in rows:
        assert row["n"] == "3" and row["seeds"] == "0 1 2"
        low, mean, high = (float(row[f"val_accuracy_{k}"]) for k in ("ci95_low", "mean", "ci95_high"))
        assert low <= mean <= high
    assert len(_rows(sweep)) == 6 and (sweep / "summary.png").stat().st_size > 0
    assert "aggregate.md" in result.stdout + result.stderr


def test_trainer_seeds_must_be_a_positive_integer(cli, tmp_path):
    result = cli(*SMALL, "trainer.seeds=0", f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 2 and "Invalid config `trainer.seeds`" in result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- resumable sweeps


@pytest.mark.slow
def test_a_rerun_sweep_skips_completed_jobs_resumes_interrupted_ones_and_reruns_failed_ones(cli, tmp_path):
    sweep = tmp_path / "sweep"
    args = ("-m", *SMALL, "optimizer=sgd,adam,nadam", f"hydra.sweep.dir={sweep}")
    assert cli(*args).returncode == 0
    by_opt = {r["overrides"].split("optimizer=")[1].split()[0]: sweep / r["run"] for r in _rows(sweep)}
    kept = (by_opt["nadam"] / "metrics.json").read_text()
    (by_opt["sgd"] / "metrics.json").unlink()  # interrupted after its last checkpoint
    record_failure(by_opt["adam"], RuntimeError("out of memory"))

    result = cli(*args)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert f"Job {by_opt['nadam'].name} completed in an earlier run of this sweep: reusing its metrics.json" in out
    assert f"Job {by_opt['adam'].name} failed in an earlier run of this sweep: running it again" in out
    assert f"Resumed from {by_opt['sgd'] / 'checkpoints' / 'ckpt-16'} at step 16" in out
    assert (by_opt["nadam"] / "metrics.json").read_text() == kept  # not run again
    rows = _rows(sweep)
    assert len(rows) == 3 and all(r["status"] == "completed" for r in rows)


def test_the_sweep_summary_command_exits_2_on_a_wrong_directory(tmp_path):
    from tftrain.sweep.summary import main

    assert main([str(tmp_path / "nope")]) == 2
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text("{}")
    assert main([str(run)]) == 2
    assert main([str(tmp_path / "empty")]) == 2


def test_sweep_summary_errors_are_one_paragraph(tmp_path, capsys):
    from tftrain.sweep.summary import main

    main([str(tmp_path / "nope")])
    assert f"tftrain: error: {tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    (tmp_path / "metrics.json").write_text("{}")
    main([str(tmp_path)])
    assert "is the directory of a single run, not of a sweep" in capsys.readouterr().err


def test_run_directory_names_stay_short_and_distinct():
    from tftrain.sweep.rundirs import LIMIT, short_dirname

    optuna = ["optimizer.lr=0.0012345678901234567", "optimizer.weight_decay=1.2345678901234e-05",
              "trainer.batch_size=64", "model.dropout=0.123456789012345", "hydra.sweeper.n_trials=20"]
    name = short_dirname(optuna)
    assert name == "dropout=0.1235,lr=0.001235,weight_decay=1.235e-05,batch_size=64"
    long = [f"data.augment.option_{i}=value_{i}" for i in range(10)]
    assert len(short_dirname(long)) <= LIMIT and short_dirname(long) != short_dirname(long[:-1] + ["x=1"])
    assert short_dirname(long) == short_dirname(list(reversed(long)))  # stable: a rerun finds the same directory
    assert short_dirname(["model.dropout=0.1", "data.dropout=0.2"]) == "data.dropout=0.2,model.dropout=0.1"
    assert short_dirname(["output_dir=x", "trainer.seed=1"], exclude=["output_dir"]) == "seed=1"


def test_a_job_another_process_holds_is_running_not_failed_and_completed_once_it_is(tmp_path):
    import os

    from tftrain.sweep.summary import read_run
    from tftrain.tasks.resume import RunLock

    sweep = tmp_path / "sweep"
    held = _fake_run(sweep, "1_optimizer=adam", 1, ["optimizer=adam"], None)
    free = _fake_run(sweep, "2_optimizer=sgd", 2, ["optimizer=sgd"], None)  # its process died: no outcome
    with RunLock(held):  # what a second copy of the sweep holds while it trains the job
        row = read_run(held, sweep)
        assert row["status"] == "running" and f"pid {os.getpid()} " in row["error"]
        (held / "metrics.json").write_text(json.dumps({"status": "failed", "error": "an earlier attempt"}))
        assert read_run(held, sweep)["status"] == "running"  # that record is stale while it runs again
        statuses = {r["run"]: r["status"] for r in write_summary(sweep, "val_accuracy", "max")}
        assert statuses == {"1_optimizer=adam": "running", "2_optimizer=sgd": "failed"}
        assert "1 running in another process, 1 failed" in (sweep / "summary.md").read_text()
        (held / "metrics.json").write_text(json.dumps(_metrics(0.9, 0.3) | {"status": "completed"}))
        assert read_run(held, sweep)["status"] == "completed"  # held while a rerun reuses the outcome
    assert read_run(held, sweep)["status"] == "completed"
    assert read_run(free, sweep)["status"] == "failed"


def test_a_run_inside_a_jobs_directory_is_not_a_job_of_the_sweep(tmp_path):
    from tftrain.sweep.summary import find_runs

    for run in ("0_seed=0", "0_seed=0/budget_3", "1_seed=1"):
        (tmp_path / run / ".hydra").mkdir(parents=True)
        (tmp_path / run / ".hydra" / "overrides.yaml").write_text("- trainer.seed=0\n")
    assert sorted(r.name for r in find_runs(tmp_path)) == ["0_seed=0", "1_seed=1"]


def test_runs_are_in_job_order_by_their_hydra_record(tmp_path):
    """find_runs orders by Hydra's hydra.job.num (10 after 2, whatever the names); a run whose
    record is missing or half-written comes last, by name."""
    from tftrain.sweep.summary import find_runs

    records = {"a": "hydra:\n  job:\n    num: 10\n    name: x\n", "b": "hydra:\n  job:\n    num: 2\n",
               "c": "hydra:\n  job: [unclosed\n", "d": None, "e": "hydra:\n  job:\n    num: 0\n"}
    for name, record in records.items():
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text("- trainer.seed=0\n")
        if record is not None:
            (tmp_path / name / ".hydra" / "hydra.yaml").write_text(record)
    assert [r.name for r in find_runs(tmp_path)] == ["e", "b", "a", "c", "d"]
