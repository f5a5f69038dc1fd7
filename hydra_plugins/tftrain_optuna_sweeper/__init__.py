"""tftrain's Optuna search as a Hydra sweeper: `hydra/sweeper=tftrain_optuna` (what
`hparams_search=optuna` selects).

Hydra imports every module under `hydra_plugins` when it starts, for any command and any app in
this environment: this one only registers the config (a dataclass in Hydra's ConfigStore) and a
thin Sweeper whose constructor imports the implementation, `tftrain.sweep.search` (and optuna), once the
sweeper is actually chosen. Hydra instantiates plugins only from the `hydra_plugins` package,
hence the wrapper rather than a `_target_` in tftrain.
"""

# No `from __future__ import annotations`: Hydra runs this module without a sys.modules entry,
# where dataclasses cannot resolve string annotations.
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper


@dataclass
class SamplerConf:
    seed: Optional[int] = 0  # TPE's seed: the same seed and search space draw the same trials
    n_startup_trials: int = 10  # TPE: random trials before it models the results


@dataclass
class PruningConf:
    # median: prune a trial whose objective at an epoch is worse than the median of the earlier
    # trials' at the same epoch
    n_startup_trials: int = 5  # trials that run to the end before any is pruned
    n_warmup_steps: int = 0  # epochs a trial trains before it can be pruned (0: from its first)
    # hyperband: successive halving in brackets, rungs at min_resource * reduction_factor**k epochs
    min_resource: int = 1
    # the most epochs a trial trains: the run's trainer.epochs, known before any trial starts ("auto":
    # Optuna's guess from the longest trial seen so far, which an early-stopped trial makes too low)
    max_resource: Any = "${trainer.epochs}"
    reduction_factor: int = 3


@dataclass
class TftrainOptunaSweeperConf:
    _target_: str = "hydra_plugins.tftrain_optuna_sweeper.TftrainOptunaSweeper"
    # maximize | minimize; by default from trainer.objective(_mode), as tftrain's sweep summary sorts
    direction: str = "${tftrain_direction:${trainer.objective},${trainer.objective_mode},${problem.metrics}}"
    study_name: str = "tftrain"
    # Any Optuna storage URL; null: sqlite:///<hydra.sweep.dir>/optuna.db, so the same command with
    # the same hydra.sweep.dir continues the study. Workers on several hosts: a server, e.g.
    # postgresql+psycopg2://user@host/db (SQLite on a shared file system is not safe)
    storage: Optional[str] = None
    n_trials: int = 20  # trials the study should have (those of earlier runs count)
    n_jobs: int = 1  # trials run at once: worker processes (asynchronous) or the size of a batch
    # true: n_jobs workers (this process and n_jobs-1 copies of it), each starting its next trial
    # the moment its last one ends; false: batches of n_jobs trials through hydra/launcher, each
    # batch waiting for its slowest trial
    asynchronous: bool = True
    # true: this process joins the study of hydra.sweep.dir as one more worker, one trial at a time
    # (e.g. each task of a SLURM array, with a PostgreSQL storage): no lock on the sweep directory,
    # trials of dead workers found by their heartbeats
    worker: bool = False
    # seconds between a running trial's heartbeats; a trial silent for 2x that is taken as killed
    # and retried in its own run directory (asynchronous workers only)
    heartbeat_s: int = 30
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: Optional[str] = None  # null | median | hyperband (options in `pruning`)
    pruning: PruningConf = field(default_factory=PruningConf)
    # The search space: key -> interval(a,b) | tag(log, interval(a,b)) | int(interval(a,b)) |
    # choice(a,b,...) | a,b,... | range(start,stop[,step]) | a fixed value; the command line's
    # overrides of the same syntax add to it and replace its entries.
    params: Optional[Dict[str, Any]] = None


ConfigStore.instance().store(group="hydra/sweeper", name="tftrain_optuna", node=TftrainOptunaSweeperConf,
                             provider="tftrain")


class TftrainOptunaSweeper(Sweeper):
    """The Hydra plugin; the search itself is `tftrain.sweep.search.OptunaSearch`."""

    def __init__(self, **config: Any) -> None:
        self.arguments = config  # hydra.sweeper.*, checked by OptunaSearch in setup
        self.search = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        # Built here, not in __init__, which Hydra's instantiate calls: it would wrap a config
        # error (OptunaSearch validates its arguments at once) in its own InstantiationException.
        # Hydra calls setup right after, before anything runs.
        from tftrain.sweep.search import OptunaSearch

        self.search = OptunaSearch(self.arguments)
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        return self.search.sweep(arguments)
