"""Any problem, any metric: regression, binary and multi-label training on bundled data; metrics by
name in every output; targets checked against the problem; preprocessing inside the saved model;
predict and evaluate."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tftrain
from conftest import ROOT, options, per_option, run_cli
from tftrain.errors import ConfigError, DataError
from tftrain.tasks.evaluate import evaluate
from tftrain.tasks.predict import predict
from tftrain.schema import validate

QUICK = ["trainer.verbose=2", "trainer.batch_size=32", "model.hidden_units=[32]"]


def _metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


# Per problem: a bundled data set of its kind, the epochs it needs, the metrics it logs, and what
# it must reach. Every option in conf/problem needs one.
ON_BUNDLED_DATA = {
    "regression": ("diabetes", 20, ["mae", "rmse"],
                   lambda m: m["test_mae"] < 60 and m["test_rmse"] < 75),  # the target's std is 77
    "binary": ("breast_cancer", 5, ["accuracy", "auc"], lambda m: m["test_accuracy"] > 0.9 and m["test_auc"] > 0.95),
    "multilabel": ("digits_multilabel", 5, ["accuracy", "auc"],
                   lambda m: m["test_accuracy"] > 0.85 and m["test_auc"] > 0.9),
    "classification": ("digits", 10, ["accuracy"], lambda m: m["test_accuracy"] > 0.85),
}


@pytest.mark.slow
@pytest.mark.parametrize("problem", options("problem"))
def test_each_problem_trains_from_the_cli_on_its_bundled_data(tmp_path, problem):
    data, epochs, names, check = per_option(ON_BUNDLED_DATA, "problem", problem, "ON_BUNDLED_DATA")
    run = tmp_path / data
    result = run_cli(f"problem={problem}", f"data={data}", f"trainer.epochs={epochs}", *QUICK, f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    m = _metrics(run)
    for name in ["loss", *names]:
        for key in (name, f"train_{name}", f"val_{name}", f"best_val_{name}", f"test_{name}"):
            assert isinstance(m[key], float), key
        assert len(m["history"][f"val_{name}"]) == epochs
    assert check(m), m
    # The per-epoch log line, history.csv and TensorBoard use the metric names too.
    assert f"val_{names[0]}" in result.stdout + result.stderr
    with open(run / "history.csv", newline="") as f:
        header = next(csv.reader(f))
    assert {*names, *(f"val_{n}" for n in names)} <= set(header)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(run / "tensorboard" / "validation"), size_guidance={"tensors": 0}).Reload().Tags()
    assert {f"epoch_{n}" for n in names} <= set(tags["tensors"])


def test_regression_targets_are_normalized_for_the_loss_and_the_saved_model_gives_raw_values(tmp_path):
    import keras

    cfg = tftrain.compose(["data=diabetes", "trainer.epochs=15", "trainer.verbose=0"])
    m = tftrain.train(cfg, output_dir=tmp_path)
    pre = json.loads((tmp_path / "preprocessing.json").read_text())
    assert 140 < pre["target_normalization"]["mean"][0] < 165 and 70 < pre["target_normalization"]["std"][0] < 85
    assert len(pre["normalization"]["offset"]) == 10 and pre["feature_names"][:3] == ["age", "sex", "bmi"]
    # The loss is the MSE of standardized targets (~1 at the start), the metrics are in the targets' units.
    assert m["history"]["loss"][-1] < 1.0 and m["test_mae"] > 10
    from sklearn.datasets import load_diabetes

    d = load_diabetes(scaled=False)
    model = keras.models.load_model(tmp_path / "model.keras")
    predictions = model.predict(d.data.astype("float32"), verbose=0)[:, 0]  # raw rows in, progression out
    assert 80 < predictions.mean() < 220 and np.mean(np.abs(predictions - d.target)) < 70


def test_float_targets_under_classification_are_refused_with_a_hint(tmp_path):
    with pytest.raises(DataError, match="problem=regression"):
        tftrain.train(tftrain.compose(["data=diabetes", "problem=classification"]), output_dir=tmp_path / "a")
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.normal(size=(40, 3)), y_train=rng.normal(size=40))
    with pytest.raises(DataError, match="non-integer values .*problem=regression"):
        tftrain.train(tftrain.compose(["data=npz", f"data.path={path}"]), output_dir=tmp_path / "b")


BAD_TARGETS = [  # problem, targets of the wrong kind for it, what the error says; every problem needs one
    ("multilabel", lambda rng: rng.integers(0, 3, size=(60, 4)), "values other than 0 and 1"),
    ("multilabel", lambda rng: rng.integers(0, 2, size=60), r"needs an \(n, k\) matrix"),
    ("binary", lambda rng: rng.integers(0, 3, size=60), "values other than 0 and 1"),
    ("binary", lambda rng: rng.integers(0, 2, size=(60, 2)), "use problem=multilabel"),
    ("classification", lambda rng: rng.integers(0, 2, size=(60, 3)), "use problem=multilabel"),
    ("regression", lambda rng: np.where(rng.random(60) < 0.1, np.nan, 1.0), "NaN or Inf"),
]


@pytest.mark.parametrize("problem", options("problem"))
def test_every_problem_has_a_bad_target_case(problem):
    per_option({case[0]: case for case in BAD_TARGETS}, "problem", problem, "BAD_TARGETS")


@pytest.mark.parametrize("problem, y, message", BAD_TARGETS)
def test_targets_are_checked_against_the_problem(tmp_path, problem, y, message):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.normal(size=(60, 3)).astype("float32"), y_train=y(rng))
    with pytest.raises(DataError, match=message):
        tftrain.train(tftrain.compose([f"problem={problem}", "data=npz", f"data.path={path}"]), output_dir=tmp_path / "r")


@pytest.mark.slow
def test_two_replicas_agree_with_one_for_every_problem(tmp_path):
    # Each problem reduces its loss and metrics across replicas its own way. One process per device
    # layout (devices are fixed at TensorFlow's start), every problem in it, on its bundled data.
    runs = {problem: per_option(ON_BUNDLED_DATA, "problem", problem, "ON_BUNDLED_DATA")[0]
            for problem in options("problem")}
    code = """
