"""What tftrain's Hydra sweepers (search.OptunaSearch, pbt.PbtSearch) share: the launcher that
Hydra's context makes in `setup`, and Hydra's own check of a batch of overrides."""

from __future__ import annotations

from omegaconf import DictConfig


class LaunchingSweeper:
    """Hydra's Sweeper plumbing; subclasses implement `sweep(arguments)` with `self.launcher`."""

    config: DictConfig | None = None
    hydra_context = None
    launcher = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def validate_batch_is_legal(self, batch) -> None:
        """Hydra's check that every job's overrides compose (an error now, in this process)."""
        from hydra.plugins.sweeper import Sweeper

        Sweeper.validate_batch_is_legal(self, batch)
