"""The loop (orbit's split): `Trainer` owns the compiled step, `Controller` the outer loop
(epochs, evaluation, callbacks, checkpoints, preemption). It takes built objects and plain
options, and imports nothing from the config layer (tests/test_layering.py)."""

__all__ = ["Controller", "LoopOptions", "RunIO", "StepOptions", "Trainer"]


def __getattr__(name):  # PEP 562: TensorFlow loads with the classes, not with the package
    if name in ("Controller", "LoopOptions", "RunIO"):
        from tftrain.loop import controller

        return getattr(controller, name)
    if name in ("Trainer", "StepOptions"):
        from tftrain.loop import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'tftrain.loop' has no attribute {name!r}")
