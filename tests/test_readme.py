"""Every command README.md shows, run as written (shortened by appended overrides) from a
temporary directory outside the checkout, with the environment a user has: the package
installed (editable, in this virtual environment), no TF_CPP_MIN_LOG_LEVEL, no
CUDA_VISIBLE_DEVICES, no PYTHONPATH. The commands come from README.md itself
(tests/readme_commands.py); each is either run by a test here (RUN_BY) or listed in NOT_RUN with
the reason, and test_every_readme_command_is_run_or_excused fails on any other, so a new README
command without a test fails. Each run's console must hold nothing but tftrain's own lines
(`assert_clean`)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import readme_commands  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = readme_commands.commands()
README_TEXTS = {c.text for c in COMMANDS}

# README commands these tests cannot run here, and why.
NOT_RUN = {
    'pip install -e ".[dev]"': "the set-up itself: the tests run in the virtual environment it made",
    'pip install -e ".[tfds]"': "installs packages (network)",
    'pip install "tftrain[mlflow]"': "installs packages (network); mlflow is installed by the dev extra",
    "python -m tftrain data=cifar10 model=resnet data.augment.flip=horizontal data.augment.translate=0.1":
        "downloads CIFAR-10 (network)",
    "python -m tftrain -m hydra/launcher=slurm ...": "needs a SLURM cluster (sbatch)",
    "tensorboard --logdir outputs": "serves until stopped; test_default_run checks `tensorboard --help` and the "
                                    "event files under outputs/",
    "tensorboard --logdir outputs/multirun/<date>/<time>": "serves until stopped; test_sweep_and_its_summary checks "
                                                           "the event files of every job of a sweep",
    "mlflow ui --backend-store-uri sqlite:///mlflow.db": "serves until stopped; test_mlflow_logger checks the store "
                                                        "the run wrote",
    "bash scripts/gpu_check.sh": "needs a GPU; tests/test_gpu_check.py runs its --cpu form",
    "kubectl apply -f docs/kubernetes/tftrain-job.yaml": "needs a Kubernetes cluster; tests/test_slurm_cluster.py "
                                                         "parses the manifest and runs each pod's TF_CONFIG derivation",
    "pytest -n 2": "the test suite itself",
    "python scripts/lr_free_vs_pytorch.py": "needs torch, prodigyopt and dadaptation (not tftrain's dependencies); "
                                            "tests/test_lr_free.py checks their recorded trajectory, and runs the "
                                            "script itself where they are installed",
    "python scripts/finetune_digits.py": "about 3 minutes (30 runs); test_script_answers_help checks it starts",
    "python scripts/search_idle.py": "about 1.5 minutes (24 trials); test_script_answers_help checks it starts, "
                                     "tests/test_search_async.py checks that a worker starts its next trial while "
                                     "the other's long one runs",
    'sbatch --array=0-7 --wrap "python -m tftrain -m hparams_search=optuna hydra.sweeper.worker=true '
    'hydra.sweeper.n_trials=64 hydra.sweeper.storage=postgresql+psycopg2://me@db.example.org/optuna '
    'hydra.sweep.dir=/shared/searches/lr"':
        "needs a SLURM cluster (sbatch) and a PostgreSQL server; tests/test_search_async.py runs two of its workers "
        "(hydra.sweeper.worker=true) against a real PostgreSQL server it starts",
    "pip install psycopg2-binary": "installs packages (network); the dev extra installs it",
    "python scripts/pbt_vs_random.py": "about 4.5 minutes (6 sweeps); test_script_answers_help checks it starts, "
                                       "tests/test_pbt.py checks exploit=false against independent runs",
    "python scripts/batch_size_study.py": "runs the whole preset and task=noise_scale (about 2.5 minutes); "
                                          "tests/test_noise_scale.py checks its table, knee and fit on a written "
                                          "sweep, test_script_answers_help that it starts",
    "python -m tftrain task=budgets schedule=wsd trainer.epochs=12 'task.budgets=[0.25,0.5,1.0]'":
        "the task experiment=wsd_budgets runs (test_wsd_budgets_preset runs it shrunk from outside the checkout; "
        "tests/test_wsd_budgets.py checks each budget against its run from scratch)",
}
NOT_RUN_SCRIPTS = {  # a `#!` block, by its first command line
    "srun python -m tftrain": "a SLURM job script (srun, scontrol); test_slurm_script_parses checks its syntax",
    "srun --kill-on-bad-exit=0 --wait=300 python -m tftrain trainer.strategy=multi_worker":
        "a multi-node SLURM job script (docs/slurm/multi-node.sbatch); test_slurm_script_parses checks its syntax and "
        "that it is the file's text, tests/test_slurm_cluster.py starts 2 tasks with a SLURM-like environment",
}

# README command -> the test here that runs it (the coverage test checks both directions).
RUN_BY = {
    "python -m tftrain": "test_default_run",
    "python -m tftrain --help": "test_help_and_cfg",
    "python -m tftrain --cfg job": "test_help_and_cfg",
    "python -m tftrain optimizer.lr=-0.1": "test_error_examples",
    "python -m tftrain trainer.epoch=3": "test_error_examples",
    "python -m tftrain -m optimizer=sgd,adam trainer.epochs=5": "test_sweep_and_its_summary",
    "python -m tftrain.sweep <sweep dir>": "test_sweep_and_its_summary",
    "python -m tftrain.report <run or sweep dirs...> [--out DIR] [--metrics val_accuracy,learning_rate]":
        "test_sweep_and_its_summary",
    "python -m tftrain -m optimizer=sgd,adam schedule=step,cosine trainer.epochs=10": "test_sweep_grid",
    "python -m tftrain optimizer=sgd,adam trainer.seeds=3": "test_sweep_seeds",
    "python -m tftrain model=custom model._target_=mymodel.build ++model.width=32 data=custom "
    "data._target_=mymodel.load initializer=he_normal schedule=cosine": "test_custom_model_and_data",
    "python -m tftrain data=csv data.path=train.csv data.label_column=label data.normalize=standardize":
        "test_csv_predict_evaluate",
    "python -m tftrain task=predict task.run=outputs/2026-11-29/10-00-00 task.input=new_rows.csv "
    "task.output=predictions.csv": "test_csv_predict_evaluate",
    "python -m tftrain task=evaluate task.run=outputs/2026-11-29/10-00-00 task.input=holdout.npz":
        "test_csv_predict_evaluate",
    "python -m tftrain data=csv data.path=houses.csv problem=regression data.label_column=price "
    "data.normalize_target=true": "test_csv_regression",
    "python -m tftrain -m hparams_search=optuna hydra.sweeper.n_trials=30 [hydra.sweeper.pruner=median]":
        "test_optuna_search",
    "python -m tftrain -m hydra/launcher=parallel hydra.launcher.n_jobs=4 optimizer=sgd,adam,adamw":
        "test_parallel_launcher",
    "python -m tftrain 'logger=[tensorboard,mlflow]' logger.mlflow.tracking_uri=sqlite:///mlflow.db":
        "test_mlflow_logger",
    "python -m tftrain task=lr_find optimizer=adam": "test_lr_find",
    "python -m tftrain -m hydra/launcher=slurm hydra.launcher.partition=gpu optimizer=sgd,adam,adamw":
        "test_slurm_launcher_without_slurm",
    "python -m tftrain trainer.checkpoint_every_steps=100 hydra.run.dir=outputs/long": "test_resume_commands",
    "python scripts/launch_local_workers.py --workers 2 -- trainer.epochs=5 hydra.run.dir=outputs/two-workers":
        "test_local_workers",
    "python scripts/plot_schedules.py --epochs 30 --steps-per-epoch 20 --out docs/schedules.png":
        "test_plot_schedules",
    "python scripts/compare_problems.py --seeds 3 --markdown docs/problems.md": "test_compare_problems",
    "python scripts/compare_cnn.py --markdown docs/cnn.md": "test_compare_cnn",
    "python scripts/benchmark.py --markdown docs/benchmark.md": "test_benchmark",
    "python scripts/search_pruning.py": "test_search_pruning",
    'pytest -n 2 -m "not slow"': "test_quick_loop",
}
# chaos.py's trial count in the README follows its latest published run; the test shortens it anyway.
CHAOS = next((t for t in README_TEXTS if t.startswith("python scripts/chaos.py ")), "python scripts/chaos.py")
RUN_BY[CHAOS] = "test_chaos"
# Training commands that need nothing but the command: run by test_training_command.
TRAINING = [
    "python -m tftrain optimizer=sgd optimizer.lr=0.05 trainer.epochs=5",
    "python -m tftrain model=cnn initializer=he_normal",
    "python -m tftrain data=diabetes",
    "python -m tftrain data=breast_cancer problem.loss=binary_focal_crossentropy",
    "python -m tftrain data=digits_multilabel",
    "python -m tftrain schedule=cosine schedule.warmup_epochs=2 schedule.min_lr=1e-5",
    "python -m tftrain schedule=onecycle schedule.max_lr=0.01 optimizer=sgd",
    "python -m tftrain schedule=plateau schedule.patience=3 schedule.factor=0.5",
    "python -m tftrain trainer.strategy=mirrored trainer.batch_size=256 trainer.mixed_precision=mixed_float16 "
    "trainer.jit_compile=true",
    "python -m tftrain initializer=lsuv",
]
PRESETS = {  # experiment preset -> configurations it compares (rows of aggregate.csv with trainer.seeds=1)
    "compare_optimizers": 5, "compare_schedules": 5, "compare_initializers": 5, "warmup": 2, "lr_range": 2,
    "lr_suggestions": 4, "swa": 4, "lr_free": 6, "deep_relu": 4, "batch_size": 8,
}
RUN_BY.update({c: "test_training_command" for c in TRAINING})
RUN_BY.update({f"python -m tftrain experiment={p}": "test_experiment_preset" for p in PRESETS})
LIBRARY_API = next(c.text for c in COMMANDS if c.kind == "python")
RUN_BY[LIBRARY_API] = "test_library_api"

# What may not reach a user's console: TensorFlow's C++ logger, other libraries' warnings, joblib.
NOISE = [re.compile(p) for p in (
    r"^[EWI]\d{4} ", r"^\d{4}-\d\d-\d\d .*(E|W|I) tensorflow", r"Warning:", r"UserWarning", r"DeprecationWarning",
    r"RuntimeWarning", r"FutureWarning", r"Parallel\(",
)]
SHRINK = ["trainer.epochs=1"]
# Commands whose warmup (2 epochs) needs a longer run than SHRINK's.
WARMUP = ["trainer.epochs=3"]


def user_env() -> dict:
    """The environment a user has after the README's set-up: this virtual environment's programs first on
    PATH, and none of the variables the test process sets for itself."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES", "PYTHONPATH", "HYDRA_FULL_ERROR",
                        "TFTRAIN_TF_LOGS", "PYTEST_CURRENT_TEST", "PYTEST_XDIST_WORKER",
                        "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"}}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def readme(text: str) -> str:
    """`text`, which must be a command README.md shows (so a README edit fails here, not silently)."""
    assert text in README_TEXTS, f"README.md no longer shows `{text}`: update tests/test_readme.py"
    return text


