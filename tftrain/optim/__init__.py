"""Optimizer pieces Keras lacks: parameter groups (per-variable rates, weight decay on kernels
only) and learning-rate-free optimizers."""
