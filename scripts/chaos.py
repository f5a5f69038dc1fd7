# python scripts/chaos.py --trials 40 [--seed 0] [--markdown docs/chaos.md]
"""Kill tftrain runs the way clusters do, resume them, and count how many end bit-identical to an
uninterrupted run.

Every trial starts the same deterministic run (synthetic data, an MLP with dropout, Adam, cosine
schedule, a checkpoint every 50 steps, 3 epochs of 128 steps) in a fresh run directory, stops it
one of four ways, and runs the same command again, which must resume and finish:

- training: SIGKILL or SIGTERM (chosen at random) at a random moment of its training, sometimes
  twice; after each kill the newest checkpoint may be damaged: its index removed, its data file
  truncated, its state JSON corrupted or one of its numbers edited, its `.index`/`.data` files
  swapped with the previous checkpoint's, the `checkpoint` bookkeeping file removed, or a stray
  `ckpt-999999.index` added.
- first-write: SIGKILL the moment the first checkpoint's files appear, before its state file
  commits it (the rerun starts from step 0 and says so).
- validation: SIGKILL or SIGTERM right after an epoch's last training call, while it validates (a
  callback named on the command line sends it; it is inert without CHAOS_SIGNAL). A SIGTERM must
  stop the run at that epoch's end, with no further training call.
- sweep: SIGTERM to a basic `-m` sweep of three small jobs; the rerun of the same sweep completes
  every job with the numbers of an uninterrupted sweep.

When the only checkpoint was damaged the rerun fails saying so, and the trial reruns with
trainer.resume=never as the message says. A trial ends bit-identical when the weights' fingerprint,
the metrics and the per-epoch history in metrics.json (never timings) equal the uninterrupted run's.
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
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS_PER_EPOCH = 4096 // 32
ARGS = ["data=synthetic", "data.num_train=4096", "data.num_val=64", "data.num_test=64", "model.hidden_units=[64]",
        "model.dropout=0.2", "schedule=cosine", "trainer.epochs=3", "trainer.batch_size=32", "trainer.verbose=2",
        "trainer.deterministic=true", "trainer.checkpoint_every_steps=50", "logger=[]"]
# The validation kill point's callback; named on the command line, as tftrain requires of user code.
VALIDATION_ARGS = ["callbacks.extra=[{_target_:chaos.signal_in_validation}]"]
SWEEP_ARGS = ["-m", "data=synthetic", "data.num_train=1024", "data.num_val=64", "data.num_test=64",
              "model.hidden_units=[64]", "model.dropout=0.2", "trainer.epochs=2", "trainer.batch_size=32",
              "trainer.verbose=2", "trainer.deterministic=true", "trainer.checkpoint_every_steps=16", "logger=[]",
              "optimizer.lr=0.001,0.003,0.01"]
KINDS = ("training", "training", "first-write", "validation", "sweep")  # one round of the trial schedule
DAMAGES = ("none", "none", "index", "truncate", "state", "edit", "swap", "stray", "bookkeeping")
# metrics.json keys that hold wall-clock times (or the directory): they differ between equal runs.
# Any other key ending in `_s` is taken for a timing too, so a new one does not fail every trial.
TIMING = {"wall_time_s", "train_time_s", "steps_per_s", "startup_s", "run_dir"}


def signal_in_validation():
    """A Keras callback (`callbacks.extra`) that, when CHAOS_SIGNAL=<name>:<epoch>:<delay s> is set,
    sends this process that signal `delay` seconds after the last training call of epoch <epoch>
    (0-based), i.e. while it validates. Built lazily so `--help` does not import Keras."""
    import keras

    spec = os.environ.get("CHAOS_SIGNAL")

    class SignalInValidation(keras.callbacks.Callback):
        epoch = -1

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            nonlocal spec
            if spec is None or batch + 1 != STEPS_PER_EPOCH:
                return
            name, epoch, delay = spec.split(":")
            if self.epoch == int(epoch):
                spec = None
                threading.Timer(float(delay), os.kill, (os.getpid(), signal.Signals[name])).start()

    return SignalInValidation()


def _env(**extra: str) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "scripts")]),
            "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "HYDRA_FULL_ERROR": "0", **extra}


def run(run_dir: Path, *extra: str, args=ARGS) -> subprocess.CompletedProcess:
    where = f"hydra.sweep.dir={run_dir}" if args[:1] == ["-m"] else f"hydra.run.dir={run_dir}"
    return subprocess.run([sys.executable, "-m", "tftrain", *args, *extra, where], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=900)


def _start(run_dir: Path, args: list[str], env: dict | None = None) -> tuple[subprocess.Popen, Path]:
    log = run_dir.parent / f"{run_dir.name}.log"
    run_dir.mkdir(parents=True, exist_ok=True)
    where = f"hydra.sweep.dir={run_dir}" if args[:1] == ["-m"] else f"hydra.run.dir={run_dir}"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tftrain", *args, where], cwd=ROOT, env=env or _env(),
                                stdout=out, stderr=subprocess.STDOUT)
    return proc, log


def _wait_for_training(proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 300
    while "steps per epoch" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)


def kill_during_training(run_dir: Path, sig: int, rng: random.Random) -> tuple[int, float]:
    """Start the run, wait until it trains, send `sig` after a random delay; (exit code, delay)."""
    proc, log = _start(run_dir, ARGS)
    _wait_for_training(proc, log)
    delay = rng.uniform(0.2, 2.5)  # the 384 steps take ~2-3 s here after the first trace
    time.sleep(delay)
    proc.send_signal(sig)
    return proc.wait(timeout=300), delay


def uncommitted(ckpt: Path) -> list[str]:
    """Names in `ckpt` of checkpoint files whose state file (the commit) is not there."""
    if not ckpt.is_dir():
        return []
    names = [p.name for p in ckpt.iterdir() if p.name.startswith("ckpt-")]
    return sorted(n for n in names if not (ckpt / f"state-{n.split('-')[1].split('.')[0].split('_')[0]}.json").exists())


def kill_during_first_write(run_dir: Path, stage: str) -> tuple[int, str]:
    """SIGKILL the run the moment the first checkpoint's files reach `stage`: "temp" (TensorFlow's
    `ckpt-N_temp/`, the first thing written) or "index" (its `.index`, the last file before the
    state file that commits it); (exit code, what the kill left)."""
    proc, log = _start(run_dir, ARGS)
    ckpt = run_dir / "checkpoints"
    seen = (lambda n: n.startswith("ckpt-")) if stage == "temp" else (lambda n: n.endswith(".index"))
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if any(seen(name) for name in os.listdir(ckpt)):
                break
        except FileNotFoundError:
            pass
        time.sleep(0.0002)  # the write takes milliseconds: poll often enough to land inside it
    proc.send_signal(signal.SIGKILL)
    code = proc.wait(timeout=300)
    left = uncommitted(ckpt)
    committed = sorted(p.name for p in ckpt.glob("state-*.json")) if ckpt.is_dir() else []
    return code, (f"left {', '.join(left)} uncommitted" if left else "the write had already committed") + \
        (f", {', '.join(committed)} committed" if committed else ", nothing committed")


def kill_during_validation(run_dir: Path, sig: int, epoch: int, rng: random.Random) -> tuple[int, float, str]:
    """Send `sig` right after epoch `epoch`'s last training call; (exit code, delay, output)."""
    delay = rng.uniform(0.0, 0.01)
    proc, log = _start(run_dir, ARGS + VALIDATION_ARGS,
                       _env(CHAOS_SIGNAL=f"{signal.Signals(sig).name}:{epoch}:{delay:.4f}"))
    code = proc.wait(timeout=600)
    return code, delay, log.read_text()


