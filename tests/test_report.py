"""`python -m tftrain.report`: runs side by side (the config keys that differ, final and best
metrics, seeds as intervals, curves) as report.md/.png/.html, and its errors."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import ROOT, SMALL, run_cli
from tftrain.report.compare import main, report

PNG = b"\x89PNG\r\n\x1a\n"


def report_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tftrain.report", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def fake_run(path: Path, config: dict | None = None, metrics: dict | None = None, overrides: list[str] | None = None,
             history_csv: str | None = None) -> Path:
    """A run directory as tftrain writes it: config.yaml (the validated config), metrics.json,
    history.csv, and .hydra/overrides.yaml when it came from the CLI."""
    path.mkdir(parents=True)
    base = {"optimizer": {"_target_": "keras.optimizers.SGD", "lr": 0.05},
            "problem": {"metrics": ["accuracy"]},
            "trainer": {"epochs": 2, "seed": 0, "objective": None, "objective_mode": None}}
    if config is not None:
        OmegaConf.save(OmegaConf.merge(base, config), path / "config.yaml")
    if metrics is not None:
        (path / "metrics.json").write_text(json.dumps(metrics))
    if overrides is not None:
        (path / ".hydra").mkdir()
        OmegaConf.save(OmegaConf.create(overrides), path / ".hydra" / "overrides.yaml")
    if history_csv is not None:
        (path / "history.csv").write_text(history_csv)
    return path


def metrics_of(acc: float, loss: float) -> dict:
    return {"val_loss": loss, "val_accuracy": acc, "best_val_loss": loss, "best_val_accuracy": acc,
            "test_loss": loss + 0.1, "test_accuracy": acc - 0.01, "epochs": 2, "train_time_s": 1.25,
            "wall_time_s": 2.5, "history": {"loss": [2.0, loss - 0.1], "val_loss": [2.2, loss],
                                            "val_accuracy": [acc / 2, acc], "learning_rate": [0.05, 0.05]}}


def seed_sweep(path: Path, optimizers=("sgd", "adam"), accuracies=((0.90, 0.91, 0.92), (0.60, 0.62, 0.61))) -> Path:
    """A sweep directory of optimizers x 3 seeds; data.seed follows trainer.seed, as synthetic's does."""
    job = 0
    for opt, accs in zip(optimizers, accuracies):
        for seed, acc in enumerate(accs):
            fake_run(path / f"{job}_optimizer={opt},seed={seed}",
                     {"optimizer": {"_target_": f"keras.optimizers.{opt.upper()}"}, "trainer": {"seed": seed},
                      "data": {"seed": seed}},
                     metrics_of(acc, 1 - acc), ["trainer.epochs=2", f"optimizer={opt}", f"trainer.seed={seed}"])
            job += 1
    return path


def table(md: str, section: str) -> list[dict[str, str]]:
    """The rows of the first table under `## section`, by header."""
    lines = md.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0].splitlines()
    cells = [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in lines if line.startswith("| ")]
    return [dict(zip(cells[0], row)) for row in cells[1:]]


