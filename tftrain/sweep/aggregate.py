"""Runs that differ only in `trainer.seed` are one configuration: their metrics as mean, standard
deviation and a 95% Student t interval, configurations ranked by the objective's mean, and the
best called best only when it beats the runner-up beyond noise.

The test is Welch's t-test (two-sided, unequal variances; `scipy.stats.ttest_ind(equal_var=False)`)
on the objective's per-seed values of two configurations, at `ALPHA`: a seed-to-seed spread as large
as the gap between them means "tied within noise", however the means happen to be ordered. With a
single seed there is no spread to judge by, and the table says so.

Light on purpose (NumPy and SciPy, no TensorFlow): sweeps and `python -m tftrain.report` use it.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

ALPHA = 0.05  # Welch's test: p below this counts as a real difference
SEED_KEYS = ("trainer.seed",)  # overrides that make runs seeds of one configuration


def seedless(overrides: list[str]) -> tuple[str, ...]:
    """A run's overrides without its seed: the identity of its configuration."""
    return tuple(o for o in overrides if o.partition("=")[0].lstrip("+~") not in SEED_KEYS)


def seed_of(overrides: list[str]) -> str | None:
    for o in overrides:
        key, _, value = o.partition("=")
        if key.lstrip("+~") in SEED_KEYS:
            return value
    return None


def number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        else None


@dataclass
class Interval:
    """Mean, sample standard deviation and the 95% Student t interval of the mean of `n` values
    (std and interval None when n < 2)."""

    n: int
    mean: float | None
    std: float | None = None
    low: float | None = None
    high: float | None = None

    @classmethod
    def of(cls, values) -> "Interval":
        values = [v for v in (number(x) for x in values) if v is not None]
        n = len(values)
        if n == 0:
            return cls(0, None)
        mean = math.fsum(values) / n
        if n < 2:
            return cls(n, mean)
        from scipy import stats

        if _spread_is_noise(values):  # no spread but round-off (fsum's mean can be off in the last bit)
            return cls(n, values[0], 0.0, values[0], values[0])
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
        half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
        return cls(n, mean, std, mean - half, mean + half)

    def __str__(self) -> str:
        if self.mean is None:
            return ""
        if self.std is None:
            return f"{self.mean:.4f}"
        return f"{self.mean:.4f} ± {(self.high - self.mean):.4f}"


def _spread_is_noise(values: list[float]) -> bool:
    """All values equal up to float round-off (a metric that no seed changed: e.g. one accuracy
    read back as 0.95 and 0.9500000000000001). SciPy's moments would warn of precision loss there
    and return a meaningless p; 1e-9 relative is far below any float32 metric's real step."""
    return max(values) - min(values) <= 1e-9 * max(abs(v) for v in values)


def _mean_var(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = math.fsum(values) / n
    if _spread_is_noise(values):
        return mean, 0.0
    return mean, math.fsum((v - mean) ** 2 for v in values) / (n - 1)


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided p-value of Welch's t-test that `a` and `b` have the same mean (None when either
    has fewer than 2 values). Computed from exact sums (math.fsum): the t distribution is SciPy's.
    Seeds without spread (identical values) are handled here rather than left to SciPy, which
    warns and returns NaN: both without spread -> 1.0 when the values agree, else 0.0; one without
    spread -> the other's spread alone decides."""
    a, b = [v for v in map(number, a) if v is not None], [v for v in map(number, b) if v is not None]
    if len(a) < 2 or len(b) < 2:
        return None
    (mean_a, var_a), (mean_b, var_b) = _mean_var(a), _mean_var(b)
    se2_a, se2_b = var_a / len(a), var_b / len(b)
    if se2_a + se2_b == 0.0:
        return 1.0 if abs(mean_a - mean_b) <= 1e-9 * max(abs(mean_a), abs(mean_b)) else 0.0
    from scipy import stats

    t = (mean_a - mean_b) / math.sqrt(se2_a + se2_b)
    df = (se2_a + se2_b) ** 2 / (se2_a ** 2 / (len(a) - 1) + se2_b ** 2 / (len(b) - 1))
    return float(min(1.0, 2.0 * stats.t.sf(abs(t), df)))