def shorten(cmd: str, *overrides: str) -> str:
    """`cmd` with each `key=value` of `overrides` replacing the command's own value of that key, or appended.
    Scripts are named by their path in the checkout, since the command runs outside it."""
    cmd = cmd.replace("python scripts/", f"python {ROOT}/scripts/")
    for o in overrides:
        key = o.split()[0] if o.startswith("--") else o.split("=", 1)[0]
        pattern = re.compile(rf"(?<=\s){re.escape(key)}(=\S+|\s+\S+)")  # key=value or --flag value
        if pattern.search(cmd):
            cmd = pattern.sub(lambda m: o, cmd, count=1)
        else:
            cmd += " " + o
    return cmd


def noise(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if any(p.search(ln) for p in NOISE)]


def run(cmd: str, cwd: Path, *, expect: int = 0, timeout: float = 300, env: dict | None = None,
        clean: bool = True) -> str:
    """Run `cmd` in bash from `cwd` as a user would; assert its exit status and a clean console; return the
    console (stdout and stderr, interleaved)."""
    p = subprocess.run(["bash", "-c", cmd], cwd=cwd, env={**user_env(), **(env or {})}, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=timeout)
    assert p.returncode == expect, f"`{cmd}` exited {p.returncode} (expected {expect}):\n{p.stdout[-4000:]}"
    assert not clean or not noise(p.stdout), f"`{cmd}` printed lines that are not tftrain's:\n" + "\n".join(noise(p.stdout))
    return p.stdout


