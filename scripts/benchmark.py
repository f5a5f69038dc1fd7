# python scripts/benchmark.py [--reps 2] [--rows mlp,cnn,...] [--markdown docs/benchmark.md] [--epochs N]
# python scripts/benchmark.py --sweeps [--reps 2]   (sweeps: seed groups and background checkpoints vs before)
"""tftrain's defaults against a hand-written `model.fit` script on the same model and data.

Rows (each job in a fresh child process; both variants of a row run back to back, alternating
which goes first, so a neighbour's load on a shared machine hits both alike):

  mlp         synthetic 784-feature data (10 classes, 19200 examples), MLP 512-512, 3 epochs
  cnn         synthetic 28x28x1 images (6400), model=cnn at its defaults, 3 epochs
  resnet      synthetic 32x32x3 images (1280), model=resnet (ResNet-20), 2 epochs
  regression  data=diabetes (linear model, batch 32, 100 epochs; as scripts/compare_problems.py)
  binary      data=breast_cancer (MLP 32 with dropout, batch 32, 40 epochs)
  multilabel  data=digits_multilabel (the default MLP, 30 epochs)

  tftrain      `python -m tftrain <row> trainer.verbose=0`: the real command with every default
               (steps_per_execution=auto, jit_compile=auto, TensorBoard per-step scalars, a
               checkpoint per epoch, model.keras, metrics.json)
  model.fit    a hand-written script that imports no tftrain: the model tftrain builds for the
               row (same layers, initial weights, L2, normalization layers; saved by this script
               as .keras and loaded), the same split arrays (an .npz), Adam with the same rate,
               model.fit(validation_data=...), evaluate on the test split, save.

Measured: whole-process wall time (launch to exit: imports, data, tracing, training, evaluation,
saving), training time (the sum of the epochs' training steps, validation excluded), and their
ratios tftrain / model.fit per repetition (medians reported). Also, once per run: XLA on vs off on
the CPU (mlp, cnn), steps per execution auto vs 1 (mlp), peak memory of one batch of 512 against
trainer.accumulate_steps=4 (128 x 4) on resnet, and tftrain's start-up phases (metrics.json
`startup_s`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TAG = "BENCH_JSON "

ROWS = {  # name -> tftrain overrides (the problem comes with the data option)
    "mlp": ["data=synthetic", "data.input_shape=[784]", "data.num_classes=10", "data.num_train=19200",
            "data.num_val=1024", "data.num_test=1024", "model.hidden_units=[512,512]", "trainer.epochs=3"],
    "cnn": ["data=synthetic", "data.input_shape=[28,28,1]", "data.num_classes=10", "data.num_train=6400",
            "data.num_val=512", "data.num_test=512", "model=cnn", "trainer.epochs=3"],
    "resnet": ["data=synthetic", "data.input_shape=[32,32,3]", "data.num_classes=10", "data.num_train=1280",
               "data.num_val=256", "data.num_test=256", "model=resnet", "trainer.epochs=2"],
    "regression": ["data=diabetes", "model.hidden_units=[]", "trainer.epochs=100", "trainer.batch_size=32",
                   "optimizer.lr=0.01"],
    "binary": ["data=breast_cancer", "model.hidden_units=[32]", "model.dropout=0.2", "trainer.epochs=40",
               "trainer.batch_size=32"],
    "multilabel": ["data=digits_multilabel", "trainer.epochs=30"],
}
# The hand-written script's loss and metrics per problem (what a user writes; tftrain's own
# problem classes compute the same with their own metric objects).
PROBLEMS = {
    "tftrain.problems.Classification": ("sparse_ce", "accuracy"),
    "tftrain.problems.Binary": ("binary_ce", "accuracy"),
    "tftrain.problems.Multilabel": ("binary_ce", "accuracy"),
    "tftrain.problems.Regression": ("mse", "mae"),
}


def _report(**values):
    print(TAG + json.dumps(values), flush=True)


# ---------------------------------------------------------------- the job, written out once


def prepare(row: str, folder: Path) -> dict:
    """The row's split arrays (as tftrain splits them) in an .npz, and the model tftrain builds for
    it (its layers, initial weights, L2 and normalization layers) saved as .keras, so the
    hand-written script starts from the same weights without importing tftrain."""
    import numpy as np

    import tftrain
    from tftrain.config.factory import build_data, build_model, build_problem, pipeline_of
    from tftrain.config.targets import call_target
    from tftrain.data.sources import hold_out
    from tftrain.schema import validate
    from tftrain.schema.data import PIPELINE_KEYS

    cfg = validate(tftrain.compose(ROWS[row]))
    p = pipeline_of(cfg)
    s = hold_out(call_target("data", cfg.data, skip=PIPELINE_KEYS), p.val_fraction, p.test_fraction, p.split_seed,
                 build_problem(cfg).stratify)
    path = folder / f"{row}.npz"
    np.savez(path, x_train=s.x_train, y_train=s.y_train, x_val=s.x_val, y_val=s.y_val, x_test=s.x_test,
             y_test=s.y_test)
    data = build_data(cfg)
    model = build_model(cfg, data.input_shape, data.num_outputs, data.normalization, data.target_normalization)
    model.save(folder / f"{row}.keras")
    return {"npz": str(path), "model": str(folder / f"{row}.keras"), "problem": cfg.problem._target_,
            "lr": float(cfg.optimizer.lr), "batch": int(cfg.trainer.batch_size), "epochs": int(cfg.trainer.epochs),
            "seed": int(cfg.trainer.seed)}


# ---------------------------------------------------------------- the hand-written child


def child_fit(job: dict, out: str) -> None:
    """A hand-written Keras script (no tftrain import): load, compile, fit, evaluate, save."""
    import keras
    import numpy as np

    d = np.load(job["npz"])
    keras.utils.set_random_seed(job["seed"])
    model = keras.models.load_model(job["model"], compile=False)
    loss, metric = PROBLEMS[job["problem"]]
    losses = {"sparse_ce": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              "binary_ce": keras.losses.BinaryCrossentropy(from_logits=True), "mse": "mse"}
    metrics = {"accuracy": [keras.metrics.SparseCategoricalAccuracy(name="accuracy") if loss == "sparse_ce"
                            else keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")],
               "mae": [keras.metrics.MeanAbsoluteError(name="mae")]}
    model.compile(optimizer=keras.optimizers.Adam(job["lr"]), loss=losses[loss], metrics=metrics[metric])

    def targets(y):
        return y if loss == "sparse_ce" else y.reshape(len(y), -1).astype("float32")

    class Timer(keras.callbacks.Callback):  # the training steps of each epoch, as tftrain's history counts them
        def __init__(self):
            super().__init__()
            self.t0, self.seconds = None, []

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_test_begin(self, logs=None):  # validation starts: the epoch's training is over
            if self.t0 is not None:
                self.seconds.append(time.perf_counter() - self.t0)
                self.t0 = None

    timer = Timer()
    model.fit(d["x_train"].astype("float32"), targets(d["y_train"]), batch_size=job["batch"], epochs=job["epochs"],
              validation_data=(d["x_val"].astype("float32"), targets(d["y_val"])), shuffle=True, verbose=0,
              callbacks=[timer])
    result = model.evaluate(d["x_test"].astype("float32"), targets(d["y_test"]), batch_size=job["batch"], verbose=0,
                            return_dict=True)
    model.save(Path(out) / "model.keras")
    _report(seconds=timer.seconds, test=float(result[metric]), metric=metric)


# ---------------------------------------------------------------- the parent


def run(cmd: list[str], cwd: Path, timeout: float = 900) -> tuple[float, float, str]:
    """Run one child: (wall seconds, peak RSS in MB, output). os.wait4 gives this child's own
    rusage (RUSAGE_CHILDREN would be the maximum over every child so far)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except KeyboardInterrupt:
            proc.kill()
            raise
        wall = time.perf_counter() - t0
        log.seek(0)
        out = log.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    return wall, usage.ru_maxrss / 1024, out


