"""The Optuna study a sweep keeps in its directory, as its jobs and its sweeper reach it: the
environment that names a job's trial, the study's files, and the storage."""

from __future__ import annotations

import logging

log = logging.getLogger("tftrain")

ENV_TRIAL = "TFTRAIN_OPTUNA_TRIAL"
ENV_STUDY = "TFTRAIN_OPTUNA_STUDY"
STUDY_FILE = "optuna_study.json"
RESULTS_FILE = "optimization_results.yaml"


def open_storage(url: str, created: bool = False):
    """Optuna's RDB storage at `url`. SQLite waits up to a minute for a lock, not 5 s: the trials of
    a parallel batch report to the same file at the same epochs. `created`: the sweeper created
    the tables and checked their version already (the check costs a trial's job ~0.4 s)."""
    import optuna

    quiet_optuna()
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, skip_compatibility_check=created,
                                      skip_table_creation=created)


def quiet_optuna() -> None:
    """Optuna logs a line per study created and per trial told, and its storage layer (alembic)
    several at start-up: the sweeper writes its own single line per trial instead."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
