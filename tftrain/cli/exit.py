"""Ending the CLI's process without the interpreter's teardown.

Once TensorFlow is loaded, Python's own shutdown (module teardown, collecting TensorFlow's objects,
its C++ static destructors) takes 1.3-1.6 s on a 2-core machine (scripts/exit_cost.py), more than
a default run's training steps; a sweep's jobs are in one process, so it is paid once per command,
but it is paid by every command. `exit_now` does what that shutdown does that matters to a user,
then ends the process at once: it stops executors' workers and waits for non-daemon threads as
Python does, runs the `atexit` handlers (MLflow's, multiprocessing's, temporary files'), closes
logging's handlers and flushes the standard streams (Python's and C's). tftrain closes its own
files (checkpoints, TensorBoard writers, run logs) before a run returns; a file that user code
(a callback, a model builder) leaves open is not flushed by a collector here, so such code must
close what it opens, or set TFTRAIN_SLOW_EXIT=1, which restores the ordinary way. Only the
console entry uses it; the library API and an in-process `tftrain.cli.main.cli()` end the
ordinary way.
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
    try:
        threading._shutdown()
    except KeyboardInterrupt:  # Ctrl-C while it waits for threads: Python's own shutdown goes on too
        pass
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in dict.fromkeys([sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__]):
        try:
            if stream is not None:
                stream.flush()
        except ValueError:  # closed: written out when it was closed
            pass
        except OSError:  # a full disk or a closed pipe: Python's own exit then gives status 120
            status = status or 120
    _flush_c_streams()
    os._exit(status)


def _flush_c_streams() -> None:
    """fflush(NULL): what native code wrote through C's stdio (buffered when stdout is a pipe or a
    file) and libc's exit() would write; os._exit skips it."""
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):  # no C library to ask (not on Linux or macOS)
        pass
