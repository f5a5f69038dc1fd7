"""Learning-rate schedules: Keras LearningRateSchedules with PyTorch's semantics, composable,
with checkpointable state (see each class' docstring; durations are in steps), and
`build_for_run`, which builds a config option's schedule (durations in epochs) for a run.

Importing this package registers every class with Keras (package "tftrain"), so saved models
whose optimizer uses one load without custom_objects.
"""

from tftrain.schedules._base import Schedule, ScheduleArgumentError
from tftrain.schedules.build import Run, build_for_run
from tftrain.schedules.compose import Join, Scaled, Warmup
from tftrain.schedules.cyclic import Cyclic, OneCycle
from tftrain.schedules.decay import Constant, Cosine, CosineRestarts, MultiStep, Polynomial, Step, WarmupStableDecay
from tftrain.schedules.plateau import Plateau
from tftrain.schedules.swa import SWALR

__all__ = ["Schedule", "ScheduleArgumentError", "Run", "build_for_run", "Constant", "Step", "MultiStep",
           "Polynomial", "Cosine", "CosineRestarts", "Cyclic", "OneCycle", "Plateau", "Warmup", "Join", "Scaled",
           "WarmupStableDecay"]
