# python scripts/chaos.py --trials 20 [--seed 0] [--markdown docs/chaos.md]
"""Kill tftrain runs the way clusters do, resume them, and count how many end bit-identical to an
uninterrupted run.

Each trial starts the same deterministic run (synthetic data, an MLP with dropout, Adam, cosine
schedule, a checkpoint every 50 steps, 3 epochs of 128 steps) in a fresh run directory and, at a
random moment of its training, sends it SIGKILL or SIGTERM (chosen at random); in some trials the
newest checkpoint is then damaged (its index removed, its data file truncated, its state JSON
corrupted, or the `checkpoint` bookkeeping file removed). Then the same command runs again and
must resume and finish (when the only checkpoint was damaged it fails saying so, and the trial
reruns with trainer.resume=never as the message says). Some trials kill the run twice. A trial ends bit-identical when its
metrics.json numbers and history, and its weights' fingerprint, equal the uninterrupted run's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["data=synthetic", "data.num_train=4096", "data.num_val=64", "data.num_test=64", "model.hidden_units=[64]",
        "model.dropout=0.2", "schedule=cosine", "trainer.epochs=3", "trainer.batch_size=32", "trainer.verbose=2",
        "trainer.deterministic=true", "trainer.checkpoint_every_steps=50", "logger=[]"]
DAMAGES = ("none", "none", "index", "truncate", "state", "bookkeeping")
TIMING = {"wall_time_s", "train_time_s", "steps_per_s", "run_dir"}


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}


def run(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tftrain", *ARGS, *extra, f"hydra.run.dir={run_dir}"], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=600)


def kill_during_training(run_dir: Path, sig: int, rng: random.Random) -> tuple[int, float]:
    """Start the run, wait until it trains, send `sig` after a random delay; (exit code, delay)."""
    log = run_dir.parent / f"{run_dir.name}.log"
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tftrain", *ARGS, f"hydra.run.dir={run_dir}"], cwd=ROOT,
                                env=_env(), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while "steps per epoch" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        delay = rng.uniform(0.2, 2.5)  # the 384 steps take ~2-3 s here after the first trace
        time.sleep(delay)
        proc.send_signal(sig)
        return proc.wait(timeout=300), delay


def damage(run_dir: Path, kind: str) -> str:
    ckpt = run_dir / "checkpoints"
    steps = sorted({int(p.name.split("-")[1].split(".")[0]) for p in ckpt.glob("ckpt-*.index")}) if ckpt.is_dir() else []
    if kind == "none" or not steps:
        return "none"
    newest = steps[-1]
    if kind == "index":
        (ckpt / f"ckpt-{newest}.index").unlink()
    elif kind == "truncate":
        data = next(ckpt.glob(f"ckpt-{newest}.data-*"))
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])
    elif kind == "state":
        (ckpt / f"state-{newest}.json").write_text('{"history": [')
    elif kind == "bookkeeping":
        (ckpt / "checkpoint").unlink(missing_ok=True)
    return f"{kind} of ckpt-{newest}"


def same_numbers(a: dict, b: dict) -> bool:
    for key in set(a) | set(b):
        if key in TIMING:
            continue
        if key == "history":
            if {k: v for k, v in a[key].items() if k != "seconds"} != {k: v for k, v in b[key].items() if k != "seconds"}:
                return False
        elif a.get(key) != b.get(key):
            return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        reference = run(tmp / "reference")
        if reference.returncode != 0:
            print(reference.stderr[-3000:], file=sys.stderr)
            return 1
        expected = json.loads((tmp / "reference" / "metrics.json").read_text())
        rows, identical = [], 0
        for trial in range(args.trials):
            run_dir = tmp / f"trial-{trial}"
            events = []
            for _ in range(1 if rng.random() < 0.7 else 2):
                sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
                code, delay = kill_during_training(run_dir, sig, rng)
                events.append(f"{signal.Signals(sig).name} at +{delay:.1f}s (exit {code})")
                if code == 0:  # it finished before the signal landed
                    break
                events.append(f"damage: {damage(run_dir, rng.choice(DAMAGES))}")
            final = run(run_dir)
            if final.returncode == 2 and "None of the" in final.stderr:  # the only checkpoint was damaged
                events.append("no loadable checkpoint (exit 2): rerun with trainer.resume=never, as the error says")
                final = run(run_dir, "trainer.resume=never")
            log = final.stdout + final.stderr
            resumed = log.split("Resumed from ")[1].split(" (")[0].split("/")[-1] if "Resumed from" in log else "-"
            ok = final.returncode == 0 and same_numbers(expected, json.loads((run_dir / "metrics.json").read_text()))
            identical += ok
            rows.append(f"| {trial} | {'; '.join(events)} | {resumed} | {final.returncode} | {'yes' if ok else 'NO'} |")
            print(rows[-1], flush=True)
    table = "\n".join(["| trial | what happened | resumed from | exit | bit-identical |", "|---|---|---|---|---|", *rows,
                       "", f"{identical} of {args.trials} trials ended bit-identical to the uninterrupted run."])
    print(f"\n{identical}/{args.trials} bit-identical")
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0 if identical == args.trials else 1


if __name__ == "__main__":
    sys.exit(main())
