"""Schemas of the `task` group: what `python -m tftrain` does with the composed config.

The target is called as `target(cfg, output_dir=...)` and returns the dict it writes (e.g.
metrics.json), whose `trainer.objective` the CLI returns to Hydra's sweepers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import MISSING

from tftrain.errors import require
from tftrain.schema.registry import schema

SUGGESTIONS = ("valley", "steepest", "minimum", "slide")


@schema("task", "train")
@dataclass(kw_only=True)
class TrainTaskConf:
    """Train, validate each epoch, test at the end; write metrics.json and model.keras."""

    _target_: str = "tftrain.tasks.train.train"
    find_lr: bool = False  # first run the learning-rate range test (task=lr_find's settings, in <run>/lr_find/) and train at its suggested optimizer.lr
    suggestion: str = "minimum"  # with find_lr: which of the range test's suggestions to train at (minimum | valley | steepest | slide; README: minimum trained best)

    def __post_init__(self):
        require(self.suggestion in SUGGESTIONS, "suggestion", self.suggestion, f"one of {list(SUGGESTIONS)}")


@schema("task", "lr_find")
@dataclass(kw_only=True)
class LrFindTaskConf:
    """The learning-rate range test (tftrain/lr_find.py)."""

    _target_: str = "tftrain.tasks.lr_find.lr_find"
    min_lr: float = 1e-7  # the rate of the first step
    max_lr: float = 10.0  # the rate of the last step
    num_steps: int = 100
    smoothing: float = 0.9  # beta of the debiased moving average of the loss (0: raw loss; fastai's 0.98 lags ~4 decades of rate on 100 steps)
    divergence_threshold: float = 4.0  # stop once the smoothed loss exceeds this times the best one
    suggestion: str = "minimum"  # minimum (the lowest loss's rate / 10) | valley | steepest | slide (fastai's interval slide rule): the one "suggested"

    def __post_init__(self):
        require(self.min_lr > 0, "min_lr", self.min_lr, "a learning rate > 0, e.g. 1e-7")
        require(self.max_lr > self.min_lr, "max_lr", self.max_lr, f"a learning rate > min_lr ({self.min_lr})")
        require(self.num_steps >= 10, "num_steps", self.num_steps, "an integer >= 10 (100 is typical)")
        require(0 <= self.smoothing < 1, "smoothing", self.smoothing, "a number in [0, 1) (0: no smoothing)")
        require(self.divergence_threshold > 1, "divergence_threshold", self.divergence_threshold,
                "a number > 1 (times the best smoothed loss)")
        require(self.suggestion in SUGGESTIONS, "suggestion", self.suggestion, f"one of {list(SUGGESTIONS)}")


@schema("task", "init_check")
@dataclass(kw_only=True)
class InitCheckTaskConf:
    """One batch through the model as initialized: per-layer statistics and verdicts
    (tftrain/tasks/init_check.py)."""

    _target_: str = "tftrain.tasks.init_check.init_check"
    training: bool = True  # the forward pass in training mode (BatchNorm's batch statistics, dropout on), as the first step sees it; false: inference mode


@schema("task", "noise_scale")
@dataclass(kw_only=True)
class NoiseScaleTaskConf:
    """The gradient noise scale B_simple and the batch size it suggests (tftrain/tasks/noise_scale.py)."""

    _target_: str = "tftrain.tasks.noise_scale.noise_scale"
    micro_batches: int = 8  # each step's global batch (trainer.batch_size, B_big) split into this many micro-batches of B_small = batch_size / micro_batches, over all replicas
    num_steps: int = 100  # batches the estimates are averaged over (the weights stay fixed)
    confidence: float = 0.95  # of the interval (a bootstrap over the steps)
    run: Optional[str] = None  # a run directory: the estimate at the weights of its newest checkpoint (in <run>/checkpoints); null: at the initialization training starts from
    step: Optional[int] = None  # with run: the checkpoint of this step instead of the newest (one still in <run>/checkpoints)

    def __post_init__(self):
        require(self.micro_batches >= 2, "micro_batches", self.micro_batches,
                "an integer >= 2 (the estimate compares the gradient of the whole batch with its parts')")
        require(self.num_steps >= 2, "num_steps", self.num_steps, "an integer >= 2 (100 is typical)")
        require(0 < self.confidence < 1, "confidence", self.confidence, "a number in (0, 1), e.g. 0.95")
        require(self.step is None or self.run is not None, "step", self.step, "null unless task.run names a run",
                "set task.run=<run directory> too, or leave task.step out")


@schema("task", "predict")
@dataclass(kw_only=True)
class PredictTaskConf:
    """Predictions of a finished run's model for raw inputs (tftrain/predict.py)."""

    _target_: str = "tftrain.tasks.predict.predict"
    run: str = MISSING  # the run's directory (with config.yaml and model.keras)
    input: str = MISSING  # a .npz (x), a .csv with the run's feature columns, or a folder of images
    output: Optional[str] = None  # the CSV to write; null: predictions.csv in this task's run directory
    batch_size: int = 256
    trust_run: bool = False  # the run's own code (model=custom, data=custom, own loss/metrics/callbacks) and a Lambda layer in its model.keras may run; false: the run directory is read as data only, as Keras' safe_mode

    def __post_init__(self):
        require(self.batch_size > 0, "batch_size", self.batch_size, "an integer > 0")


@schema("task", "evaluate")
@dataclass(kw_only=True)
class EvaluateTaskConf:
    """A finished run's model scored on a file or one of its data's splits (tftrain/predict.py)."""

    _target_: str = "tftrain.tasks.evaluate.evaluate"
    run: str = MISSING  # the run's directory (with config.yaml and model.keras)
    input: Optional[str] = None  # a .npz (x, y), a .csv with the run's feature and label columns, or an image folder; null: task.split
    split: str = "test"  # with input null: the run's own train | val | test split
    batch_size: int = 256
    trust_run: bool = False  # the run's own code (model=custom, data=custom, own loss/metrics/callbacks) and a Lambda layer in its model.keras may run; false: the run directory is read as data only, as Keras' safe_mode

    def __post_init__(self):
        require(self.batch_size > 0, "batch_size", self.batch_size, "an integer > 0")
        require(self.split in ("train", "val", "test"), "split", self.split, "train, val or test")


@schema("task", "budgets")
@dataclass(kw_only=True)
class BudgetsTaskConf:
    """One warmup-stable-decay run for several training budgets (tftrain/tasks/budgets.py): the
    longest budget trained once, each shorter one's cooldown branched from its checkpoint."""

    _target_: str = "tftrain.tasks.budgets.budgets"
    budgets: List[float] = field(default_factory=lambda: [0.25, 0.5, 1.0])  # fractions of trainer.epochs, increasing, in (0, 1], each a whole number of epochs; each gets <run>/budget_<epochs>/

    def __post_init__(self):
        b = list(self.budgets)
        require(len(b) >= 1 and all(0 < x <= 1 for x in b) and all(x < y for x, y in zip(b, b[1:])), "budgets", b,
                "a non-empty, strictly increasing list of fractions of trainer.epochs in (0, 1], e.g. [0.25, 0.5, 1.0]")
