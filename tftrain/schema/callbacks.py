"""Schema of the `callbacks` group: early stopping, the best checkpoint, your own callbacks.
(Where metrics are logged is the `logger` group's.)"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from tftrain.errors import require
from tftrain.schema.registry import schema

MODES = ("auto", "min", "max")


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


@schema("callbacks", "default")
@dataclass
class CallbacksConf:
    early_stopping: EarlyStoppingConf = field(default_factory=EarlyStoppingConf)
    best_checkpoint: BestCheckpointConf = field(default_factory=BestCheckpointConf)
    extra: List[Dict[str, Any]] = field(default_factory=list)  # your own Keras callbacks: [{_target_: mymodule.MyCallback, arg: value}, ...]

    def __post_init__(self):
        for i, cb in enumerate(self.extra):
            require(isinstance(cb.get("_target_"), str), f"extra[{i}]", dict(cb),
                    "a mapping with `_target_: module.CallbackClass` and its arguments",
                    "e.g. callbacks.extra='[{_target_: mymodule.MyCallback}]'")
