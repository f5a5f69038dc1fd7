# python scripts/gpu_check.py [--cpu] [--out FILE]   (run it as: bash scripts/gpu_check.sh [--cpu] [--out FILE])
"""The prepared device check: one command, under 8 minutes on one GPU, ending in a markdown table.

Rows (each in its own child process: fresh TensorFlow state, honest memory numbers):

  default           the real `python -m tftrain` (digits, MLP; --cpu: 3 epochs instead of 30)
  tftrain ...       model=resnet (ResNet-20) on CIFAR-shaped synthetic data, global batch 512,
                    3 epochs of 40 steps: float32, mixed_bfloat16, mixed_float16 x XLA off/on x
                    steps per execution 1/auto (12 rows; --cpu trains one of the spe=1 rows and
                    composes and type-checks the other five)
  model.fit         the same model (tftrain.models.resnet + the same L2) and arrays, compiled with
                    Adam, at the best tftrain row's precision and XLA setting, `steps_per_execution`
                    = one call per epoch (the most host overhead Keras can amortize)
  1 device /        the same run without batch norm (per-replica batch statistics would differ by
  2 devices         design: 0.4% measured on CPU) and without TF32, on one device and under
                    trainer.strategy=mirrored on the GPU split into two logical devices (--cpu:
                    trainer.cpu_devices=2); then a row with the per-epoch training loss' max
                    relative difference, checked against the mode's tolerance

steps/s and examples/s come from epochs 2-3 (the first epoch holds tracing and XLA compilation,
shown as "epoch 1 s"). Peak GPU memory is TensorFlow's allocator peak in the child (summed over
logical GPUs); peak RSS is the child's from wait4(). A failing or timed-out child becomes a row
with one line saying why; children are stopped at --budget seconds, and those not started by
then are "not run" (the `auto` rows run last, so they are the ones a tight budget leaves out).
Exit status 0 when every row ran (and the loss agreement holds), 1 otherwise.
--cpu shrinks everything (8x8x3 images, batch 32, filters [4], one block) so the script runs on any
machine in about a minute; the tests run it that way to keep it working.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TAG = "GPU_CHECK_RESULT "
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")

# Sizes per mode. GPU: ResNet-20 at batch 512 runs tens of steps/s on an H200-class GPU, so the
# 120 steps of a row take seconds; start-up, tracing and XLA compilation dominate each child.
# Epochs of 30+ steps: steps_per_execution=auto settles within the first epoch (it times 28
# steps: 1 traced, 3 calls of 1, 3 of 8), so epochs 2-3 measure the count it chose.
MODES = {
    "gpu": dict(shape=[32, 32, 3], batch=512, steps_per_epoch=40, epochs=3, model=[],
                default_cli=[], timeout=180, budget=460, jobs=1,
                # Two logical devices on one GPU: memory_limit is required; ResNet-20 at batch 256
                # holds an estimated 0.6 GiB of activations, and 2 x 8 GiB fits any GPU of 20 GB+.
                split_mb=8192,
                # Not measured yet (no GPU so far): TF32 off leaves reduction order and cuDNN's
                # algorithm choice per batch size as the differences, compounded over 120 Adam steps.
                tolerance=1e-3),
    "cpu": dict(shape=[8, 8, 3], batch=32, steps_per_epoch=30, epochs=3,
                model=["model.filters=[4]", "model.blocks_per_stage=1"],
                default_cli=["trainer.epochs=3"], timeout=150, budget=300,
                # Two children at a time: TensorFlow's import is single-threaded and most of a
                # child's time here; CPU timings are only a smoke test anyway.
                jobs=2, split_mb=None,
                # Measured 4e-8 (float32 summation order in the cross-replica sum); test_distribute
                # holds the MLP to 1e-5 likewise.
                tolerance=1e-5),
}


# ---------------------------------------------------------------- children


def _report(**values) -> None:
    print(TAG + json.dumps(values), flush=True)


def _gpu_peak_bytes(tf) -> int | None:
    gpus = tf.config.list_logical_devices("GPU")
    if not gpus:
        return None
    return sum(tf.config.experimental.get_memory_info(d.name.split("device:")[-1])["peak"] for d in gpus)


def _steady(epoch_seconds: list[float], steps_per_epoch: int) -> float | None:
    """Steps/s over the epochs after the first (which holds tracing and compilation)."""
    later = epoch_seconds[1:]
    return steps_per_epoch * len(later) / sum(later) if later and sum(later) > 0 else None


def child_train(spec: dict) -> None:
    """tftrain.train on spec's overrides, after an optional split of the GPU (devices are fixed
    at TensorFlow's first operation, so this comes before tftrain builds anything)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if spec["gpu"] and not gpus:
        raise RuntimeError("no GPU visible to TensorFlow (on a machine without one, use --cpu)")
    if spec.get("split") and gpus:
        tf.config.set_logical_device_configuration(
            gpus[0], [tf.config.LogicalDeviceConfiguration(memory_limit=spec["split_mb"])] * 2)
    if spec.get("no_tf32"):
        tf.config.experimental.enable_tensor_float_32_execution(False)
    import tftrain

    m = tftrain.train(tftrain.compose(spec["overrides"]), output_dir=spec["dir"])
    spe = m["steps"] // m["epochs"]
    seconds = m["history"]["seconds"]
    _report(steps_per_s=_steady(seconds, spe) or m["steps_per_s"], first_epoch_s=seconds[0], loss=m["history"]["loss"],
            gpu_peak=_gpu_peak_bytes(tf),
            devices=len(tf.config.list_logical_devices("GPU" if gpus else "CPU")))


