"""Schemas of the `task` group: what `python -m tftrain` does with the composed config."""

from __future__ import annotations

from dataclasses import dataclass

from tftrain.errors import require

SUGGESTIONS = ("valley", "steepest", "minimum")


@dataclass
class TrainTaskConf:
    name: str = "train"


@dataclass
class LrFindTaskConf:
    """The learning-rate range test (tftrain/lr_find.py)."""

    name: str = "lr_find"
    min_lr: float = 1e-7
    max_lr: float = 10.0
    num_steps: int = 100
    smoothing: float = 0.9  # beta of the debiased exponential moving average of the loss
    divergence_threshold: float = 4.0  # stop once the smoothed loss exceeds this times the best one
    suggestion: str = "valley"  # which method's rate lr_find.json calls "suggested"

    def __post_init__(self):
        require(self.min_lr > 0, "min_lr", self.min_lr, "a learning rate > 0, e.g. 1e-7")
        require(self.max_lr > self.min_lr, "max_lr", self.max_lr, f"a learning rate > min_lr ({self.min_lr})")
        require(self.num_steps >= 10, "num_steps", self.num_steps, "an integer >= 10 (100 is typical)")
        require(0 <= self.smoothing < 1, "smoothing", self.smoothing, "a number in [0, 1) (0: no smoothing)")
        require(self.divergence_threshold > 1, "divergence_threshold", self.divergence_threshold,
                "a number > 1 (times the best smoothed loss)")
        require(self.suggestion in SUGGESTIONS, "suggestion", self.suggestion, f"one of {list(SUGGESTIONS)}")


SCHEMAS = {"task": {"train": TrainTaskConf, "lr_find": LrFindTaskConf}}
