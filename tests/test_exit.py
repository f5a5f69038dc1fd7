"""The console's fast exit (tftrain.cli.exit): the process ends without the interpreter's teardown,
yet with what that teardown owes a user: executors stopped, non-daemon threads finished, atexit
handlers run, buffered output written, the same exit status."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT, run_cli

USER_MODULE = textwrap.dedent('''
    """A user's callback whose process-end work must still happen under the fast exit."""
    import atexit
    import concurrent.futures
    import threading
    import time
    from pathlib import Path

    import keras


    class AtEnd(keras.callbacks.Callback):
        def __init__(self, path):
            super().__init__()
            self.path = Path(path)

        def on_train_end(self, logs=None):
            def late_write():
                time.sleep(0.5)  # still running when training returns
                self.path.with_suffix(".thread").write_text("joined")

            threading.Thread(target=late_write).start()  # non-daemon: Python waits for it
            # an executor never shut down: its idle worker stops at the threads' exit hooks
            self.pool = concurrent.futures.ThreadPoolExecutor(1)
            self.pool.submit(time.sleep, 0.1)
            atexit.register(self.path.with_suffix(".atexit").write_text, "ran")
            log = open(self.path.with_suffix(".log"), "w")  # noqa: SIM115 - closed by its atexit handler
            log.write("buffered, never flushed by the callback")
            atexit.register(log.close)
''')


@pytest.mark.slow
def test_fast_exit_keeps_threads_atexit_and_output(tmp_path):
    (tmp_path / "userend.py").write_text(USER_MODULE)
    mark = tmp_path / "end"
    run = run_cli("trainer.epochs=1", f"hydra.run.dir={tmp_path / 'run'}",
                  f"callbacks.extra=[{{_target_:userend.AtEnd,path:'{mark}'}}]", cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr
    assert mark.with_suffix(".thread").read_text() == "joined"
    assert mark.with_suffix(".atexit").read_text() == "ran"
    assert mark.with_suffix(".log").read_text() == "buffered, never flushed by the callback"
    # stdout is a pipe here (block-buffered): its last lines reached it
    assert run.stdout.rstrip().endswith(f"TensorBoard: tensorboard --logdir {tmp_path / 'run'}"), run.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 1


def test_fast_exit_keeps_the_status_of_bad_input(tmp_path):
    run = run_cli("trainer.epochs=0", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert run.returncode == 2
    assert "trainer.epochs" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.slow
def test_exit_cost_script_measures_both_exits(tmp_path):
    """scripts/exit_cost.py, shrunk to one repetition of one run each way: its table row."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "exit_cost.py"), "--reps", "1", "--cases", "run"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    row = re.search(r"^run +([\d.]+)s +([\d.]+)s +([\d.]+) +([\d.]+)s +([\d.]+)s$", out.stdout, re.M)
    assert row, out.stdout
    fast, slow, ratio, tail_fast, tail_slow = map(float, row.groups())
    assert abs(ratio - fast / slow) < 0.01 and tail_fast < tail_slow


FAILING_STDOUT = textwrap.dedent('''
    import errno, sys
    from tftrain.cli.exit import exit_now

    class Full:
        def write(self, text):
            return len(text)

        def flush(self):
            raise OSError(errno.ENOSPC, "No space left on device")

    sys.stdout = Full()
    exit_now(int(sys.argv[1]))
''')


@pytest.mark.slow
@pytest.mark.parametrize("status, expected, slow", [(0, 120, "0"), (3, 3, "0"), (0, 120, "1")],
                         ids=["fast-0", "fast-3", "ordinary-0"])
def test_output_that_cannot_be_written_at_the_exit_is_status_120_as_without_the_fast_exit(status, expected, slow):
    """Python's own exit gives 120 when flushing stdout fails (a full disk): a success must not be
    reported for output that was lost; a failure keeps its own status."""
    p = subprocess.run([sys.executable, "-c", FAILING_STDOUT, str(status)], cwd=ROOT, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "TFTRAIN_SLOW_EXIT": slow}, timeout=120)
    assert p.returncode == expected, p.stderr[-2000:]
