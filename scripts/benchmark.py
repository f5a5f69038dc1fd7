# python scripts/benchmark.py [--reps 3] [--epochs 4] [--num-train 19200] [--markdown out.md]
"""tftrain vs a hand-written Keras script on the same job, and tftrain's input pipeline vs in-memory tensors.

The job: synthetic MNIST-shaped data (784 features, 10 classes, tftrain's `synthetic` recipe with
seed 0), MLP 256-128 (ReLU, Glorot-uniform), Adam 1e-3, batch 64, `--epochs` epochs, validation
every epoch. Every measurement runs in a fresh child process; the children of each repetition
run in alternating order (A B C ..., then ... C B A) so a neighbour's load on this shared machine
hits every variant alike. Reported: medians over the repetitions (min-max in brackets).

  tftrain           tftrain.train(cfg) with the defaults (per-step TensorBoard scalars, update_freq 1)
  tftrain-quiet     the same with logger.tensorboard.update_freq=1000000 (no per-step summaries)
  keras             a hand-written model.fit(x, y, batch_size, epochs, validation_data) on the same
                    model, data and optimizer (verbose=0, like trainer.verbose=0)
  pipeline          one child: the same model's compiled train step fed (a) in-memory tensors (a list
                    of pre-sliced batches: no tf.data), (b) a plain hand-written tf.data pipeline,
                    (c) tftrain's pipeline for the in-memory source, (d) the same source through
                    Datasets.batch_at (the step gathers its batch), (e) tftrain's streaming pipeline
                    from TFRecord files (cache: null), (f) tftrain's CSV pipeline (cache: memory);
                    epoch by epoch in rotating order; steps/s and process CPU time per step
  --help            wall time of `python -m tftrain --help`

Epoch times exclude the first epoch (tracing) and validation; time to first step is from the
child's launch to the end of its first training step; peak memory is the child's max RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BATCH, UNITS, FEATURES, CLASSES, LR, SEED = 64, (256, 128), 784, 10, 1e-3, 0
TAG = "BENCH_JSON "


def _report(**values):
    values["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(TAG + json.dumps(values), flush=True)


def synthetic(num_train: int, num_val: int, num_test: int):
    """tftrain's `synthetic` recipe (tftrain/data/arrays.py load_synthetic), seed 0, written out
    again so the Keras script does not depend on tftrain."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    prototypes = rng.normal(size=(CLASSES, FEATURES)).astype("float32")

    def draw(n):
        y = rng.integers(0, CLASSES, size=n)
        x = prototypes[y] + 1.0 * rng.normal(size=(n, FEATURES)).astype("float32")
        return x.astype("float32"), y.astype("int64")

    return draw(num_train), draw(num_val), draw(num_test)


def tftrain_overrides(a) -> list[str]:
    return ["data=synthetic", f"data.num_train={a.num_train}", f"data.num_val={a.num_val}",
            f"data.num_test={a.num_val}", f"data.input_shape=[{FEATURES}]", f"data.num_classes={CLASSES}",
            "model=mlp", f"model.hidden_units=[{','.join(map(str, UNITS))}]", "optimizer=adam",
            f"optimizer.lr={LR}", f"trainer.epochs={a.epochs}", f"trainer.batch_size={BATCH}",
            f"trainer.seed={SEED}", "trainer.verbose=0"]


# ---------------------------------------------------------------- children


