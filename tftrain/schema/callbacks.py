"""Schema of the `callbacks` group: early stopping, the best checkpoint, stochastic weight
averaging, your own callbacks.
(Where metrics are logged is the `logger` group's.)"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from tftrain.errors import require
from tftrain.schema.registry import schema

MODES = ("auto", "min", "max")
ANNEALING = ("cos", "linear")


@dataclass
class EarlyStoppingConf:
    enabled: bool = False  # stop training once `monitor` has not improved for `patience` epochs
    monitor: str = "val_loss"  # a metric logged at each epoch end (val_<metric>, <metric>, loss, val_loss)
    mode: str = "auto"  # auto (from the metric: min for losses and errors, max for accuracy, auc, ...) | min | max
    patience: int = 5  # epochs without improvement before stopping
    min_delta: float = 0.0  # smaller changes do not count as improvement
    restore_best_weights: bool = True  # end with the best epoch's weights (then tested, saved as model.keras)

    def __post_init__(self):
        require(self.mode in MODES, "early_stopping.mode", self.mode, "auto, min or max")
        require(self.patience >= 0, "early_stopping.patience", self.patience, "an integer >= 0")
        require(self.min_delta >= 0, "early_stopping.min_delta", self.min_delta, "a number >= 0")


@dataclass
class BestCheckpointConf:
    enabled: bool = False  # also save <run>/best.keras whenever `monitor` improves
    monitor: Optional[str] = None  # null: trainer.objective (when it is a val_ metric), else val_loss
    mode: str = "auto"  # auto (from the metric) | min | max

    def __post_init__(self):
        require(self.mode in MODES, "best_checkpoint.mode", self.mode, "auto, min or max")


@dataclass
class SWAConf:
    # Stochastic weight averaging (Izmailov et al. 2018) with Lightning's StochasticWeightAveraging
    # names (tftrain.loop.swa); with optimizer.use_ema the EMA weights are what is averaged.
    enabled: bool = False  # average the weights of each epoch from swa_epoch_start, recompute BatchNorm statistics over the training data, then test and save the average as model.keras
    swa_epoch_start: float = 0.8  # the first averaged epoch: an epoch number >= 1 (1-based), or a fraction in (0, 1) of trainer.epochs (epoch int(fraction * epochs))
    swa_lr: Optional[float] = None  # the rate from swa_epoch_start on (annealed to over annealing_epochs); null: keep the configured schedule
    annealing_epochs: float = 10  # epochs from the schedule's rate at swa_epoch_start to swa_lr (0: swa_lr at once)
    annealing_strategy: str = "cos"  # cos | linear

    def __post_init__(self):
        s = self.swa_epoch_start
        require(0 < s < 1 or (s >= 1 and float(s).is_integer()), "swa.swa_epoch_start", s,
                "an epoch number >= 1 (the first averaged epoch, 1-based) or a fraction in (0, 1) of trainer.epochs")
        require(self.swa_lr is None or (math.isfinite(self.swa_lr) and self.swa_lr > 0), "swa.swa_lr", self.swa_lr,
                "a finite rate > 0, or null to keep the configured schedule")
        require(math.isfinite(self.annealing_epochs) and self.annealing_epochs >= 0, "swa.annealing_epochs",
                self.annealing_epochs, "a number of epochs >= 0")
        require(self.annealing_strategy in ANNEALING, "swa.annealing_strategy", self.annealing_strategy, "cos or linear")


@schema("callbacks", "default")
@dataclass
class CallbacksConf:
    early_stopping: EarlyStoppingConf = field(default_factory=EarlyStoppingConf)
    best_checkpoint: BestCheckpointConf = field(default_factory=BestCheckpointConf)
    swa: SWAConf = field(default_factory=SWAConf)
    extra: List[Dict[str, Any]] = field(default_factory=list)  # your own Keras callbacks: [{_target_: mymodule.MyCallback, arg: value}, ...]

    def __post_init__(self):
        for i, cb in enumerate(self.extra):
            require(isinstance(cb.get("_target_"), str), f"extra[{i}]", dict(cb),
                    "a mapping with `_target_: module.CallbackClass` and its arguments",
                    "e.g. callbacks.extra='[{_target_: mymodule.MyCallback}]'")
