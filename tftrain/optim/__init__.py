"""Optimizer pieces Keras lacks: parameter groups (per-variable rates, weight decay on kernels
only) and learning-rate-free optimizers (Prodigy, D-Adapt Adam)."""

from tftrain.optim.dadapt_adam import DAdaptAdam
from tftrain.optim.param_groups import apply_param_groups, is_kernel, layer_depths, rate_factors
from tftrain.optim.prodigy import Prodigy
from tftrain.optim.two_pass import TwoPassOptimizer

__all__ = ["DAdaptAdam", "Prodigy", "TwoPassOptimizer", "apply_param_groups", "is_kernel", "layer_depths",
           "rate_factors"]
