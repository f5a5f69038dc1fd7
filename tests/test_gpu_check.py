"""scripts/gpu_check.sh, the prepared GPU check, run shrunk on the CPU (--cpu) so it keeps working
between the rare runs on a GPU machine: every row it promises is there, with real numbers."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow  # the whole check, about 11 child processes

# Mirrored training over 2 logical CPU devices at the same global batch (no batch norm, float32)
# differs from 1 device only in the order of the cross-replica sum: 0 to 4e-8 measured over 3
# epochs; tests/test_distribute.py holds the MLP to the same 1e-5. A wrong loss scale (e.g. a
# per-replica rather than global-batch average) would be off by a factor of 2.
TOLERANCE = 1e-5


def _rows(table: str) -> dict[str, dict[str, str]]:
    """The markdown table's rows by their `run` cell, each as {column: cell}."""
    lines = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in table.splitlines() if ln.startswith("| ")]
    header, body = lines[0], lines[1:]
    assert header[0] == "run", header
    return {cells[0]: dict(zip(header, cells)) for cells in body}


def test_gpu_check_runs_on_the_cpu(tmp_path):
    out = tmp_path / "table.md"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    # From another directory: the script finds the repository itself; --out stays relative to here.
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--cpu", "--out", "table.md"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    table = out.read_text()
    assert table in result.stdout  # printed as written
    assert "tensorflow 2." in table and "keras 3." in table and re.search(r"total time \d+ s", table)
    rows = _rows(table)
    training = [n for n in rows if n.startswith("tftrain ")]
    assert len(training) == 12  # 3 precisions x XLA off/on x steps per execution 1/auto
    # --cpu trains every auto row and one spe=1 row; the other spe=1 rows only have their config checked.
    checked = [n for n in training if n.endswith("spe=1") and n != "tftrain float32 xla=off spe=1"]
    assert all(rows[n]["result"] == "skipped: --cpu trains one spe=1 row (config checked)" for n in checked), \
        [rows[n]["result"] for n in checked]
    trained = [n for n in training if n not in checked]
    assert len(trained) == 7
    for name in ["python -m tftrain (default, 3 epochs)", *trained, "model.fit", "1 device (no batch norm)",
                 "2 devices mirrored (no batch norm)"]:
        row = rows[name]
        assert row["result"] == "ok", (name, row["result"])
        assert float(row["steps/s"]) > 0 and float(row["examples/s"]) > 0, (name, row)
        assert row["peak GPU MiB"] == "n/a"  # no GPU memory on the CPU
        assert float(row["peak RSS MiB"]) > 100  # the child's: TensorFlow alone takes more
    assert len(rows["tftrain float32 xla=off spe=1"]["loss per epoch"].split()) == 3

    agreement = rows["loss agreement: 2 devices vs 1"]["result"]
    assert agreement.startswith("ok"), agreement
    assert float(re.search(r"max rel\. diff ([0-9.e+-]+)", agreement).group(1)) <= TOLERANCE