def child_tftrain(a, extra: list[str]):
    import tftrain
    import tftrain.loop as loop_mod

    first = {}
    original = loop_mod.Loop._train_fn

    def timed(self, n):  # the first training step's end, as seen by the host
        fn = original(self, n)

        def call(it):
            out = fn(it)
            if "t" not in first:
                float(out[1].numpy())
                first["t"] = time.time()
            return out
        return call

    setup = []  # per epoch: building the epoch's dataset + creating its iterator (outside the loop's clock)

    class Timed:
        def __init__(self, ds, seconds):
            self.ds, self.seconds = ds, seconds

        def __iter__(self):
            t0 = time.perf_counter()
            it = iter(self.ds)
            setup.append(self.seconds + time.perf_counter() - t0)
            return it

    original_fit = loop_mod.Loop.fit

    def fit(self, make_train_dataset, val_ds, *, epochs):
        def make(epoch, skip):
            t0 = time.perf_counter()
            ds = make_train_dataset(epoch, skip)
            return Timed(ds, time.perf_counter() - t0)
        return original_fit(self, make, val_ds, epochs=epochs)

    loop_mod.Loop._train_fn = timed
    loop_mod.Loop.fit = fit
    with tempfile.TemporaryDirectory() as out:
        m = tftrain.train(tftrain.compose([*tftrain_overrides(a), *extra]), output_dir=out)
    steps = m["history"]["seconds"]
    _report(epoch_s=steps, epoch_full_s=[s + u for s, u in zip(steps, setup)], first_step_t=first["t"],
            steps_per_epoch=m["steps"] // m["epochs"], test_accuracy=m["test_accuracy"])


def child_keras(a):
    """The hand-written Keras script: nothing from tftrain."""
    import keras

    (x, y), (xv, yv), (xt, yt) = synthetic(a.num_train, a.num_val, a.num_val)
    keras.utils.set_random_seed(SEED)
    inputs = keras.Input((FEATURES,))
    h = keras.layers.Flatten()(inputs)
    for units in UNITS:
        h = keras.layers.Dense(units, activation="relu")(h)
    model = keras.Model(inputs, keras.layers.Dense(CLASSES)(h))
    model.compile(optimizer=keras.optimizers.Adam(LR),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs, self.full, self.first, self.t0, self.t_epoch = [], [], None, 0.0, 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self.t_epoch, self.t0 = time.perf_counter(), 0.0

        def on_train_batch_begin(self, batch, logs=None):  # like tftrain's clock: from the first step
            if batch == 0:
                self.t0 = time.perf_counter()

        def on_test_begin(self, logs=None):  # fit's validation starts: the epoch's training is over
            if len(self.epochs) < a.epochs and self.t0:
                now = time.perf_counter()
                self.epochs.append(now - self.t0)
                self.full.append(now - self.t_epoch)
                self.t0 = 0.0

        def on_train_batch_end(self, batch, logs=None):
            if self.first is None:
                self.first = time.time()

    timer = Timer()
    model.fit(x, y, batch_size=BATCH, epochs=a.epochs, validation_data=(xv, yv), shuffle=True, verbose=0,
              callbacks=[timer])
    _, acc = model.evaluate(xt, yt, batch_size=BATCH, verbose=0)
    _report(epoch_s=timer.epochs, epoch_full_s=timer.full, first_step_t=timer.first, steps_per_epoch=a.num_train // BATCH,
            test_accuracy=float(acc))


def child_pipeline(a):
    """One compiled train step of the same model, fed by each variant in turn, epoch by epoch
    (rounds rotate the order), with 1 step per call (tftrain's default) and 10 steps per call."""
    import keras
    import numpy as np
    import tensorflow as tf

    import tftrain
    from tftrain.data import build_datasets
    from tftrain.schema import validate

    (x, y), _, _ = synthetic(a.num_train, a.num_val, a.num_val)
    keras.utils.set_random_seed(SEED)
    inputs = keras.Input((FEATURES,))
    h = inputs
    for units in UNITS:
        h = keras.layers.Dense(units, activation="relu")(h)
    model = keras.Model(inputs, keras.layers.Dense(CLASSES)(h))
    opt = keras.optimizers.Adam(LR)
    opt.build(model.trainable_variables)

    def body(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(yb, model(xb, training=True),
                                                                               from_logits=True))
        opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return loss

    K = 10
    steps = a.num_train // BATCH // K * K
    order = np.random.default_rng(1).permutation(a.num_train)[:steps * BATCH]
    X, Y = tf.constant(x[order].reshape(steps, BATCH, FEATURES)), tf.constant(y[order].reshape(steps, BATCH))
    xs, ys = tf.unstack(X), tf.unstack(Y)
    step_tensors = tf.function(body)
    step_iterator = tf.function(lambda it: body(*next(it)[:2]))  # as tftrain's loop consumes batches

    @tf.function
    def k_tensors(start):
        loss = 0.0
        for i in tf.range(start, start + K):
            loss = body(X[i], Y[i])
        return loss

    @tf.function
    def k_iterator(it):
        loss = 0.0
        for _ in tf.range(K):
            loss = body(*next(it)[:2])
        return loss

    def in_memory(k):
        def run(epoch):
            if k == 1:
                for xb, yb in zip(xs, ys):
                    loss = step_tensors(xb, yb)
            else:
                for start in range(0, steps, K):
                    loss = k_tensors(start)
            float(loss)
        return run

    def through(make):
        def per_k(k):
            def run(epoch):
                it = iter(make(epoch))
                for _ in range(steps // k):
                    loss = step_iterator(it) if k == 1 else k_iterator(it)
                float(loss)
            return run
        return per_k

    def via_batch_at(ds):
        """Datasets.batch_at: the compiled step gathers its own batch from the host tensors (no tf.data)."""
        one = tf.function(lambda i: body(*ds.batch_at(i)))

        @tf.function
        def k_steps(start):
            loss = 0.0
            for i in tf.range(start, start + K):
                loss = body(*ds.batch_at(i))
            return loss

        def per_k(k):
            def run(epoch):
                ds.train(epoch)  # points batch_at at this epoch's order
                for start in range(0, steps, k):
                    loss = (one if k == 1 else k_steps)(tf.constant(start, tf.int64))
                float(loss)
            return run
        return per_k

    plain = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=SEED).batch(
        BATCH, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    feeds = {"in_memory": in_memory, "plain_tf_data": through(lambda epoch: plain)}
    build = {}
    base = [f"trainer.batch_size={BATCH}", f"trainer.seed={SEED}"]
    variants = {"tftrain_in_memory": tftrain_overrides(a)[:6]}
    if a.tfrecord:
        variants["tftrain_tfrecord_stream"] = ["data=tfrecord", f"data.path={a.tfrecord}",
                                               f"data.features.x.shape=[{FEATURES}]", "data.val_fraction=0.05",
                                               "data.test_fraction=0.05", "data.cache=null"]
    if a.csv:
        variants["tftrain_csv_memory"] = ["data=csv", f"data.path={a.csv}", "data.normalize=null",
                                          "data.val_fraction=0.05", "data.test_fraction=0.05", "data.cache=memory"]
    for name, over in variants.items():
        cfg = validate(tftrain.compose([*over, *base]))
        t0 = time.perf_counter()
        ds = build_datasets(cfg.data, cfg.trainer, tf.distribute.get_strategy())
        build[name] = time.perf_counter() - t0
        assert ds.steps_per_epoch >= steps, (name, ds.steps_per_epoch, steps)
        feeds[name] = through(ds.train)
        if name == "tftrain_in_memory":
            feeds["tftrain_batch_at"] = via_batch_at(ds)
    results, cpu = {}, {}
    for k in (1, K):
        runs = {name: feed(k) for name, feed in feeds.items()}
        for run in runs.values():
            run(0)  # tracing, cache fills
        sps = {name: [] for name in runs}
        for r in range(a.rounds):
            names = list(runs)[r % len(runs):] + list(runs)[:r % len(runs)]
            for name in (names if r % 2 == 0 else names[::-1]):
                t0, c0 = time.perf_counter(), time.process_time()
                runs[name](r + 1)
                sps[name].append(steps / (time.perf_counter() - t0))
                cpu.setdefault(f"{name}@{k}", []).append(1000 * (time.process_time() - c0) / steps)
        results[k] = sps
    _report(pipeline=results, cpu_ms_per_step=cpu, build_s=build, steps=steps)


# ---------------------------------------------------------------- parent


def write_files(a, folder: Path):
    """The same data (plus val/test rows to hold out) as TFRecord and CSV files for the stream variants."""
    import numpy as np
    import tensorflow as tf

    n = int(a.num_train / 0.9) + 2
    (x, y), _, _ = synthetic(n, 1, 1)
    a.tfrecord = str(folder / "data.tfrecord")
    with tf.io.TFRecordWriter(a.tfrecord) as w:
        for xi, yi in zip(x, y):
            w.write(tf.train.Example(features=tf.train.Features(feature={
                "x": tf.train.Feature(float_list=tf.train.FloatList(value=xi)),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(yi)]))})).SerializeToString())
    a.csv = str(folder / "data.csv")
    with open(a.csv, "w") as f:
        f.write(",".join([f"f{i}" for i in range(FEATURES)] + ["label"]) + "\n")
        np.savetxt(f, np.concatenate([x, y[:, None]], axis=1), fmt=["%.5g"] * FEATURES + ["%d"], delimiter=",")


