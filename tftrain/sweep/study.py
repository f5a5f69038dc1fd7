"""The Optuna study a sweep keeps in its directory, as its jobs and its sweeper reach it: the
environment that names a job's trial, the study's files, and the storage."""

from __future__ import annotations

import logging

log = logging.getLogger("tftrain")

ENV_TRIAL = "TFTRAIN_OPTUNA_TRIAL"
ENV_STUDY = "TFTRAIN_OPTUNA_STUDY"
STUDY_FILE = "optuna_study.json"
RESULTS_FILE = "optimization_results.yaml"


def open_storage(url: str, created: bool = False, heartbeat_s: int | None = None, on_stale=None):
    """Optuna's RDB storage at `url` (any SQLAlchemy URL Optuna takes: SQLite, PostgreSQL, MySQL).
    SQLite waits up to a minute for a lock, not 5 s: the trials of parallel workers report to the
    same file at the same epochs. `created`: the sweeper created the tables and checked their
    version already (the check costs a trial's job ~0.4 s). `heartbeat_s`: the workers of an
    asynchronous search record that their trial runs every `heartbeat_s`; a trial silent for 2x
    that is stale, and `on_stale(study, frozen_trial)` runs on it once it is told FAIL."""
    import warnings

    import optuna

    quiet_optuna()
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    heartbeat = {} if not heartbeat_s else {"heartbeat_interval": heartbeat_s, "grace_period": 2 * heartbeat_s,
                                            "heartbeat_stale_trial_callback": on_stale}
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, skip_compatibility_check=created,
                                          skip_table_creation=created, **heartbeat)


def redact(url: str) -> str:
    """`url` with its password masked (postgresql://user:***@host/db), for logs and files."""
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - not a URL at all: nothing recognisable to mask
        return url
    return parsed.render_as_string(hide_password=True) if parsed.password else url


def quiet_optuna() -> None:
    """Optuna logs a line per study created and per trial told, and its storage layer (alembic)
    several at start-up: the sweeper writes its own single line per trial instead."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