def run_dir(cwd: Path, pattern: str = "outputs/*/*") -> Path:
    found = [p.parent for p in cwd.glob(f"{pattern}/metrics.json")]
    assert len(found) == 1, f"expected one run under {cwd}/{pattern}, found {found}"
    return found[0]


def assert_trained(out: str, rd: Path) -> dict:
    metrics = json.loads((rd / "metrics.json").read_text())
    assert metrics["epochs"] >= 1 and all(np.isfinite(v) for k, v in metrics.items() if k.startswith("test_"))
    assert (rd / "model.keras").is_file() and (rd / "tftrain.log").is_file()
    last = out.strip().splitlines()
    assert any(f"Outputs in {rd}" in ln and "metrics.json" in ln for ln in last[-3:]), last[-3:]
    return metrics


def sweep_rows(sweep: Path) -> list[dict]:
    import csv

    with open(sweep / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


# --- the coverage of README.md ---------------------------------------------------------------------------------

def test_every_readme_command_is_run_or_excused():
    """Each command README.md shows is run by a test here or listed in NOT_RUN with its reason."""
    shown = {c.text for c in COMMANDS if c.kind != "script"}
    scripts = [c.text for c in COMMANDS if c.kind == "script"]
    missing = shown - set(RUN_BY) - set(NOT_RUN)
    assert not missing, ("README.md shows commands no test runs; add each to RUN_BY (with a test) or NOT_RUN "
                         "(with the reason): " + "; ".join(sorted(missing)))
    stale = (set(RUN_BY) | set(NOT_RUN)) - shown
    assert not stale, "tests/test_readme.py lists commands README.md no longer shows: " + "; ".join(sorted(stale))
    assert not set(RUN_BY) & set(NOT_RUN)
    for script in scripts:
        assert any(k in script for k in NOT_RUN_SCRIPTS), f"README.md shows a job script no test handles:\n{script}"
    tests = {name for name in globals() if name.startswith("test_")}
    assert set(RUN_BY.values()) <= tests, set(RUN_BY.values()) - tests
    print(f"README.md shows {len(shown) + len(scripts)} distinct commands; these tests run {len(RUN_BY)}, "
          f"{len(NOT_RUN) + len(scripts)} cannot run here")


def test_readme_commands_extraction_finds_every_form():
    """The extractor reads fenced shell blocks (comments cut), `$ ` examples, job scripts, inline spans that
    wrap onto the next line, and the library API block, and takes `# name.py` blocks as files."""
    text = ("x\n```bash\npython -m tftrain a=1   # note\n\ntensorboard --logdir outputs\n```\n"
            "```\n$ python -m tftrain bad=1\ntftrain: error: ...\n```\n"
            "```bash\n#!/bin/bash\nsrun python -m tftrain\n```\n"
            "Run `python scripts/x.py\n--flag 1` and `keras.fit`.\n"
            "```python\n# mine.py\nimport tftrain\n```\n```python\nimport tftrain\ntftrain.train()\n```\n")
    got = [(c.kind, c.text) for c in readme_commands.commands(text)]
    assert got == [("shell", "python -m tftrain a=1"), ("shell", "tensorboard --logdir outputs"),
                   ("shell", "python -m tftrain bad=1"), ("script", "#!/bin/bash\nsrun python -m tftrain"),
                   ("shell", "python scripts/x.py --flag 1"), ("python", "import tftrain\ntftrain.train()")]
    assert readme_commands.files(text) == {"mine.py": "# mine.py\nimport tftrain\n"}


def test_shorten_replaces_or_appends():
    assert shorten("python -m tftrain trainer.epochs=5 a=1", "trainer.epochs=1", "b=2") == \
        "python -m tftrain trainer.epochs=1 a=1 b=2"
    assert shorten("python scripts/chaos.py --trials 24 --seed 0", "--trials 1") == \
        f"python {ROOT}/scripts/chaos.py --trials 1 --seed 0"


def test_noise_patterns():
    assert noise("E0000 00:00:1764 cuda_executor.cc:1309] failed call to cuInit\n"
                 "2026-12-05 10:00:00.1: I tensorflow/core/util/port.cc:153] oneDNN\n"
                 "/x.py:3: RuntimeWarning: Precision loss\n[Parallel(n_jobs=2)]: Done\n"
                 "[10:00:00] epoch 1/1 - loss 2.3\n[10:00:01] WARNING: data.normalize is null") == [
        "E0000 00:00:1764 cuda_executor.cc:1309] failed call to cuInit",
        "2026-12-05 10:00:00.1: I tensorflow/core/util/port.cc:153] oneDNN",
        "/x.py:3: RuntimeWarning: Precision loss", "[Parallel(n_jobs=2)]: Done"]


# --- python -m tftrain ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_default_run(tmp_path):
    out = run(shorten(readme("python -m tftrain"), *SHRINK), tmp_path)
    rd = run_dir(tmp_path, "outputs/*/*")
    assert_trained(out, rd)
    assert re.search(r"^\[\d\d:\d\d:\d\d\] Training on CPU \(\d+ cores?\)", out, re.M), out
    # `tensorboard --logdir outputs` would serve these; it is installed and answers. (TensorBoard itself
    # prints TensorFlow's C++ start-up lines: not tftrain's console, so not checked here.)
    assert list((tmp_path / "outputs").rglob("events.out.tfevents.*"))
    assert "--logdir" in run("tensorboard --help", tmp_path, clean=False)


def test_help_and_cfg(tmp_path):
    out = run(readme("python -m tftrain --help"), tmp_path)
    assert "optimizer" in out and "trainer.epochs" in out
    import yaml

    cfg = yaml.safe_load(run(readme("python -m tftrain --cfg job"), tmp_path))
    assert cfg["optimizer"]["lr"] > 0 and cfg["trainer"]["epochs"] >= 1


def test_error_examples(tmp_path):
    """The README's `$ ` examples print what the README shows (up to its `...`), with exit status 2."""
    block = README_TEXT.split("$ python -m tftrain optimizer.lr=-0.1", 1)[1].split("```", 1)[0]
    shown = dict(re.findall(r"^\$ (.+)\n(.+)$", "$ python -m tftrain optimizer.lr=-0.1" + block, re.M))
    assert len(shown) == 2
    for cmd, expected in shown.items():
        out = run(readme(cmd), tmp_path, expect=2)
        # `...` elides; the rest must appear, in order.
        assert re.search(".*?".join(re.escape(part.strip()) for part in expected.split("...")), out), (expected, out)
        assert "Traceback" not in out
    assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").rglob("metrics.json"))


README_TEXT = readme_commands.README.read_text()


@pytest.mark.slow
def test_quick_loop(tmp_path):
    """The quick loop selects the tests without `slow` (here: collected, not run, in the checkout
    where the suite lives), and a misspelled marker is an error rather than a test run every time."""
    cmd = readme('pytest -n 2 -m "not slow"').replace("pytest -n 2", "pytest --collect-only -q -p no:cacheprovider")
    out = run(cmd, ROOT, clean=False)
    quick = {ln for ln in out.splitlines() if "::" in ln}
    # One collection: pytest's own count of the whole suite ("N/M tests collected (K deselected)").
    selected, every, deselected = map(int, re.search(r"(\d+)/(\d+) tests collected \((\d+) deselected\)",
                                                     out).groups())
    assert selected == len(quick) and selected + deselected == every
    assert 0 < deselected and len(quick) > every / 2
    # The README's commands run as subprocesses: slow; the checks of its text are quick.
    assert "test_default_run" in globals() and "tests/test_readme.py::test_default_run" not in quick
    assert "tests/test_readme.py::test_every_readme_command_is_run_or_excused" in quick
    (tmp_path / "test_typo.py").write_text("import pytest\n\n@pytest.mark.slwo\ndef test_x():\n    pass\n")
    out = run(f"pytest -q -p no:cacheprovider -c {ROOT / 'pyproject.toml'} --rootdir {tmp_path} test_typo.py",
              tmp_path, expect=2, clean=False)
    assert "'slwo' not found in `markers` configuration option" in out


@pytest.mark.slow
@pytest.mark.parametrize("cmd", TRAINING)
def test_training_command(tmp_path, cmd):
    out = run(shorten(readme(cmd), *(WARMUP if "warmup" in cmd else SHRINK)), tmp_path)
    assert_trained(out, run_dir(tmp_path))


@pytest.mark.slow
def test_custom_model_and_data(tmp_path):
    for name, text in readme_commands.files().items():  # mymodel.py, as the README shows it
        (tmp_path / name).write_text(text)
    cmd = readme("python -m tftrain model=custom model._target_=mymodel.build ++model.width=32 data=custom "
                 "data._target_=mymodel.load initializer=he_normal schedule=cosine")
    out = run(shorten(cmd, *SHRINK), tmp_path)
    metrics = assert_trained(out, run_dir(tmp_path))
    assert metrics["test_accuracy"] > 0.6  # the half-moons, one epoch


# --- data from files; predict and evaluate ---------------------------------------------------------------------

def wine_rows(idx) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_wine

    d = load_wine()
    names = np.array(["barolo", "grignolino", "barbera"])[d.target]
    return d.data[idx].astype("float32"), names[idx], [f.replace("/", "_") for f in d.feature_names]


def write_csv(path: Path, x, y, columns, label: str | None):
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns + ([label] if label else []))
        for i in range(len(x)):
            w.writerow([f"{v:g}" for v in x[i]] + ([y[i]] if label else []))


