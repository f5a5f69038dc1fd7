"""Where a run's start-up time goes: metrics.json's `startup_s`, phase by phase, from the process'
launch to the end of the first training step (scripts/benchmark.py reports it)."""

from __future__ import annotations

import os
import time


def process_age() -> float | None:
    """Seconds since this process was launched (Linux: /proc), or None where unknown."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class Phases:
    """`mark(name)` ends the phase `name` (timed from the previous mark); `seconds` maps each phase
    to its duration, the first being the process' age when the recorder was made."""

    def __init__(self):
        age = process_age()
        self.seconds: dict[str, float] = {"process_start_to_train": round(age, 3)} if age is not None else {}
        self._last = time.perf_counter()

    def mark(self, name: str, at: float | None = None) -> None:
        """End phase `name` now (or at the perf_counter time `at`)."""
        now = time.perf_counter() if at is None else at
        self.seconds[name] = round(self.seconds.get(name, 0.0) + now - self._last, 3)
        self._last = now
