"""`python -m tftrain task=noise_scale [task.run=<run dir>]`: the gradient noise scale of the
configured data, model and problem, and the batch size it suggests.

The simple noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018, "An Empirical Model of
Large-Batch Training"), G the gradient of the loss over the data and Sigma the per-example
covariance of the gradient, is about the batch size past which a bigger batch stops cutting the
steps to a given loss in proportion. It is estimated as in the paper's appendix A: each step takes
one global batch of B_big = trainer.batch_size, split over all replicas into `task.micro_batches`
micro-batches of B_small; with |G_big|^2 the squared norm of the whole batch's gradient and
|G_small|^2 the mean of the micro-batches',

    |G|^2     ~ (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small)
    tr(Sigma) ~ (|G_small|^2 - |G_big|^2) / (1 / B_small - 1 / B_big)

are unbiased per step; each is averaged over `task.num_steps` batches (the weights fixed, nothing
updated) and B_simple is the ratio of the means, its interval a bootstrap over the steps. The
gradient is the one training follows (tftrain.loop.Trainer): the problem's per-example loss
averaged over the micro-batch, plus the model's regularization losses, in training mode (dropout on;
BatchNormalization normalizes by each micro-batch's statistics, as under trainer.accumulate_steps).
`task.run` takes the weights of a training run's newest checkpoint (`task.step`: another one kept
there), read as data into the model this config builds.

The suggestion: trainer.batch_size the power of two nearest B_simple (capped by the training
split) and the rate for it under the linear scaling rule (Goyal et al. 2017), optimizer.lr times
suggested / current batch, with a linear warmup (schedule.warmup_epochs) when the batch grows.
Outputs in the run directory: noise_scale.json.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from tftrain.config.targets import label
from tftrain.errors import ConfigError
from tftrain.schema import validate
from tftrain.tasks.run import open_run

log = logging.getLogger("tftrain")

BOOTSTRAP = 2000  # resamples of the steps for the interval
WARMUP_FRACTION = 5 / 90  # Goyal et al.: 5 warmup epochs of 90


# ---------------------------------------------------------------- the estimator (NumPy only)


def per_step_estimates(big_sq, small_sq, b_big: int, b_small: int) -> tuple[np.ndarray, np.ndarray]:
    """Unbiased per-step estimates (|G|^2, tr(Sigma)) from the squared norms of the whole batch's
    gradient (`big_sq`) and the mean of its micro-batches' (`small_sq`) (McCandlish et al., A.1)."""
    big_sq, small_sq = np.asarray(big_sq, np.float64), np.asarray(small_sq, np.float64)
    g_sq = (b_big * big_sq - b_small * small_sq) / (b_big - b_small)
    trace = (small_sq - big_sq) / (1.0 / b_small - 1.0 / b_big)
    return g_sq, trace


def ratio(trace_mean: float, g_sq_mean: float) -> float:
    """tr(Sigma) / |G|^2, infinite when the gradient is not resolved above the noise (|G|^2 <= 0)."""
    return float(trace_mean / g_sq_mean) if g_sq_mean > 0 else math.inf


