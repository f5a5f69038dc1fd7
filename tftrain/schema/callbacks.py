"""Schemas of the `callbacks` group (see tftrain/schema/__init__.py for the conventions)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tftrain.errors import require

MODES = ("auto", "min", "max")


@dataclass
class TensorBoardConf:
    enabled: bool = True
    update_freq: int = 1
    histograms: bool = False  # weight histograms in tensorboard/train
    histogram_freq: int = 1  # every N epochs
    hparams: bool = True  # the run's config and final metrics for TensorBoard's HParams dashboard

    def __post_init__(self):
        require(self.update_freq > 0, "tensorboard.update_freq", self.update_freq, "an integer > 0")
        require(self.histogram_freq > 0, "tensorboard.histogram_freq", self.histogram_freq, "an integer > 0 (epochs)")


@dataclass
class CsvLoggerConf:
    enabled: bool = True  # per-epoch metrics in <run>/history.csv


@dataclass
class EarlyStoppingConf:
    enabled: bool = False
    monitor: str = "val_loss"
    mode: str = "auto"
    patience: int = 5
    min_delta: float = 0.0
    restore_best_weights: bool = True

    def __post_init__(self):
        require(self.mode in MODES, "early_stopping.mode", self.mode, "auto, min or max")
        require(self.patience >= 0, "early_stopping.patience", self.patience, "an integer >= 0")
        require(self.min_delta >= 0, "early_stopping.min_delta", self.min_delta, "a number >= 0")


@dataclass
class BestCheckpointConf:
    enabled: bool = False
    monitor: str = "val_accuracy"
    mode: str = "auto"

    def __post_init__(self):
        require(self.mode in MODES, "best_checkpoint.mode", self.mode, "auto, min or max")


@dataclass
class CallbacksConf:
    tensorboard: TensorBoardConf = field(default_factory=TensorBoardConf)
    early_stopping: EarlyStoppingConf = field(default_factory=EarlyStoppingConf)
    best_checkpoint: BestCheckpointConf = field(default_factory=BestCheckpointConf)
    csv_logger: CsvLoggerConf = field(default_factory=CsvLoggerConf)


SCHEMAS = {"callbacks": CallbacksConf}