@dataclass
class Configuration:
    """One configuration of a sweep: its seeds' runs (rows of tftrain.sweep)."""

    overrides: tuple[str, ...]
    runs: list[dict] = field(default_factory=list)
    rank: int = 0
    verdict: str = ""
    p_vs_best: float | None = None

    @property
    def completed(self) -> list[dict]:
        return [r for r in self.runs if r["status"] == "completed"]  # pruned runs stopped early: not comparable

    @property
    def failed(self) -> int:
        return sum(r["status"] == "failed" for r in self.runs)

    @property
    def seeds(self) -> list[str]:
        seeds = [s for s in (seed_of(r["overrides_list"]) for r in self.runs) if s is not None]
        return sorted(seeds, key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s))

    def values(self, metric: str) -> list[float]:
        return [v for v in (number(r["metrics"].get(metric)) for r in self.completed) if v is not None]

    def interval(self, metric: str) -> Interval:
        return Interval.of(self.values(metric))


def group(rows: list[dict]) -> list[Configuration]:
    """The rows' configurations, in order of first appearance."""
    configs: dict[tuple[str, ...], Configuration] = {}
    for row in rows:
        key = seedless(row["overrides_list"])
        configs.setdefault(key, Configuration(key)).runs.append(row)
    return list(configs.values())


def rank(configs: list[Configuration], objective: str, mode: str) -> list[Configuration]:
    """Best first by the objective's mean (configurations without a value last), each with a
    verdict against the best: `best` (beats the runner-up, Welch p < ALPHA), `tied for best`
    (the top ones within noise of each other), `worse` (p < ALPHA) or `not tested` (one seed)."""
    sign = -1.0 if mode == "max" else 1.0

    def key(c: Configuration):
        m = c.interval(objective).mean
        return (m is None, sign * m if m is not None else 0.0)

    ordered = sorted(configs, key=key)
    for i, c in enumerate(ordered, 1):
        c.rank = i
    scored = [c for c in ordered if c.interval(objective).mean is not None]
    if not scored:
        return ordered
    best = scored[0]
    for c in scored[1:]:
        c.p_vs_best = welch_p(best.values(objective), c.values(objective))
        c.verdict = ("not tested (fewer than 2 seeds)" if c.p_vs_best is None else
                     f"worse (p={c.p_vs_best:.3g})" if c.p_vs_best < ALPHA else f"tied with #1 (p={c.p_vs_best:.3g})")
    tested = [c for c in scored[1:] if c.p_vs_best is not None]
    untested = len(scored) - 1 - len(tested)
    if len(scored) == 1:
        best.verdict = "only configuration"
    elif not tested:
        best.verdict = "highest mean (not tested: fewer than 2 seeds)"
    elif any(c.p_vs_best >= ALPHA for c in tested):
        best.verdict = "tied for best within noise"
    else:
        best.verdict = (f"best (beats {'#2' if len(tested) == 1 and not untested else f'the {len(tested)} tested'}, "
                        f"p <= {max(c.p_vs_best for c in tested):.3g})" + (f"; {untested} not tested" if untested else ""))
    return ordered


def columns(metrics: list[str]) -> list[str]:
    """aggregate.csv's columns."""
    stats = [f"{m}_{s}" for m in metrics for s in ("mean", "std", "ci95_low", "ci95_high")]
    return ["rank", "config", "n", "failed", "seeds", "verdict", "p_vs_best", *stats]


def write_csv(path: Path, configs: list[Configuration], metrics: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns(metrics))
        for c in configs:
            cells = [c.rank, " ".join(c.overrides), len(c.completed), c.failed,
                     " ".join(c.seeds), c.verdict, "" if c.p_vs_best is None else c.p_vs_best]
            for m in metrics:
                iv = c.interval(m)
                cells += ["" if v is None else v for v in (iv.mean, iv.std, iv.low, iv.high)]
            writer.writerow(cells)


