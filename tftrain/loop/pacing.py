"""How many training steps each call into the compiled step runs (`trainer.steps_per_execution`).

Every call costs a fixed host overhead `c` (Python, the dispatch into the graph, reading its
results, the callbacks' batch hooks, the progress line, the loggers) on top of `n` steps of `s`
seconds each, so the host's share of the time is c / (c + n s). With `auto`, the loop times a few
calls of 1 step and of `PROBE` steps early in the run, solves for c and s, and takes the smallest
n that keeps the host's share under `TARGET_OVERHEAD`, capped so a call still ends every
`MAX_CALL_SECONDS` (the progress line's cadence, a signal's latency) and within an epoch. Every
count runs through the same compiled function (the count is a tensor), so calibrating costs no
retracing. Checkpoint steps stay exact, NaNs are still found at their step, and per-step scalars
are still written per step: all of that happens inside the call.
"""

from __future__ import annotations

import math
import statistics

TARGET_OVERHEAD = 0.05
MAX_CALL_SECONDS = 0.2
PROBE = 8  # steps per call of the second probe
REPEATS = 3  # timed calls per probe (their median)
MIN_STEP_SECONDS = 1e-7  # a step's estimate is floored here: the timings' noise swamps anything shorter


class StepsPerCall:
    """`setting`: a count (fixed) or "auto". `next()` gives the next call's count (before the
    loop's own limits: epoch end, checkpoint steps); `observe(n, seconds)` records a call."""

    def __init__(self, setting, steps_per_epoch: int, agree=None):
        self.agree = agree  # list[float] -> the same list on every worker (Trainer.agree); None: as is
        self.steps_per_epoch = max(int(steps_per_epoch), 1)
        self.chosen: int | None = None if setting == "auto" else int(setting)  # None: still calibrating
        self._single: list[float] = []  # seconds of 1-step calls
        self._multi: list[tuple[int, float]] = []  # (steps, seconds) of calls of several steps
        self._traced = False  # the first call traces the compiled function: not timed
        self.estimate: tuple[float, float] | None = None  # (host overhead per call, seconds per step)

    def next(self) -> int:
        if self.chosen is not None:
            return self.chosen
        return 1 if not self._traced or len(self._single) < REPEATS else PROBE

    def observe(self, n: int, seconds: float) -> None:
        """A call of `n` steps took `seconds` (the loop may have shortened a probe to land on an
        epoch end or a checkpoint step: any count above 1 serves)."""
        if self.chosen is not None:
            return
        if not self._traced:
            self._traced = True
            return
        if n == 1 and len(self._single) < REPEATS:
            self._single.append(seconds)
        elif n > 1 and len(self._single) >= REPEATS:
            self._multi.append((n, seconds))
        if len(self._single) >= REPEATS and len(self._multi) >= REPEATS:
            self.chosen = self._choose()

    def _choose(self) -> int:
        t1 = statistics.median(self._single)
        step = statistics.median((t - t1) / (n - 1) for n, t in self._multi)
        if self.agree is not None:
            t1, step = self.agree([t1, step])
        step = max(step, MIN_STEP_SECONDS)
        overhead = max(t1 - step, 0.0)
        self.estimate = (overhead, step)
        # The fewest steps with overhead / (overhead + n * step) <= TARGET_OVERHEAD (1e-9: float noise).
        n = math.ceil(overhead * (1 - TARGET_OVERHEAD) / (TARGET_OVERHEAD * step) - 1e-9) if overhead > 0 else 1
        n = min(n, max(int(MAX_CALL_SECONDS / step), 1), self.steps_per_epoch)
        return max(n, 1)

    def describe(self) -> str:
        """A log line for the chosen count."""
        if self.estimate is None:
            return f"{self.chosen} step(s) per call"
        overhead, step = self.estimate
        if step <= MIN_STEP_SECONDS:  # the probes could not tell a step from the host's noise
            return (f"trainer.steps_per_execution=auto: {self.chosen} step(s) per call (a step is too short to time "
                    f"against the host's {_duration(overhead)} per call)")
        share = overhead / (overhead + self.chosen * step) if overhead + step > 0 else 0.0
        percent = f"{100 * share:.1f}%" if 100 * share < 99.95 else "over 99.9%"
        return (f"trainer.steps_per_execution=auto: {self.chosen} step(s) per call (a step takes {_duration(step)}, "
                f"the host {_duration(overhead)} per call: {percent} of the time)")


def _duration(seconds: float) -> str:
    """A short time in the unit that shows its digits: 1.25 ms, 37.1 µs, 0.2 s."""
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{1e3 * seconds:.2f} ms"
    if seconds >= 1e-6:
        return f"{1e6 * seconds:.1f} µs"
    return f"{1e9 * seconds:.0f} ns"
