"""Sweeps: run directory names (rundirs), the summary and seed aggregates written at a sweep's end
(summary, aggregate), tftrain's Optuna search (search, search_space, study, pruning) and
population-based training (pbt), both Hydra sweepers (sweeper).

    python -m tftrain.sweep <sweep dir>     # rebuild the summaries
"""

__all__ = ["SweepSummary", "record_failure", "write_summary"]


def __getattr__(name):  # PEP 562: Hydra's callback classes load on first use
    if name in __all__:
        from tftrain.sweep import summary

        return getattr(summary, name)
    raise AttributeError(f"module 'tftrain.sweep' has no attribute {name!r}")
