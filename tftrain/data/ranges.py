"""The training inputs' range, kept with the model (preprocessing.json's `input_range`), and the
warning when new inputs lie far outside it: a model trained on images scaled to [0, 1] and fed
raw 0-255 pixels still predicts, only badly, and nothing else would say why."""

from __future__ import annotations

import numpy as np

# Values count as far outside when beyond the training range widened by its span on each side
# (for [0, 1]: outside [-1, 2]); the warning comes when more than this share of them are.
FAR_OUTSIDE_SHARE = 0.10


def input_range(stats: dict | None) -> dict | None:
    """JSON-ready range facts from per-channel statistics (tftrain.data.sources.channel_stats' keys)."""
    if not stats or "min" not in stats:
        return None
    lo, hi = np.asarray(stats["min"], np.float64), np.asarray(stats["max"], np.float64)
    return {"min": lo.tolist(), "max": hi.tolist(), "mean": np.asarray(stats["mean"], np.float64).tolist(),
            "std": np.asarray(stats["std"], np.float64).tolist(), "global_min": float(lo.min()),
            "global_max": float(hi.max())}


def input_range_warning(x, facts: dict | None) -> str | None:
    """One paragraph when more than 10% of the values of inputs `x` lie outside the training range
    (preprocessing.json's `input_range` in `facts`) widened by its span; else None. Per channel
    (last axis) when `x` has as many channels as training had, else against the overall range."""
    rng = (facts or {}).get("input_range")
    x = np.asarray(x, dtype=np.float64)
    if not rng or x.size == 0:
        return None
    lo, hi = np.asarray(rng["min"], np.float64), np.asarray(rng["max"], np.float64)
    if x.ndim == 0 or lo.shape != (x.shape[-1],):
        lo, hi = np.float64(rng["global_min"]), np.float64(rng["global_max"])
    span = np.maximum(hi - lo, 1e-12)
    finite = np.isfinite(x)
    outside = finite & ((x < lo - span) | (x > hi + span))
    share = float(outside.sum()) / max(int(finite.sum()), 1)
    if share <= FAR_OUTSIDE_SHARE:
        return None
    g_lo, g_hi = rng["global_min"], rng["global_max"]
    width = g_hi - g_lo
    return (f"{share:.0%} of the input values lie far outside the range the model was trained on: training inputs "
            f"ran from {g_lo:.4g} to {g_hi:.4g}, these run from {np.nanmin(np.where(finite, x, np.nan)):.4g} to "
            f"{np.nanmax(np.where(finite, x, np.nan)):.4g} (more than {FAR_OUTSIDE_SHARE:.0%} beyond "
            f"[{g_lo - width:.4g}, {g_hi + width:.4g}]). The predictions are likely poor. Fix: scale or encode the "
            "inputs as the training data were (preprocessing.json's input_range shows that data's range), e.g. "
            "the same division by the maximum pixel value.")