@pytest.mark.slow
def test_csv_predict_evaluate(tmp_path):
    """The CSV command trains on class names; the predict and evaluate commands, as written, read its run."""
    order = np.random.default_rng(0).permutation(178)
    x, y, cols = wine_rows(order[:150])
    write_csv(tmp_path / "train.csv", x, y, cols, "label")
    run_path = "outputs/2026-11-29/10-00-00"  # the run directory the README's predict and evaluate name
    out = run(shorten(readme("python -m tftrain data=csv data.path=train.csv data.label_column=label "
                             "data.normalize=standardize"), "trainer.epochs=3", f"hydra.run.dir={run_path}"), tmp_path)
    rd = tmp_path / run_path
    assert_trained(out, rd)
    assert json.loads((rd / "preprocessing.json").read_text())["target_names"] == ["barbera", "barolo", "grignolino"]

    xn, yn, _ = wine_rows(order[150:])
    write_csv(tmp_path / "new_rows.csv", xn[:, ::-1], None, cols[::-1], None)  # columns in any order
    run(readme("python -m tftrain task=predict task.run=outputs/2026-11-29/10-00-00 task.input=new_rows.csv "
               "task.output=predictions.csv"), tmp_path)
    import csv

    with open(tmp_path / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(xn)
    assert {"prediction", "prob_barbera", "prob_barolo", "prob_grignolino"} <= set(rows[0])
    assert {r["prediction"] for r in rows} <= {"barbera", "barolo", "grignolino"}

    np.savez(tmp_path / "holdout.npz", x=xn, y=yn)
    run(readme("python -m tftrain task=evaluate task.run=outputs/2026-11-29/10-00-00 task.input=holdout.npz"), tmp_path)
    evaluation = json.loads(next(tmp_path.rglob("evaluation.json")).read_text())
    assert 0.0 <= evaluation["accuracy"] <= 1.0 and np.isfinite(evaluation["loss"])


@pytest.mark.slow
def test_csv_regression(tmp_path):
    from sklearn.datasets import load_diabetes

    d = load_diabetes(scaled=False)
    write_csv(tmp_path / "houses.csv", d.data[:200], d.target[:200].astype(str), [f"f{i}" for i in range(10)],
              "price")
    cmd = readme("python -m tftrain data=csv data.path=houses.csv problem=regression data.label_column=price "
                 "data.normalize_target=true")
    metrics = assert_trained(run(shorten(cmd, *SHRINK), tmp_path), run_dir(tmp_path))
    assert "test_mae" in metrics and "test_rmse" in metrics


# --- sweeps, presets, reports -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_sweep_and_its_summary(tmp_path):
    """A sweep, `python -m tftrain.sweep <sweep dir>` rebuilding its summaries, and a report on it."""
    out = run(shorten(readme("python -m tftrain -m optimizer=sgd,adam trainer.epochs=5"), *SHRINK), tmp_path)
    sweeps = [p.parent for p in (tmp_path / "outputs" / "multirun").glob("*/*/summary.md")]
    assert len(sweeps) == 1, out
    sweep = sweeps[0]
    rows = sweep_rows(sweep)
    assert sorted(r["status"] for r in rows) == ["completed", "completed"]
    for job in [p for p in sweep.iterdir() if (p / "metrics.json").is_file()]:
        assert list(job.rglob("events.out.tfevents.*")), job  # what `tensorboard --logdir <sweep>` shows
    (sweep / "summary.md").unlink()
    run(readme("python -m tftrain.sweep <sweep dir>").replace("<sweep dir>", str(sweep)), tmp_path)
    assert "optimizer=sgd" in (sweep / "summary.md").read_text()

    cmd = readme("python -m tftrain.report <run or sweep dirs...> [--out DIR] [--metrics val_accuracy,learning_rate]")
    cmd = cmd.replace("<run or sweep dirs...>", str(sweep)).replace("[--out DIR]", "--out report")
    out = run(cmd.replace("[--metrics val_accuracy,learning_rate]", "--metrics val_accuracy,learning_rate"), tmp_path)
    assert all((tmp_path / "report" / f"report.{ext}").is_file() for ext in ("md", "png", "html")), out


@pytest.mark.slow
def test_sweep_grid(tmp_path):
    cmd = readme("python -m tftrain -m optimizer=sgd,adam schedule=step,cosine trainer.epochs=10")
    run(shorten(cmd, *SHRINK, "data=synthetic", "data.num_train=128"), tmp_path)
    sweep = next((tmp_path / "outputs" / "multirun").glob("*/*/summary.md")).parent
    assert len(sweep_rows(sweep)) == 4


@pytest.mark.slow
def test_sweep_seeds(tmp_path):
    cmd = readme("python -m tftrain optimizer=sgd,adam trainer.seeds=3")
    run(shorten(cmd, *SHRINK, "trainer.seeds=2", "data=synthetic", "data.num_train=128"), tmp_path)
    sweep = next((tmp_path / "outputs" / "multirun").glob("*/*/aggregate.csv")).parent
    assert len(sweep_rows(sweep)) == 4
    aggregate = (sweep / "aggregate.md").read_text()
    assert "optimizer=sgd" in aggregate and "optimizer=adam" in aggregate


GROUP = "python -m tftrain -m optimizer=adam trainer.seed=0,1,2,3 trainer.epochs=15"
GROUP_OFF = GROUP + " hydra.launcher.seed_groups=false"
RUN_BY.update({GROUP: "test_seed_group_commands", GROUP_OFF: "test_seed_group_commands"})


@pytest.mark.slow
def test_seed_group_commands(tmp_path):
    """The README's seed group and the same sweep one job after another: the same val_accuracy
    per seed, and the log says which way each trained."""
    results = {}
    for cmd, name, together in ((readme(GROUP), "group", True), (readme(GROUP_OFF), "alone", False)):
        out = run(shorten(cmd, "trainer.epochs=2", "trainer.seed=0,1", f"hydra.sweep.dir={tmp_path / name}"), tmp_path)
        assert ("train together" in out) == together, out[-3000:]
        results[name] = {m.parent.name: json.loads(m.read_text())["val_accuracy"]
                         for m in (tmp_path / name).glob("*/metrics.json")}
    assert len(results["alone"]) == 2 and results["group"] == results["alone"]


# Each preset's swept group narrowed to two of its options on the command line, as the README says
# users may: 2 configurations x 2 seeds, enough for an aggregate with intervals and verdicts.
NARROW = {"compare_optimizers": ["optimizer=sgd,adam"], "compare_schedules": ["schedule=constant,cosine"],
          "compare_initializers": ["initializer=zeros,he_normal", "model.hidden_units=[16,16]"],
          "warmup": ["model.hidden_units=[32]"], "lr_range": [],
          "lr_suggestions": ["task.suggestion=valley,steepest"], "swa": ["optimizer.use_ema=false"],
          "lr_free": ["optimizer=prodigy,adam", "task.find_lr=false"],
          "deep_relu": ["initializer=lsuv,he_normal", "model.hidden_units=[16,16]"],
          # The preset's 3 warmup epochs need more than SHRINK's one epoch.
          "batch_size": ["trainer.batch_size=64,128", "schedule.warmup_epochs=0"]}


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_experiment_preset(tmp_path, preset):
    shrink = WARMUP if preset == "warmup" else SHRINK
    run(shorten(readme(f"python -m tftrain experiment={preset}"), *shrink, *NARROW[preset], "trainer.seeds=2"),
        tmp_path)
    sweeps = list((tmp_path / "outputs" / "experiments" / preset).glob("*/aggregate.md"))
    assert len(sweeps) == 1
    sweep = sweeps[0].parent
    assert (sweep / "summary.png").read_bytes()[:4] == b"\x89PNG"
    rows = sweep_rows(sweep)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"completed"}
    with open(sweep / "aggregate.csv", newline="") as f:
        configs = list(csv.DictReader(f))
    assert len(configs) == 2 and all(r["n"] == "2" and r["seeds"] == "0 1" for r in configs)
    assert all(r["val_accuracy_ci95_low"] and r["verdict"] for r in configs)