def run_child(mode: str, a, extra=()) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    args = [sys.executable, __file__, "--child", mode, "--epochs", str(a.epochs), "--num-train", str(a.num_train),
            "--num-val", str(a.num_val), "--rounds", str(a.rounds), "--tfrecord", a.tfrecord or "",
            "--csv", a.csv or "", *extra]
    t0 = time.time()
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(TAG)]
    if r.returncode or not lines:
        raise SystemExit(f"child {mode} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    out = json.loads(lines[-1][len(TAG):])
    if "first_step_t" in out:
        out["first_step_s"] = out.pop("first_step_t") - t0
    return out


def time_help() -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tftrain", "--help"], capture_output=True, env=env, cwd=ROOT, check=True)
    return time.perf_counter() - t0


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 ** 2
    except OSError:
        mem = float("nan")
    import keras
    import tensorflow as tf

    return (f"{cpu}, {os.cpu_count()} logical cores, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}, TensorFlow {tf.__version__}, Keras {keras.__version__}; "
            f"load average at start {os.getloadavg()[0]:.2f}")


def med(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    m = statistics.median(values)
    return f"{m:.3g} [{min(values):.3g}-{max(values):.3g}]" if len(values) > 1 else f"{m:.3g}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--num-train", type=int, default=19200)
    p.add_argument("--num-val", type=int, default=1024)
    p.add_argument("--markdown", help="also write the table to this file")
    p.add_argument("--rounds", type=int, default=5, help="interleaved epochs per pipeline variant")
    p.add_argument("--no-streams", action="store_true", help="skip the TFRecord/CSV pipeline variants")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--tfrecord", default="", help=argparse.SUPPRESS)
    p.add_argument("--csv", default="", help=argparse.SUPPRESS)
    a, extra = p.parse_known_args()
    if a.child == "tftrain":
        return child_tftrain(a, extra)
    if a.child == "keras":
        return child_keras(a)
    if a.child == "pipeline":
        return child_pipeline(a)

    t_start = time.perf_counter()
    print("machine:", machine(), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        a.tfrecord = a.csv = None
        if not a.no_streams:
            write_files(a, Path(folder))
        modes = {
            "tftrain": lambda: run_child("tftrain", a),
            "keras": lambda: run_child("keras", a),
            "tftrain-quiet": lambda: run_child("tftrain", a, ["logger.tensorboard.update_freq=1000000"]),
            "help": time_help,
        }
        results = {k: [] for k in modes}
        results["pipeline"] = [run_child("pipeline", a)]
        print(f"pipeline comparison done ({time.perf_counter() - t_start:.0f}s)", flush=True)
        for rep in range(a.reps):
            order = list(modes) if rep % 2 == 0 else list(reversed(modes))
            for name in order:
                results[name].append(modes[name]())
                if name == "help":
                    results[name].append(time_help())
            print(f"repetition {rep + 1}/{a.reps} done ({time.perf_counter() - t_start:.0f}s)", flush=True)
    table = render(results, a)
    print(table)
    print(f"total {time.perf_counter() - t_start:.0f}s")
    if a.markdown:
        Path(a.markdown).write_text(table + "\n")
    Path(tempfile.gettempdir(), "tftrain_benchmark.json").write_text(json.dumps(results, indent=1))


def render(r: dict, a) -> str:
    steps = r["keras"][0]["steps_per_epoch"]

    def epoch_means(runs):  # per run: mean steady-state epoch (epochs 2..E)
        return [statistics.mean(x["epoch_s"][1:]) for x in runs]

    tt, kk, tq = epoch_means(r["tftrain"]), epoch_means(r["keras"]), epoch_means(r["tftrain-quiet"])
    ratio = [t / k for t, k in zip(tt, kk)]
    ratio_q = [t / k for t, k in zip(tq, kk)]
    full = {name: [statistics.mean(x["epoch_full_s"][1:]) for x in r[name]] for name in ("tftrain", "tftrain-quiet", "keras")}
    full_ratio = {name: [t / k for t, k in zip(full[name], full["keras"])] for name in full}
    rows = [
        "| measurement | tftrain | tftrain, no per-step summaries | hand-written Keras (`model.fit`) |",
        "|---|---|---|---|",
        f"| epoch time (training steps), s (epochs 2-{a.epochs}, {steps} steps) | {med(tt)} | {med(tq)} | {med(kk)} |",
        f"| steps/s | {med([steps / t for t in tt])} | {med([steps / t for t in tq])} | {med([steps / k for k in kk])} |",
        f"| epoch time / Keras' (same repetition) | {med(ratio)} | {med(ratio_q)} | 1 |",
        f"| epoch time with the per-epoch input set-up (dataset, iterator), s | {med(full['tftrain'])} | "
        f"{med(full['tftrain-quiet'])} | {med(full['keras'])} |",
        f"| the same / Keras' | {med(full_ratio['tftrain'])} | {med(full_ratio['tftrain-quiet'])} | 1 |",
        f"| time to first step, s (launch to end of step 1) | {med([x['first_step_s'] for x in r['tftrain']])} | "
        f"{med([x['first_step_s'] for x in r['tftrain-quiet']])} | {med([x['first_step_s'] for x in r['keras']])} |",
        f"| peak RSS, MB | {med([x['peak_rss_mb'] for x in r['tftrain']])} | "
        f"{med([x['peak_rss_mb'] for x in r['tftrain-quiet']])} | {med([x['peak_rss_mb'] for x in r['keras']])} |",
        f"| test accuracy | {med([x['test_accuracy'] for x in r['tftrain']])} | "
        f"{med([x['test_accuracy'] for x in r['tftrain-quiet']])} | {med([x['test_accuracy'] for x in r['keras']])} |",
        "",
        f"`python -m tftrain --help`: {med(r['help'])} s wall time ({len(r['help'])} runs).",
        "",
        "| input pipeline (same model, same compiled step) | steps/s, 1 step per call | vs in-memory "
        "tensors | steps/s, 10 steps per call | vs in-memory tensors | build, s |",
        "|---|---|---|---|---|---|",
    ]
    pipe = r["pipeline"][0]
    labels = {"in_memory": "in-memory tensors (pre-sliced batches, no tf.data)",
              "plain_tf_data": "plain tf.data: `from_tensor_slices.shuffle.batch.prefetch`",
              "tftrain_in_memory": "tftrain, in-memory source (`synthetic`)",
              "tftrain_batch_at": "tftrain, in-memory source via `Datasets.batch_at` (gather inside the step)",
              "tftrain_tfrecord_stream": "tftrain, TFRecord streamed each epoch (`cache: null`, buffer 10000)",
              "tftrain_csv_memory": "tftrain, CSV with `cache: memory`"}
    cells = {}
    for k, sps in pipe["pipeline"].items():
        mem = sps["in_memory"]
        for name, values in sps.items():
            ratio = [v / m for v, m in zip(values, mem)]  # same round: neighbours' load hits both alike
            cells.setdefault(name, []).extend([med(values), med(ratio)])
    for name, label in labels.items():
        if name in cells:
            b = pipe["build_s"].get(name)
            rows.append(f"| {label} | {' | '.join(cells[name])} | {f'{b:.2f}' if b else '-'} |")
    rows += ["", "| process CPU time per step, ms (all threads; the load of other processes does not count) | "
             "1 step per call | 10 steps per call |", "|---|---|---|"]
    for name, label in labels.items():
        if f"{name}@1" in pipe["cpu_ms_per_step"]:
            rows.append(f"| {label} | {med(pipe['cpu_ms_per_step'][f'{name}@1'])} | "
                        f"{med(pipe['cpu_ms_per_step'].get(f'{name}@10', []))} |")
    rows.append(f"\n{pipe['steps']} steps per epoch; {a.rounds} interleaved epochs per variant after one warm-up; "
                f"pipeline child peak RSS {pipe['peak_rss_mb']:.0f} MB.")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
