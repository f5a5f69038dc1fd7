# python scripts/exit_cost.py [--reps 5] [--cases run,sweep]
"""What the interpreter's teardown costs a tftrain command, and what the console's fast exit
(tftrain.cli.exit) saves: each case runs `python -m tftrain ...` in a fresh process with the
ordinary exit (TFTRAIN_SLOW_EXIT=1) and with the fast one (the default), alternating which goes
first in each repetition so that a neighbour's load hits both alike.

  run     python -m tftrain trainer.epochs=1 hydra.run.dir=<tmp>
  sweep   python -m tftrain -m trainer.epochs=1 trainer.seed=0,1 hydra.sweep.dir=<tmp>

Printed: the median whole-process wall time (launch to exit) of each and the ratio fast / ordinary,
and the median time from the last line the command prints to the process's end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = {
    "run": lambda tmp: ["trainer.epochs=1", f"hydra.run.dir={tmp}"],
    "sweep": lambda tmp: ["-m", "trainer.epochs=1", "trainer.seed=0,1", f"hydra.sweep.dir={tmp}"],
}


def once(case: str, fast: bool) -> tuple[float, float]:
    """Wall seconds of one command, and seconds from its last output line to its end."""
    with tempfile.TemporaryDirectory(prefix="tftrain-exit-") as tmp:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "TFTRAIN_SLOW_EXIT": "0" if fast else "1"}
        env.setdefault("CUDA_VISIBLE_DEVICES", "")
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "tftrain", *CASES[case](tmp)], cwd=tmp, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        last_line = t0
        for _ in proc.stdout:  # stdout is a pipe: each line arrives as it is flushed
            last_line = time.perf_counter()
        stderr = proc.stderr.read()
        proc.wait()
        end = time.perf_counter()
        if proc.returncode != 0:
            sys.exit(f"{case} ({'fast' if fast else 'ordinary'} exit) exited {proc.returncode}:\n{stderr[-3000:]}")
        return end - t0, end - last_line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--cases", default="run,sweep")
    args = parser.parse_args()
    cases = args.cases.split(",")
    walls = {(c, f): [] for c in cases for f in (True, False)}
    tails = {(c, f): [] for c in cases for f in (True, False)}
    for rep in range(args.reps):
        for case in cases:
            for fast in ((True, False) if rep % 2 == 0 else (False, True)):
                wall, tail = once(case, fast)
                walls[case, fast].append(wall)
                tails[case, fast].append(tail)
        print(f"rep {rep + 1}/{args.reps}: " + ", ".join(
            f"{c} fast {walls[c, True][-1]:.2f}s ordinary {walls[c, False][-1]:.2f}s" for c in cases), flush=True)

    print(f"\nmedians of {args.reps} repetitions ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}):")
    print(f"{'case':6} {'fast':>7} {'ordinary':>9} {'fast/ordinary':>14} {'last line to end: fast':>23} {'ordinary':>9}")
    for case in cases:
        fast, slow = statistics.median(walls[case, True]), statistics.median(walls[case, False])
        tail_fast, tail_slow = statistics.median(tails[case, True]), statistics.median(tails[case, False])
        print(f"{case:6} {fast:6.2f}s {slow:8.2f}s {fast / slow:14.3f} {tail_fast:22.2f}s {tail_slow:8.2f}s")


if __name__ == "__main__":
    main()
