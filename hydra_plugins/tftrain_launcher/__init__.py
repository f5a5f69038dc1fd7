"""tftrain's sweep launcher, the default for `-m` (`hydra/launcher=tftrain`, set in conf/config.yaml):
Hydra's basic launcher (jobs one after another in this process), except that jobs which differ only
in `trainer.seed` train together, as one seed group (tftrain.cli.launcher).

As hydra_plugins/tftrain_optuna_sweeper: Hydra imports every module under `hydra_plugins` for any
command, so this one only registers the config and a thin Launcher that imports the
implementation when it launches.
"""

# No `from __future__ import annotations`: Hydra runs this module without a sys.modules entry,
# where dataclasses cannot resolve string annotations.
from dataclasses import dataclass
from typing import Any, Sequence

from hydra.core.config_store import ConfigStore
from hydra.plugins.launcher import Launcher


@dataclass
class TftrainLauncherConf:
    _target_: str = "hydra_plugins.tftrain_launcher.TftrainLauncher"
    # Jobs that differ only in trainer.seed train as one group: one compiled step for all of them.
    # false: every job alone, one after another (Hydra's basic launcher).
    seed_groups: bool = True
    max_group: int = 8  # seeds per group at most; more seeds make several groups


ConfigStore.instance().store(group="hydra/launcher", name="tftrain", node=TftrainLauncherConf, provider="tftrain")


class TftrainLauncher(Launcher):
    def __init__(self, seed_groups: bool = True, max_group: int = 8) -> None:
        self.seed_groups, self.max_group = seed_groups, max_group
        self.config = self.hydra_context = self.task_function = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        from tftrain.cli.launcher import remember_compositions

        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        remember_compositions(hydra_context.config_loader)  # the sweeper's checks and the launch compose once

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        from tftrain.cli.launcher import launch

        return launch(self, job_overrides, initial_job_idx)
