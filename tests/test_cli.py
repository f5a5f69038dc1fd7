"""The command line: help, printing the config, errors at the edge, a real training run."""

from __future__ import annotations

import json

import pytest


def test_help_lists_groups_without_importing_tensorflow(cli):
    result = cli("--help", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 0, result.stderr
    for group in ("data:", "model:", "optimizer:", "schedule:", "initializer:", "trainer:", "callbacks:"):
        assert group in result.stdout
    assert "adam" in result.stdout and "he_normal" in result.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "import time:" in line]
    assert "hydra" in imported  # the profile did record imports
    assert not [m for m in imported if m.split(".")[0] in ("tensorflow", "keras")]


def test_help_shows_the_config_with_overrides_and_rejects_bad_ones(cli):
    result = cli("optimizer=sgd", "optimizer.lr=0.3", "--help")
    assert result.returncode == 0 and "_target_: keras.optimizers.SGD" in result.stdout and "lr: 0.3" in result.stdout
    bad = cli("optimizer=adamm", "--help")
    assert bad.returncode == 2 and "adamw" in bad.stderr and "Traceback" not in bad.stderr


def test_cfg_job_prints_composed_config(cli):
    result = cli("--cfg", "job", "optimizer=sgd", "optimizer.lr=0.05", "trainer.epochs=5")
    assert result.returncode == 0, result.stderr
    assert "_target_: keras.optimizers.SGD" in result.stdout and "lr: 0.05" in result.stdout
    assert "epochs: 5" in result.stdout


