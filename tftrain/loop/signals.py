"""SIGTERM and SIGINT while a run trains: preemption (SLURM, Kubernetes and cloud schedulers send
SIGTERM first) ends in a checkpoint at the current step rather than in lost work."""

from __future__ import annotations

import logging
import os
import signal
import threading

log = logging.getLogger("tftrain")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """SIGTERM and SIGINT while a run is in progress (a context manager around it, in the main
    thread): the first is remembered, and put into the trainer's stop flag once it has one
    (`attach`); the second ends the process at once."""

    def __init__(self):
        self.signum: int | None = None
        self._flag = None
        self._previous: dict = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, old in self._previous.items():
            signal.signal(signum, old)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # a second signal: stop now
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        if self._flag is not None:
            self._flag.assign(1)
        log.warning("Received %s: stopping at the end of the current step, after a checkpoint (send it again to "
                    "stop at once).", signal.Signals(signum).name)

    def request(self, signum: int) -> None:
        """A stop asked on this run's behalf, without a log line (a seed group's signal, which its
        first member's `StopSignals` reports: tftrain.cli.launcher)."""
        if self.signum is None:
            self.signum = signum
            if self._flag is not None:
                self._flag.assign(1)

    def attach(self, flag) -> None:
        """The trainer's stop flag (a tf.Variable reduced across workers in the step)."""
        self._flag = flag
        if self.signum is not None:
            flag.assign(1)
