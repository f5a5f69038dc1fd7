"""The `logger` group: several loggers at once, steps.csv, MLflow read back with its own client (a
resumed job continues its run; a sweep's jobs are children of a parent run holding the summaries),
a user's own logger, and loggers that fail."""

from __future__ import annotations

import csv
import json
import sys
import textwrap

import pytest

import tftrain
from conftest import SMALL, compose_small, run_cli

mlflow = pytest.importorskip("mlflow")


def _client(tmp_path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def _mlflow_args(tmp_path) -> list[str]:
    return [f"logger.mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"logger.mlflow.artifact_location={tmp_path / 'artifacts'}", "logger.mlflow.update_freq=4"]


def _steps_csv(run_dir) -> list[int]:
    with open(run_dir / "steps.csv", newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def test_no_logger_writes_only_the_core_outputs(tmp_path):
    tftrain.train(compose_small("logger=[]"), output_dir=tmp_path)
    assert (tmp_path / "history.csv").is_file() and (tmp_path / "metrics.json").is_file()
    assert not (tmp_path / "tensorboard").exists() and not (tmp_path / "steps.csv").exists()


def test_csv_logger_writes_every_nth_step_and_a_resume_repeats_none(tmp_path):
    args = ("logger=csv", "logger.csv.update_freq=3", "trainer.checkpoint_every_steps=5")
    tftrain.train(compose_small(*args, "trainer.epochs=1"), output_dir=tmp_path)  # 8 steps per epoch
    assert _steps_csv(tmp_path) == [0, 3, 6]
    tftrain.train(compose_small(*args, "trainer.epochs=3"), output_dir=tmp_path)  # resumed at step 8
    assert _steps_csv(tmp_path) == list(range(0, 24, 3))
    with open(tmp_path / "steps.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert set(row) == {"step", "batch_loss", "learning_rate", "grad_norm"} and float(row["learning_rate"]) == 0.001


@pytest.mark.slow
def test_mlflow_records_params_metrics_and_artifacts_and_a_resume_continues_the_run(tmp_path):
    run_dir = tmp_path / "run"
    cfg = compose_small("logger=[tensorboard,mlflow]", *_mlflow_args(tmp_path), "optimizer.lr=0.01", "trainer.epochs=1")
    tftrain.train(cfg, output_dir=run_dir)
    run_id = json.loads((run_dir / "mlflow_run.json").read_text())["run_id"]
    client = _client(tmp_path)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["optimizer.lr"] == "0.01" and run.data.params["trainer.batch_size"] == "32"
    assert run.data.params["model.hidden_units"] == "[32]"
    assert {a.path for a in client.list_artifacts(run_id)} >= {"model.keras", "history.csv", "metrics.json",
                                                              "config.yaml"}
    assert (run_dir / "tensorboard").is_dir()  # both loggers wrote

    metrics = tftrain.train(compose_small("logger=[tensorboard,mlflow]", *_mlflow_args(tmp_path), "optimizer.lr=0.01",
                                          "trainer.epochs=3"), output_dir=run_dir)  # resumes at epoch 2
    assert json.loads((run_dir / "mlflow_run.json").read_text())["run_id"] == run_id  # the same MLflow run
    experiment = client.get_experiment_by_name("tftrain")
    assert len(client.search_runs([experiment.experiment_id])) == 1
    history = client.get_metric_history(run_id, "val_accuracy")
    assert [m.step for m in history] == [0, 1, 2]  # each epoch once
    assert [m.value for m in history] == pytest.approx(metrics["history"]["val_accuracy"])
    assert [m.step for m in client.get_metric_history(run_id, "batch_loss")] == list(range(0, 24, 4))
    assert [m.step for m in client.get_metric_history(run_id, "learning_rate")] == list(range(0, 24, 4))
    assert client.get_run(run_id).data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert client.get_run(run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_a_sweep_is_one_experiment_with_a_parent_run_holding_the_aggregate(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("-m", *SMALL, "logger=mlflow", *_mlflow_args(tmp_path), "logger.mlflow.experiment=sweeps",
                     "optimizer=sgd,adam", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    client = _client(tmp_path)
    experiment = client.get_experiment_by_name("sweeps")
    parent_id = json.loads((sweep / "mlflow_parent_run.json").read_text())["run_id"]
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert sorted(r.data.params["optimizer"] for r in children) == ["adam", "sgd"]
    assert all(r.info.status == "FINISHED" for r in children)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and "best_val_accuracy" in parent.data.metrics
    assert {a.path for a in client.list_artifacts(parent_id)} >= {"aggregate.md", "aggregate.csv", "summary.md"}


@pytest.mark.slow
def test_an_unusable_tracking_uri_is_a_clear_error(tmp_path):
    result = run_cli(*SMALL, "logger=mlflow", "logger.mlflow.tracking_uri=nosuchscheme://x", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "MLflow could not record this run at nosuchscheme://x" in result.stderr
    assert "logger.mlflow.tracking_uri" in result.stderr


USER_LOGGER = textwrap.dedent('''
    import json
    from tftrain.loggers import Logger

    class Recorder(Logger):
        def __init__(self, path, fail_in=None):
            self.path, self.fail_in, self.calls, self.step_freq = path, fail_in, [], 4

        def start(self, run):
            self.calls.append(["start", run.resumed_at, run.params["optimizer.lr"]])

        def log_steps(self, rows):
            self.calls.append(["steps", [r["step"] for r in rows]])

        def log_epoch(self, epoch, logs):
            if self.fail_in == "log_epoch":
                raise RuntimeError("the service is down")
            self.calls.append(["epoch", epoch, sorted(logs)])

        def finish(self, metrics, files):
            self.calls.append(["finish", metrics["epochs"], sorted(f.name for f in files)])

        def close(self, status):
            self.calls.append(["close", status])
            open(self.path, "w").write(json.dumps(self.calls))
''')


@pytest.mark.slow
def test_a_users_own_logger_gets_every_hook(tmp_path):
    (tmp_path / "recorder.py").write_text(USER_LOGGER)
    out = tmp_path / "calls.json"
    result = run_cli(*SMALL, "logger=[]", "+logger.mine._target_=recorder.Recorder", f"+logger.mine.path={out}",
                     "trainer.steps_per_execution=4", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    calls = json.loads(out.read_text())
    assert calls[0] == ["start", 0, 0.001]
    # 8 steps per epoch in calls of 4, a row every 4th step (its step_freq), after the call that ran it
    assert [c[0] if c[0] != "steps" else c[1] for c in calls[1:7]] == [[0], [4], "epoch", [8], [12], "epoch"]
    assert calls[3][1] == 0 and {"loss", "val_loss", "accuracy", "val_accuracy"} <= set(calls[3][2])
    assert calls[-2] == ["finish", 2, ["config.yaml", "history.csv", "metrics.json", "model.keras",
                                       "preprocessing.json"]]
    assert calls[-1] == ["close", "completed"]


def test_a_logger_failing_mid_run_is_dropped_and_the_run_goes_on(tmp_path, caplog):
    sys.path.insert(0, str(tmp_path))
    try:
        (tmp_path / "recorder2.py").write_text(USER_LOGGER)
        cfg = compose_small("logger=[]", "+logger.mine._target_=recorder2.Recorder", f"+logger.mine.path={tmp_path / 'c'}",
                            "+logger.mine.fail_in=log_epoch")
        with caplog.at_level("WARNING", logger="tftrain"):
            metrics = tftrain.train(cfg, output_dir=tmp_path / "run")
    finally:
        sys.path.remove(str(tmp_path))
    assert metrics["epochs"] == 2 and (tmp_path / "run" / "metrics.json").is_file()
    assert "Logger Recorder failed in log_epoch (RuntimeError: the service is down); the run goes on without it" \
        in caplog.text
    assert not (tmp_path / "c").exists()  # dropped: its close was never called


def test_old_tensorboard_keys_say_where_they_moved(tmp_path):
    result = run_cli(*SMALL, "callbacks.tensorboard.enabled=false", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2 and "logger=[]" in result.stderr and "Traceback" not in result.stderr
