# python scripts/search_idle.py [--trials 12] [--workers 2] [--out outputs/search_idle]
"""How much worker time an Optuna search of trials of uneven length leaves idle: asynchronous
workers (the default, `hydra.sweeper.n_jobs` workers, each starting its next trial when its last
one ends) against batches through Hydra's launcher (`hydra.sweeper.asynchronous=false
hydra/launcher=parallel`: `n_jobs` trials launched together, the next batch after the slowest).

The search space is `trainer.epochs=range(2,21)` alone (synthetic data, 4096 examples, an MLP of
64 units, lr 0.01, batch 32: ~0.5 s an epoch here): the trials differ only in their length. The
script draws the points once (seeded) and queues them, in the same order, in both studies, so both
modes run the same trials. A trial is busy from its job's start (Hydra writes its run directory's
.hydra/config.yaml) to its end (metrics.json), TensorFlow's import in a worker's first job
included; the span runs from the first job's start to the last job's end; idle = 1 - sum(busy) /
(workers x span). The second asynchronous worker's start-up (a new process) counts as idle.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = {
    "asynchronous workers": [],
    "batches (hydra/launcher=parallel)": ["hydra.sweeper.asynchronous=false", "hydra/launcher=parallel"],
}


def search(sweep_dir: Path, epochs: list[int], workers: int, mode_args: list[str]) -> dict:
    """Run one search of the queued `epochs`; return its figures."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sweep_dir.mkdir(parents=True)
    study = optuna.create_study(storage=f"sqlite:///{sweep_dir}/optuna.db", study_name="tftrain", direction="maximize")
    for n in epochs:
        study.enqueue_trial({"trainer.epochs": n})
    args = ["-m", "hparams_search=optuna", "data=synthetic", "data.num_train=4096", "data.num_val=128",
            "data.num_test=128", "model.hidden_units=[64]", "trainer.verbose=0", "optimizer.lr=0.01",
            "optimizer.weight_decay=0", "trainer.batch_size=32", "trainer.epochs=range(2,21)",
            f"hydra.sweeper.n_trials={len(epochs)}", f"hydra.sweeper.n_jobs={workers}",
            f"hydra.launcher.n_jobs={workers}" if mode_args else "", *mode_args, f"hydra.sweep.dir={sweep_dir}"]
    args = [a for a in args if a]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tftrain", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    command_s = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"search failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    trials = optuna.load_study(study_name="tftrain", storage=f"sqlite:///{sweep_dir}/optuna.db").trials
    jobs = [((run / ".hydra" / "config.yaml").stat().st_mtime, (run / "metrics.json").stat().st_mtime)
            for run in (Path(t.user_attrs["run_dir"]) for t in trials)]
    busy = sum(end - start for start, end in jobs)
    span = max(end for _, end in jobs) - min(start for start, _ in jobs)
    return {"trials": len(trials), "epochs": sum(t.params["trainer.epochs"] for t in trials), "span": span,
            "busy": busy, "idle": 1 - busy / (workers * span), "command": command_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "search_idle")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    epochs = [rng.randint(2, 20) for _ in range(args.trials)]
    shutil.rmtree(args.out, ignore_errors=True)
    print(f"{args.trials} trials of trainer.epochs {epochs}, {args.workers} workers\n")
    rows = []
    for i, (name, mode_args) in enumerate(MODES.items()):
        r = search(args.out / f"mode{i}", epochs, args.workers, mode_args)
        rows.append((name, r))
    print("| mode | trials | epochs | span (s) | busy worker-s | idle fraction | whole command (s) |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['trials']} | {r['epochs']} | {r['span']:.1f} | {r['busy']:.1f} | {r['idle']:.2f} | "
              f"{r['command']:.1f} |")


if __name__ == "__main__":
    main()
