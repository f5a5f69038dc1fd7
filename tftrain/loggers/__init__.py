"""Loggers (the `logger` config group): where a run's metrics go. See tftrain.loggers.base for the
hooks the loop calls."""

from tftrain.loggers.base import Logger, Loggers, RunInfo
from tftrain.loggers.csv import CsvLogger
from tftrain.loggers.mlflow import MlflowLogger
from tftrain.loggers.tensorboard import TensorBoardLogger

__all__ = ["CsvLogger", "Logger", "Loggers", "MlflowLogger", "RunInfo", "TensorBoardLogger"]