def child_fit(spec: dict) -> None:
    """model.fit on the model and arrays tftrain builds from the same overrides."""
    import keras
    import tensorflow as tf

    import tftrain
    from tftrain.data.sources import synthetic
    from tftrain.initializers import add_l2
    from tftrain.models import resnet

    if spec["gpu"] and not tf.config.list_physical_devices("GPU"):
        raise RuntimeError("no GPU visible to TensorFlow (on a machine without one, use --cpu)")
    cfg = tftrain.compose(spec["overrides"])
    d, mc, t = cfg.data, cfg.model, cfg.trainer
    keras.utils.set_random_seed(t.seed)
    keras.mixed_precision.set_global_policy(spec["precision"])
    s = synthetic(num_train=d.num_train, num_val=d.num_val, num_test=d.num_test, input_shape=list(d.input_shape),
                  num_classes=d.num_classes, noise=d.noise, seed=t.seed)
    model = resnet(tuple(d.input_shape), d.num_classes, filters=list(mc.filters), blocks_per_stage=mc.blocks_per_stage,
                   activation=mc.activation, batch_norm=mc.batch_norm, dropout=mc.dropout)
    add_l2(model, mc.l2)
    steps_per_epoch = d.num_train // t.batch_size
    # Keras wraps the optimizer in a LossScaleOptimizer itself under mixed_float16.
    model.compile(optimizer=keras.optimizers.Adam(cfg.optimizer.lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"],
                  jit_compile=spec["jit"], steps_per_execution=steps_per_epoch)

    class Timer(keras.callbacks.Callback):
        """Per epoch, from its first training call to its end (like tftrain's clock: no iterator set-up)."""

        def __init__(self):
            super().__init__()
            self.seconds, self.t0 = [], None

        def on_train_batch_begin(self, batch, logs=None):
            if self.t0 is None:
                self.t0 = time.perf_counter()

        def on_test_begin(self, logs=None):  # validation starts: the epoch's training is over
            if self.t0 is not None:
                self.seconds.append(time.perf_counter() - self.t0)
                self.t0 = None

    timer = Timer()
    h = model.fit(s.x_train, s.y_train, batch_size=t.batch_size, epochs=t.epochs, validation_data=(s.x_val, s.y_val),
                  shuffle=True, verbose=0, callbacks=[timer])
    _report(steps_per_s=_steady(timer.seconds, steps_per_epoch), first_epoch_s=timer.seconds[0],
            loss=[float(v) for v in h.history["loss"]], gpu_peak=_gpu_peak_bytes(tf))


def child_main(spec: dict) -> int:
    try:
        {"train": child_train, "fit": child_fit}[spec["kind"]](spec)
        return 0
    except BaseException as e:  # one line for the table; the traceback stays in the child's log
        import traceback

        traceback.print_exc()
        first = (str(e).strip().splitlines() or [""])[0]
        _report(error=f"{type(e).__name__}: {first}"[:300])
        return 1


# ---------------------------------------------------------------- parent


# One table row: name, settings, the child's results, and `result` ("ok", or why not).
Row = dict


def run_child(cmd: list[str], log_path: Path, timeout: float, env: dict) -> tuple[int | None, float, int, str]:
    """(exit status or None on timeout, wall seconds, peak RSS in bytes, output). wait4() rather
    than Popen.wait: it returns this child's own rusage (RUSAGE_CHILDREN would be the max over all)."""
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        # In our process group: a Ctrl-C reaches the running children too (tftrain stops cleanly on it).
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    code = None
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            code = os.waitstatus_to_exitcode(status)
            break
        if time.perf_counter() - t0 > timeout:
            proc.kill()
            _, _, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.1)
    proc.returncode = -9 if code is None else code  # reaped here: keep Popen from waiting again
    return code, time.perf_counter() - t0, usage.ru_maxrss * 1024, log_path.read_text(errors="replace")