def conclusion(configs: list[Configuration], objective: str, mode: str) -> str:
    """One sentence on the ranking that the numbers support."""
    scored = [c for c in configs if c.interval(objective).mean is not None]
    if not scored:
        return "No configuration completed."
    best = scored[0]
    common = common_overrides(configs)
    name = " ".join(f"`{o}`" for o in best.overrides if o not in common) or "the base configuration"
    iv = best.interval(objective)
    if len(scored) == 1:
        return f"One configuration: {name}, {objective} {iv} (n={iv.n})."
    tied = [c for c in scored[1:] if c.p_vs_best is not None and c.p_vs_best >= ALPHA]
    untested = [c for c in scored[1:] if c.p_vs_best is None]
    top = "highest" if mode == "max" else "lowest"
    if len(untested) == len(scored) - 1:
        return (f"{name} has the {top} mean {objective} ({iv}), but with one seed nothing can be told from noise: "
                "sweep seeds (trainer.seeds=3).")
    unknown = (f" ({len(untested)} configuration(s) with one seed were not tested)" if untested else "")
    if tied:
        return (f"{name} has the {top} mean {objective} ({iv}, n={iv.n}) but is tied within noise with {len(tied)} "
                f"other configuration(s) (Welch's t-test, p >= {ALPHA}): more seeds or longer training would be "
                f"needed to separate them{unknown}.")
    others = "every other configuration" if not untested else f"the {len(scored) - 1 - len(untested)} tested ones"
    return f"{name} is best on {objective} ({iv}, n={iv.n}), ahead of {others} beyond noise (Welch's t-test, p < {ALPHA}){unknown}."


def to_markdown(configs: list[Configuration], objective: str, mode: str, metrics: list[str], title: str) -> str:
    common = common_overrides(configs)
    lines = [f"# {title}", "",
             f"{len(configs)} configuration(s); runs that differ only in `trainer.seed` are one configuration. "
             f"Values are mean ± the half-width of the 95% Student t interval over seeds; ranked by the mean of "
             f"`{objective}` ({'highest' if mode == 'max' else 'lowest'} first); verdicts from Welch's t-test "
             f"against #1 (two-sided, p < {ALPHA} counts as a difference).", "", conclusion(configs, objective, mode)]
    if common:
        lines += ["", "Common to all: " + " ".join(f"`{o}`" for o in common)]
    headers = ["#", "configuration", "n", "verdict", *metrics]
    lines += ["", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for c in configs:
        own = " ".join(o for o in c.overrides if o not in common) or "(base)"
        n = f"{len(c.completed)}" + (f" ({c.failed} failed)" if c.failed else "")
        cells = [str(c.rank), own.replace("|", "\\|"), n, c.verdict, *[str(c.interval(m)) for m in metrics]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def common_overrides(configs: list[Configuration]) -> list[str]:
    if len(configs) < 2:
        return []
    lists = [c.overrides for c in configs]
    return [o for o in lists[0] if all(o in other for other in lists[1:])]


def curve(c: Configuration, key: str) -> tuple[list[float], list[float], list[float]]:
    """Per epoch, the mean of history[key] over the configuration's runs and its 95% interval
    (the mean itself where fewer than 2 runs reached the epoch)."""
    histories = [r["metrics"].get("history", {}).get(key) or [] for r in c.completed]
    mean, low, high = [], [], []
    for epoch in range(max((len(h) for h in histories), default=0)):
        iv = Interval.of([h[epoch] for h in histories if epoch < len(h)])
        if iv.mean is None:
            break
        mean.append(iv.mean)
        low.append(iv.low if iv.low is not None else iv.mean)
        high.append(iv.high if iv.high is not None else iv.mean)
    return mean, low, high
