"""Ending the CLI's process without the interpreter's teardown.

Once TensorFlow is loaded, Python's own shutdown (module teardown, collecting TensorFlow's objects,
its C++ static destructors) takes 1.3-1.6 s on a 2-core machine (scripts/exit_cost.py), more than
a default run's training steps; a sweep's jobs are in one process, so it is paid once per command,
but it is paid by every command. `exit_now` does what that shutdown does that matters to a user,
then ends the process at once: it stops executors' workers and waits for non-daemon threads as
Python does, runs the `atexit` handlers (MLflow's, multiprocessing's, temporary files'), closes
logging's handlers and flushes the standard streams. tftrain closes its own files (checkpoints,
TensorBoard writers, run logs) before a run returns, so nothing is lost. Only the console entry uses it; the library API and an
in-process `tftrain.cli.main.cli()` end the ordinary way. TFTRAIN_SLOW_EXIT=1 restores the
ordinary way for the console too.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading


def _status_of(code: object) -> int:
    """The process status `sys.exit(code)` would give: None is 0, an int itself, anything else is
    printed to stderr and gives 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def exit_now(code: object = 0) -> None:
    """End the process with `sys.exit(code)`'s status, skipping the interpreter's teardown."""
    if os.environ.get("TFTRAIN_SLOW_EXIT", "0") not in ("", "0"):
        sys.exit(code)
    status = _status_of(code)
    # Python's own shutdown, in its order, has no public "run now": threading._shutdown runs the
    # threads' exit hooks (concurrent.futures' and joblib's executors stop their workers there) and
    # then waits for the non-daemon threads; atexit._run_exitfuncs runs (and clears) the atexit
    # handlers. Both are what Py_FinalizeEx calls, in every CPython since 3.9.
    threading._shutdown()
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can reach it
            pass
    os._exit(status)