def run_tftrain(overrides: list[str], folder: Path) -> dict:
    run_dir = Path(tempfile.mkdtemp(dir=folder))
    wall, rss, _ = run([sys.executable, "-m", "tftrain", *overrides, "trainer.verbose=0",
                        f"hydra.run.dir={run_dir}"], ROOT)
    m = json.loads((run_dir / "metrics.json").read_text())
    metric = next(k for k in ("test_accuracy", "test_mae") if k in m)
    return {"wall": wall, "rss": rss, "train": sum(m["history"]["seconds"]), "epochs": m["history"]["seconds"],
            "test": m[metric], "startup": m["startup_s"], "steps": m["steps"] // m["epochs"]}


def run_fit(job: dict, folder: Path) -> dict:
    out = Path(tempfile.mkdtemp(dir=folder))
    wall, rss, text = run([sys.executable, __file__, "--child", json.dumps(job), "--out", str(out)], out)
    r = json.loads([ln for ln in text.splitlines() if ln.startswith(TAG)][-1][len(TAG):])
    return {"wall": wall, "rss": rss, "train": sum(r["seconds"]), "epochs": r["seconds"], "test": r["test"]}


SWEEPS = {  # name -> the sweep's command-line arguments (issue: "comparisons at the cost of one run")
    "4 seeds": ["-m", "optimizer=adam", "trainer.seed=0,1,2,3", "trainer.epochs=15"],
    "compare_optimizers": ["experiment=compare_optimizers"],
}
# The way before the issue: Hydra's basic launcher (one job after another, each composed twice),
# each checkpoint written on the training thread, the interpreter's teardown at the exit.
BEFORE = (["hydra/launcher=basic"], {"TFTRAIN_SYNC_CHECKPOINTS": "1", "TFTRAIN_SLOW_EXIT": "1"})


SWEEPS_HEADER = """# Sweeps: before issue 25 and now

```bash
python scripts/benchmark.py --sweeps --reps {reps} --markdown docs/sweeps.md
```

Whole commands (`python -m tftrain ... trainer.verbose=0`), launch to exit, each in a fresh
process. Before: Hydra's basic launcher (`hydra/launcher=basic`: one job after another, each
composed twice), checkpoints written on the training thread (`TFTRAIN_SYNC_CHECKPOINTS=1`) and
the interpreter's teardown at the exit (`TFTRAIN_SLOW_EXIT=1`). Now: the defaults (seed groups,
one composition a job, background checkpoint writes, the console's fast exit). Each repetition
runs both back to back, alternating which goes first; cells are medians with the min-max, the
ratio pairs the runs of one repetition. Same results: every run's val_accuracy equal within 1e-5.

Machine: {machine}

"""


def run_sweep(args: list[str], folder: Path, before: bool) -> dict:
    """One whole sweep command: wall seconds, and each run's val_accuracy by its directory name."""
    sweep_dir = Path(tempfile.mkdtemp(dir=folder))
    extra, env = BEFORE if before else ([], {})
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        wall, rss, _ = run([sys.executable, "-m", "tftrain", *args, *extra, "trainer.verbose=0",
                            f"hydra.sweep.dir={sweep_dir}"], ROOT)
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    results = {p.parent.name: json.loads(p.read_text()).get("val_accuracy") for p in sweep_dir.glob("*/metrics.json")}
    return {"wall": wall, "rss": rss, "results": results}


def run_sweeps(reps: int, folder: Path, t_start: float) -> str:
    """The sweep rows: before (Hydra's basic launcher, synchronous checkpoints, the ordinary exit)
    against now, each repetition back to back, alternating which goes first; whether every run's
    val_accuracy matches."""
    lines = ["| sweep | runs | before (s) | now (s) | now / before | same results |", "|---|---|---|---|---|---|"]
    for i, (name, args) in enumerate(SWEEPS.items()):
        walls = {True: [], False: []}
        same = True
        for rep in range(reps):
            got = {}
            for before in ((True, False) if (rep + i) % 2 == 0 else (False, True)):
                got[before] = run_sweep(args, folder, before)
                walls[before].append(got[before]["wall"])
            a, b = got[True]["results"], got[False]["results"]
            same = same and a.keys() == b.keys() and all(abs(a[k] - b[k]) <= 1e-5 for k in a)
            print(f"[{time.perf_counter() - t_start:4.0f} s] {name} rep {rep + 1}: before {got[True]['wall']:.1f} s, "
                  f"now {got[False]['wall']:.1f} s", flush=True)
        ratio = statistics.median(n / b for n, b in zip(walls[False], walls[True]))
        lines.append(f"| `{' '.join(args)}` | {len(a)} | {med(walls[True])} | {med(walls[False])} | {ratio:.2f}x | "
                     f"{'yes' if same else 'NO'} |")
    return "\n".join(lines)


def med(values, fmt="{:.3g}") -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    m = fmt.format(statistics.median(values))
    return f"{m} ({fmt.format(min(values))}-{fmt.format(max(values))})" if len(values) > 1 else m


def steady(epochs: list[float]) -> float:
    """Mean epoch time after the first (tracing, calibration)."""
    return statistics.mean(epochs[1:]) if len(epochs) > 1 else epochs[0]


def machine() -> str:
    from importlib.metadata import version

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.machine()) if Path("/proc/cpuinfo").exists() else platform.machine()
    return (f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, TensorFlow {version('tensorflow')}, "
            f"Keras {version('keras')}; load average at start {os.getloadavg()[0]:.2f}")


