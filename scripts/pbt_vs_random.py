"""Population-based training against random search with the same total epochs, on digits.

    python scripts/pbt_vs_random.py [--seeds 0 1 2] [--epochs 12] [--interval 3] [--population 4]

Per seed, two sweeps of `hparams_search=pbt` (its search space: optimizer.lr log-uniform in
[1e-4, 1e-1], optimizer.weight_decay log-uniform in [1e-6, 1e-2]; Adam, an MLP with 64 hidden
units, objective val_loss):
- PBT: `population` members, `epochs` epochs each, the bottom 25% copying the top 25% every
  `interval` epochs;
- random search: the same sweep with hydra.sweeper.exploit=false, i.e. the same `population`
  random draws (the sweeper's seed) trained `epochs` epochs each, independently: the same total
  epochs, paired with PBT's initial population.
Prints the winner's final val_loss, val_accuracy and test_accuracy and the members' mean final
val_loss per seed, their mean ± sd over the seeds, and the schedule PBT found (the winner's rate per
round, through its lineage).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def sweep(out: Path, seed: int, exploit: bool, args) -> dict:
    from tftrain.sweep.pbt import schedule_of

    sweep_dir = out / f"{'pbt' if exploit else 'random'}_{seed}"
    cmd = [sys.executable, "-m", "tftrain", "-m", "hparams_search=pbt", "data=digits", "model.hidden_units=[64]",
           f"trainer.epochs={args.epochs}", "trainer.batch_size=64", "trainer.verbose=0", f"trainer.seed={seed}",
           "trainer.objective=val_loss", "logger=[]", f"hydra.sweeper.population={args.population}",
           f"hydra.sweeper.perturbation_interval={args.interval}", f"hydra.sweeper.seed={seed}",
           f"hydra.sweeper.exploit={str(exploit).lower()}", f"hydra.sweep.dir={sweep_dir}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    state = json.loads((sweep_dir / "pbt.json").read_text())
    final = state["rounds"][-1]["objectives"]
    winner = min(range(len(final)), key=lambda i: final[i])
    metrics = json.loads((sweep_dir / f"member_{winner}" / "metrics.json").read_text())
    return {"val_loss": metrics["val_loss"], "val_accuracy": metrics["val_accuracy"],
            "mean_val_loss": statistics.mean(final), "test_accuracy": metrics["test_accuracy"],
            "schedule": schedule_of(state, winner),
            "exploits": sum(len(r["exploits"]) for r in state["rounds"]), "initial": state["initial"]}


def _stat(values) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--interval", type=int, default=3)
    parser.add_argument("--population", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None, help="where the sweeps go (default: a temporary directory)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="pbt_vs_random_"))
    results = {"PBT": [], "random search": []}
    for seed in args.seeds:
        for name, exploit in (("PBT", True), ("random search", False)):
            r = sweep(out, seed, exploit, args)
            results[name].append(r)
            print(f"seed {seed} {name:13s}: val_loss {r['val_loss']:.4f}  val_accuracy {r['val_accuracy']:.4f}  "
                  f"members' mean val_loss {r['mean_val_loss']:.4f}  "
                  f"test_accuracy {r['test_accuracy']:.4f}  (exploitations: {r['exploits']})", flush=True)
        schedule = results["PBT"][-1]["schedule"]
        print(f"seed {seed} PBT winner's schedule: " + ", ".join(
            f"epochs {s['epochs'][0] + 1}-{s['epochs'][1]} lr {s['values']['optimizer.lr']:.3g} "
            f"wd {s['values']['optimizer.weight_decay']:.2g} (member {s['member']})" for s in schedule), flush=True)
        print(f"seed {seed} initial rates: " + ", ".join(f"{v['optimizer.lr']:.3g}"
                                                           for v in results["PBT"][-1]["initial"]), flush=True)
    total = args.population * args.epochs
    print(f"\n{args.population} members x {args.epochs} epochs = {total} epochs each; seeds {args.seeds}; "
          f"sweeps in {out}")
    print("| search | winner's val_loss | its val_accuracy | its test_accuracy | members' mean val_loss |\n"
          "|---|---|---|---|---|")
    for name, rows in results.items():
        columns = ("val_loss", "val_accuracy", "test_accuracy", "mean_val_loss")
        print(f"| {name} | " + " | ".join(_stat([r[k] for r in rows]) for k in columns) + " |")


if __name__ == "__main__":
    main()
