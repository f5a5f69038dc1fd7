"""Plain files (`logger=csv`): `<run>/steps.csv`, one row every `update_freq` steps (step,
batch_loss, learning_rate, grad_norm), beside the per-epoch history.csv every run writes.

Rows are appended at each checkpoint (the commit point), and a resumed run first drops the rows
past the step it resumes from, so no step appears twice after a kill.
"""

from __future__ import annotations

import csv
from pathlib import Path

from tftrain.loggers.base import Logger, RunInfo

COLUMNS = ("step", "batch_loss", "learning_rate", "grad_norm")


class CsvLogger(Logger):
    def __init__(self, *, update_freq: int):
        self.step_freq = update_freq
        self.path: Path | None = None
        self._rows: list[dict] = []

    def start(self, run: RunInfo) -> None:
        self.path = Path(run.run_dir) / "steps.csv"
        kept = []
        if run.resumed_at and self.path.is_file():
            with open(self.path, newline="") as f:
                kept = [r for r in csv.DictReader(f) if int(r["step"]) < run.resumed_at]
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, COLUMNS)
            writer.writeheader()
            writer.writerows(kept)

    def log_steps(self, rows: list[dict]) -> None:
        # Steps at or past these were rolled back (a NaN recovery restored an earlier checkpoint).
        self._rows = [r for r in self._rows if r["step"] < rows[0]["step"]] + rows

    def flush(self) -> None:
        if self.path is None or not self._rows:
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, COLUMNS).writerows(self._rows)
        self._rows = []

    def close(self, status: str) -> None:
        self.flush()  # rows past the last checkpoint of a failed run are dropped if it is resumed (start)
