"""Which batch size? The batch_size experiment's sweep read back as one table per batch size,
beside the gradient noise scale B_simple of the same model and data.

    python scripts/batch_size_study.py                       # runs the preset, then task=noise_scale
    python scripts/batch_size_study.py --sweep outputs/experiments/batch_size/<date_time>
    python scripts/batch_size_study.py --sweep DIR --noise-scale outputs/<noise scale run>/noise_scale.json

Per batch size, over the seeds (mean ± sd): the final validation accuracy, the steps and the
training seconds (each epoch's `seconds` in metrics.json, compile time included) until the
validation accuracy first reaches --target, and the examples seen by then. McCandlish et al.
(2018) predict steps S = S_min (1 + B_noise / B): S halves with each doubling of a batch well below
B_noise and stops falling well above it. The script fits S_min and B_noise to the mean steps (a
least-squares line of S against 1 / B) and prints that empirical B_noise beside B_simple.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np


def tftrain(*args: str) -> None:
    """`python -m tftrain ARGS` (a sweep needs Hydra's command line), in this directory."""
    subprocess.run([sys.executable, "-m", "tftrain", *args], check=True)


def runs_of(sweep: Path) -> list[dict]:
    """Each completed run of the sweep: batch size, seed, per-epoch metrics and seconds."""
    import yaml

    runs = []
    for metrics_file in sorted(sweep.glob("*/metrics.json")):
        metrics = json.loads(metrics_file.read_text())
        if metrics.get("status") != "completed":
            continue
        cfg = yaml.safe_load((metrics_file.parent / "config.yaml").read_text())
        runs.append({"batch_size": int(cfg["trainer"]["batch_size"]), "seed": int(cfg["trainer"]["seed"]),
                     "steps_per_epoch": metrics["steps"] / metrics["epochs"], "history": metrics["history"],
                     "lr": metrics["history"]["learning_rate"][-1]})
    return runs


def to_target(run: dict, metric: str, target: float) -> tuple[float, float] | None:
    """(steps, training seconds) at the end of the first epoch whose `metric` reaches `target`."""
    values = run["history"][metric]
    epoch = next((i for i, v in enumerate(values) if v >= target), None)
    if epoch is None:
        return None
    return (epoch + 1) * run["steps_per_epoch"], float(sum(run["history"]["seconds"][:epoch + 1]))


def mean_sd(values, fmt: str = "{:.0f}") -> str:
    if not values:
        return "-"
    m = float(np.mean(values))
    return fmt.format(m) + (" ± " + fmt.format(float(np.std(values, ddof=1))) if len(values) > 1 else "")


def fit_noise_scale(means: list[tuple[int, float]]) -> tuple[float, float] | None:
    """S_min and B_noise of S = S_min (1 + B_noise / B), a least-squares line of S against 1 / B with
    relative residuals, over the batches up to the one with the fewest steps (past it the rate of the
    linear scaling rule itself is too high, which the model leaves out)."""
    best = min(range(len(means)), key=lambda i: means[i][1])
    batches, steps = (np.asarray(v, float) for v in zip(*means[:best + 1]))
    if len(batches) < 3:
        return None
    slope, intercept = np.polyfit(1.0 / batches, steps, 1, w=1.0 / steps)
    if intercept <= 0:
        return None
    return float(intercept), float(slope / intercept)


def knee(means: list[tuple[int, float]]) -> tuple[int, float] | None:
    """The first batch whose steps fell by less than a third from the previous batch's (perfect scaling
    halves them at each doubling), and the fraction saved. Under S = S_min (1 + B_noise / B) a doubling
    to B saves exactly a third at B = B_noise: on a grid of doublings this is the first batch past it."""
    for (b0, s0), (b1, s1) in zip(means, means[1:]):
        if 1 - s1 / s0 < 1 / 3:
            return b1, 1 - s1 / s0
    return None


def table(runs: list[dict], metric: str, target: float) -> tuple[str, list[tuple[int, float]]]:
    final = metric
    rows = [f"| batch | lr | seeds | final {metric} | steps to {target:g} | steps saved vs the previous batch "
            "| seconds to target | examples to target |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    means, previous = [], None
    for b in sorted({r["batch_size"] for r in runs}):
        group = [r for r in runs if r["batch_size"] == b]
        reached = [x for x in (to_target(r, metric, target) for r in group) if x is not None]
        steps = [s for s, _ in reached]
        mean_steps = float(np.mean(steps)) if len(reached) == len(group) else None
        saved = "-" if previous is None or mean_steps is None else f"{1 - mean_steps / previous:.0%}"
        if mean_steps is not None:
            means.append((b, mean_steps))
        previous = mean_steps
        note = "" if len(reached) == len(group) else f" ({len(reached)}/{len(group)} reached)"
        rows.append(f"| {b} | {group[0]['lr']:.3g} | {len(group)} | "
                    f"{mean_sd([r['history'][final][-1] for r in group], '{:.3f}')} | {mean_sd(steps)}{note} | "
                    f"{saved} | {mean_sd([t for _, t in reached], '{:.2f}')} | {mean_sd([s * b for s in steps])} |")
    return "\n".join(rows), means


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", type=Path, help="a finished experiment=batch_size sweep directory (default: run it)")
    parser.add_argument("--noise-scale", type=Path, action="append",
                        help="a noise_scale.json, repeatable (at initialization and at checkpoints); default: run "
                             "task=noise_scale at initialization")
    parser.add_argument("--metric", default="val_accuracy", help="the per-epoch metric of the target")
    parser.add_argument("--target", type=float, default=0.93, help="the value of --metric to reach")
    parser.add_argument("overrides", nargs="*", help="extra overrides for the sweep and the noise scale")
    args = parser.parse_args(argv)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    sweep = args.sweep
    if sweep is None:
        sweep = Path("outputs") / "experiments" / "batch_size" / stamp
        tftrain("experiment=batch_size", f"hydra.sweep.dir={sweep}", *args.overrides)
    noise = args.noise_scale
    if not noise:
        out = Path("outputs") / "noise_scale" / stamp
        # At the sweep's initialization (its model and data; B_simple does not depend on the optimizer there),
        # measured with big batches for a tight interval.
        tftrain("task=noise_scale", "trainer.batch_size=512", "task.num_steps=200", f"hydra.run.dir={out}",
                *[o for o in args.overrides if not o.startswith(("trainer.batch_size", "trainer.seed"))])
        noise = [out / "noise_scale.json"]
    runs = runs_of(sweep)
    if not runs:
        print(f"No completed runs in {sweep}.", file=sys.stderr)
        return 1
    text, means = table(runs, args.metric, args.target)
    print(f"Sweep {sweep}: {len(runs)} runs; target {args.metric} >= {args.target:g}\n")
    print(text + "\n")
    estimates = [json.loads(Path(f).read_text()) for f in noise]
    for ns, f in zip(estimates, noise):
        lo, hi = ns["interval"]
        print(f"B_simple at {ns['at']}: {ns['b_simple']:.3g} ({100 * ns['confidence']:g}% interval {lo:.3g} to "
              f"{hi:.3g}; {f})")
    bend = knee(means)
    if bend:
        print(f"Steps stop halving at batch {bend[0]}: {bend[1]:.0%} fewer steps than half that batch took.")
    fit = fit_noise_scale(means) if len(means) >= 3 else None
    if fit:
        s_min, b_noise = fit
        print(f"Fit of the steps to target, S = S_min (1 + B_noise / B): S_min {s_min:.3g} steps, "
              f"B_noise {b_noise:.3g}")
        for ns in estimates:
            same = abs(math.log10(b_noise / ns["b_simple"])) < 1
            print(f"  B_noise / B_simple at {ns['at']}: {b_noise / ns['b_simple']:.2g} "
                  f"(same order of magnitude: {'yes' if same else 'no'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