HEAD_ONLY = ("python -m tftrain model=saved model.path=outputs/2026-01-01/12-00-00/model.keras model.trainable=logits "
             "optimizer.lr=0.01")
GRADUAL = ("python -m tftrain model=saved model.path=outputs/2026-01-01/12-00-00/model.keras model.trainable=logits "
           "'model.unfreeze=[{epoch: 4, pattern: dense_1}, {epoch: 8, pattern: dense}]'")
RUN_BY.update({HEAD_ONLY: "test_fine_tuning_commands", GRADUAL: "test_fine_tuning_commands"})


@pytest.mark.slow
def test_fine_tuning_commands(tmp_path):
    # The model.keras the commands name: a default run, shrunk, in the directory they name.
    run("python -m tftrain trainer.epochs=1 hydra.run.dir=outputs/2026-01-01/12-00-00", tmp_path)
    out = run(shorten(readme(HEAD_ONLY), *SHRINK, "hydra.run.dir=head"), tmp_path)
    assert_trained(out, tmp_path / "head")
    # Through epoch 4, the first stage's: `dense_1` trains from then on, `dense` never does here.
    out = run(shorten(readme(GRADUAL), "trainer.epochs=4", "hydra.run.dir=gradual"), tmp_path)
    assert_trained(out, tmp_path / "gradual")
    assert "Unfreezing at epoch 4 (model.unfreeze): 4 trainable weight tensors now, the layers matching " \
           "['logits', 'dense_1']" in out
    assert "a stage starts at epoch 8, after the last epoch (trainer.epochs=4)" in out


