"""Did you mean": the closest known name to a misspelt key, option or group."""

from __future__ import annotations

import difflib
from typing import Iterable

# Names users bring from Keras or PyTorch for tftrain's keys.
ALIASES = {"learning_rate": "lr", "optimiser": "optimizer", "scheduler": "schedule", "lr_scheduler": "schedule",
           "init": "initializer", "initialiser": "initializer", "dataset": "data", "batch": "batch_size",
           "epoch": "epochs", "num_epochs": "epochs", "max_epochs": "epochs"}


def _distance(a: str, b: str) -> int:
    """Edit distance counting a swap of two neighbours as one edit (optimal string alignment)."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to `word` (a known alias, or a close spelling), or None."""
    candidates = [str(c) for c in candidates]
    if ALIASES.get(word) in candidates:
        return ALIASES[word]
    close = difflib.get_close_matches(word, candidates, n=5, cutoff=0.6)
    return min(close, key=lambda c: (_distance(word, c), -difflib.SequenceMatcher(None, word, c).ratio())) \
        if close else None
