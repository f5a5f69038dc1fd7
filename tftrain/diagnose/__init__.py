"""Diagnosing a model before training: per-layer statistics of one batch (probe) and what they
say in words (verdicts). A lower layer: it imports nothing from the config layer."""