def prepare_in_child(rows: list[str], folder: Path, epochs: int | None = None) -> dict:
    """prepare() in a child process: this parent must stay small, since a child's peak RSS counts
    the memory it inherits from the parent before exec (1 GB once TensorFlow is imported here)."""
    _, _, out = run([sys.executable, __file__, "--prepare", ",".join(rows), "--out", str(folder),
                     *(["--epochs", str(epochs)] if epochs else [])], ROOT)
    return json.loads([ln for ln in out.splitlines() if ln.startswith(TAG)][-1][len(TAG):])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated subset of " + ",".join(ROWS))
    p.add_argument("--no-extras", action="store_true", help="skip the XLA, steps-per-call and memory rows")
    p.add_argument("--markdown", help="also write the tables to this file")
    p.add_argument("--epochs", type=int, help="train every row this many epochs instead of its own (a quick check "
                   "that the script works; the ratios need the rows' own epochs)")
    p.add_argument("--sweeps", action="store_true", help="only the sweep rows: 4 seeds and compare_optimizers, "
                   "before (Hydra's basic launcher, synchronous checkpoints, ordinary exit) against now")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--prepare", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.epochs:
        for row, overrides in ROWS.items():
            ROWS[row] = [o for o in overrides if not o.startswith("trainer.epochs=")] + [f"trainer.epochs={a.epochs}"]
    if a.child:
        return child_fit(json.loads(a.child), a.out)
    if a.prepare:
        return _report(**{row: prepare(row, Path(a.out)) for row in a.prepare.split(",")})

    t_start = time.perf_counter()
    if a.sweeps:
        print(f"machine: {machine()}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            text = run_sweeps(a.reps, Path(tmp), t_start)
        print(text)
        if a.markdown:
            Path(a.markdown).write_text(SWEEPS_HEADER.format(reps=a.reps, machine=machine()) + text + "\n")
        return
    rows = [r.strip() for r in a.rows.split(",") if r.strip()]
    unknown = set(rows) - set(ROWS)
    if unknown:
        p.error(f"unknown rows {sorted(unknown)}; valid: {', '.join(ROWS)}")
    header = f"machine: {machine()}"
    print(header, flush=True)
    results = {row: {"tftrain": [], "fit": []} for row in rows}
    extras = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        jobs = prepare_in_child(rows, folder, a.epochs)
        for rep in range(a.reps):
            for i, row in enumerate(rows):
                order = ("tftrain", "fit") if (rep + i) % 2 == 0 else ("fit", "tftrain")
                for variant in order:
                    r = run_tftrain(ROWS[row], folder) if variant == "tftrain" else run_fit(jobs[row], folder)
                    results[row][variant].append(r)
                t, f = results[row]["tftrain"][-1], results[row]["fit"][-1]
                print(f"[{time.perf_counter() - t_start:4.0f} s] {row} rep {rep + 1}: wall {t['wall']:.1f} vs "
                      f"{f['wall']:.1f} s, training {t['train']:.2f} vs {f['train']:.2f} s", flush=True)
        if not a.no_extras:
            extras = run_extras(rows, folder, results)
    text = render(results, extras, header)
    print(text)
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    if a.markdown:
        Path(a.markdown).write_text(text + "\n")


def run_extras(rows, folder: Path, results) -> dict:
    """One run each, next to its baseline run in the same minute."""
    extras = {}
    for row in ("mlp", "cnn"):
        if row in rows:
            off, on = run_tftrain(ROWS[row], folder), run_tftrain([*ROWS[row], "trainer.jit_compile=true"], folder)
            extras[f"xla {row}"] = (steady(on["epochs"]), steady(off["epochs"]), on["wall"], off["wall"])
            print(f"XLA {row}: epoch {extras[f'xla {row}'][0]:.2f} s on vs {extras[f'xla {row}'][1]:.2f} s off", flush=True)
    if "mlp" in rows:
        one, auto = run_tftrain([*ROWS["mlp"], "trainer.steps_per_execution=1"], folder), run_tftrain(ROWS["mlp"], folder)
        extras["spe"] = (steady(auto["epochs"]), steady(one["epochs"]), auto["steps"])
    mem = ["data=synthetic", "data.input_shape=[32,32,3]", "data.num_classes=10", "data.num_train=2048",
           "data.num_val=512", "data.num_test=512", "model=resnet", "trainer.epochs=1", "trainer.batch_size=512"]
    big, acc = run_tftrain(mem, folder), run_tftrain([*mem, "trainer.accumulate_steps=4"], folder)
    extras["memory"] = (big["rss"], acc["rss"], steady(big["epochs"]), steady(acc["epochs"]))
    print(f"memory: {big['rss']:.0f} MB at batch 512 vs {acc['rss']:.0f} MB at 128 x 4", flush=True)
    return extras


def render(results: dict, extras: dict, header: str) -> str:
    lines = [f"{header}", "",
             "| row | steps/epoch | wall time, s: tftrain / model.fit | ratio | training time, s: tftrain / "
             "model.fit | ratio | steady epoch ratio | test metric: tftrain / model.fit | peak RSS, MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row, r in results.items():
        t, f = r["tftrain"], r["fit"]
        if not t:
            continue
        ratio = [a["wall"] / b["wall"] for a, b in zip(t, f)]
        train_ratio = [a["train"] / b["train"] for a, b in zip(t, f)]
        epoch_ratio = [steady(a["epochs"]) / steady(b["epochs"]) for a, b in zip(t, f)]
        lines.append(
            f"| {row} | {t[0]['steps']} | {med([x['wall'] for x in t])} / {med([x['wall'] for x in f])} | "
            f"**{med(ratio, '{:.2f}')}** | {med([x['train'] for x in t])} / {med([x['train'] for x in f])} | "
            f"**{med(train_ratio, '{:.2f}')}** | {med(epoch_ratio, '{:.2f}')} | "
            f"{med([x['test'] for x in t], '{:.4g}')} / {med([x['test'] for x in f], '{:.4g}')} | "
            f"{med([x['rss'] for x in t], '{:.0f}')} / {med([x['rss'] for x in f], '{:.0f}')} |")
    lines += ["", "Ratios: tftrain / model.fit within one repetition, median (min-max) over the repetitions. "
              "Training time: the epochs' training steps (validation excluded); steady epoch: epochs after the first."]
    if extras:
        lines += ["", "| measurement (tftrain, one run each) | value |", "|---|---|"]
        for row in ("mlp", "cnn"):
            if f"xla {row}" in extras:
                on, off, won, woff = extras[f"xla {row}"]
                lines.append(f"| {row}: trainer.jit_compile=true / false (CPU), steady epoch time | "
                             f"{on:.3f} / {off:.3f} s = **{on / off:.2f}** (whole process {won:.1f} / {woff:.1f} s) |")
        if "spe" in extras:
            auto, one, steps = extras["spe"]
            lines.append(f"| mlp: steps_per_execution=auto / 1, steady epoch time ({steps} steps) | "
                         f"{auto:.3f} / {one:.3f} s = **{auto / one:.2f}** |")
        if "memory" in extras:
            big, acc, tb, ta = extras["memory"]
            lines.append(f"| resnet, peak RSS: batch 512 / batch 512 as 128 x 4 (trainer.accumulate_steps=4) | "
                         f"{big:.0f} / {acc:.0f} MB (epoch {tb:.1f} / {ta:.1f} s) |")
    startup = [x["startup"] for r in results.values() for x in r["tftrain"] if x.get("startup")]
    if startup:
        lines += ["", "tftrain's start-up, launch to the end of the first training step (metrics.json `startup_s`, "
                  f"median over {len(startup)} runs of every row):", "", "| phase | s |", "|---|---|"]
        for phase in startup[0]:
            lines.append(f"| {phase} | {statistics.median(s.get(phase, 0.0) for s in startup):.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
