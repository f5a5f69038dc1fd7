# python scripts/startup_overlap.py [--reps 5] [--cases run,sweep,error]
"""Whether importing TensorFlow in a background thread, started as the CLI starts, shortens
`python -m tftrain ...` by overlapping the import (about 4 s here) with Hydra's composition and
tftrain's validation. tftrain does not do it: on 2 CPU cores it measured no gain for a run or a
sweep and made a bad config's error twice as slow (the numbers: this script's output).

Why: CPython holds the GIL through nearly all of an import (executing modules, and loading
extension modules: dlopen runs with the GIL held), and Hydra's composition is Python code too, so
the two threads take turns rather than run at once. Only time that a thread spends without the
GIL (blocking I/O) can overlap, and there is next to none with the files in the page cache. The
main thread, sharing the GIL, also reaches a bad config's error later.

Both variants run the real CLI (`tftrain.cli.main.cli`) in a fresh process through this script
(`--cli off|on`), so that they differ only in the thread:

  off  the CLI as it is: TensorFlow imported where the run first needs it
  on   before cli(), a daemon thread imports tensorflow and keras. TensorFlow's stderr filter
       (tftrain.console) is started first, in the main thread (it redirects file descriptor 2 for
       the whole process); the run's own first import of TensorFlow (tftrain.console's
       quiet_tensorflow) waits for the thread: two threads importing tensorflow and keras at once
       each hold a module lock the other needs (tensorflow's __init__ imports keras, keras imports
       tensorflow), and Python breaks the deadlock by failing one import with _DeadlockError and
       the other with an AttributeError of a half-initialized module (seen with TensorFlow 2.21,
       Keras 3.15). And the stderr handler TensorFlow gives its logger when it loads before Hydra
       has set up logging is removed (every TensorFlow warning would print twice).

Cases, alternating which variant goes first in each repetition so that a neighbour's load on a
shared machine hits both alike:

  run     python -m tftrain trainer.epochs=1 logger=[] hydra.run.dir=<tmp>
  sweep   python -m tftrain -m trainer.epochs=1 logger=[] trainer.seed=0,1 hydra.sweep.dir=<tmp>
  error   python -m tftrain optimizer=nosuch   (must print its paragraph and exit 2 at once)

Printed: the median whole-process wall time (launch to exit) of each, the ratio on / off, and for
`run` the medians of metrics.json's start-up phases (process start to the run's first phase, and
the phase that imports TensorFlow).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CASES = {
    "run": lambda tmp: ["trainer.epochs=1", "logger=[]", f"hydra.run.dir={tmp}"],
    "sweep": lambda tmp: ["-m", "trainer.epochs=1", "logger=[]", "trainer.seed=0,1", f"hydra.sweep.dir={tmp}"],
    "error": lambda tmp: ["optimizer=nosuch", f"hydra.run.dir={tmp}"],
}
EXPECTED_STATUS = {"run": 0, "sweep": 0, "error": 2}
PHASES = ("process_start_to_train", "import_tensorflow_and_check_targets")


def command(args: list[str], preload: bool) -> list[str]:
    """The command line of `python -m tftrain ARGS`, run through this script's --cli."""
    return [sys.executable, str(Path(__file__).resolve()), "--cli", "on" if preload else "off", "--", *args]


def _start_preload(console) -> None:
    """The background import of tensorflow and keras (the `on` variant; see the module's text)."""
    console.filter_tensorflow_lines()
    tf_log = logging.getLogger("tensorflow")
    handlers = list(tf_log.handlers)

    def load() -> None:
        with contextlib.suppress(BaseException):  # the run's own import raises it again, where it is reported
            import keras  # noqa: F401
            import tensorflow  # noqa: F401

    thread = threading.Thread(target=load, name="preload-tensorflow", daemon=True)
    quiet_tensorflow = console.quiet_tensorflow

    @contextlib.contextmanager
    def after_preload(verbose=None):
        thread.join()
        if logging.getLogger().handlers:
            for handler in tf_log.handlers:
                if handler not in handlers:
                    tf_log.removeHandler(handler)
        with quiet_tensorflow(verbose):
            yield

    console.quiet_tensorflow = after_preload  # tftrain imports it inside the functions that call it
    thread.start()


def run_cli(args: list[str], preload: bool) -> None:
    """`python -m tftrain ARGS` in this process, as runpy would start it."""
    sys.argv = ["-m"]  # what `python -m` shows while it imports the package: tftrain's __init__ skips TensorFlow
    from tftrain import console
    from tftrain.cli.main import cli

    sys.argv = [str(ROOT / "tftrain" / "__main__.py"), *args]
    if preload:
        _start_preload(console)
    cli()


def once(case: str, preload: bool) -> tuple[float, dict]:
    """Wall seconds of one command, and its metrics.json's startup_s ({} without one)."""
    with tempfile.TemporaryDirectory(prefix="tftrain-overlap-") as tmp:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
        env.setdefault("CUDA_VISIBLE_DEVICES", "")
        t0 = time.perf_counter()
        result = subprocess.run(command(CASES[case](tmp), preload), cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if result.returncode != EXPECTED_STATUS[case]:
            variant = "on" if preload else "off"
            sys.exit(f"{case} (preload {variant}) exited {result.returncode}:\n{result.stderr[-3000:]}")
        metrics = Path(tmp) / "metrics.json"
        return wall, json.loads(metrics.read_text()).get("startup_s", {}) if metrics.exists() else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--cases", default="run,sweep,error")
    parser.add_argument("--cli", choices=("on", "off"), help="run the CLI with the preload on or off (one command)")
    parser.add_argument("args", nargs="*", help="the CLI's arguments, after --")
    args = parser.parse_args()
    if args.cli:
        run_cli(args.args, args.cli == "on")
        return
    cases = args.cases.split(",")
    walls = {(c, p): [] for c in cases for p in (True, False)}
    phases = {(p, name): [] for p in (True, False) for name in PHASES}
    for rep in range(args.reps):
        for case in cases:
            for preload in ((True, False) if rep % 2 == 0 else (False, True)):
                wall, startup = once(case, preload)
                walls[case, preload].append(wall)
                for name in PHASES:
                    if name in startup:
                        phases[preload, name].append(startup[name])
        print(f"rep {rep + 1}/{args.reps}: " + ", ".join(
            f"{c} on {walls[c, True][-1]:.2f}s off {walls[c, False][-1]:.2f}s" for c in cases), flush=True)

    print(f"\nmedians of {args.reps} repetitions ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}):")
    print(f"{'case':8} {'preload on':>11} {'off':>8} {'on/off':>7}")
    for case in cases:
        on, off = statistics.median(walls[case, True]), statistics.median(walls[case, False])
        print(f"{case:8} {on:10.2f}s {off:7.2f}s {on / off:7.3f}")
    for name in PHASES:
        if phases[True, name] and phases[False, name]:
            on, off = statistics.median(phases[True, name]), statistics.median(phases[False, name])
            print(f"run's startup_s.{name}: on {on:.2f}s, off {off:.2f}s")


if __name__ == "__main__":
    main()
