"""Schema of the `trainer` group: how the loop runs (epochs, batch, seed, devices, checkpoints)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from tftrain.errors import require
from tftrain.loop.distribute import STRATEGIES as STRATEGY_FACTORIES
from tftrain.schema.registry import schema

MIXED_PRECISION = (None, "mixed_float16", "mixed_bfloat16")
STRATEGIES = tuple(STRATEGY_FACTORIES)
RESUME = ("auto", "never", "must")
MAX_EPOCHS = 1_000_000


@schema("trainer", "default")
@dataclass(kw_only=True)
class TrainerConf:
    epochs: int = 30  # passes over the training split
    batch_size: int = 64  # global batch, split across replicas
    accumulate_steps: int = 1  # an update from N consecutive batches of batch_size / N, gradients summed: the same update, 1/N of the activation memory
    seed: int = 0  # model init, shuffling, dropout and synthetic data
    steps_per_execution: Any = "auto"  # training steps per call into the compiled step; auto: timed early in the run, the fewest that keep the host's overhead under 5%
    jit_compile: Any = "auto"  # XLA-compile the training step: true | false | auto (on with a GPU, unless trainer.deterministic; off on CPUs)
    mixed_precision: Optional[str] = None  # null | mixed_float16 (with loss scaling) | mixed_bfloat16
    strategy: str = "auto"  # auto | default | mirrored | one_device | multi_worker (the cluster from TF_CONFIG, else from the SLURM step: srun; port TFTRAIN_PORT, default 8888)
    cpu_devices: int = 1  # split the CPU into N logical devices (mirrored training without GPUs)
    scale_lr: bool = False  # linear scaling rule: multiply the learning rate by the number of replicas
    lr_reference_batch: Optional[int] = None  # linear scaling rule for batch sizes (Goyal et al. 2017): optimizer.lr is the rate for this global batch, scaled by trainer.batch_size / lr_reference_batch; null: not scaled
    deterministic: bool = False  # deterministic ops: same command, bit-identical weights and metrics
    keep_checkpoints: int = 3  # checkpoints kept in <run>/checkpoints (the latest ones)
    checkpoint_every_steps: int = 0  # also checkpoint every N steps (0: at epoch ends only)
    checkpoint_at_steps: List[int] = field(default_factory=list)  # also checkpoint at these steps (counted over the whole run) and keep those checkpoints through keep_checkpoints' rotation: branch points (task=budgets)
    nan_recovery: int = 0  # on a NaN/Inf loss: restore the last checkpoint, scale the rate down, retry N times
    nan_lr_factor: float = 0.5  # the learning-rate scale applied at each NaN recovery
    resume: str = "auto"  # auto: resume from the run directory's newest loadable checkpoint | never: move them aside, start at step 0 | must: fail when there is none
    verbose: int = 1  # 0 no per-epoch lines; 1 a live line per epoch on a terminal, ending as its summary (plain summary lines in a pipe or a sweep); 2 summary lines only; 3 also TensorFlow's own start-up and C++ log lines
    objective: Optional[str] = None  # the metric the CLI returns to Hydra sweepers (e.g. Optuna); null: val_ + the problem's first metric
    objective_mode: Optional[str] = None  # max | min; null: from the metric (min for loss, mae, rmse, ...; max for accuracy, auc, r2, ...)

    def __post_init__(self):
        require(0 < self.epochs <= MAX_EPOCHS, "epochs", self.epochs, f"an integer in [1, {MAX_EPOCHS:,}]")
        require(0 < self.batch_size < 2 ** 31, "batch_size", self.batch_size, "an integer > 0 (the global batch)")
        require(self.resume in RESUME, "resume", self.resume, f"one of {list(RESUME)}")
        require(self.accumulate_steps >= 1, "accumulate_steps", self.accumulate_steps, "an integer >= 1")
        require(self.batch_size % self.accumulate_steps == 0, "accumulate_steps", self.accumulate_steps,
                f"a divisor of trainer.batch_size ({self.batch_size}): each update is accumulate_steps batches of "
                "batch_size / accumulate_steps")
        require(self.seed >= 0, "seed", self.seed, "an integer >= 0")
        require(self.steps_per_execution == "auto" or (isinstance(self.steps_per_execution, int)
                                                        and not isinstance(self.steps_per_execution, bool)
                                                        and self.steps_per_execution > 0),
                "steps_per_execution", self.steps_per_execution, "auto or an integer > 0")
        require(self.jit_compile in ("auto", True, False), "jit_compile", self.jit_compile, "auto, true or false")
        require(self.mixed_precision in MIXED_PRECISION, "mixed_precision", self.mixed_precision,
                "null, mixed_float16 or mixed_bfloat16")
        require(self.strategy in STRATEGIES, "strategy", self.strategy, f"one of {list(STRATEGIES)}")
        require(self.keep_checkpoints > 0, "keep_checkpoints", self.keep_checkpoints, "an integer > 0")
        require(self.verbose in (0, 1, 2, 3), "verbose", self.verbose, "0, 1, 2 or 3")
        require(self.lr_reference_batch is None or self.lr_reference_batch > 0, "lr_reference_batch",
                self.lr_reference_batch, "null or an integer > 0 (the global batch optimizer.lr is given for)")
        require(not (self.lr_reference_batch and self.scale_lr), "lr_reference_batch", self.lr_reference_batch,
                "null while trainer.scale_lr=true (both scale the rate: by the global batch, and by the replicas)",
                "set one of them: trainer.lr_reference_batch already follows the global batch, replicas included")
        require(self.cpu_devices >= 1, "cpu_devices", self.cpu_devices, "an integer >= 1")
        require(self.checkpoint_every_steps >= 0, "checkpoint_every_steps", self.checkpoint_every_steps,
                "an integer >= 0 (0: checkpoint at epoch ends only)")
        require(all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in self.checkpoint_at_steps),
                "checkpoint_at_steps", list(self.checkpoint_at_steps), "a list of steps, each an integer >= 1")
        require(self.nan_recovery >= 0, "nan_recovery", self.nan_recovery, "an integer >= 0")
        require(0 < self.nan_lr_factor < 1, "nan_lr_factor", self.nan_lr_factor, "a number in (0, 1)")
        require(self.objective_mode in (None, "min", "max"), "objective_mode", self.objective_mode,
                "null (from the metric), min or max")
