"""What Hydra knows about this process' run, as plain data for the layers below: each group's
chosen option, the sweep a job belongs to, and the config as flat params (the loggers' hparams)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

# Config keys (prefixes) left out of a run's params: they do not change what is learned.
NOT_PARAMS = ("output_dir", "task", "logger", "trainer.verbose", "trainer.keep_checkpoints", "trainer.objective",
              "trainer.checkpoint_every_steps", "callbacks.best_checkpoint", "callbacks.extra")



def flat_params(cfg: DictConfig) -> dict[str, bool | int | float | str]:
    """The config as flat `group.key: value` params (lists as strings, nulls left out), without the
    keys that do not change what is learned (NOT_PARAMS); on the command line also each group's
    option (`optimizer: momentum`)."""
    flat: dict[str, bool | int | float | str] = dict(_choices())

    def visit(prefix: str, node):
        if isinstance(node, dict):
            for k, v in node.items():
                visit(f"{prefix}.{k}" if prefix else str(k), v)
        elif node is None or prefix.startswith(NOT_PARAMS):
            return
        elif isinstance(node, (bool, int, float, str)):
            flat[prefix] = node
        else:
            flat[prefix] = str(node)

    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    container.pop("hydra", None)
    visit("", container)
    return flat


def _choices() -> dict[str, str]:
    """Hydra's group choices of this run (empty outside a Hydra app, e.g. tftrain.compose)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        choices = HydraConfig.get().runtime.choices
    except (ValueError, ImportError):
        return {}
    return {str(k): str(v) for k, v in choices.items()
            if v is not None and "/" not in str(k) and not str(k).startswith(("hydra", "task", "logger"))}


def sweep_dir_of_job() -> Path | None:
    """The sweep directory when this process runs a job of a Hydra multirun."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
    except (ValueError, ImportError):
        return None
    return Path(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None
