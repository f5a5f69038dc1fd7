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

TensorFlow also writes known lines later, at the first device query or the first op of a kind
("oneDNN supports DT_INT32 only on platforms with AVX-512" for integer labels, the same for
DT_HALF under mixed_float16; `RUNTIME_LINES`). So the filter, once started, stays for the rest of
the process (`filter_tensorflow_lines`); it is taken down at exit, after Python has written any
traceback, so nothing but the known lines is ever lost.
"""

from __future__ import annotations

import atexit
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

# Lines TensorFlow writes while a run computes, about its own kernels: oneDNN has no integer or
# half-precision kernels without AVX-512 and falls back to Eigen (the results are the same).
RUNTIME_LINES = re.compile("|".join([
    r"oneDNN supports DT_[A-Z0-9]+ only on platforms with AVX-512",
]).encode())

KNOWN_LINES = re.compile(STARTUP_LINES.pattern + b"|" + RUNTIME_LINES.pattern)


def tf_logs_wanted(verbose: int | None = None) -> bool:
    return os.environ.get("TFTRAIN_TF_LOGS", "0") not in ("", "0", "false") or (verbose or 0) >= 3


class _StderrFilter:
    """fd 2 through a pipe; a thread forwards every line but TensorFlow's known ones."""

    # A line this long without a newline (a progress bar redrawn with \r) is passed on as it is.
    HOLD = 4096

    def __init__(self):
        self._saved = self._thread = None
        self._pipe_id = None

    def start(self) -> bool:
        try:
            sys.stderr.flush()
            self._saved = os.dup(2)
            read, write = os.pipe()
            os.dup2(write, 2)
            os.close(write)
            stat = os.fstat(2)
            self._pipe_id = (stat.st_dev, stat.st_ino)
        except (OSError, ValueError, AttributeError):  # no real fd 2 (an embedding host, a notebook kernel)
            self._saved = None
            return False
        self._thread = threading.Thread(target=self._pump, args=(read,), name="tftrain-stderr-filter", daemon=True)
        self._thread.start()
        return True

    def _write(self, data: bytes) -> None:
        try:
            os.write(self._saved, data)
        except OSError:  # the console went away (a closed pipe): keep draining so writers never block
            pass

    def _pump(self, read: int) -> None:
        with os.fdopen(read, "rb", buffering=0) as pipe:
            pending = b""
            while chunk := pipe.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not KNOWN_LINES.search(line):
                        self._write(line + b"\n")
                if len(pending) > self.HOLD:
                    self._write(pending)
                    pending = b""
            if pending and not KNOWN_LINES.search(pending):
                self._write(pending)

    def stop(self) -> None:
        if self._saved is None:
            return
        with contextlib.suppress(ValueError, AttributeError, OSError):
            sys.stderr.flush()
        try:
            stat = os.fstat(2)
            ours = (stat.st_dev, stat.st_ino) == self._pipe_id
        except OSError:
            ours = False
        if ours:  # fd 2 may have been pointed elsewhere since (pytest's capture does): leave that alone
            os.dup2(self._saved, 2)  # closes the pipe's writing end: the thread reads to its end and stops
            # A child process that outlives this one may still hold the writing end: wait, not forever.
            self._thread.join(timeout=2)
        os.close(self._saved)
        self._saved = None


_process_filter: _StderrFilter | None = None
_process_filter_lock = threading.Lock()


def filter_tensorflow_lines(verbose: int | None = None) -> None:
    """TensorFlow's known lines (start-up and run time) off the console from now until the process
    ends; every other line passes. Idempotent; a no-op with trainer.verbose=3 or TFTRAIN_TF_LOGS=1."""
    global _process_filter
    if tf_logs_wanted(verbose):
        return
    with _process_filter_lock:
        if _process_filter is not None:
            return
        stderr_filter = _StderrFilter()
        if stderr_filter.start():
            _process_filter = stderr_filter
            # atexit runs after Python has printed an uncaught exception's traceback into the pipe.
            atexit.register(_stop_process_filter)


def _stop_process_filter() -> None:
    global _process_filter
    with _process_filter_lock:
        if _process_filter is not None:
            _process_filter.stop()
            _process_filter = None


@contextlib.contextmanager
def quiet_tensorflow(verbose: int | None = None):
    """Around importing TensorFlow and creating the strategy (its first device query). The filter
    it starts stays for the rest of the process (TensorFlow's later lines; see the module's text)."""
    filter_tensorflow_lines(verbose)
    yield


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


_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s'\"]+@")


class LogFormatter(logging.Formatter):
    """`[hh:mm:ss] message`, with the level named only from WARNING up (the console's lines carry
    no logger name and level prefix: a 43-character prefix on every line was noise)."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = "%H:%M:%S", **kwargs):
        super().__init__("[%(asctime)s] %(message)s", datefmt)

    def format(self, record: logging.LogRecord) -> str:
        # A URI's user-info (`https://user:token@host`) never reaches the console or tftrain.log,
        # whoever logs it: Hydra's list of a sweep's jobs repeats the command line's overrides.
        text = _CREDENTIALS.sub(r"\1***@", super().format(record))
        if record.levelno >= logging.WARNING:
            stamp, _, rest = text.partition("] ")
            text = f"{stamp}] {record.levelname}: {rest}"
        return text
