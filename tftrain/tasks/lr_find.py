"""`python -m tftrain task=lr_find [optimizer=...]`: the learning-rate range test of the
configured data, model and optimizer (tftrain.tasks.range_test), written to the run directory."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from tftrain.config.targets import label
from tftrain.errors import ConfigError
from tftrain.tasks.range_test import range_test
from tftrain.tasks.run import open_run


def lr_find(cfg: DictConfig, output_dir: str | Path | None = None) -> dict:
    """Run the range test of `cfg` (composed with `task=lr_find`); write lr_find.json and
    lr_find.png in `output_dir`; return the lr_find.json dict.

    >>> import tftrain
    >>> from tftrain.tasks.lr_find import lr_find
    >>> result = lr_find(tftrain.compose(["task=lr_find", "optimizer=sgd"]))  # doctest: +SKIP
    >>> result["suggestions"][result["suggested"]]  # doctest: +SKIP
    """
    if "num_steps" not in cfg.task:
        raise ConfigError("task", label(cfg.task), "task=lr_find (this function runs the range test)",
                          "compose the config with `task=lr_find`")
    with open_run(cfg, output_dir, resumes=False) as run:
        return range_test(run.cfg, run.run_dir, run.strategy)
