"""What a run prints besides its own log lines: TensorFlow's start-up chatter kept off the console,
one line naming the devices, and the log line format.

TensorFlow 2.21 writes a handful of lines to the process' stderr while it loads and while it
first looks for devices ("oneDNN custom operations are on", "Could not find cuda drivers", "This
TensorFlow binary is optimized to use available CPU instructions", and, on a machine without a
GPU, "failed call to cuInit: ... (303)", which reads as a failure). They are written before absl
logging is initialized, so TF_CPP_MIN_LOG_LEVEL (even 3) does not silence them, and from C++, so
Python's warnings and logging filters never see them. `quiet_tensorflow()` therefore sends file
descriptor 2 through a pipe while TensorFlow loads and picks its devices, drops the lines matching
`STARTUP_LINES`, and passes every other line through (a real error still shows). Everything is
shown with `trainer.verbose=3` or the environment variable TFTRAIN_TF_LOGS=1.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading

log = logging.getLogger("tftrain")

# TensorFlow's start-up lines on a machine as it is (CPU-only or not): informational, never errors
# of the run. Each pattern is one known message.
STARTUP_LINES = re.compile("|".join([
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"oneDNN custom operations are on",
    r"cudart_stub\.cc.*Could not find cuda drivers",
    r"cpu_feature_guard\.cc",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"To enable the following instructions: .* rebuild TensorFlow",
    r"cuda_platform\.cc.*failed call to cuInit",
    r"cuda_executor\.cc.*(could not find cuda drivers|failed call to cuInit)",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation placer already registered",
    r"TF-TRT Warning: Could not find TensorRT",
    r"external/local_xla/xla/stream_executor/cuda/cuda_diagnostics\.cc",
]).encode())


def tf_logs_wanted(verbose: int | None = None) -> bool:
    return os.environ.get("TFTRAIN_TF_LOGS", "0") not in ("", "0", "false") or (verbose or 0) >= 3


class _StderrFilter:
    """fd 2 through a pipe; a thread forwards every line but TensorFlow's known start-up ones."""

    def __init__(self):
        self._saved = self._thread = None

    def start(self) -> None:
        try:
            sys.stderr.flush()
            self._saved = os.dup(2)
            read, write = os.pipe()
            os.dup2(write, 2)
            os.close(write)
        except (OSError, ValueError, AttributeError):  # no real fd 2 (an embedding host, a notebook kernel)
            self._saved = None
            return
        self._thread = threading.Thread(target=self._pump, args=(read,), name="tftrain-stderr-filter", daemon=True)
        self._thread.start()

    def _pump(self, read: int) -> None:
        with os.fdopen(read, "rb", buffering=0) as pipe:
            pending = b""
            while chunk := pipe.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not STARTUP_LINES.search(line):
                        os.write(self._saved, line + b"\n")
            if pending and not STARTUP_LINES.search(pending):
                os.write(self._saved, pending)

    def stop(self) -> None:
        if self._saved is None:
            return
        with contextlib.suppress(ValueError, AttributeError):
            sys.stderr.flush()
        os.dup2(self._saved, 2)  # closes the pipe's writing end: the thread reads to its end and stops
        self._thread.join(timeout=5)
        os.close(self._saved)
        self._saved = None


@contextlib.contextmanager
def quiet_tensorflow(verbose: int | None = None):
    """Around importing TensorFlow and creating the strategy (its first device query)."""
    if tf_logs_wanted(verbose):
        yield
        return
    stderr_filter = _StderrFilter()
    stderr_filter.start()
    try:
        yield
    finally:
        stderr_filter.stop()


class _RetracingNoise(logging.Filter):
    """TensorFlow counts retracings per Python function, not per tf.function object: each job of an
    in-process sweep builds new compiled steps (a new model), traced once each, and after five
    jobs TensorFlow warns of "excessive retracing" that is not happening within any run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def quiet_known_warnings() -> None:
    """Warnings TensorFlow gives for what tftrain does on purpose (once per process)."""
    import warnings

    # Iterating a distributed dataset inside a tf.function reads its options in graph mode; the
    # warning is about TensorFlow's own implementation, with nothing for a user to change.
    warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options", category=UserWarning)
    tf_log = logging.getLogger("tensorflow")
    if not any(isinstance(f, _RetracingNoise) for f in tf_log.filters):
        tf_log.addFilter(_RetracingNoise())


def device_summary(strategy) -> str:
    """One line: what trains (e.g. "CPU (2 cores), no GPU" or "2 GPUs: NVIDIA H200 x2")."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    replicas = strategy.num_replicas_in_sync
    if not gpus:
        cores = os.cpu_count() or 1
        split = f", split into {replicas} logical devices" if replicas > 1 else ""
        return f"CPU ({cores} core{'s' if cores > 1 else ''}{split}), no GPU"
    names = []
    for gpu in tf.config.list_physical_devices("GPU"):
        with contextlib.suppress(Exception):  # details are best effort (not every platform has them)
            names.append(tf.config.experimental.get_device_details(gpu).get("device_name", "GPU"))
    kinds = {n: names.count(n) for n in names}
    described = ", ".join(f"{n} x{k}" if k > 1 else n for n, k in kinds.items()) or "GPU"
    return f"{len(gpus)} GPU{'s' if len(gpus) > 1 else ''}: {described}"


class LogFormatter(logging.Formatter):
    """`[hh:mm:ss] message`, with the level named only from WARNING up (the console's lines carry
    no logger name and level prefix: a 43-character prefix on every line was noise)."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = "%H:%M:%S", **kwargs):
        super().__init__("[%(asctime)s] %(message)s", datefmt)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            stamp, _, rest = text.partition("] ")
            text = f"{stamp}] {record.levelname}: {rest}"
        return text
