"""An exclusive lock on a file that names its holder (fcntl.flock): the kernel releases it when
the holding process dies, so a lock left by a killed process is simply taken over, and a live
holder makes a second process fail at once, naming it (pid, host, since when).

Taking a lock this process already holds only counts (flock would refuse a second file
descriptor of the same process): the CLI takes a run directory's lock before anything is written
there, and the task it calls takes it again."""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path


class HolderLock:
    """Subclasses say what a busy lock means (`busy`) and may note a takeover (`took_over`)."""

    _held: dict = {}  # realpath -> [open file, depth]: the locks this process holds

    def __init__(self, path: Path):
        self.path = Path(path)
        self._key: str | None = None

    def busy(self, holder: str) -> Exception:
        """The error for a lock held by `holder` (a live process)."""
        raise NotImplementedError

    def took_over(self, previous: str) -> None:
        """The lock named `previous`, a process that is gone."""

    def __enter__(self):
        key = os.path.realpath(self.path)
        held = HolderLock._held.get(key)
        if held is not None:
            held[1] += 1
            self._key = key
            return self
        file = open(self.path, "a+")  # "a+": opening changes nothing a holder wrote
        if not _take(file):
            file.seek(0)
            holder = file.read().strip() or "another process"
            file.close()
            error = self.busy(holder)
            error.holder = holder  # "pid N on host since ...": callers name it without parsing the message
            raise error from None
        file.seek(0)
        previous = file.read().strip()
        if previous:
            self.took_over(previous)
        file.seek(0)
        file.truncate()
        file.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        file.flush()
        HolderLock._held[key] = [file, 1]
        self._key = key
        return self

    def __exit__(self, *exc) -> None:
        key, self._key = self._key, None
        held = HolderLock._held.get(key) if key is not None else None
        if held is None:
            return
        held[1] -= 1
        if held[1] > 0:
            return
        del HolderLock._held[key]
        file = held[0]
        file.seek(0)
        file.truncate()
        fcntl.flock(file, fcntl.LOCK_UN)
        file.close()


# A reader asking who holds a lock (holder_of: a sweep's summary, a report) holds it shared for
# microseconds; a process taking it in that instant must not take the reader for a holder.
PROBE_RETRIES, PROBE_WAIT_S = 10, 0.02


def _take(file) -> bool:
    """flock(LOCK_EX) without blocking on a live holder: False when another process holds it."""
    for attempt in range(PROBE_RETRIES):
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < PROBE_RETRIES:
                time.sleep(PROBE_WAIT_S)
    return False


def holder_of(path: Path) -> str | None:
    """Who holds the lock file `path` now (another live process), or None."""
    try:
        with open(path) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return f.read().strip() or "another process"
            fcntl.flock(f, fcntl.LOCK_UN)
    except OSError:  # no lock file: nobody ever held it
        pass
    return None
