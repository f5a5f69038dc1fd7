"""An exclusive lock on a file that names its holder (fcntl.flock): the kernel releases it when
the holding process dies, so a lock left by a killed process is simply taken over, and a live
holder makes a second process fail at once, naming it (pid, host, since when)."""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path


class HolderLock:
    """Subclasses say what a busy lock means (`busy`) and may note a takeover (`took_over`)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = None

    def busy(self, holder: str) -> Exception:
        """The error for a lock held by `holder` (a live process)."""
        raise NotImplementedError

    def took_over(self, previous: str) -> None:
        """The lock named `previous`, a process that is gone."""

    def __enter__(self):
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise self.busy(holder) from None
        self._file.seek(0)
        previous = self._file.read().strip()
        if previous:
            self.took_over(previous)
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        self._file.flush()
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.seek(0)
            self._file.truncate()
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