@pytest.mark.slow
def test_report_of_two_real_cli_runs(tmp_path):
    for opt in ("sgd", "adam"):
        result = run_cli(*SMALL, f"optimizer={opt}", f"hydra.run.dir={tmp_path / opt}")
        assert result.returncode == 0, result.stderr[-3000:]
    result = report_cli("sgd", "adam", "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    md = (tmp_path / "out" / "report.md").read_text()
    assert len(result.stdout.splitlines()) == 1 and "out/report.md" in result.stdout and "out/report.png" in result.stdout
    assert "`optimizer._target_`" in md and "keras.optimizers.SGD" in md and "keras.optimizers.Adam" in md
    for opt in ("sgd", "adam"):
        test_acc = json.loads((tmp_path / opt / "metrics.json").read_text())["test_accuracy"]
        row = next(r for r in table(md, "Runs") if r["run"] == opt)
        assert row["test_accuracy"] == f"{test_acc:.4f}" and row["status"] == "completed"
    assert "key(s) have the same value in every run" in md and "`data._target_=tftrain.data.sources.synthetic`" in md
    assert (tmp_path / "out" / "report.png").read_bytes()[:8] == PNG
    html = (tmp_path / "out" / "report.html").read_text()
    assert '<img alt="curves" src="data:image/png;base64,iVBORw0KGgo' in html and "<table>" in html


def test_seeds_of_a_sweep_are_one_configuration_with_an_interval(tmp_path):
    sweep = seed_sweep(tmp_path / "sweep")
    md = report(sweep, out=tmp_path / "out").read_text()
    assert "6 run(s) (6 completed)" in md and "2 configuration(s)" in md
    assert "`data.seed` follow(s) `trainer.seed`" in md  # not a difference of configuration
    configs = table(md, "Configurations")
    assert [(c["#"], c["configuration"], c["run #s"], c["n"]) for c in configs] == \
        [("1", "optimizer=sgd", "1, 2, 3", "3"), ("2", "optimizer=adam", "4, 5, 6", "3")]
    assert configs[0]["verdict"].startswith("best (beats #2") and configs[1]["verdict"].startswith("worse")
    assert configs[0]["val_accuracy"] == "0.9100 ± 0.0248"  # 0.90, 0.91, 0.92: mean ± t(0.975, 2) * 0.01 / sqrt(3)
    assert "`optimizer=sgd` is best on val_accuracy (0.9100 ± 0.0248, n=3), ahead of every other" in md
    assert [r["config #"] for r in table(md, "Runs")] == ["1", "1", "1", "2", "2", "2"]
    assert "(mean, with its 95% band over seeds)" in md


def test_a_run_dir_and_a_sweep_dir_side_by_side(tmp_path):
    sweep = seed_sweep(tmp_path / "sweep", optimizers=("sgd",), accuracies=((0.80, 0.82, 0.84),))
    # From the library API: no .hydra/; another learning rate.
    api = fake_run(tmp_path / "runs" / "lr_0.1", {"optimizer": {"lr": 0.1}}, metrics_of(0.95, 0.1))
    md_path = report([str(api), str(sweep), str(sweep / "0_optimizer=sgd,seed=0")], out=tmp_path / "out")
    md = md_path.read_text()
    assert md_path == tmp_path / "out" / "report.md"
    runs = table(md, "Runs")
    assert len(runs) == 4  # the run given twice is shown once
    assert runs[0]["run"] == "runs/lr_0.1" and runs[0]["config #"] == "1"
    assert {r["run"] for r in runs[1:]} == {f"sweep/{i}_optimizer=sgd,seed={i}" for i in range(3)}
    keys = table(md, "Config keys that differ")
    assert list(keys[0]) == ["#", "run", "`optimizer.lr`", "`trainer.seed`", "`data.seed`"]
    assert keys[0]["`optimizer.lr`"] == "0.1" and keys[0]["`data.seed`"] == "—"  # the API run has no data.seed
    configs = table(md, "Configurations")
    assert [(c["configuration"], c["n"]) for c in configs] == [("runs/lr_0.1", "1"), ("sweep", "3")]
    assert configs[0]["verdict"] == "highest mean (not tested: fewer than 2 seeds)"


def test_failed_unfinished_and_running_runs_are_shown_with_their_status(tmp_path):
    csv_rows = "epoch,loss,accuracy,val_loss,val_accuracy,learning_rate\n0,2.0,0.3,1.8,0.40,0.05\n1,1.5,0.5,1.9,0.45,0.05\n"
    fake_run(tmp_path / "done", {}, metrics_of(0.9, 0.2))
    fake_run(tmp_path / "failed", {"optimizer": {"lr": 1e9}},
             {"status": "failed", "error": "The loss became nan at step 12", "wall_time_s": 0.5}, history_csv=csv_rows)
    fake_run(tmp_path / "stopped", {"optimizer": {"lr": 0.2}}, history_csv=csv_rows)  # killed: no metrics.json
    running = fake_run(tmp_path / "running", {"optimizer": {"lr": 0.3}}, history_csv=csv_rows)
    with open(running / ".tftrain.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as tftrain.tasks.resume.RunLock holds it while training
        lock.write("pid 4242 on node7 since 2025-01-01 10:00:00")
        lock.flush()
        md = report([tmp_path / n for n in ("failed", "stopped", "running", "done")], out=tmp_path / "out").read_text()
    runs = {r["run"]: r for r in table(md, "Runs")}
    assert runs["done"]["#"] == "1" and runs["done"]["status"] == "completed" and runs["done"]["error"] == ""
    assert runs["failed"]["status"] == "failed" and "The loss became nan at step 12" in runs["failed"]["error"]
    assert runs["stopped"]["status"] == "incomplete" and "no metrics.json" in runs["stopped"]["error"]
    assert runs["running"]["status"] == "running" and "pid 4242 on node7" in runs["running"]["error"]
    # From history.csv: the last epoch's val_accuracy and the best val_loss so far; no test metrics yet.
    assert runs["running"]["val_accuracy"] == "0.4500" and runs["running"]["best_val_loss"] == "1.8000"
    assert runs["running"]["epochs"] == "2" and runs["running"]["test_accuracy"] == ""
    assert runs["failed"]["val_accuracy"] == "0.4500" and runs["failed"]["wall time (s)"] == "0.5"
    assert "dashed: runs not completed" in md
    assert (tmp_path / "out" / "report.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize("case", ["missing", "file", "not_a_run", "no_args"])
def test_errors_are_one_paragraph_with_exit_status_2(tmp_path, case):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    args = {"missing": ["nowhere"], "file": ["notes.txt"], "not_a_run": ["empty"], "no_args": []}[case]
    result = report_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("tftrain: error: ") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
    expected = {"missing": "nowhere does not exist", "file": "notes.txt is a file, not a run or sweep directory",
                "not_a_run": "empty is neither a run nor a sweep directory: a run directory holds metrics.json",
                "no_args": "Usage: python -m tftrain.report RUN_OR_SWEEP_DIR..."}[case]
    assert expected in result.stderr
    assert not (tmp_path / "report").exists()


def test_metrics_to_draw_objective_and_mode(tmp_path, capsys):
    a = fake_run(tmp_path / "a", {}, metrics_of(0.9, 0.5))
    b = fake_run(tmp_path / "b", {"optimizer": {"lr": 0.1}}, metrics_of(0.8, 0.3))
    out = tmp_path / "out"
    assert main([str(a), str(b), "--out", str(out), "--metrics", "val_accuracy,nope,learning_rate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tftrain: error: No run logged 'nope' in its history.")
    assert "loss, val_loss, val_accuracy, learning_rate" in err and "Traceback" not in err

    def written() -> str:  # the command prints where the report is; the report is the file
        assert "report.md" in capsys.readouterr().out
        return (out / "report.md").read_text()

    assert main([str(a), str(b), "--out", str(out), "--metrics", "learning_rate,loss"]) == 0
    md = written()
    assert "Per epoch: `learning_rate`, `loss`" in md
    assert [r["run"] for r in table(md, "Runs")] == ["a", "b"]  # val_accuracy, the problem's default objective: max

    assert main([str(a), str(b), "--out", str(out), "--objective", "val_loss"]) == 0
    md = written()
    assert "Ranked by `val_loss` (lowest first)" in md and [r["run"] for r in table(md, "Runs")] == ["b", "a"]
    assert main([str(a), str(b), "--out", str(out), "--objective", "test_accuracy", "--mode", "min"]) == 0
    assert [r["run"] for r in table(written(), "Runs")] == ["b", "a"]
    assert main([str(a), "--out", str(out), "--objective", "val_auc"]) == 2
    assert "No run logged the objective 'val_auc'" in capsys.readouterr().err
    assert main([str(a), "--mode", "best"]) == 2
    assert "invalid choice: 'best'" in capsys.readouterr().err


def test_the_report_module_does_not_import_tensorflow(tmp_path):
    fake_run(tmp_path / "a", {}, metrics_of(0.9, 0.5))
    code = ("import sys; sys.argv[0] = '-m'; from tftrain.report.compare import report; report(['a']); "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]" and (tmp_path / "report" / "report.html").is_file()