RUN_BY["python -m tftrain experiment=wsd_budgets"] = "test_wsd_budgets_preset"


@pytest.mark.slow
def test_wsd_budgets_preset(tmp_path):
    # Budgets of 1 and 2 epochs (no warmup: the shortest budget must outlast it), one seed.
    run(shorten(readme("python -m tftrain experiment=wsd_budgets"), "trainer.epochs=2", "task.budgets=[0.5,1.0]",
                "schedule.warmup_epochs=0", "model.hidden_units=[16]", "trainer.seeds=1"), tmp_path)
    (job,) = [p.parent for p in (tmp_path / "outputs" / "experiments" / "wsd_budgets").glob("*/*/budgets.csv")]
    with open(job / "budgets.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epochs"] for r in rows] == ["1", "2"]
    assert json.loads((job / "budget_1" / "metrics.json").read_text())["epochs"] == 1
    assert json.loads((job / "budget_2" / "metrics.json").read_text())["epochs"] == 2


@pytest.mark.slow
def test_optuna_search(tmp_path):
    cmd = readme("python -m tftrain -m hparams_search=optuna hydra.sweeper.n_trials=30 [hydra.sweeper.pruner=median]")
    cmd = shorten(cmd.replace("[hydra.sweeper.pruner=median]", "hydra.sweeper.pruner=median"),
                  "hydra.sweeper.n_trials=2", *SHRINK)
    run(cmd, tmp_path)
    sweep = next((tmp_path / "outputs" / "multirun").glob("*/*/optuna.db")).parent
    assert (sweep / "optimization_results.yaml").is_file()
    assert len(sweep_rows(sweep)) == 2


@pytest.mark.slow
def test_parallel_launcher(tmp_path):
    cmd = readme("python -m tftrain -m hydra/launcher=parallel hydra.launcher.n_jobs=4 optimizer=sgd,adam,adamw")
    run(shorten(cmd, "hydra.launcher.n_jobs=2", *SHRINK, "data=synthetic", "data.num_train=128"), tmp_path)
    sweep = next((tmp_path / "outputs" / "multirun").glob("*/*/summary.csv")).parent
    assert sorted(r["status"] for r in sweep_rows(sweep)) == ["completed"] * 3


# --- loggers, lr_find, resume, workers --------------------------------------------------------------------------

@pytest.mark.slow
def test_mlflow_logger(tmp_path):
    cmd = readme("python -m tftrain 'logger=[tensorboard,mlflow]' logger.mlflow.tracking_uri=sqlite:///mlflow.db")
    out = run(shorten(cmd, *SHRINK), tmp_path)
    rd = run_dir(tmp_path)
    assert_trained(out, rd)
    assert (tmp_path / "mlflow.db").stat().st_size > 0  # what `mlflow ui --backend-store-uri ...` reads
    assert json.loads((rd / "mlflow_run.json").read_text())


@pytest.mark.slow
def test_lr_find(tmp_path):
    run(shorten(readme("python -m tftrain task=lr_find optimizer=adam"), "task.num_steps=30"), tmp_path)
    found = list(tmp_path.glob("outputs/*/*/lr_find.json"))
    assert len(found) == 1 and (found[0].parent / "lr_find.png").is_file()
    result = json.loads(found[0].read_text())
    assert result["suggestions"][result["suggested"]] > 0


@pytest.mark.slow
def test_resume_commands(tmp_path):
    """The README's pair: the first run stops (here: its epochs end), the same command resumes it."""
    cmd = readme("python -m tftrain trainer.checkpoint_every_steps=100 hydra.run.dir=outputs/long")
    run(shorten(cmd, "trainer.checkpoint_every_steps=10", *SHRINK), tmp_path)
    out = run(shorten(cmd, "trainer.checkpoint_every_steps=10", "trainer.epochs=2"), tmp_path)
    assert "Resumed from" in out, out
    assert json.loads((tmp_path / "outputs/long/metrics.json").read_text())["epochs"] == 2


