"""A run directory, a saved model and an input file are data, never code: predict, evaluate and
model=saved import and run nothing named in them unless the user names that code or says
task.trust_run=true. Crafted files end in one paragraph, exit status 2, and leave nothing behind.
Also: an MLflow tracking URI's credentials are masked in what tftrain writes."""

from __future__ import annotations

import base64
import io
import json
import pickle
import shutil

import numpy as np
import pytest
import yaml

import tftrain
from conftest import compose_small, run_cli
from tftrain.errors import TftrainError
from tftrain.tasks.evaluate import evaluate
from tftrain.tasks.predict import predict


class _OpensAFile:
    """Unpickling it calls open(path, "w"): a harmless stand-in for any code a pickle can run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def _pickle_chain(path) -> dict:
    """Issue 20's chain: numpy.load(io.BytesIO(base64.b64decode(<npy of a pickle>)), allow_pickle=True)."""
    buf = io.BytesIO()
    np.save(buf, np.array([_OpensAFile(path)], dtype=object), allow_pickle=True)
    return {"_target_": "numpy.load", "allow_pickle": True,
            "file": {"_target_": "io.BytesIO",
                     "initial_bytes": {"_target_": "base64.b64decode", "s": base64.b64encode(buf.getvalue()).decode()}}}


def _one_paragraph(result, *words):
    """Exit 2, no traceback, one `tftrain: error:` paragraph that holds `words`."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("tftrain: error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    for word in words:
        assert word in errors[0], errors[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished small run (synthetic data: 16 features, 10 classes)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    tftrain.train(compose_small("trainer.epochs=1"), output_dir=run)
    return run


@pytest.fixture
def run_copy(trained, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(trained, dst)
    return dst


def _edit_config(run, group, node):
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg[group] = node
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))


def test_the_crafted_chain_does_run_code_when_instantiated(tmp_path):
    # The control: the payload below is live, so the tests that refuse it prove something.
    from hydra.utils import instantiate

    instantiate(_pickle_chain(tmp_path / "control"))
    assert (tmp_path / "control").exists()


def test_a_crafted_problem_block_runs_nothing_under_predict(run_copy, tmp_path):
    _edit_config(run_copy, "problem", _pickle_chain(tmp_path / "pwned"))
    np.savez(tmp_path / "x.npz", x=np.zeros((4, 16), "float32"))
    result = run_cli("task=predict", f"task.run={run_copy}", f"task.input={tmp_path / 'x.npz'}",
                     f"hydra.run.dir={tmp_path / 'p'}")
    _one_paragraph(result, "problem._target_=numpy.load", "task.trust_run=true", "command line")
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "p" / "predictions.csv").exists()


def test_a_crafted_data_block_runs_nothing_under_evaluate(run_copy, tmp_path):
    _edit_config(run_copy, "data", _pickle_chain(tmp_path / "pwned"))
    result = run_cli("task=evaluate", f"task.run={run_copy}", "task.split=val", f"hydra.run.dir={tmp_path / 'e'}")
    _one_paragraph(result, "data._target_=numpy.load", "task.trust_run=true")
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "e" / "evaluation.json").exists()


def _lambda_model(path, marker):
    """A .keras file whose Lambda layer (a Python lambda: its bytecode is in the file) would
    create `marker` when its code runs."""
    import keras

    inputs = keras.Input((16,))
    touch = keras.layers.Lambda(lambda t, m=str(marker): (open(m, "w").close(), t)[1])
    keras.Model(inputs, keras.layers.Dense(10)(touch(inputs))).save(path)


@pytest.mark.slow
def test_a_lambda_layer_in_model_keras_is_refused_by_predict_and_model_saved(run_copy, tmp_path):
    _lambda_model(run_copy / "model.keras", tmp_path / "pwned")
    (tmp_path / "pwned").unlink(missing_ok=True)  # tracing at save time ran it here, in the test's own process
    np.savez(tmp_path / "x.npz", x=np.zeros((4, 16), "float32"))
    result = run_cli("task=predict", f"task.run={run_copy}", f"task.input={tmp_path / 'x.npz'}",
                     f"hydra.run.dir={tmp_path / 'p'}")
    _one_paragraph(result, "Lambda", "task.trust_run=true")
    saved = run_cli("model=saved", f"model.path={run_copy / 'model.keras'}", "data=synthetic", "data.num_train=64",
                    "data.num_val=16", "data.num_test=16", "trainer.epochs=1", f"hydra.run.dir={tmp_path / 's'}")
    _one_paragraph(saved, "Lambda", "model.safe_mode=false")
    assert not (tmp_path / "pwned").exists()
    # The user's word on the command line, as Keras' own switch: the file's code loads and trains.
    # (A lambda with default arguments, as above, does not load in Keras 3.15 even unsafe.)
    import keras

    inputs = keras.Input((16,))
    keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Lambda(lambda t: t * 2.0)(inputs))).save(
        tmp_path / "doubled.keras")
    trusted = run_cli("model=saved", f"model.path={tmp_path / 'doubled.keras'}", "model.safe_mode=false",
                      "data=synthetic", "data.num_train=64", "data.num_val=16", "data.num_test=16", "trainer.epochs=1",
                      "logger=[]", f"hydra.run.dir={tmp_path / 't'}")
    assert trusted.returncode == 0, trusted.stderr[-2000:]
    assert (tmp_path / "t" / "model.keras").is_file()


@pytest.mark.slow
def test_an_npz_of_pickled_objects_is_refused_as_input(trained, tmp_path):
    np.savez(tmp_path / "x.npz", x=np.array([_OpensAFile(tmp_path / "pwned")] * 4, dtype=object))
    result = run_cli("task=predict", f"task.run={trained}", f"task.input={tmp_path / 'x.npz'}",
                     f"hydra.run.dir={tmp_path / 'p'}")
    _one_paragraph(result, "task.input", "x.npz")
    assert not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------- the user's own code: named or trusted


@pytest.mark.slow
def test_a_run_with_its_own_loss_is_read_only_when_named_or_trusted(tmp_path):
    loss = "{_target_: keras.losses.SparseCategoricalCrossentropy, from_logits: true}"
    run = tmp_path / "run"
    tftrain.train(compose_small("trainer.epochs=1", f"problem.loss={loss}"), output_dir=run)
    np.savez(tmp_path / "x.npz", x=np.zeros((3, 16), "float32"))
    args = ["task=predict", f"task.run={run}", f"task.input={tmp_path / 'x.npz'}"]
    with pytest.raises(TftrainError, match=r"problem\.loss\._target_=keras\.losses\.SparseCategoricalCrossentropy"
                                           r".*task\.trust_run=true"):
        predict(tftrain.compose(args), output_dir=tmp_path / "refused")
    assert not (tmp_path / "refused" / "predictions.csv").exists()
    trusted = predict(tftrain.compose([*args, "task.trust_run=true"]), output_dir=tmp_path / "trusted")
    named = predict(tftrain.compose([*args, f"problem.loss={loss}"]), output_dir=tmp_path / "named")
    assert trusted["examples"] == named["examples"] == 3
    assert (tmp_path / "named" / "predictions.csv").read_text() == (tmp_path / "trusted" / "predictions.csv").read_text()


def test_evaluate_rebuilds_a_builtin_data_source_and_the_problem_by_name(trained, tmp_path):
    result = evaluate(tftrain.compose(["task=evaluate", f"task.run={trained}", "task.split=val"]),
                      output_dir=tmp_path / "e")
    metrics = json.loads((trained / "metrics.json").read_text())
    assert result["examples"] == 64 and result["accuracy"] == pytest.approx(metrics["val_accuracy"], abs=1e-6)


# ---------------------------------------------------------------- damaged runs and bad inputs


def _strings(run, tmp):
    np.savez(tmp / "x.npz", x=np.array([["a"] * 16] * 3))
    return tmp / "x.npz", "<U1"


def _nan(run, tmp):
    np.savez(tmp / "x.npz", x=np.full((3, 16), np.nan, "float32"))
    return tmp / "x.npz", "NaN"


def _truncated_model(run, tmp):
    data = (run / "model.keras").read_bytes()
    (run / "model.keras").write_bytes(data[: len(data) // 2])
    np.savez(tmp / "x.npz", x=np.zeros((3, 16), "float32"))
    return tmp / "x.npz", "model.keras"


def _garbage_model(run, tmp):
    (run / "model.keras").write_bytes(b"not a model" * 10)
    np.savez(tmp / "x.npz", x=np.zeros((3, 16), "float32"))
    return tmp / "x.npz", "model.keras"


def _unparsable_config(run, tmp):
    (run / "config.yaml").write_text("problem: [unclosed\n  : :\n")
    np.savez(tmp / "x.npz", x=np.zeros((3, 16), "float32"))
    return tmp / "x.npz", "config.yaml"


def _header_only_csv(run, tmp):
    (tmp / "x.csv").write_text(",".join(f"f{i}" for i in range(16)) + "\n")
    return tmp / "x.csv", "no rows"


def _image_folder(run, tmp):
    from PIL import Image

    (tmp / "images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp / "images" / "a.png")
    return tmp / "images", "not images"


@pytest.mark.parametrize("make", [_strings, _nan, _truncated_model, _garbage_model, _unparsable_config,
                                  _header_only_csv, _image_folder], ids=lambda f: f.__name__.strip("_"))
def test_bad_inputs_and_damaged_runs_are_one_paragraph(run_copy, tmp_path, make):
    path, word = make(run_copy, tmp_path)
    with pytest.raises(TftrainError) as e:
        predict(tftrain.compose(["task=predict", f"task.run={run_copy}", f"task.input={path}"]),
                output_dir=tmp_path / "p")
    text = str(e.value)
    assert "\n" not in text.strip() and word in text and "Fix:" in text, text
    assert not (tmp_path / "p" / "predictions.csv").exists()


@pytest.mark.slow
def test_a_bad_input_exits_2_from_the_cli(trained, tmp_path):
    np.savez(tmp_path / "x.npz", x=np.full((3, 16), np.inf, "float32"))
    result = run_cli("task=predict", f"task.run={trained}", f"task.input={tmp_path / 'x.npz'}",
                     f"hydra.run.dir={tmp_path / 'p'}")
    _one_paragraph(result, "NaN or Inf", "x.npz")


# ---------------------------------------------------------------- MLflow credentials


@pytest.mark.parametrize("uri, shown", [
    ("https://user:token@mlflow.example.com:5000/x?y=1", "https://***@mlflow.example.com:5000/x?y=1"),
    ("http://token@host", "http://***@host"),
    ("https://mlflow.example.com", "https://mlflow.example.com"),
    ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ("databricks", "databricks"),
    (None, None),
])
def test_tracking_uri_credentials_are_masked(uri, shown):
    from tftrain.loggers.mlflow import masked

    assert masked(uri) == shown


@pytest.mark.slow
def test_mlflow_files_and_artifacts_hold_no_token(tmp_path, monkeypatch, caplog):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    from tftrain.loggers import mlflow as tracking

    # A server URI with credentials, served by a local SQLite store: what the logger is given is
    # what the user wrote; what it writes is checked.
    uri, store = "https://user:s3cr3t@mlflow.example.com", f"sqlite:///{tmp_path / 'mlflow.db'}"
    given = []
    monkeypatch.setattr(tracking, "_client", lambda u: (given.append(u), (MlflowClient(store), u))[1])
    run = tmp_path / "run"
    with caplog.at_level("INFO", logger="tftrain"):
        tftrain.train(compose_small("trainer.epochs=1", "logger=mlflow", f"logger.mlflow.tracking_uri={uri}",
                                    f"logger.mlflow.artifact_location={tmp_path / 'artifacts'}"), output_dir=run)
    assert given == [uri]
    info = json.loads((run / "mlflow_run.json").read_text())
    assert info["tracking_uri"] == "https://***@mlflow.example.com"
    client = MlflowClient(store)
    text = open(client.download_artifacts(info["run_id"], "config.yaml", str(tmp_path))).read()
    assert "s3cr3t" not in text and "tracking_uri: https://***@mlflow.example.com" in text
    params = client.get_run(info["run_id"]).data.params
    assert params and not any("s3cr3t" in v for v in params.values())
    assert "s3cr3t" not in caplog.text and "MLflow: run" in caplog.text


# ---------------------------------------------------------------- reading runs: report and sweep summary

CRAFTED = ("problem", "data", "model", "optimizer", "schedule", "initializer", "callbacks", "logger", "task")


def _crafted_run(trained, run, marker, num: int, overrides: list[str]):
    """A copy of a finished run whose config.yaml and Hydra record name the chain everywhere
    code could be built from (every group; Hydra's own callbacks), as a sweep's job `num`."""
    shutil.copytree(trained, run)
    for group in CRAFTED:
        _edit_config(run, group, _pickle_chain(marker))
    (run / ".hydra").mkdir(exist_ok=True)
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({g: _pickle_chain(marker) for g in CRAFTED}))
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(
        {"hydra": {"job": {"num": num}, "callbacks": {"crafted": _pickle_chain(marker)}}}))


def _tool(module: str, *args: str):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)


def test_the_report_reads_crafted_run_directories_as_data(trained, tmp_path):
    for name in ("a", "b"):
        _crafted_run(trained, tmp_path / name, tmp_path / f"pwned-{name}", 0, [f"optimizer={name}"])
    result = _tool("tftrain.report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "report"))
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "report" / "report.md").read_text()
    assert "2 run(s) (2 completed)" in report and "| 1 | a | completed |" in report, report[:2000]
    assert "`problem._target_=numpy.load`" in report  # shown as the text it is
    assert (tmp_path / "report" / "report.html").stat().st_size > 0 and (tmp_path / "report" / "report.png").is_file()
    assert not list(tmp_path.glob("pwned-*"))


def test_the_sweep_summary_reads_crafted_job_directories_as_data(trained, tmp_path):
    sweep = tmp_path / "sweep"
    for num, name in enumerate(("sgd", "adam")):
        _crafted_run(trained, sweep / f"{num}_optimizer={name}", tmp_path / f"pwned-{name}", num,
                     [f"optimizer={name}"])
    result = _tool("tftrain.sweep", str(sweep))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = (sweep / "summary.md").read_text()
    assert "2 run(s), 2 completed" in summary and "`optimizer=adam`" not in summary  # the overrides are read
    assert "| optimizer=sgd | completed |" in summary and "| optimizer=adam | completed |" in summary
    assert all((sweep / f).is_file() for f in ("summary.csv", "aggregate.md", "aggregate.csv", "summary.png"))
    assert not list(tmp_path.glob("pwned-*"))


@pytest.mark.slow
def test_the_runs_own_config_holds_no_token_and_the_run_resumes_with_it(tmp_path, monkeypatch, caplog):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    from tftrain.loggers import mlflow as tracking

    uri, store = "https://user:s3cr3t@mlflow.example.com", f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setattr(tracking, "_client", lambda u: (MlflowClient(store), u))
    run = tmp_path / "run"
    logged = ["logger=mlflow", f"logger.mlflow.tracking_uri={uri}",
              f"logger.mlflow.artifact_location={tmp_path / 'artifacts'}"]
    tftrain.train(compose_small("trainer.epochs=1", *logged), output_dir=run)
    saved = (run / "config.yaml").read_text()
    assert "s3cr3t" not in saved and "tracking_uri: https://***@mlflow.example.com" in saved
    first = json.loads((run / "mlflow_run.json").read_text())["run_id"]
    # The rerun compares its config with the masked one: only the new epochs differ, and the
    # MLflow run is continued, not started again.
    with caplog.at_level("INFO", logger="tftrain"):
        tftrain.train(compose_small("trainer.epochs=2", *logged), output_dir=run)
    assert "Resumed from" in caplog.text and "s3cr3t" not in caplog.text
    assert "tracking_uri" not in caplog.text.split("Resuming with changed settings", 1)[-1].split("\n")[0]
    assert json.loads((run / "mlflow_run.json").read_text())["run_id"] == first
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2
    for path in [run / "config.yaml", *run.glob("config_history/*.yaml")]:
        assert "s3cr3t" not in path.read_text(), path


def test_the_hydra_record_holds_no_token(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    from tftrain.config.files import config_dir
    from tftrain.tasks.run import write_hydra_record

    uri = "https://user:s3cr3t@mlflow.example.com"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        full = compose(config_name="config", overrides=["logger=mlflow", f"logger.mlflow.tracking_uri={uri}"],
                       return_hydra_config=True)
    GlobalHydra.instance().clear()
    cfg = OmegaConf.create(OmegaConf.to_container(full))
    with open_dict(cfg):
        del cfg["hydra"]
    HydraConfig.instance().set_config(full)
    try:
        write_hydra_record(cfg, tmp_path)
    finally:
        HydraConfig.instance().cfg = None  # later runs in this process are not Hydra apps
    texts = {name: (tmp_path / ".hydra" / name).read_text() for name in ("config.yaml", "hydra.yaml", "overrides.yaml")}
    assert not [name for name, text in texts.items() if "s3cr3t" in text]
    assert "- logger.mlflow.tracking_uri=https://***@mlflow.example.com" in texts["overrides.yaml"]
    assert "tracking_uri: https://***@mlflow.example.com" in texts["config.yaml"]


def test_the_sweeps_multirun_yaml_holds_no_token_once_a_job_starts(tmp_path):
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from tftrain.sweep.summary import SweepSummary

    uri = "https://user:s3cr3t@mlflow.example.com"
    written = f"hydra:\n  overrides:\n    task:\n    - logger=mlflow\n    - logger.mlflow.tracking_uri={uri}\n"
    (tmp_path / "multirun.yaml").write_text(written)  # as Hydra's launcher writes it
    config = OmegaConf.create({"hydra": {"mode": RunMode.MULTIRUN, "sweep": {"dir": str(tmp_path)}},
                               "logger": {"mlflow": {"tracking_uri": uri}}})
    SweepSummary().on_job_start(config)
    assert (tmp_path / "multirun.yaml").read_text() == written.replace(uri, "https://***@mlflow.example.com")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multirun.yaml"]
