"""Schemas of the `logger` group: where a run's metrics go. Several loggers can be chosen at once
(`logger=[tensorboard,mlflow]`, a Hydra multi-select group): each option lands under its own name
(`logger.tensorboard`, `logger.mlflow`), and `logger=[]` logs to none (history.csv and
metrics.json are always written). A user's own logger: `+logger.mine._target_=mymodule.MyLogger`
(a tftrain.loggers.Logger subclass; its keys go to its constructor)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

from tftrain.errors import require
from tftrain.schema.registry import schema


@schema("logger", "tensorboard")
@dataclass(kw_only=True)
class TensorBoardLoggerConf:
    _target_: str = "tftrain.loggers.TensorBoardLogger"
    update_freq: int = 1  # per-step scalars (batch_loss, learning_rate, grad_norm) every N steps
    histograms: bool = False  # also weight histograms (tensorboard/train) ...
    histogram_freq: int = 1  # ... every N epochs
    hparams: bool = True  # the run's config and final metrics for TensorBoard's HParams dashboard

    def __post_init__(self):
        require(self.update_freq > 0, "update_freq", self.update_freq, "an integer > 0 (steps)")
        require(self.histogram_freq > 0, "histogram_freq", self.histogram_freq, "an integer > 0 (epochs)")


@schema("logger", "csv")
@dataclass(kw_only=True)
class CsvLoggerConf:
    _target_: str = "tftrain.loggers.CsvLogger"
    update_freq: int = 1  # a row of steps.csv (step, batch_loss, learning_rate, grad_norm) every N steps

    def __post_init__(self):
        require(self.update_freq > 0, "update_freq", self.update_freq, "an integer > 0 (steps)")


@schema("logger", "mlflow")
@dataclass(kw_only=True)
class MlflowLoggerConf:
    _target_: str = "tftrain.loggers.MlflowLogger"
    tracking_uri: Optional[str] = None  # null: $MLFLOW_TRACKING_URI, else MLflow's default; e.g. sqlite:///mlflow.db, http://host:5000
    experiment: str = "tftrain"  # the MLflow experiment (a sweep's jobs and its parent run share it)
    artifact_location: Optional[str] = None  # where a new experiment keeps artifacts; null: the tracking server's default
    run_name: Optional[str] = None  # null: the run directory's name
    update_freq: int = 10  # per-step metrics (batch_loss, learning_rate, grad_norm) every N steps
    log_artifacts: bool = True  # model.keras (or its weights), history.csv, metrics.json, config.yaml
    tags: Dict[str, str] = field(default_factory=dict)  # extra run tags

    def __post_init__(self):
        require(self.update_freq > 0, "update_freq", self.update_freq, "an integer > 0 (steps)")
        require(bool(self.experiment), "experiment", self.experiment, "a non-empty experiment name")