@pytest.mark.slow
def test_local_workers(tmp_path):
    cmd = readme("python scripts/launch_local_workers.py --workers 2 -- trainer.epochs=5 "
                 "hydra.run.dir=outputs/two-workers")
    cmd = shorten(cmd, *SHRINK, "data=synthetic", "data.num_train=128").replace(" -- ", " --timeout 240 -- ", 1)
    out = run(cmd, tmp_path)
    assert (tmp_path / "outputs/two-workers/metrics.json").is_file()
    for i in (0, 1):
        lines = [ln for ln in out.splitlines() if ln.startswith(f"[worker {i}] ")]
        assert lines, out
        untimed = [ln for ln in lines if not re.match(rf"\[worker {i}\] \[\d\d:\d\d:\d\d\] ", ln)]
        assert not untimed, f"worker {i} printed lines without the time prefix:\n" + "\n".join(untimed)


def test_slurm_launcher_without_slurm(tmp_path):
    """Off a SLURM cluster the README's SLURM sweep stops before any job with one paragraph (exit 2)."""
    if shutil.which("srun"):
        pytest.skip("this machine has SLURM's srun: the command would submit jobs")
    cmd = readme("python -m tftrain -m hydra/launcher=slurm hydra.launcher.partition=gpu optimizer=sgd,adam,adamw")
    out = run(cmd, tmp_path, expect=2)
    assert out.startswith("tftrain: error: ") and out.count("\n") == 1 and "srun" in out, out
    assert not list(tmp_path.rglob("metrics.json"))


def test_slurm_script_parses(tmp_path):
    scripts = [c.text for c in COMMANDS if c.kind == "script"]
    assert len(scripts) == 2
    for i, script in enumerate(scripts):
        (tmp_path / f"job{i}.sh").write_text(script + "\n")
        subprocess.run(["bash", "-n", str(tmp_path / f"job{i}.sh")], check=True)
    # The multi-node script is also a file in the checkout: the README shows it as it is.
    multi = next(s for s in scripts if "--nodes=2" in s)
    assert multi.strip() == (ROOT / "docs" / "slurm" / "multi-node.sbatch").read_text().strip()


# --- python -m tftrain, the library -----------------------------------------------------------------------------

@pytest.mark.slow
def test_library_api(tmp_path, small_sweep):
    """The README's library block, as written; the sweep and the second run it names are put in place."""
    shutil.copytree(small_sweep, tmp_path / "outputs/multirun/2026-01-01/12-00-00")
    adam = next(p.parent for p in small_sweep.glob("*/metrics.json") if "adam" in p.parent.name)
    shutil.copytree(adam, tmp_path / "runs" / "adam")
    (tmp_path / "api.py").write_text(LIBRARY_API + "\nprint('API OK', metrics['epochs'], "
                                     "type(schedule).__name__, model.count_params())\n")
    out = run("python api.py", tmp_path)
    assert re.search(r"^API OK 5 \w+ \d+$", out, re.M), out
    assert (tmp_path / "report/report.md").is_file()
    assert (tmp_path / "outputs/multirun/2026-01-01/12-00-00/aggregate.md").is_file()


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("sweep")
    subprocess.run([sys.executable, "-m", "tftrain", "-m", "optimizer=sgd,adam", "trainer.epochs=1",
                    "data=synthetic", "data.num_train=128", "trainer.verbose=0", "hydra.sweep.dir=sweep"],
                   cwd=cwd, env=user_env(), check=True, capture_output=True)
    return cwd / "sweep"


# --- scripts/ ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "scripts").glob("*.py")))
def test_script_answers_help(tmp_path, script):
    out = run(f"python {ROOT / 'scripts' / script} --help", tmp_path)
    assert out.startswith("usage: "), out


@pytest.mark.slow
def test_plot_schedules(tmp_path):
    cmd = readme("python scripts/plot_schedules.py --epochs 30 --steps-per-epoch 20 --out docs/schedules.png")
    out = run(shorten(cmd), tmp_path)
    assert (tmp_path / "docs/schedules.png").stat().st_size > 10_000, out


@pytest.mark.slow
def test_compare_problems(tmp_path):
    cmd = readme("python scripts/compare_problems.py --seeds 3 --markdown docs/problems.md")
    (tmp_path / "docs").mkdir()
    run(shorten(cmd, "--seeds 1", "--only breast_cancer", "--epochs 2"), tmp_path)
    table = (tmp_path / "docs/problems.md").read_text()
    assert "| `breast_cancer` (binary) |" in table and "LogisticRegression" in table


@pytest.mark.slow
def test_compare_cnn(tmp_path):
    cmd = readme("python scripts/compare_cnn.py --markdown docs/cnn.md")
    (tmp_path / "docs").mkdir()
    run(shorten(cmd, "--epochs 2", "--data 'digits 28x28'"), tmp_path)
    table = (tmp_path / "docs/cnn.md").read_text()
    assert "| digits 28x28 | tftrain `model=cnn` |" in table and "Keras example" in table


@pytest.mark.slow
def test_benchmark(tmp_path):
    cmd = readme("python scripts/benchmark.py --markdown docs/benchmark.md")
    (tmp_path / "docs").mkdir()
    run(shorten(cmd, "--reps 1", "--rows binary", "--no-extras", "--epochs 2"), tmp_path)
    assert "| binary |" in (tmp_path / "docs/benchmark.md").read_text()


BENCH_SWEEPS = "python scripts/benchmark.py --sweeps --markdown docs/sweeps.md"
RUN_BY[BENCH_SWEEPS] = "test_benchmark_sweeps"