import json, sys, tftrain
out, runs, extra = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
for problem, data in runs.items():
    tftrain.train(tftrain.compose([f"problem={problem}", f"data={data}", "trainer.epochs=2", "trainer.batch_size=32",
                                   "trainer.verbose=0", *extra]), output_dir=f"{out}/{problem}")
"""
    for name, extra in (("one", []), ("two", ["trainer.cpu_devices=2", "trainer.strategy=mirrored"])):
        r = subprocess.run([sys.executable, "-c", code, str(tmp_path / name), json.dumps(runs), *extra],
                           capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                           timeout=240)
        assert r.returncode == 0, r.stderr[-3000:]
    for problem in runs:
        one, two = _metrics(tmp_path / "one" / problem), _metrics(tmp_path / "two" / problem)
        for key, values in one["history"].items():
            if key != "seconds":
                np.testing.assert_allclose(values, two["history"][key], rtol=1e-5, err_msg=f"{problem} {key}")
        for key in [k for k in one if k.startswith("test_")]:
            assert two[key] == pytest.approx(one[key], rel=1e-5), (problem, key)


def _csv_classes(path, n, rng, centers):
    y = rng.integers(0, len(centers), n)
    x = centers[y] + rng.normal(size=(n, centers.shape[1]))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "c", "d", "label"])
        w.writerows([[*(f"{v:.5f}" for v in row), int(t)] for row, t in zip(x, y)])
    return x, y


@pytest.mark.slow
def test_predict_from_raw_rows_matches_the_runs_test_metrics_and_evaluate_writes_its_file(tmp_path):
    rng = np.random.default_rng(0)
    centers = np.array([[50.0, 0.1, 1000.0, -3], [52.0, 0.3, 900.0, -2], [49.0, 0.2, 1100.0, -4]])  # unscaled features
    _csv_classes(tmp_path / "train.csv", 600, rng, centers)
    x_test, y_test = _csv_classes(tmp_path / "test.csv", 200, rng, centers)
    # In this process (the CLI's side of predict and evaluate is tested below): three fewer
    # TensorFlow start-ups.
    run = tmp_path / "run"
    tftrain.train(tftrain.compose(["data=csv", f"data.path={tmp_path / 'train.csv'}",
                                   f"data.test_path={tmp_path / 'test.csv'}", "trainer.epochs=10", *QUICK]), output_dir=run)
    test_accuracy = _metrics(run)["test_accuracy"]
    assert test_accuracy > 0.6
    rows = tmp_path / "rows.csv"  # the raw test rows, without the label column
    with open(rows, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["d", "a", "b", "c"])  # another column order: read by name
        w.writerows([[f"{r[3]:.5f}", f"{r[0]:.5f}", f"{r[1]:.5f}", f"{r[2]:.5f}"] for r in x_test])
    predict(tftrain.compose(["task=predict", f"task.run={run}", f"task.input={rows}",
                             f"task.output={tmp_path / 'p.csv'}"]), output_dir=tmp_path / "predict")
    with open(tmp_path / "p.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["prediction", "prob_0", "prob_1", "prob_2"]
    predicted = np.array([int(r["prediction"]) for r in table])
    assert np.mean(predicted == y_test) == pytest.approx(test_accuracy, abs=1e-6)
    assert all(abs(sum(float(r[f"prob_{c}"]) for c in range(3)) - 1) < 1e-4 for r in table)
    evaluate(tftrain.compose(["task=evaluate", f"task.run={run}", f"task.input={tmp_path / 'test.csv'}"]),
             output_dir=tmp_path / "evaluate")
    evaluation = json.loads((tmp_path / "evaluate" / "evaluation.json").read_text())
    assert evaluation["examples"] == 200 and evaluation["accuracy"] == pytest.approx(test_accuracy, abs=1e-6)
    assert evaluation["loss"] == pytest.approx(_metrics(run)["test_loss"], rel=1e-5)


@pytest.mark.slow
def test_predict_and_evaluate_give_clear_errors(tmp_path):
    bad_run = run_cli("task=predict", f"task.run={tmp_path / 'nope'}", f"task.input={tmp_path}",
                      f"hydra.run.dir={tmp_path / 'p'}")
    assert bad_run.returncode == 2 and "task.run" in bad_run.stderr and "Traceback" not in bad_run.stderr
    run = tmp_path / "run"
    assert run_cli("data=breast_cancer", "trainer.epochs=1", *QUICK, f"hydra.run.dir={run}").returncode == 0
    np.savez(tmp_path / "wrong.npz", x=np.zeros((3, 7), "float32"))
    wrong = run_cli("task=predict", f"task.run={run}", f"task.input={tmp_path / 'wrong.npz'}",
                    f"hydra.run.dir={tmp_path / 'p'}")
    assert wrong.returncode == 2 and "shape (7,)" in wrong.stderr and "(30,)" in wrong.stderr
    (run / "model.keras").unlink()
    missing = run_cli("task=evaluate", f"task.run={run}", f"hydra.run.dir={tmp_path / 'e'}")
    assert missing.returncode == 2 and "model.keras is missing" in missing.stderr


@pytest.mark.slow
def test_binary_and_multilabel_predictions_have_one_column_per_label(tmp_path):
    run = tmp_path / "run"
    assert run_cli("data=digits_multilabel", "trainer.epochs=2", *QUICK, f"hydra.run.dir={run}").returncode == 0
    from tftrain.data.sources import digits_multilabel

    x = digits_multilabel().x_train[:10]
    np.savez(tmp_path / "x.npz", x=x)
    result = run_cli("task=predict", f"task.run={run}", f"task.input={tmp_path / 'x.npz'}",
                     f"task.output={tmp_path / 'p.csv'}", f"hydra.run.dir={tmp_path / 'p'}")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "p.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header == ["prediction_even", "prediction_greater_than_4", "prediction_prime", "prediction_closed_loop",
                      "prob_even", "prob_greater_than_4", "prob_prime", "prob_closed_loop"]


@pytest.mark.slow
def test_csv_label_column_takes_a_list_of_targets(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = np.stack([x[:, 0] + x[:, 1], x[:, 1] - 2 * x[:, 2]], axis=1)
    path = tmp_path / "d.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["x0", "x1", "x2", "y0", "y1"])
        w.writerows([[*(f"{v:.5f}" for v in a), *(f"{v:.5f}" for v in b)] for a, b in zip(x, y)])
    m = tftrain.train(tftrain.compose(["problem=regression", "data=csv", f"data.path={path}",
                                       "data.label_column=[y0,y1]", "trainer.epochs=20", "trainer.verbose=0",
                                       "optimizer.lr=0.01"]), output_dir=tmp_path / "run")
    assert m["test_mae"] < 0.5  # two linear targets, learned together


@pytest.mark.parametrize("overrides, key", [
    (["trainer.objective=val_auc"], "trainer.objective"),
    (["data=diabetes", "trainer.objective=val_accuracy"], "trainer.objective"),
    (["callbacks.early_stopping.monitor=bogus"], "callbacks.early_stopping.monitor"),
    (["callbacks.best_checkpoint.monitor=val_f1"], "callbacks.best_checkpoint.monitor"),
    (["schedule=plateau", "schedule.monitor=val_mae"], "schedule.monitor"),
    (["problem.metrics=[accuracy,accuracy]"], "problem.metrics"),
])
def test_objective_and_monitors_must_be_logged_metrics(overrides, key):
    with pytest.raises(ConfigError, match=f"`{key}`"):
        validate(tftrain.compose(overrides))


@pytest.mark.parametrize("overrides, objective, mode, es_mode", [
    ([], "val_accuracy", "max", "min"),
    (["data=diabetes"], "val_mae", "min", "min"),
    (["data=breast_cancer", "trainer.objective=test_auc", "callbacks.early_stopping.monitor=val_auc"],
     "test_auc", "max", "max"),
    (["trainer.objective=val_loss"], "val_loss", "min", "min"),
])
def test_objective_defaults_and_modes_follow_the_metric(overrides, objective, mode, es_mode):
    cfg = validate(tftrain.compose(overrides))
    assert (cfg.trainer.objective, cfg.trainer.objective_mode, cfg.callbacks.early_stopping.mode) == \
        (objective, mode, es_mode)


def test_unknown_metric_or_loss_names_their_key(tmp_path):
    with pytest.raises(ConfigError, match="`problem.metrics`.*accurracy"):
        tftrain.train(tftrain.compose(["problem.metrics=[accurracy]", "trainer.epochs=1"]), output_dir=tmp_path / "a")
    with pytest.raises(ConfigError, match="`problem.loss`"):
        tftrain.train(tftrain.compose(["problem.loss=msee", "trainer.epochs=1"]), output_dir=tmp_path / "b")


def test_more_metrics_and_a_loss_target(tmp_path):
    m = tftrain.train(tftrain.compose([
        "data=digits", "problem.metrics=[accuracy,top_3_accuracy]", "problem.label_smoothing=0.1",
        "trainer.epochs=2", "trainer.verbose=0"]), output_dir=tmp_path / "a")
    assert m["test_top_3_accuracy"] >= m["test_accuracy"]
    m = tftrain.train(tftrain.compose([
        "data=diabetes", "problem.loss={_target_: keras.losses.Huber, delta: 0.5}", "problem.metrics=[mae,r2]",
        "trainer.epochs=2", "trainer.verbose=0"]), output_dir=tmp_path / "b")
    assert "test_r2" in m and np.isfinite(m["test_loss"])


@pytest.mark.slow
def test_a_sweep_summary_uses_the_problems_metrics(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("-m", "data=diabetes", "trainer.epochs=2", "trainer.batch_size=32", "optimizer=sgd,adam",
                     "trainer.verbose=0", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(sweep / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {"val_mae", "best_val_mae", "test_mae", "val_rmse", "test_rmse", "val_loss"} <= set(rows[0])
    assert "val_accuracy" not in rows[0]
    maes = [float(r["val_mae"]) for r in rows]
    assert maes == sorted(maes)  # ranked by the default objective, val_mae, lowest first
    assert "sorted by `val_mae` (lowest first, ties by `val_loss`" in (sweep / "summary.md").read_text()
