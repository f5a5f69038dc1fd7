"""tftrain: config-driven training for Keras 3 on TensorFlow.

Public API: `compose(overrides) -> DictConfig`, `train(cfg) -> dict`,
`build_schedule(cfg, steps_per_epoch) -> LearningRateSchedule`,
`compare_runs(run_or_sweep_dirs, out=None, metrics=None) -> Path` (report.md beside report.png and
report.html: `python -m tftrain.report`), `summarize_sweep(sweep_dir) -> rows` (summary and
aggregate files: `python -m tftrain.sweep`).
"""

import sys

from tftrain.config.compose import compose
from tftrain.tasks.train import train  # light: TensorFlow is imported inside train(), after validation

__all__ = ["compose", "train", "build_schedule", "compare_runs", "summarize_sweep", "__version__"]
__version__ = "0.1.0"


def __getattr__(name):  # PEP 562: heavy names load on first use
    if name == "build_schedule":
        from tftrain.config.factory import build_schedule

        return build_schedule
    if name == "compare_runs":  # not `report`: that is the module tftrain.report
        from tftrain.report.compare import report

        return report
    if name == "summarize_sweep":
        from tftrain.sweep.summary import write_summary

        return write_summary
    raise AttributeError(f"module 'tftrain' has no attribute {name!r}")


def _register_keras_objects() -> None:
    """Import the modules whose Keras classes are registered, so `keras.models.load_model` finds
    them after a plain `import tftrain` (no custom_objects). TensorFlow loads here: its start-up
    lines are kept off the console (tftrain.console)."""
    from tftrain.console import quiet_tensorflow

    with quiet_tensorflow():
        import tftrain.layers  # noqa: F401
        import tftrain.optim  # noqa: F401
        import tftrain.schedules  # noqa: F401


# The CLI (`python -m tftrain`, the `tftrain` script) skips this: `--help` and `--cfg job` must
# answer in about a second, without importing TensorFlow (~3 s); training imports what it uses.
# While `-m` locates the package, Python sets sys.argv[0] to "-m".
if not (sys.argv and (sys.argv[0] == "-m" or sys.argv[0].endswith(("/tftrain", "\\tftrain", "tftrain.exe")))):
    _register_keras_objects()
