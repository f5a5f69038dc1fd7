"""Short names for a sweep's run directories: `<job number>_<its overrides, compacted>`.

Hydra's `override_dirname` repeats every key in full and every float to 17 digits (an Optuna
trial's directory ran to ~110 characters). Here keys are cut to their last part when that stays
unambiguous within the job, floats to 4 significant digits, and the whole to `LIMIT` characters
(with a hash of the full overrides when cut, so names stay distinct). The keys the sweep varies come
first, so they survive the cut. The name is a pure function of the overrides and the swept keys,
so a rerun sweep finds the same directories. The full overrides are in each
run's .hydra/overrides.yaml and in the sweep's summary.
"""

from __future__ import annotations

import hashlib
import re

LIMIT = 64
LEFT_OUT = ("hydra.", "logger")  # where metrics go does not tell runs apart
_FLOAT = re.compile(r"[-+]?(\d+\.\d*|\.\d+|\d+)[eE][-+]?\d+|[-+]?(\d+\.\d*|\.\d+)")


def _value(value: str) -> str:
    if _FLOAT.fullmatch(value):
        value = f"{float(value):.4g}"
    value = value.replace("/", "_").replace(" ", "")
    return re.sub(r"[\[\]'\"]", "", value)


def swept_keys(args: list[str]) -> list[str]:
    """The keys a multirun command line sweeps (`a=1,2`, `a=range(..)`, `a=choice(..)`, ...)."""
    keys = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and not key.startswith("-") and (re.match(r"(range|choice|interval|glob|tag)\(", value)
                                                or ("," in value and not value.startswith(("[", "{", "'", '"')))):
            keys.append(key.lstrip("+~"))
    return keys


def short_dirname(overrides, exclude=(), first=()) -> str:
    """`overrides` (a job's `hydra.overrides.task`) as a short directory name, the keys in `first`
    (what the sweep varies) first; keys in `exclude`, and hydra.* and logger keys, are left out."""
    pairs = []
    for override in overrides:
        key, sep, value = str(override).partition("=")
        key = key.lstrip("+~")
        if not sep or key.startswith(LEFT_OUT) or key in exclude:
            continue
        pairs.append((key, value))
    pairs.sort(key=lambda kv: (kv[0] not in first, kv[0]))
    tails = [k.rsplit(".", 1)[-1] for k, _ in pairs]
    parts = [f"{tail if tails.count(tail) == 1 else key}={_value(value)}" for (key, value), tail in zip(pairs, tails)]
    name = ",".join(parts)
    if len(name) > LIMIT:
        digest = hashlib.sha1(",".join(f"{k}={v}" for k, v in pairs).encode()).hexdigest()[:8]
        name = name[: LIMIT - 9].rstrip(",") + "~" + digest
    return name