def bootstrap_interval(g_sq, trace, confidence: float, seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap interval of mean(trace) / mean(g_sq), the steps resampled."""
    g_sq, trace = np.asarray(g_sq), np.asarray(trace)
    n = len(g_sq)
    idx = np.random.default_rng(seed).integers(0, n, size=(BOOTSTRAP, n))
    den, num = g_sq[idx].mean(axis=1), trace[idx].mean(axis=1)
    ratios = np.sort(np.where(den > 0, num / np.where(den > 0, den, 1.0), np.inf))
    tail = (1 - confidence) / 2
    lo = ratios[int(math.floor(tail * (BOOTSTRAP - 1)))]
    hi = ratios[int(math.ceil((1 - tail) * (BOOTSTRAP - 1)))]
    return float(lo), float(hi)


def nearest_power_of_two(b: float, cap: int) -> int:
    """The power of two nearest `b` on a log scale, at least 1, at most `cap` (the training split)."""
    if not math.isfinite(b):
        return max(1, cap)
    return int(min(max(1, 2 ** round(math.log2(max(b, 1.0)))), max(1, cap)))


def suggestion(cfg: DictConfig, b_simple: float, num_train: int) -> dict:
    """trainer.batch_size near B_simple and its rate under the linear scaling rule, with warmup."""
    t = cfg.trainer
    current, epochs = int(t.batch_size), int(t.epochs)
    batch = nearest_power_of_two(b_simple, num_train)
    reference = t.get("lr_reference_batch")
    lr = cfg.optimizer.get("lr")  # an optimizer of the user's may have none
    # The rate training runs at now (before the schedule), and the one the rule gives the new batch.
    current_rate = None if lr is None else float(lr) * (current / reference if reference else 1.0)
    rate = None if current_rate is None else float(f"{current_rate * batch / current:.3g}")
    overrides = [f"trainer.batch_size={batch}"]
    if rate is not None and not reference:  # with trainer.lr_reference_batch the rate follows the batch by itself
        overrides.append(f"optimizer.lr={rate:g}")
    warmup = float(cfg.schedule.get("warmup_epochs") or 0.0)
    if batch > current and warmup == 0:
        warmup = float(max(1, round(WARMUP_FRACTION * epochs)))
        warmup = warmup if warmup < epochs else epochs / 2  # the schedule needs steps after its warmup
        overrides.append(f"schedule.warmup_epochs={warmup:g}")
    return {"batch_size": batch, "lr": rate, "current_batch_size": current, "current_lr": current_rate,
            "warmup_epochs": warmup, "overrides": overrides, "command": "python -m tftrain " + " ".join(overrides)}


# ---------------------------------------------------------------- inputs checked before TensorFlow


def checkpoint_of(task) -> Path | None:
    """The checkpoint prefix (<run>/checkpoints/ckpt-<step>) task.run and task.step name, or None."""
    from tftrain.loop.checkpoints import committed_steps

    if task.get("run") is None:
        return None
    directory = _checkpoints_dir(task)
    steps = committed_steps(directory)
    if not steps:
        raise _no_checkpoints(task, directory)
    step = steps[0] if task.get("step") is None else int(task.step)
    if step not in steps:
        raise ConfigError("task.step", step, f"the step of a checkpoint kept in {directory}: {sorted(steps)}",
                          "pick one of them, or leave task.step out for the newest")
    return directory / f"ckpt-{step}"


def _checkpoints_dir(task) -> Path:
    """<task.run>/checkpoints, or a ConfigError when it holds no checkpoint (checked without TensorFlow)."""
    directory = Path(str(task.run)).expanduser() / "checkpoints"
    if not any(directory.glob("state-*.json")):  # a committed checkpoint's last file (tftrain.loop.checkpoints)
        raise _no_checkpoints(task, directory)
    return directory


def _no_checkpoints(task, directory: Path) -> ConfigError:
    why = "does not exist" if not directory.parent.is_dir() else f"has no checkpoints in {directory}"
    return ConfigError("task.run", str(task.run), "a run directory with checkpoints (<run>/checkpoints/ckpt-<step>)",
                       f"the directory {why}; point task.run at a training run's directory (the one its "
                       "'Outputs in ...' line names), or leave task.run out for the estimate at initialization")


def check_batches(cfg: DictConfig, replicas: int = 1) -> tuple[int, int]:
    """(B_big, B_small), or a ConfigError naming the key: the global batch must split into
    task.micro_batches equal micro-batches, a whole number of them on each replica."""
    b_big, k = int(cfg.trainer.batch_size), int(cfg.task.micro_batches)
    if b_big % k or b_big < k:
        raise ConfigError("trainer.batch_size", b_big, f"a multiple of task.micro_batches ({k}): each step's batch "
                          f"splits into {k} micro-batches of equal size",
                          f"set trainer.batch_size to a multiple of {k} (e.g. {max(k, b_big // k * k)}) or "
                          "task.micro_batches to one of its divisors")
    if k % replicas:
        raise ConfigError("task.micro_batches", k, f"a multiple of the {replicas} replicas (each computes the same "
                          "number of micro-batches)", f"set task.micro_batches={k + replicas - k % replicas}")
    return b_big, b_big // k


# ---------------------------------------------------------------- the task


def noise_scale(cfg: DictConfig, output_dir: str | Path | None = None) -> dict:
    """Estimate B_simple for `cfg` (composed with `task=noise_scale`); write noise_scale.json in
    `output_dir`; return its dict.

    >>> import tftrain
    >>> from tftrain.tasks.noise_scale import noise_scale
    >>> result = noise_scale(tftrain.compose(["task=noise_scale"]))  # doctest: +SKIP
    >>> result["b_simple"], result["interval"], result["suggestion"]["command"]  # doctest: +SKIP
    """
    if "micro_batches" not in cfg.task:
        raise ConfigError("task", label(cfg.task), "task=noise_scale (this function estimates the noise scale)",
                          "compose the config with `task=noise_scale`")
    checked = validate(cfg)  # bad inputs fail before TensorFlow starts
    check_batches(checked)
    if checked.task.run is not None:
        _checkpoints_dir(checked.task)
    with open_run(cfg, output_dir, resumes=False) as run:
        return estimate(run.cfg, run.write_dir, run.strategy)


def _restore(built, prefix: Path, task) -> None:
    """The weights of checkpoint `prefix` (read as data) into `built.model`; ConfigError when they do not fit."""
    import gc

    import tensorflow as tf

    try:
        status = tf.train.Checkpoint(model=built.model).read(str(prefix))
        status.expect_partial()  # the optimizer's and the loop's state are not needed
        status.assert_existing_objects_matched()
        return
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
    # A failed read leaves its restore pending on the model, which lists every unrestored value
    # as a warning once collected: collected here, quietly.
    tf_log = logging.getLogger("tensorflow")
    level = tf_log.level
    tf_log.setLevel(logging.ERROR)
    try:
        built.model = built.optimizer = None
        gc.collect()
    finally:
        tf_log.setLevel(level)
    raise ConfigError("task.run", str(task.run), "a run whose checkpoint fits the model built from this config",
                      f"{prefix} does not ({reason}); compose the same model, data and problem overrides the run "
                      "was trained with (its config.yaml lists them), or point task.run at a run of this model")


def _gradient_norms(built, strategy, k: int, b_small: int):
    """A tf.function(iterator, n) -> [n, 2] float64: per step, |G_big|^2 and the mean of the
    micro-batches' |g_i|^2, over all replicas (each takes k / replicas micro-batches)."""
    import tensorflow as tf

    model, optimizer, problem = built.model, built.optimizer, built.problem
    per_replica = k // strategy.num_replicas_in_sync
    variables = model.trainable_variables
    SUM = tf.distribute.ReduceOp.SUM

    def micro_gradient(x, y):
        with tf.GradientTape() as tape:
            outputs = model(x, training=True)
            loss = tf.reduce_mean(problem.per_example_loss(y, outputs))
            if model.losses:
                loss += tf.add_n(model.losses)
            scaled = optimizer.scale_loss(loss)  # mixed precision's loss scale, undone below
        unscale = tf.cast(optimizer.scale_loss(1.0), tf.float64)
        grads = tape.gradient(scaled, variables)
        return [tf.zeros(v.shape, tf.float64) if g is None else tf.cast(tf.convert_to_tensor(g), tf.float64) / unscale
                for g, v in zip(grads, variables)]

    def replica(x, y):
        total = [tf.zeros(v.shape, tf.float64) for v in variables]
        small_sq = tf.constant(0.0, tf.float64)
        for i in tf.range(per_replica):
            part = lambda t: t[i * b_small:(i + 1) * b_small]  # noqa: E731
            grads = micro_gradient(tf.nest.map_structure(part, x), tf.nest.map_structure(part, y))
            total = [a + g for a, g in zip(total, grads)]
            small_sq += tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads])
        context = tf.distribute.get_replica_context()
        total, small_sq = context.all_reduce(SUM, [total, small_sq])
        big_sq = tf.add_n([tf.reduce_sum(tf.square(g / k)) for g in total])
        return tf.stack([big_sq, small_sq / k])

    @tf.function
    def steps(iterator, n):
        out = tf.TensorArray(tf.float64, size=n, element_shape=[2])
        for i in tf.range(n):
            values = strategy.run(replica, args=next(iterator))
            out = out.write(i, strategy.reduce(tf.distribute.ReduceOp.MEAN, values, axis=None))
        return out.stack()

    return steps