@pytest.mark.slow
def test_benchmark_sweeps(tmp_path):
    """The sweep rows' table, shrunk: one repetition of one short sweep each way."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("benchmark", ROOT / "scripts" / "benchmark.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    readme(BENCH_SWEEPS)
    bench.SWEEPS.clear()
    bench.SWEEPS["2 seeds"] = ["-m", "trainer.seed=0,1", "trainer.epochs=1", "logger=[]"]
    table = bench.run_sweeps(1, tmp_path, 0.0)
    assert "| `-m trainer.seed=0,1 trainer.epochs=1 logger=[]` | 2 |" in table and "| yes |" in table, table


@pytest.mark.slow
def test_search_pruning(tmp_path):
    cmd = readme("python scripts/search_pruning.py")
    out = run(shorten(cmd, "--trials 1", "--epochs 2", f"--out {tmp_path / 'search'}"), tmp_path)
    assert "| median pruner |" in out and "| no pruning |" in out, out


@pytest.mark.slow
def test_chaos(tmp_path):
    out = run(shorten(readme(CHAOS), "--trials 1"), tmp_path, timeout=600)
    assert re.search(r"\b1/1 bit-identical|1 of 1 trials bit-identical", out), out


INIT_CHECK = "python -m tftrain task=init_check initializer=glorot_uniform"
INIT_CHECK_DEEP = "python -m tftrain task=init_check experiment=deep_relu initializer=glorot_uniform hydra.mode=RUN"
RUN_BY.update({INIT_CHECK: "test_init_check_commands", INIT_CHECK_DEEP: "test_init_check_commands"})


@pytest.mark.slow
def test_init_check_commands(tmp_path):
    out = run(readme(INIT_CHECK), tmp_path)
    rd = next((tmp_path / "outputs").glob("*/*/init_check.json")).parent
    result = json.loads((rd / "init_check.json").read_text())
    assert [r["layer"] for r in result["rows"]] == ["dense", "dense_1", "logits"] and result["summary"]
    assert f"Outputs in {rd}: init_check.json, init_check.md, init_check.png" in out
    # The 30-layer ReLU MLP: Glorot's signal is gone by the top (He et al. 2015, section 2.2).
    out = run(shorten(readme(INIT_CHECK_DEEP), "hydra.run.dir=deep"), tmp_path)
    assert "activations shrink" in out and "vanishing signal" in out and "| 30 | dense_29 | relu |" in out
    deep = json.loads((tmp_path / "deep" / "init_check.json").read_text())
    assert len(deep["rows"]) == 31 and deep["initializer"] == "glorot_uniform"
    assert (tmp_path / "deep" / "init_check.md").read_text().count("| relu |") == 30
    assert (tmp_path / "deep" / "init_check.png").read_bytes()[:4] == b"\x89PNG"


NOISE_SCALE = "python -m tftrain task=noise_scale"
NOISE_SCALE_RUN = "python -m tftrain task=noise_scale task.run=outputs/2026-01-01/12-00-00"
RUN_BY.update({NOISE_SCALE: "test_noise_scale_commands", NOISE_SCALE_RUN: "test_noise_scale_commands"})


@pytest.mark.slow
def test_noise_scale_commands(tmp_path):
    out = run(shorten(readme(NOISE_SCALE), "task.num_steps=20", "hydra.run.dir=init"), tmp_path)
    assert "noise_scale: B_simple = " in out and "Train with: python -m tftrain trainer.batch_size=" in out
    # The run the second command names: a default run, shrunk, in that directory.
    run("python -m tftrain trainer.epochs=1 hydra.run.dir=outputs/2026-01-01/12-00-00", tmp_path)
    run(shorten(readme(NOISE_SCALE_RUN), "task.num_steps=20", "hydra.run.dir=later"), tmp_path)
    init, later = (json.loads((tmp_path / d / "noise_scale.json").read_text()) for d in ("init", "later"))
    assert init["checkpoint"] is None and later["checkpoint"].endswith("ckpt-19")
    assert init["b_simple"] > 0 and later["b_simple"] > 0 and init["b_simple"] != later["b_simple"]
    assert init["interval"][0] <= init["b_simple"] <= init["interval"][1]


PBT = "python -m tftrain -m hparams_search=pbt trainer.epochs=12 hydra.sweeper.perturbation_interval=3"
RUN_BY[PBT] = "test_pbt_search"


@pytest.mark.slow
def test_pbt_search(tmp_path):
    run(shorten(readme(PBT), "trainer.epochs=2", "hydra.sweeper.perturbation_interval=1", "hydra.sweeper.population=2",
                "data=synthetic", "data.num_train=128"), tmp_path)
    sweep = next((tmp_path / "outputs" / "multirun").glob("*/*/pbt.json")).parent
    state = json.loads((sweep / "pbt.json").read_text())
    assert len(state["rounds"]) == 2 and len(state["rounds"][0]["exploits"]) == 1
    assert (sweep / "pbt.md").is_file() and (sweep / "pbt.png").is_file() and len(sweep_rows(sweep)) == 2


OPTUNA_ASYNC = "python -m tftrain -m hparams_search=optuna hydra.sweeper.n_trials=30 hydra.sweeper.n_jobs=2"
OPTUNA_BATCHES = ("python -m tftrain -m hparams_search=optuna hydra.sweeper.n_jobs=2 hydra.sweeper.asynchronous=false "
                  "hydra/launcher=parallel")
RUN_BY.update({OPTUNA_ASYNC: "test_optuna_workers", OPTUNA_BATCHES: "test_optuna_workers"})


@pytest.mark.slow
def test_optuna_workers(tmp_path):
    for cmd, says in ((readme(OPTUNA_ASYNC), "Starting 1 more worker process(es)"),
                      (readme(OPTUNA_BATCHES), "2 trial(s) per batch")):
        out = run(shorten(cmd, "hydra.sweeper.n_trials=3", *SHRINK), tmp_path)
        assert says in out, out
    sweeps = sorted((tmp_path / "outputs" / "multirun").glob("*/*/optuna.db"))
    assert len(sweeps) == 2 and [len(sweep_rows(s.parent)) for s in sweeps] == [3, 3]