@pytest.mark.parametrize("overrides, key, shown", [
    (["optimizer.lr=-0.1"], "optimizer.lr", "-0.1"),
    (["optimizer.lr=0"], "optimizer.lr", "0.0"),
    (["trainer.batch_size=0"], "trainer.batch_size", "0"),
    (["trainer.epochs=-2"], "trainer.epochs", "-2"),
    (["trainer.epochs=ten"], "trainer.epochs", "'ten'"),
    (["+model.width=3"], "model.width", "3"),
    (["data=npz", "data.path=/no/such/file.npz"], "data.path", "/no/such/file.npz"),
])
def test_bad_input_fails_with_one_paragraph(cli, tmp_path, overrides, key, shown):
    result = cli(*overrides, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    assert f"Invalid config `{key}`" in result.stderr and shown in result.stderr
    assert "Fix:" in result.stderr and "allowed:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "checkpoints").exists()  # stopped before training started


@pytest.mark.parametrize("args, says", [
    (["optimiser=adam"], "did you mean `optimizer`?"),
    (["optimizer=adma"], "did you mean `optimizer=adam`?"),
    (["trainer.epoch=3"], "did you mean `trainer.epochs`?"),
    (["optimizer.learning_rate=0.1"], "did you mean `optimizer.lr`?"),
    (["data=npz", "data.path=~/data.npz"], """'data.path="~/data.npz"'"""),
    (["data=npz", "data.path=/tmp/données.npz"], "Quote the value"),
    (["-m", "optimizer=sgd,adma", "trainer.epochs=1"], "did you mean `optimizer=adam`?"),
    (["--cfg", "job", "trainer.epoch=3"], "did you mean `trainer.epochs`?"),
    (["optimzer.lr=0.01"], "did you mean `optimizer.lr`?"),
    (["-m", "hparams_search=optuan"], "did you mean `hparams_search=optuna`?"),
    (["experiment=compare_optimzers"], "did you mean `experiment=compare_optimizers`?"),
    (["experiment=compare_optimizers", "trainer.seeds=1", "--cfg", "job"], "`trainer.seeds=1` asks for a sweep"),
    (["-m", "optimizer=sgd,adam", "--cfg", "job"], "--cfg shows one run's configuration"),
    pytest.param(["-m", "hydra/launcher=slurm", "trainer.epochs=1"], "`srun` is not on this machine's PATH",
                 marks=pytest.mark.skipif(__import__("shutil").which("srun") is not None, reason="a SLURM machine")),
])
def test_hydras_own_errors_are_one_paragraph_with_a_hint(cli, tmp_path, args, says):
    result = cli(*args, f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/sweep")
    assert result.returncode == 2, result.stderr[-2000:]
    assert says in result.stderr and "Fix:" in result.stderr
    assert "Traceback" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr
    assert not list(tmp_path.glob("sweep/*/.hydra"))  # a sweep fails before any job starts


def test_full_error_shows_traceback(cli, tmp_path):
    result = cli("optimizer.lr=-1", f"hydra.run.dir={tmp_path}", env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_unknown_option_lists_valid_ones(cli):
    result = cli("optimizer=adamm")
    assert result.returncode == 2, result.stderr[-2000:]  # a config error: 2, as argparse's usage errors
    assert "tftrain: error: Invalid config `optimizer`: received 'adamm'" in result.stderr
    assert "adamw" in result.stderr and "sgd" in result.stderr and "did you mean `optimizer=adam`?" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_cli_training_run_writes_outputs(cli, tmp_path):
    from conftest import SMALL

    result = cli(*SMALL, "optimizer=sgd", "optimizer.lr=0.05", "trainer.verbose=2", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    assert "epoch 1/2" in out and "epoch 2/2" in out and "test_accuracy" in out
    assert str(tmp_path) in out  # ends by saying where the outputs are
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["steps"] == 2 * (256 // 32)
    assert (tmp_path / ".hydra" / "config.yaml").is_file()
    assert (tmp_path / "model.keras").stat().st_size > 0
    assert (tmp_path / "checkpoints" / "ckpt-16.index").is_file()  # numbered by step
    assert (tmp_path / "checkpoints" / "state-16.json").is_file()
    assert list((tmp_path / "tensorboard" / "train").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_configs_are_found_from_an_installed_wheel(tmp_path):
    """`pip install .` then running elsewhere: the configs ship inside the wheel as tftrain/conf."""
    import os
    import subprocess
    import sys
    import zipfile

    from conftest import ROOT

    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(ROOT), "-w",
                            str(tmp_path / "wheel")], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (tmp_path / "wheel").glob("tftrain-*.whl")
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    assert (tmp_path / "site" / "tftrain" / "conf" / "optimizer" / "adam.yaml").is_file()
    for init in (ROOT / "tftrain").rglob("__init__.py"):  # pyproject lists the packages by hand
        assert (tmp_path / "site" / init.relative_to(ROOT)).is_file(), f"{init.parent} missing from the wheel"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run([sys.executable, "-m", "tftrain", "--cfg", "job", "optimizer=nadam"], cwd=elsewhere,
                            env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "_target_: keras.optimizers.Nadam" in result.stdout


def test_sweeper_plugin_is_found_outside_the_repo(tmp_path):
    """Hydra finds tftrain's sweeper (hparams_search=optuna) by scanning hydra_plugins.__path__ with
    pkgutil: from a directory other than the repo root and without the repo on PYTHONPATH (run_cli
    sets both), as a user runs it after `pip install -e .` or from a wheel."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-m", "tftrain", "--info", "plugins"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "TftrainOptunaSweeper" in result.stdout, (
        "Hydra's plugin scan does not see hydra_plugins/tftrain_optuna_sweeper: is \"hydra_plugins\" in pyproject's "
        "[tool.setuptools] packages, and was the editable install redone since (pip install -e .)?")


@pytest.mark.slow
@pytest.mark.parametrize("override", ['output_dir="~/runs/a"', "hydra.run.dir=~/runs/a"])
def test_a_run_directory_under_home_is_the_home_directory(cli, tmp_path, override):
    from conftest import SMALL

    home = tmp_path / "home"
    result = cli(*SMALL, "trainer.epochs=1", "logger=[]", override, cwd=tmp_path, env={"HOME": str(home)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert (home / "runs" / "a" / "metrics.json").is_file()
    assert not (tmp_path / "~").exists()  # no folder named ~ where the command ran


@pytest.mark.slow
def test_model_saved_warns_about_normalization_only_when_the_user_set_it(cli, tmp_path):
    first = cli("data=diabetes", "trainer.epochs=1", "logger=[]", f"hydra.run.dir={tmp_path / 'a'}")
    assert first.returncode == 0, first.stderr[-2000:]
    saved = ["model=saved", f"model.path={tmp_path / 'a' / 'model.keras'}", "data=diabetes", "trainer.epochs=1",
             "logger=[]"]
    quiet = cli(*saved, f"hydra.run.dir={tmp_path / 'b'}")  # diabetes standardizes by its own default
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "WARNING" not in quiet.stdout + quiet.stderr
    assert "the data option's normalization does not apply" in quiet.stdout
    told = cli(*saved, "data.normalize=scale", f"hydra.run.dir={tmp_path / 'c'}")
    assert told.returncode == 0, told.stderr[-2000:]
    assert "WARNING: model=saved: data.normalize does not apply" in told.stdout
