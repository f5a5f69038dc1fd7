"""Schemas of the optimizer and trainer groups (conventions: __init__.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from tftrain.errors import require

# ---------------------------------------------------------------- optimizer


@dataclass
class OptimizerConf:
    name: str = "sgd"
    lr: float = 0.01
    weight_decay: Optional[float] = None
    clipnorm: Optional[float] = None
    global_clipnorm: Optional[float] = None
    clipvalue: Optional[float] = None
    use_ema: bool = False
    ema_momentum: float = 0.99

    def __post_init__(self):
        require(self.lr > 0, "lr", self.lr, "a learning rate > 0, e.g. 0.001")
        require(self.weight_decay is None or self.weight_decay >= 0, "weight_decay",
                self.weight_decay, "null or a number >= 0")
        for key in ("clipnorm", "global_clipnorm", "clipvalue"):
            v = getattr(self, key)
            require(v is None or v > 0, key, v, "null or a number > 0")
        clips = [k for k in ("clipnorm", "global_clipnorm", "clipvalue") if getattr(self, k) is not None]
        require(len(clips) <= 1, clips[-1] if clips else "clipnorm", getattr(self, clips[-1]) if clips else None,
                "at most one of clipnorm, global_clipnorm, clipvalue (Keras applies only one)",
                f"set all but one of {clips} to null")
        require(0 <= self.ema_momentum < 1, "ema_momentum", self.ema_momentum, "a number in [0, 1)")


@dataclass
class SgdConf(OptimizerConf):
    pass


@dataclass
class MomentumConf(OptimizerConf):
    momentum: float = 0.9

    def __post_init__(self):
        super().__post_init__()
        require(0 <= self.momentum < 1, "momentum", self.momentum, "a number in [0, 1)")


@dataclass
class AdagradConf(OptimizerConf):
    initial_accumulator_value: float = 0.1
    epsilon: float = 1e-7

    def __post_init__(self):
        super().__post_init__()
        require(self.initial_accumulator_value >= 0, "initial_accumulator_value",
                self.initial_accumulator_value, "a number >= 0")
        require(self.epsilon > 0, "epsilon", self.epsilon, "a number > 0")


@dataclass
class RmspropConf(OptimizerConf):
    rho: float = 0.9
    momentum: float = 0.0
    epsilon: float = 1e-7
    centered: bool = False

    def __post_init__(self):
        super().__post_init__()
        require(0 <= self.rho < 1, "rho", self.rho, "a number in [0, 1)")
        require(0 <= self.momentum < 1, "momentum", self.momentum, "a number in [0, 1)")
        require(self.epsilon > 0, "epsilon", self.epsilon, "a number > 0")


@dataclass
class NadamConf(OptimizerConf):
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7

    def __post_init__(self):
        super().__post_init__()
        for key in ("beta_1", "beta_2"):
            require(0 <= getattr(self, key) < 1, key, getattr(self, key), "a number in [0, 1)")
        require(self.epsilon > 0, "epsilon", self.epsilon, "a number > 0")


@dataclass
class AdamConf(NadamConf):
    amsgrad: bool = False


# ---------------------------------------------------------------- trainer and callbacks

MIXED_PRECISION = (None, "mixed_float16", "mixed_bfloat16")
OBJECTIVES = ("val_accuracy", "val_loss", "best_val_accuracy", "best_val_loss", "test_accuracy",
              "test_loss", "train_loss", "train_accuracy")
STRATEGIES = ("auto", "default", "mirrored", "one_device", "multi_worker")


@dataclass
class TrainerConf:
    epochs: int = 30
    batch_size: int = 64
    seed: int = 0
    steps_per_execution: int = 1
    jit_compile: bool = False
    mixed_precision: Optional[str] = None
    strategy: str = "auto"
    keep_checkpoints: int = 3
    verbose: int = 1
    objective: str = "val_accuracy"   # what the CLI returns to Hydra sweepers
    objective_mode: str = "max"
    cpu_devices: int = 1
    scale_lr: bool = False
    deterministic: bool = False
    checkpoint_every_steps: int = 0
    nan_recovery: int = 0
    nan_lr_factor: float = 0.5

    def __post_init__(self):
        require(self.epochs > 0, "epochs", self.epochs, "an integer > 0")
        require(self.batch_size > 0, "batch_size", self.batch_size, "an integer > 0 (the global batch)")
        require(self.seed >= 0, "seed", self.seed, "an integer >= 0")
        require(self.steps_per_execution > 0, "steps_per_execution", self.steps_per_execution, "an integer > 0")
        require(self.mixed_precision in MIXED_PRECISION, "mixed_precision", self.mixed_precision,
                "null, mixed_float16 or mixed_bfloat16")
        require(self.strategy in STRATEGIES, "strategy", self.strategy, f"one of {list(STRATEGIES)}")
        require(self.keep_checkpoints > 0, "keep_checkpoints", self.keep_checkpoints, "an integer > 0")
        require(self.verbose in (0, 1, 2), "verbose", self.verbose, "0, 1 or 2")
        require(self.cpu_devices >= 1, "cpu_devices", self.cpu_devices, "an integer >= 1")
        require(self.checkpoint_every_steps >= 0, "checkpoint_every_steps", self.checkpoint_every_steps,
                "an integer >= 0 (0: checkpoint at epoch ends only)")
        require(self.nan_recovery >= 0, "nan_recovery", self.nan_recovery, "an integer >= 0")
        require(0 < self.nan_lr_factor < 1, "nan_lr_factor", self.nan_lr_factor, "a number in (0, 1)")
        require(self.objective in OBJECTIVES, "objective", self.objective, f"one of {list(OBJECTIVES)}")
        require(self.objective_mode in ("min", "max"), "objective_mode", self.objective_mode, "min or max")


SCHEMAS = {
    "optimizer": {
        "sgd": SgdConf, "momentum": MomentumConf, "nesterov": MomentumConf, "adagrad": AdagradConf,
        "rmsprop": RmspropConf, "adam": AdamConf, "adamw": AdamConf, "nadam": NadamConf,
    },
    "trainer": TrainerConf,
}
