# python scripts/search_pruning.py [--trials 16] [--epochs 8] [--out outputs/search_pruning]
"""What pruning saves in a real Optuna search: the same seeded search run twice, without a pruner
and with the median pruner, and their epochs trained, wall time and best value side by side.

The search: digits, `--trials` trials of `--epochs` epochs each, TPE (seed 0) over optimizer.lr
log-uniform in [1e-6, 1] — wide enough that some trials are clearly bad (too small to learn in a
few epochs, or so large the loss explodes) — batch size 64, no weight decay. The MLP is wide
(2 x 1024 units) so that an epoch costs more than a trial's fixed costs (start-up, tracing,
saving), as in the searches pruning is for; with the default 64-unit MLP a digits epoch takes
~0.05 s and pruning saves epochs but no time.
The pruner: median, after 5 trials that train to the end, judging each trial from its second
epoch (n_warmup_steps=1). Each search is one `python -m tftrain -m hparams_search=optuna ...`
(in-process launcher); the wall time is the whole command's.

The two searches draw the same first trials; once a trial is pruned, TPE's later draws differ
(it learns from the pruned trials' last values), so the best values need not match.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def search(sweep_dir: Path, trials: int, epochs: int, pruner: list[str]) -> dict:
    """Run one search; return its figures from the study and the runs' metrics.json."""
    import optuna

    args = ["-m", "hparams_search=optuna", "data=digits", "model.hidden_units=[1024,1024]", f"trainer.epochs={epochs}",
            "trainer.verbose=0",
            f"hydra.sweeper.n_trials={trials}", "optimizer.lr=tag(log, interval(1e-6, 1.0))",
            "trainer.batch_size=64", "optimizer.weight_decay=null", *pruner, f"hydra.sweep.dir={sweep_dir}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    t0 = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "tftrain", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if not (sweep_dir / "optuna.db").is_file():
        sys.exit(f"The search in {sweep_dir} did not run (exit {result.returncode}):\n{result.stderr[-3000:]}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="tftrain", storage=f"sqlite:///{sweep_dir}/optuna.db")
    epochs_trained, states = 0, {}
    for t in study.trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
        try:
            epochs_trained += json.loads((Path(t.user_attrs["run_dir"]) / "metrics.json").read_text()).get("epochs") or 0
        except (KeyError, OSError, ValueError):
            pass  # a failed run before its first epoch
    best = study.best_trial
    return {"epochs": epochs_trained, "wall_s": wall, "best": best.value, "best_lr": best.params["optimizer.lr"],
            "states": states, "exit": result.returncode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "search_pruning")
    a = parser.parse_args()
    shutil.rmtree(a.out, ignore_errors=True)  # a study in the directory would be continued, not rerun
    runs = {
        "no pruning": search(a.out / "no_pruning", a.trials, a.epochs, []),
        "median pruner": search(a.out / "median", a.trials, a.epochs,
                                ["hydra.sweeper.pruner=median", "hydra.sweeper.pruning.n_startup_trials=5",
                                 "hydra.sweeper.pruning.n_warmup_steps=1"]),
    }
    print(f"digits, MLP 2 x 1024, {a.trials} trials of {a.epochs} epochs, TPE seed 0 over optimizer.lr in [1e-6, 1] "
          "(log)\n")
    print("| search | trials (state) | epochs trained | wall time (s) | best val_accuracy | best lr |")
    print("|---|---|---|---|---|---|")
    for name, r in runs.items():
        states = ", ".join(f"{n} {k.lower()}" for k, n in sorted(r["states"].items()))
        print(f"| {name} | {states} | {r['epochs']} | {r['wall_s']:.1f} | {r['best']:.4f} | {r['best_lr']:.3g} |")
    base, pruned = runs["no pruning"], runs["median pruner"]
    print(f"\npruned / unpruned: epochs {pruned['epochs'] / base['epochs']:.2f}, wall time "
          f"{pruned['wall_s'] / base['wall_s']:.2f}, best value {pruned['best'] - base['best']:+.4f}")
    if not pruned["states"].get("PRUNED"):
        # The pruner judges nothing before its 5 start-up trials have trained to the end.
        print("\nNo trial was pruned" + (" (the median pruner starts after 5 complete trials: use --trials 8 or more)"
                                         if a.trials <= 5 else "") + ".")


if __name__ == "__main__":
    main()