def estimate(cfg: DictConfig, run_dir: Path, strategy) -> dict:
    """The noise scale of a validated task=noise_scale config under `strategy`, written to `run_dir`."""
    import tensorflow as tf

    from tftrain.config.factory import build_components

    t_start = time.perf_counter()
    task = cfg.task
    replicas = strategy.num_replicas_in_sync
    b_big, b_small = check_batches(cfg, replicas)
    k = b_big // b_small
    prefix = checkpoint_of(task)
    # The global batch is read whole (its micro-batches are this task's): no accumulation.
    built_cfg = OmegaConf.create(OmegaConf.to_container(cfg))
    built_cfg.trainer.accumulate_steps = 1
    run_dir = Path(run_dir)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    built = build_components(built_cfg, strategy)
    if prefix is not None:
        _restore(built, prefix, task)
    data = built.data
    full = data.num_train // b_big  # the epoch's full batches (a partial last one is left out)
    if full < 1:
        raise ConfigError("trainer.batch_size", b_big, f"at most the {data.num_train} training examples",
                          "lower trainer.batch_size")
    where = f"checkpoint {prefix}" if prefix is not None else "initialization"
    log.info("noise_scale: %s at %s; %d batches of %d, each split into %d micro-batches of %d over %d replica(s); "
             "run directory %s", label(cfg.model, "model"), where, task.num_steps, b_big, k, b_small, replicas,
             run_dir.resolve())
    steps_fn = _gradient_norms(built, strategy, k, b_small)
    norms, epoch = [], 0
    while len(norms) < task.num_steps:
        n = min(full, task.num_steps - len(norms))
        norms.extend(steps_fn(iter(data.train(epoch)), tf.constant(n)).numpy().tolist())
        epoch += 1
    big_sq, small_sq = np.asarray(norms).T
    g_sq, trace = per_step_estimates(big_sq, small_sq, b_big, b_small)
    g_mean, trace_mean = float(g_sq.mean()), float(trace.mean())
    b_simple = ratio(trace_mean, g_mean)
    lo, hi = bootstrap_interval(g_sq, trace, task.confidence, seed=int(cfg.trainer.seed))
    suggested = suggestion(cfg, b_simple, data.num_train)
    result = {
        "task": "noise_scale",
        "model": label(cfg.model, "model"),
        "data": label(cfg.data, "data"),
        "problem": label(cfg.problem, "problem"),
        "at": where,
        "checkpoint": None if prefix is None else str(prefix.resolve()),
        "b_simple": b_simple,
        "interval": [lo, hi],
        "confidence": task.confidence,
        "grad_sq_norm": g_mean,  # |G|^2
        "trace_sigma": trace_mean,  # tr(Sigma), per example
        "b_small": b_small,
        "b_big": b_big,
        "micro_batches": k,
        "replicas": replicas,
        "steps": len(g_sq),
        "epochs_read": epoch,
        "num_train": data.num_train,
        "suggestion": suggested,
        "per_step": {"big_sq": big_sq.tolist(), "small_sq": small_sq.tolist()},
        "wall_time_s": time.perf_counter() - t_start,
        "run_dir": str(run_dir.resolve()),
    }
    (run_dir / "noise_scale.json").write_text(json.dumps(result, indent=2) + "\n")
    if g_mean <= 0:
        log.warning("noise_scale: |G|^2 is not resolved above the noise (estimate %.3g <= 0) over %d steps: B_simple "
                    "is larger than this batch can measure. Raise task.num_steps or trainer.batch_size.",
                    g_mean, len(g_sq))
    log.info("noise_scale: B_simple = %.4g (%g%% interval %.4g to %.4g); |G|^2 %.4g, tr(Sigma) %.4g; %d steps in %.1fs",
             b_simple, 100 * task.confidence, lo, hi, g_mean, trace_mean, len(g_sq), result["wall_time_s"])
    log.info("noise_scale: suggested trainer.batch_size=%d (now %d)%s (linear scaling rule%s)",
             suggested["batch_size"], b_big, "" if suggested["lr"] is None else f" at lr {suggested['lr']:g}",
             f", warmup {suggested['warmup_epochs']:g} epochs" if suggested["warmup_epochs"] else "")
    log.info("Outputs in %s: noise_scale.json. Train with: %s (and the same other overrides)", run_dir.resolve(),
             suggested["command"])
    return result
