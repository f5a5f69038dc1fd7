"""What the training loop prints per epoch (`trainer.verbose`).

- 0: nothing per epoch.
- 1 (default): on a terminal, one live progress line per epoch (steps done, running loss and
  metrics) that ends as the epoch's single summary line; off a terminal (a pipe, a CI or sweep
  job's log file), the summary lines only: no carriage returns, backspaces or colour codes.
- 2: the summary lines only, on a terminal too.

Summary lines go through the `tftrain` logger (so they reach the run's log file too); the live
line is written to stdout, where the console log handler writes, and erased before each log line.
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("tftrain")

BAR = 24
MIN_INTERVAL = 0.1  # seconds between live updates


def format_metrics(metrics: dict[str, float]) -> str:
    return " - ".join(f"{k} {v:.4g}" if k in ("lr", "learning_rate") else f"{k} {v:.4f}" for k, v in metrics.items())


class Progress:
    def __init__(self, verbose: int, epochs: int, steps_per_epoch: int, stream=None):
        self.verbose, self.epochs, self.steps = verbose, epochs, steps_per_epoch
        self.stream = stream or sys.stdout
        self.live = verbose in (1, 3) and _is_terminal(self.stream)
        self._shown, self._last = 0, 0.0

    def update(self, epoch: int, done: int, metrics) -> None:
        """Steps `done` of epoch `epoch` (0-based); `metrics()` gives the running metrics (called
        only when the live line is redrawn)."""
        now = time.monotonic()
        if not self.live or (now - self._last < MIN_INTERVAL and done < self.steps):
            return
        self._last = now
        filled = int(BAR * done / self.steps)
        bar = "=" * max(filled - 1, 0) + (">" if done < self.steps else "=") * (filled > 0) + "." * (BAR - filled)
        text = f"epoch {epoch + 1}/{self.epochs} [{bar}] {done}/{self.steps} - {format_metrics(metrics())}"
        self._write("\r" + text.ljust(self._shown))
        self._shown = len(text)

    def clear(self) -> None:
        """Erase the live line (before a log line takes its place)."""
        if self._shown:
            self._write("\r" + " " * self._shown + "\r")
            self._shown = 0

    def end_epoch(self, epoch: int, seconds: float, logs: dict[str, float]) -> None:
        self.clear()
        if self.verbose:
            log.info("epoch %d/%d - %.2fs - %s", epoch + 1, self.epochs, seconds, format_metrics(logs))

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
