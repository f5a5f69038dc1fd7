"""What a newcomer sees: TensorFlow's start-up lines off the console, plain lines in a pipe, the
library printing each line once, --help with each key's meaning, the outputs named, and no run
directory left by a run that never started training."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT, SMALL, run_cli
from tftrain.console import STARTUP_LINES

# Lines TensorFlow 2.21 writes to stderr at start-up on a CPU-only machine (as they read).
TF_STARTUP = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795963733.503354    5133 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders.",
    "I0000 00:00:1795963733.503793    5133 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.",
    "I0000 00:00:1795962234.889697   31297 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the "
    "appropriate compiler flags.",
    "E0000 00:00:1795963383.413122   30740 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed "
    "call to cuInit: UNKNOWN ERROR (303)",
]

FILTER_SCRIPT = textwrap.dedent('''
    import os, sys
    from tftrain.console import quiet_tensorflow
    lines = sys.argv[1:]
    with quiet_tensorflow():
        for line in lines:
            os.write(2, (line + "\\n").encode())  # as TensorFlow's C++ code writes: to fd 2
        os.write(2, b"E0000 a real error the user must see\\n")
    os.write(2, b"after\\n")
''')


def _filtered(env_extra=None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TFTRAIN_TF_LOGS"}
    env.update({"PYTHONPATH": str(ROOT), **(env_extra or {})})
    result = subprocess.run([sys.executable, "-c", FILTER_SCRIPT, *TF_STARTUP], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stderr


@pytest.mark.slow
def test_tensorflows_start_up_lines_are_dropped_and_real_errors_kept():
    assert all(STARTUP_LINES.search(line.encode()) for line in TF_STARTUP)
    assert _filtered() == "E0000 a real error the user must see\nafter\n"


@pytest.mark.slow
def test_tf_logs_shows_everything():
    shown = _filtered({"TFTRAIN_TF_LOGS": "1"})
    assert all(line in shown for line in TF_STARTUP) and "a real error" in shown


@pytest.mark.slow
def test_a_piped_run_is_plain_lines_from_tftrain_only(tmp_path):
    result = run_cli(*[o for o in SMALL if not o.startswith("trainer.verbose")], f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    out = (result.stdout + result.stderr).encode()
    for byte in (b"\x1b", b"\b", b"\r"):
        assert byte not in out
    assert not [line for line in out.splitlines() if STARTUP_LINES.search(line)], out.decode()[:2000]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("[") and "] data=synthetic:" in lines[0]  # tftrain's first line comes first
    assert sum("] epoch " in line for line in lines) == 2  # one line per epoch (verbose=1 in a pipe)
    assert "Training on CPU" in result.stdout and "no GPU" in result.stdout  # the devices, in one line
    assert not any(line.startswith("[") and "][tftrain][INFO]" in line for line in lines)  # short prefix
    assert (tmp_path / "tftrain.log").read_text().count("] epoch ") == 2


@pytest.mark.slow
def test_the_library_prints_each_line_once(tmp_path):
    overrides = [*SMALL, "trainer.verbose=2"]
    script = f"import tftrain\ntftrain.train(tftrain.compose({overrides!r}), output_dir={str(tmp_path)!r})\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    assert out.count("test_accuracy") == 1 and out.count("epoch 2/2") == 1
    assert "INFO:tftrain" not in out
    assert not [line for line in out.encode().splitlines() if STARTUP_LINES.search(line)]


@pytest.mark.slow
def test_outputs_line_names_every_output(tmp_path):
    result = run_cli(*SMALL, "callbacks=early_stopping", "logger=[tensorboard,csv]", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(ln for ln in result.stdout.splitlines() if "Outputs in" in ln)
    for name in ("metrics.json", "model.keras", "best.keras", "history.csv", "steps.csv", "config.yaml",
                 "preprocessing.json", "checkpoints/", "tensorboard/"):
        assert name in line and (tmp_path / name.rstrip("/")).exists(), name


def test_a_run_that_fails_before_training_leaves_only_its_log(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(*SMALL, "optimizer.lr=-1", f"hydra.run.dir={run_dir}")
    assert result.returncode == 2
    assert sorted(p.name for p in run_dir.iterdir()) == ["tftrain.log"]
    assert "Invalid config `optimizer.lr`" in (run_dir / "tftrain.log").read_text()


def test_help_shows_each_keys_meaning_and_the_verbosity_levels():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "  lr: 0.001  # base learning rate" in result.stdout
    assert "  epochs: 30  # passes over the training split" in result.stdout
    assert "verbose: 1  # 0 no per-epoch lines; 1 a live line per epoch on a terminal" in result.stdout
    assert "3 also TensorFlow's own start-up" in result.stdout


def test_the_log_format_masks_credentials_in_any_uri():
    import logging

    from tftrain.console import LogFormatter

    record = logging.LogRecord("hydra", logging.INFO, __file__, 1, "#0 : logger.mlflow.tracking_uri=https://user:"
                               "s3cret@mlflow.example.com:5000/x data.path=/data/a@b.csv sqlite:////tmp/m.db",
                               None, None)
    line = LogFormatter().format(record)
    assert "s3cret" not in line and "user" not in line
    assert line.endswith("tracking_uri=https://***@mlflow.example.com:5000/x data.path=/data/a@b.csv "
                         "sqlite:////tmp/m.db")