def kill_sweep(sweep_dir: Path, rng: random.Random) -> tuple[int, float]:
    """SIGTERM a basic sweep at a random moment of its jobs' training; (exit code, delay)."""
    proc, log = _start(sweep_dir, SWEEP_ARGS)
    _wait_for_training(proc, log)
    delay = rng.uniform(0.2, 4.0)  # three jobs of 64 steps (about 6 s with their set-up): within them
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=300), delay


def _steps(ckpt: Path) -> list[int]:
    return sorted({int(p.name.split("-")[1].split(".")[0]) for p in ckpt.glob("ckpt-*.index")}) if ckpt.is_dir() else []


def _swap(a: Path, b: Path) -> None:
    tmp = a.with_name(a.name + ".swap")
    os.replace(a, tmp)
    os.replace(b, a)
    os.replace(tmp, b)


def damage(run_dir: Path, kind: str) -> str:
    """Damage the newest checkpoint of `run_dir` as `kind` says; what was done, in words."""
    ckpt = run_dir / "checkpoints"
    steps = _steps(ckpt)
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
    elif kind == "edit":  # valid JSON, a plausible number: only the state's checksum can tell
        path = ckpt / f"state-{newest}.json"
        state = json.loads(path.read_text())
        if state.get("history"):
            state["history"][-1]["loss"] = state["history"][-1]["loss"] * 0.5
            what = "the last epoch's loss halved"
        else:
            state["lr_scale"] = 0.5
            what = "lr_scale set to 0.5"
        path.write_text(json.dumps(state))
        return f"edit of state-{newest}.json ({what})"
    elif kind == "swap":
        if len(steps) < 2:
            return "none (swap needs two checkpoints)"
        older = steps[-2]
        _swap(ckpt / f"ckpt-{newest}.index", ckpt / f"ckpt-{older}.index")
        _swap(next(ckpt.glob(f"ckpt-{newest}.data-*")), next(ckpt.glob(f"ckpt-{older}.data-*")))
        return f"swap of ckpt-{newest} and ckpt-{older}'s .index/.data"
    elif kind == "stray":
        (ckpt / "ckpt-999999.index").touch()
        return "stray ckpt-999999.index"
    elif kind == "bookkeeping":
        (ckpt / "checkpoint").unlink(missing_ok=True)
    return f"{kind} of ckpt-{newest}"


