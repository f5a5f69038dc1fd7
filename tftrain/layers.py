"""Layers Keras lacks (weight normalization lands with the initializers work)."""
