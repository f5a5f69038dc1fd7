"""tftrain's population-based training as a Hydra sweeper: `hydra/sweeper=tftrain_pbt` (what
`hparams_search=pbt` selects).

As hydra_plugins/tftrain_optuna_sweeper: Hydra imports every module under `hydra_plugins` for any
command, so this one only registers the config and a thin Sweeper whose setup imports the
implementation, `tftrain.sweep.pbt`, once the sweeper is chosen.
"""

# No `from __future__ import annotations`: Hydra runs this module without a sys.modules entry,
# where dataclasses cannot resolve string annotations.
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper


@dataclass
class TftrainPbtSweeperConf:
    _target_: str = "hydra_plugins.tftrain_pbt_sweeper.TftrainPbtSweeper"
    # maximize | minimize; by default from trainer.objective(_mode), as tftrain's sweep summary sorts
    direction: str = "${tftrain_direction:${trainer.objective},${trainer.objective_mode},${problem.metrics}}"
    population: int = 4  # members, trained side by side (at once with hydra/launcher=parallel)
    perturbation_interval: int = 2  # epochs per round: every member trains them, then the bottom copy the top
    quantile_fraction: float = 0.25  # the bottom this share of members copies the top this share (at most half)
    resample_probability: float = 0.25  # per key: a fresh draw from the search space instead of a perturbation
    perturbation_factors: List[float] = field(default_factory=lambda: [1.2, 0.8])  # a number is multiplied by one
    exploit: bool = True  # false: the members only train (as independent runs), in rounds
    seed: Optional[int] = 0  # the initial values, the members copied and the perturbations; null: random
    # The search space, as hparams_search=optuna's: key -> interval(a,b) | tag(log, interval(a,b)) |
    # int(interval(a,b)) | choice(a,b,...) | a fixed value; the command line's overrides add to it.
    params: Optional[Dict[str, Any]] = None


ConfigStore.instance().store(group="hydra/sweeper", name="tftrain_pbt", node=TftrainPbtSweeperConf, provider="tftrain")


class TftrainPbtSweeper(Sweeper):
    """The Hydra plugin; the population itself is `tftrain.sweep.pbt.PbtSearch`."""

    def __init__(self, **config: Any) -> None:
        self.arguments = config  # hydra.sweeper.*, checked by PbtSearch in setup
        self.search = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        # Built here, not in __init__: Hydra's instantiate would wrap a config error in its own exception.
        from tftrain.sweep.pbt import PbtSearch

        self.search = PbtSearch(self.arguments)
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        return self.search.sweep(arguments)