def comparable(metrics: dict) -> dict:
    """metrics.json without its timings: the fingerprint, every number, the history (no epoch seconds)."""
    out = {k: v for k, v in metrics.items() if k not in TIMING and not k.endswith("_s")}
    if isinstance(out.get("history"), dict):
        out["history"] = {k: v for k, v in out["history"].items() if k != "seconds"}
    return out


def same_numbers(a: dict, b: dict) -> bool:
    return comparable(a) == comparable(b)


def _metrics(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None


def _jobs(sweep_dir: Path) -> dict[str, dict | None]:
    return {p.name: _metrics(p) for p in sorted(sweep_dir.iterdir()) if p.is_dir() and (p / ".hydra").is_dir()}


def rerun(run_dir: Path, events: list[str], *extra: str) -> tuple[subprocess.CompletedProcess, str]:
    """The same command again (with trainer.resume=never when it says no checkpoint loads); (result,
    the checkpoint it resumed from or "-")."""
    final = run(run_dir, *extra)
    if final.returncode == 2 and "None of the" in final.stderr:  # the only checkpoint was damaged
        events.append("no loadable checkpoint (exit 2): rerun with trainer.resume=never, as the error says")
        final = run(run_dir, *extra, "trainer.resume=never")
    log = final.stdout + final.stderr
    resumed = log.split("Resumed from ")[1].split(" (")[0].split("/")[-1] if "Resumed from" in log else "-"
    if "Not a checkpoint:" in log:
        events.append("rerun: " + log.split("Not a checkpoint: ")[1].split(" in ")[0] + " set aside (never committed)")
    return final, resumed


def trial_training(run_dir: Path, rng: random.Random, expected: dict) -> tuple[list[str], str, int, bool]:
    events = []
    for _ in range(1 if rng.random() < 0.7 else 2):
        sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
        code, delay = kill_during_training(run_dir, sig, rng)
        events.append(f"{signal.Signals(sig).name} at +{delay:.1f}s (exit {code})")
        if code == 0:  # it finished before the signal landed
            break
        events.append(f"damage: {damage(run_dir, rng.choice(DAMAGES))}")
    final, resumed = rerun(run_dir, events)
    return events, resumed, final.returncode, final.returncode == 0 and same_numbers(expected, _metrics(run_dir) or {})


def trial_first_write(run_dir: Path, rng: random.Random, expected: dict) -> tuple[list[str], str, int, bool]:
    stage = rng.choice(["temp", "index"])
    code, left = kill_during_first_write(run_dir, stage)
    events = [f"SIGKILL in the first checkpoint write, once its {stage} file appeared (exit {code}): {left}"]
    final, resumed = rerun(run_dir, events)
    return events, resumed, final.returncode, final.returncode == 0 and same_numbers(expected, _metrics(run_dir) or {})


def trial_validation(run_dir: Path, rng: random.Random, expected: dict) -> tuple[list[str], str, int, bool]:
    sig, epoch = rng.choice([signal.SIGKILL, signal.SIGTERM]), rng.randrange(3)
    code, delay, out = kill_during_validation(run_dir, sig, epoch, rng)
    events = [f"{signal.Signals(sig).name} in epoch {epoch + 1}'s validation (+{delay * 1000:.0f} ms, exit {code})"]
    stopped_right = True
    if sig == signal.SIGTERM and code != 0:
        # No training call after the signal: it stops at that epoch's end, the epoch checkpointed.
        step = out.split("Stopped on SIGTERM at step ")[1].split()[0] if "Stopped on SIGTERM at step " in out else "?"
        stopped_right = step == str((epoch + 1) * STEPS_PER_EPOCH)
        events.append(f"stopped at step {step}" + ("" if stopped_right else f", not {(epoch + 1) * STEPS_PER_EPOCH}"))
    if code != 0:
        events.append(f"damage: {damage(run_dir, rng.choice(DAMAGES))}")
    final, resumed = rerun(run_dir, events, *VALIDATION_ARGS)
    ok = stopped_right and final.returncode == 0 and same_numbers(expected, _metrics(run_dir) or {})
    return events, resumed, final.returncode, ok


def trial_sweep(sweep_dir: Path, rng: random.Random, expected: dict[str, dict]) -> tuple[list[str], str, int, bool]:
    code, delay = kill_sweep(sweep_dir, rng)
    statuses = Counter((m or {}).get("status", "not started") for m in _jobs(sweep_dir).values())
    events = [f"SIGTERM to a 3-job sweep at +{delay:.1f}s (exit {code}; jobs: "
              f"{', '.join(f'{n} {s}' for s, n in sorted(statuses.items()))})"]
    final = run(sweep_dir, args=SWEEP_ARGS)
    jobs = _jobs(sweep_dir)
    log = final.stdout + final.stderr
    resumed = f"{log.count('Resumed from')} job(s) resumed"
    ok = final.returncode == 0 and list(jobs) == list(expected) and all(
        jobs[name] is not None and same_numbers(expected[name], jobs[name]) for name in expected)
    return events, resumed, final.returncode, ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    kinds = [KINDS[i % len(KINDS)] for i in range(args.trials)]
    rng.shuffle(kinds)
    trials = {"training": trial_training, "first-write": trial_first_write, "validation": trial_validation,
              "sweep": trial_sweep}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        reference = run(tmp / "reference")
        if reference.returncode != 0:
            print(reference.stderr[-3000:], file=sys.stderr)
            return 1
        expected = {"run": _metrics(tmp / "reference"), "sweep": None}
        rows, identical, by_kind = [], 0, {k: [0, 0] for k in trials}
        for trial, kind in enumerate(kinds):
            if kind == "sweep" and expected["sweep"] is None:
                sweep = run(tmp / "reference-sweep", args=SWEEP_ARGS)
                if sweep.returncode != 0:
                    print(sweep.stderr[-3000:], file=sys.stderr)
                    return 1
                expected["sweep"] = _jobs(tmp / "reference-sweep")
            t0 = time.monotonic()
            events, resumed, code, ok = trials[kind](tmp / f"trial-{trial}", rng,
                                                     expected["sweep" if kind == "sweep" else "run"])
            identical += ok
            by_kind[kind][0] += ok
            by_kind[kind][1] += 1
            rows.append(f"| {trial} | {kind} | {'; '.join(events)} | {resumed} | {code} | {'yes' if ok else 'NO'} |")
            print(rows[-1], f"({time.monotonic() - t0:.0f} s)", flush=True)
    breakdown = ", ".join(f"{kind} {n} of {total}" for kind, (n, total) in by_kind.items() if total)
    table = "\n".join([
        f"`python scripts/chaos.py --trials {args.trials} --seed {args.seed}`", "",
        "| trial | kind | what happened | resumed from | exit | bit-identical |", "|---|---|---|---|---|---|", *rows, "",
        f"{identical} of {args.trials} trials ended bit-identical to the uninterrupted run ({breakdown})."])
    print(f"\n{identical}/{args.trials} bit-identical ({breakdown})")
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0 if identical == args.trials else 1


if __name__ == "__main__":
    sys.exit(main())