def cli_results(run_dir: Path) -> dict:
    """A `python -m tftrain` run's results from its metrics.json and config.yaml."""
    from omegaconf import OmegaConf

    m = json.loads((run_dir / "metrics.json").read_text())
    seconds = m["history"]["seconds"]
    return dict(steps_per_s=_steady(seconds, m["steps"] // m["epochs"]) or m["steps_per_s"], first_epoch_s=seconds[0],
                loss=m["history"]["loss"], batch=OmegaConf.load(run_dir / "config.yaml").trainer.batch_size)


def why_failed(code: int | None, output: str, timeout: float) -> str:
    if code is None:
        return f"timed out after {timeout:.0f} s"
    if code < 0:
        return f"killed by signal {-code}" + (" (out of memory?)" if code == -9 else "")
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("tftrain: error") or "Error" in ln.split(":")[0]]
    return ((errors or lines or [f"exit status {code}"])[-1])[:300]


class Check:
    def __init__(self, args):
        self.args, self.mode = args, "cpu" if args.cpu else "gpu"
        self.m = MODES[self.mode]
        self.budget = args.budget if args.budget is not None else self.m["budget"]
        self.work = Path(args.workdir or tempfile.mkdtemp(prefix="gpu_check-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        if args.cpu:
            self.env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU check on a GPU machine too
        self.t_start = time.perf_counter()
        self.stopping = False

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t_start)

    def base(self) -> list[str]:
        m = self.m
        num_train = m["batch"] * m["steps_per_epoch"]
        return ["model=resnet", *m["model"], "data=synthetic", f"data.input_shape=[{','.join(map(str, m['shape']))}]",
                "data.num_classes=10", f"data.num_train={num_train}", f"data.num_val={m['batch']}",
                f"data.num_test={m['batch']}", f"trainer.batch_size={m['batch']}", f"trainer.epochs={m['epochs']}",
                "trainer.verbose=0", "logger=[]"]

    def refused(self, overrides: list[str]) -> str | None:
        """Why tftrain refuses a row's overrides (None: accepted). `--cfg job` composes and
        type-checks without importing TensorFlow (about a second)."""
        r = subprocess.run([sys.executable, "-m", "tftrain", *self.base(), *overrides, "--cfg", "job"], cwd=ROOT,
                           env=self.env, capture_output=True, text=True, timeout=60)
        return None if r.returncode == 0 else why_failed(r.returncode, r.stdout + r.stderr, 60)

    def execute(self, row: Row, cmd: list[str], run_dir: Path | None = None) -> Row:
        """Run one child; `run_dir`: a CLI run's directory to read its results from."""
        name = row["name"]
        if self.stopping:
            row["result"] = "not run: interrupted"
            return row
        if self.left() < 15:  # too late to start it and still finish within the budget
            row["result"] = f"not run: the {self.budget:.0f} s budget was spent"
            return row
        timeout = min(self.m["timeout"], self.left())
        log = self.work / (name.replace(" ", "_").replace("/", "-") + ".log")
        print(f"[{time.perf_counter() - self.t_start:5.0f} s] {name} ...", flush=True)
        code, wall, rss, out = run_child(cmd, log, timeout, self.env)
        row.update(wall=wall, rss=rss)
        tagged = [json.loads(ln[len(TAG):]) for ln in out.splitlines() if ln.startswith(TAG)]
        result = tagged[-1] if tagged else {}
        if code == 0 and "error" not in result and run_dir is not None:
            try:
                result = cli_results(run_dir)
            except (OSError, ValueError, KeyError) as e:
                result = {"error": f"no results in {run_dir}: {e}"}
        if code == 0 and "error" not in result:
            row.update(result, result="ok")
            chosen = re.search(r"steps_per_execution=auto: (\d+) step", out)  # what `auto` settled on (tftrain's log)
            if chosen:
                row["spe"] = f"auto: {chosen.group(1)}"
        else:
            row["result"] = "FAILED: " + (result.get("error") or why_failed(code, out, timeout))
        print(f"[{time.perf_counter() - self.t_start:5.0f} s] {name}: {row['result']} ({wall:.0f} s)", flush=True)
        return row

    def child(self, name: str, spec: dict, **settings) -> tuple[Row, list[str]]:
        """A row and the command of its child (this file with --child)."""
        spec = dict(spec, gpu=self.mode == "gpu")
        return Row(name=name, batch=self.m["batch"], **settings), [sys.executable, str(Path(__file__).resolve()),
                                                                   "--child", json.dumps(spec)]

    def train(self, name: str, overrides: list[str], **settings) -> tuple[Row, list[str]]:
        run_dir = self.work / "runs" / name.replace(" ", "_").replace("=", "-")
        return self.child(name, dict(kind="train", overrides=[*self.base(), *overrides], dir=str(run_dir),
                                     split=settings.pop("split", False), split_mb=self.m["split_mb"],
                                     no_tf32=settings.pop("no_tf32", False)), **settings)

    def run(self) -> tuple[list[Row], bool]:
        pool = ThreadPoolExecutor(self.args.jobs or self.m["jobs"])

        cli_dir = self.work / "runs" / "default"
        default = (Row(name="python -m tftrain (default" + (", 3 epochs)" if self.mode == "cpu" else ")")),
                   [sys.executable, "-m", "tftrain", *self.m["default_cli"], f"hydra.run.dir={cli_dir}"], cli_dir)
        matrix = []
        for spe in ("1", "auto"):
            for precision in PRECISIONS:
                for xla in (False, True):
                    name = f"tftrain {precision} xla={'on' if xla else 'off'} spe={spe}"
                    mp = "null" if precision == "float32" else precision
                    overrides = [f"trainer.mixed_precision={mp}", f"trainer.jit_compile={xla}".lower(),
                                 f"trainer.steps_per_execution={spe}"]
                    row, cmd = self.train(name, overrides, precision=precision, xla=xla, spe=spe)
                    # --cpu (the tests' run): of the spe=1 rows, which differ from the auto rows
                    # only in that value, one trains; the others are composed and type-checked.
                    if self.mode == "cpu" and spe == "1" and (precision, xla) != ("float32", False):
                        why = self.refused(overrides)
                        row["result"] = f"FAILED: {why}" if why else "skipped: --cpu trains one spe=1 row (config checked)"
                    matrix.append((row, cmd))

        def run_all(jobs):
            futures = [pool.submit(self.execute, *job) for job in jobs if "result" not in job[0]]  # not skipped
            while not all(f.done() for f in futures):
                time.sleep(0.2)  # not blocked in f.result(): the main thread must stay able to take a Ctrl-C
            for f in futures:
                f.result()  # an error in execute() itself

        # Order of work (not of the table): should the budget run out, the `auto` rows are the ones
        # left out, not model.fit or the device comparison.
        run_all([default, *matrix[:6]])

        # model.fit at the fastest tftrain row's precision and XLA setting.
        ok = [r for r, _ in matrix[:6] if r["result"] == "ok"]
        best = max(ok, key=lambda r: r["steps_per_s"] or 0) if ok else dict(precision="float32", xla=False)
        spe = self.m["steps_per_epoch"]
        fit = self.child("model.fit", dict(kind="fit", overrides=self.base(), precision=best["precision"],
                                           jit=best["xla"]), precision=best["precision"], xla=best["xla"], spe=str(spe))
        # Batch norm off: per-replica batch statistics differ from one device's by design, not by a bug.
        same = ["model.batch_norm=false", "trainer.mixed_precision=null", "trainer.jit_compile=false",
                "trainer.steps_per_execution=1"]
        split = ["trainer.strategy=mirrored"] + (["trainer.cpu_devices=2"] if self.mode == "cpu" else [])
        plain = dict(precision="float32, no TF32", xla=False, spe="1", no_tf32=True)
        one = self.train("1 device (no batch norm)", [*same, "trainer.strategy=default"], **plain)
        two = self.train("2 devices mirrored (no batch norm)", [*same, *split], split=self.mode == "gpu", **plain)
        run_all([fit, one, two, *matrix[6:]])
        pool.shutdown()
        rows = [job[0] for job in (default, *matrix, fit, one, two)] + [self.agreement(one[0], two[0])]
        return rows, all(r["result"] == "ok" or r["result"].startswith("skipped") for r in rows)

    def agreement(self, one: Row, two: Row) -> Row:
        """The per-epoch training loss of the 2-device run against the 1-device run's."""
        row = Row(name="loss agreement: 2 devices vs 1")
        if one["result"] != "ok" or two["result"] != "ok":
            row["result"] = "FAILED: a run to compare failed"
        elif two.get("devices") != 2:  # else the comparison would pass without testing anything
            row["result"] = f"FAILED: the mirrored run had {two.get('devices')} device(s), not 2"
        else:
            diff = max(abs(a - b) / abs(a) for a, b in zip(one["loss"], two["loss"]))
            row.update(result="ok" if diff <= self.m["tolerance"] else "FAILED: too far apart", rel_diff=diff,
                       note=f"max rel. diff {diff:.1e} (tolerance {self.m['tolerance']:.0e}) over "
                            f"{len(one['loss'])} epochs")
        return row


def _fmt(v, spec=".1f") -> str:
    return "" if v is None else format(v, spec)


def header(check: Check, total: float) -> list[str]:
    m = check.m
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.strip().replace("\n", "; ")
    except (OSError, subprocess.SubprocessError):
        gpu = ""
    versions = []
    for pkg in ("tensorflow", "keras"):
        try:
            versions.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            versions.append(f"{pkg} not installed")
    shape = "x".join(map(str, m["shape"]))
    if gpu and check.mode == "cpu":
        gpu += " (hidden by --cpu)"
    return [f"# tftrain device check ({'--cpu, shrunk' if check.mode == 'cpu' else 'GPU'})", "",
            f"- device: {gpu or 'no GPU (nvidia-smi not found or no GPU)'}; "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores",
            f"- {', '.join(versions)}, Python {platform.python_version()}",
            f"- resnet rows: synthetic {shape} images, 10 classes, global batch {m['batch']}, {m['epochs']} epochs of "
            f"{m['steps_per_epoch']} steps; steps/s from epochs 2-{m['epochs']} (epoch 1 holds tracing and "
            "compilation)",
            f"- total time {total:.0f} s (budget {check.budget:.0f} s)", ""]


def _losses(loss: list[float]) -> str:
    shown = [f"{v:.4f}" for v in loss]
    return " ".join(shown if len(shown) <= 5 else [shown[0], "...", shown[-1]])


def table(rows: list[Row]) -> list[str]:
    cols = ["run", "precision", "XLA", "steps/exec", "steps/s", "examples/s", "epoch 1 s", "peak GPU MiB",
            "peak RSS MiB", "loss per epoch", "wall s", "result"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        sps = r.get("steps_per_s")
        cells = [r["name"], r.get("precision", ""), {True: "on", False: "off"}.get(r.get("xla"), ""), r.get("spe", ""),
                 _fmt(sps), _fmt(sps * r["batch"] if sps and r.get("batch") else None, ".0f"),
                 _fmt(r.get("first_epoch_s")),
                 _fmt(r["gpu_peak"] / 2 ** 20, ".0f") if r.get("gpu_peak") is not None else
                 ("n/a" if r["result"] == "ok" and "wall" in r else ""),
                 _fmt(r["rss"] / 2 ** 20 if r.get("rss") else None, ".0f"),
                 _losses(r.get("loss", [])), _fmt(r.get("wall")),
                 r["result"] + (f": {r['note']}" if r.get("note") else "")]
        out.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu", action="store_true", help="shrunk, on the CPU (GPUs hidden): keeps the script working")
    p.add_argument("--out", help="also write the table (markdown) to this file")
    p.add_argument("--budget", type=float, help="seconds after which no child starts and "
                   "a running one is stopped (GPU 460: the whole check stays under 8 minutes; --cpu 300)")
    p.add_argument("--jobs", type=int, help="children at a time (GPU 1: timings need the device alone; --cpu 2)")
    p.add_argument("--workdir", help="keep the children's logs and run directories here (default: a temporary "
                                     "directory, removed when every row is ok)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child_main(json.loads(args.child))

    check = Check(args)
    try:
        rows, ok = check.run()
    except KeyboardInterrupt:
        check.stopping = True  # the pool's threads start no further child before Python exits
        print(f"Interrupted (the running children got the Ctrl-C too); their logs: {check.work}", file=sys.stderr)
        return 130
    text = "\n".join(header(check, time.perf_counter() - check.t_start) + table(rows)) + "\n"
    print("\n" + text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    if ok and not args.workdir:
        import shutil

        shutil.rmtree(check.work, ignore_errors=True)
    elif not ok:
        print(f"Logs of every child: {check.work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
