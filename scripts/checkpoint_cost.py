# python scripts/checkpoint_cost.py [--epochs 15] [--reps 3] [override ...]
"""Time the training loop spends saving its per-epoch checkpoint (Controller._save: the NaN check,
the checkpoint, history.csv, the loggers' flush), with checkpoints written on the training thread
(TFTRAIN_SYNC_CHECKPOINTS=1, the way before background writes) against written in the background.

Runs the default problem in this process (`tftrain.train(tftrain.compose(["trainer.epochs=15", ...]))`),
twice per variant and repetition, alternating which goes first so a neighbour's load on a shared
machine hits both alike; once with the default loggers (TensorBoard), once with `logger=[]`:
loggers wait for the commit (they send what follows it), so only the second shows the whole saving.
Extra arguments are config overrides (e.g. a bigger model: model.hidden_units=[1024,1024]).

Printed per variant: the median over repetitions of the per-epoch `_save` time (median of epochs
2..N: epoch 1's also sets up the copies and traces), of the total over all N epochs, and of the
run's training time (steps only), then the ratios background / synchronous.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SYNC_ENV = "TFTRAIN_SYNC_CHECKPOINTS"


def timed_saves():
    """Patch Controller._save to record each call's duration; returns the list it fills."""
    from tftrain.loop.controller import Controller

    durations: list[float] = []
    save = Controller._save

    def timed(self, history):
        t0 = time.perf_counter()
        try:
            save(self, history)
        finally:
            durations.append(time.perf_counter() - t0)

    Controller._save = timed
    return durations


def run(overrides: list[str], synchronous: bool, durations: list[float], folder: Path) -> dict:
    import tftrain

    os.environ[SYNC_ENV] = "1" if synchronous else "0"
    durations.clear()
    metrics = tftrain.train(tftrain.compose(overrides), output_dir=tempfile.mkdtemp(dir=folder))
    saves = list(durations)
    return {"steady_ms": 1000 * statistics.median(saves[1:] or saves), "total_ms": 1000 * sum(saves),
            "first_ms": 1000 * saves[0], "train_s": metrics["train_time_s"], "saves": len(saves)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--reps", type=int, default=3)
    args, overrides = parser.parse_known_args(argv)
    durations = timed_saves()
    base = [f"trainer.epochs={args.epochs}", "trainer.verbose=0", *overrides]
    previous = os.environ.get(SYNC_ENV)
    with tempfile.TemporaryDirectory(prefix="checkpoint-cost-") as folder:
        run([*base, "trainer.epochs=1", "logger=[]"], False, durations, Path(folder))  # imports, first traces
        for name, loggers in (("default loggers", []), ("logger=[]", ["logger=[]"])):
            results = {True: [], False: []}
            for rep in range(args.reps):
                for synchronous in ((True, False) if rep % 2 == 0 else (False, True)):
                    results[synchronous].append(run([*base, *loggers], synchronous, durations, Path(folder)))
            print(f"\n{name}: {' '.join(base + loggers)}  ({args.reps} repetitions, {results[True][0]['saves']} saves "
                  "per run)")
            summary = {}
            for synchronous, label in ((True, "synchronous"), (False, "background")):
                summary[synchronous] = {k: statistics.median(r[k] for r in results[synchronous])
                                        for k in ("steady_ms", "total_ms", "first_ms", "train_s")}
                s = summary[synchronous]
                print(f"  {label:12s} _save per epoch {s['steady_ms']:6.2f} ms (first {s['first_ms']:6.1f} ms), "
                      f"all saves {s['total_ms']:7.1f} ms, training steps {s['train_s']:6.3f} s")
            sync, bg = summary[True], summary[False]
            print(f"  ratio background / synchronous: per epoch x{bg['steady_ms'] / sync['steady_ms']:.3f}, "
                  f"all saves x{bg['total_ms'] / sync['total_ms']:.3f}, training steps "
                  f"x{bg['train_s'] / sync['train_s']:.3f}")
    if previous is None:
        os.environ.pop(SYNC_ENV, None)
    else:
        os.environ[SYNC_ENV] = previous


if __name__ == "__main__":
    main()
