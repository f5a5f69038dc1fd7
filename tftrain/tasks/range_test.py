"""The learning-rate range test, shared by `task=lr_find` (tftrain.tasks.lr_find) and
`task.find_lr` of training.

The configured data, model and optimizer train from a fresh initialization while the learning
rate rises exponentially from `task.min_lr` to `task.max_lr` over `task.num_steps` steps
(Smith 2017, "Cyclical Learning Rates", section 3.3; fastai's lr_find). The training loss is
smoothed with a debiased exponential moving average (`task.smoothing`, beta) and the test stops
once the smoothed loss exceeds `task.divergence_threshold` times its best value (or is not
finite). Four suggestions are read off the smoothed curve (its first tenth and, after a
divergence, its last 5 points left out):

- valley: the middle of the longest stretch over which the loss keeps falling (fastai's default);
- steepest: where the loss falls fastest against log(lr);
- minimum: the rate of the lowest loss, divided by 10;
- slide: fastai's interval slide rule: the left end of the rightmost 15-point window over which
  the loss's slope changes by more than 0.005.

Outputs in the run directory: `lr_find.json` (rates, losses, suggestions, which one is
"suggested") and `lr_find.png` (loss against rate, log x axis, suggestions marked). The trained
weights are thrown away. The test runs tftrain's own training step under the configured strategy,
one step per call (`trainer.steps_per_execution` does not apply).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from tftrain.config.targets import label
from tftrain.errors import TftrainError
from tftrain.schema import validate

log = logging.getLogger("tftrain")

SKIP_END = 5  # points before a divergence left out of the suggestions (the loss is already shooting up)


# ---------------------------------------------------------------- suggestions (NumPy only)


def ramp_lrs(min_lr: float, max_lr: float, num_steps: int) -> np.ndarray:
    """The rate of steps 0..num_steps-1: min_lr * (max_lr / min_lr) ** (step / (num_steps - 1))."""
    return min_lr * (max_lr / min_lr) ** (np.arange(num_steps) / max(num_steps - 1, 1))


def valley(lrs, losses) -> float:
    """fastai's valley: the longest (not necessarily contiguous) decreasing run of the loss; the
    rate about half-way along it."""
    losses = np.asarray(losses)
    n = len(losses)
    lds = np.ones(n, dtype=int)  # length of the longest decreasing subsequence ending at i
    max_start = max_end = 0
    for i in range(1, n):
        higher = losses[:i] > losses[i]
        if higher.any():
            lds[i] = lds[:i][higher].max() + 1
        if lds[i] > lds[max_end]:
            max_end = i
            max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return float(np.asarray(lrs)[idx])


def steepest(lrs, losses) -> float:
    """The rate where the loss falls fastest against log(lr)."""
    lrs, losses = np.asarray(lrs), np.asarray(losses)
    slopes = np.diff(losses) / np.diff(np.log(lrs))
    return float(lrs[int(np.argmin(slopes))])


def minimum(lrs, losses) -> float:
    """The rate of the lowest loss, divided by 10."""
    return float(np.asarray(lrs)[int(np.argmin(losses))] / 10)


def slide(lrs, losses, lr_diff: int = 15, thresh: float = 0.005, adjust_value: float = 1.0) -> float:
    """fastai's `slide` (fastai.callback.schedule.slide, PR 3377; Andrew Chang's interval slide
    rule), ported as written: a window of `lr_diff` points slides left from the curve's end while
    the loss's gradient (np.gradient, per point) differs between its two ends by more than
    `thresh`; the rate at the window's left end where it last did, times `adjust_value`.

    The window stops where the curve is close to a straight line across `lr_diff` points, i.e. on
    the steady descent below the rates where the loss bends up. `thresh` is in loss units per
    point, as in fastai. fastai indexes past the start on curves of `lr_diff` points or fewer;
    here the window shrinks to the curve's length minus one.
    """
    lrs, losses = np.asarray(lrs), np.asarray(losses)
    lr_diff = min(lr_diff, len(losses) - 1)
    loss_grad = np.gradient(losses)
    r_idx = -1
    l_idx = r_idx - lr_diff
    local_min_lr = lrs[l_idx]
    while l_idx >= -len(losses) and abs(loss_grad[r_idx] - loss_grad[l_idx]) > thresh:
        local_min_lr = lrs[l_idx]
        r_idx -= 1
        l_idx -= 1
    return float(local_min_lr) * adjust_value


SUGGESTERS = {"valley": valley, "steepest": steepest, "minimum": minimum, "slide": slide}


def suggestion_window(n: int, num_steps: int, diverged: bool) -> slice:
    """The points suggestions are read from: the first tenth of the planned steps is noise and
    start-up, the last SKIP_END before a divergence are the blow-up itself."""
    start = num_steps // 10
    end = n - SKIP_END if diverged else n
    if end - start < 5:  # stopped very early: use what there is
        start, end = 0, n
    return slice(start, end)


def suggest(lrs, losses, num_steps: int, diverged: bool) -> dict[str, float]:
    window = suggestion_window(len(losses), num_steps, diverged)
    lrs, losses = np.asarray(lrs)[window], np.asarray(losses)[window]
    return {name: fn(lrs, losses) for name, fn in SUGGESTERS.items()}


# ---------------------------------------------------------------- the test


def _ramp_schedule(min_lr: float, max_lr: float, num_steps: int):
    import keras

    class ExponentialRamp(keras.optimizers.schedules.LearningRateSchedule):
        """min_lr * (max_lr / min_lr) ** (step / (num_steps - 1)): the range test's rate."""

        def __call__(self, step):
            t = keras.ops.cast(step, "float32") / float(max(num_steps - 1, 1))
            return min_lr * keras.ops.power(max_lr / min_lr, t)

        def get_config(self):
            return {"min_lr": min_lr, "max_lr": max_lr, "num_steps": num_steps}

    return ExponentialRamp()


def with_found_lr(cfg: DictConfig, run_dir: Path, strategy) -> DictConfig:
    """`task.find_lr` of task=train: `cfg` with optimizer.lr set to the range test's suggestion.
    The test (task=lr_find's settings) runs once per run directory, in <run>/lr_find/; a resumed
    run reuses its lr_find.json."""
    import keras

    from tftrain.schema.task import LrFindTaskConf

    path = Path(run_dir) / "lr_find" / "lr_find.json"
    try:
        result = json.loads(path.read_text())
        log.info("task.find_lr: reusing the range test in %s", path.parent)
    except (OSError, ValueError):
        test_cfg = validate(OmegaConf.merge(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "task"]),
                                            {"task": OmegaConf.structured(LrFindTaskConf)}))
        (path.parent).mkdir(parents=True, exist_ok=True)
        result = range_test(test_cfg, path.parent, strategy)
        keras.utils.set_random_seed(cfg.trainer.seed)  # training starts from the same random state as without the test
    # The test's own "suggested" is task=lr_find's default; the train task names the one it trains at.
    chosen = cfg.task.get("suggestion", result["suggested"])
    cfg = OmegaConf.create(OmegaConf.to_container(cfg))
    cfg.optimizer.lr = float(f"{result['suggestions'][chosen]:.3g}")
    log.info("task.find_lr: training at the range test's suggestion optimizer.lr=%g (%s; see %s)", cfg.optimizer.lr,
             chosen, path.parent / "lr_find.png")
    return cfg


def range_test(cfg: DictConfig, run_dir: Path, strategy) -> dict:
    """The range test of a validated task=lr_find config under `strategy`, written to `run_dir`."""
    from tftrain.config.factory import build_components, step_options
    from tftrain.loop.trainer import Trainer

    t_start = time.perf_counter()
    task, t = cfg.task, cfg.trainer
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    with strategy.scope():
        ramp = _ramp_schedule(task.min_lr, task.max_lr, task.num_steps)
    # Training's own pipeline, preprocessing, model and optimizer, at the rising rate.
    built = build_components(cfg, strategy, schedule=ramp)
    data = built.data
    # The training step itself, one step per call (the loss of every step is read).
    trainer = Trainer(strategy, built.model, built.optimizer, built.problem, step_options(cfg))

    def batches():
        for epoch in itertools.count():
            iterator = iter(data.train(epoch))
            for _ in range(data.steps_per_epoch):
                yield iterator

    log.info("lr_find: %s, rate %.3g -> %.3g over %d steps (batch %d), stop when the smoothed loss "
             "> %g x its best; run directory %s", label(cfg.optimizer, "optimizer"), task.min_lr, task.max_lr, task.num_steps,
             t.batch_size, task.divergence_threshold, run_dir.resolve())
    planned = ramp_lrs(task.min_lr, task.max_lr, task.num_steps)
    beta = task.smoothing
    lrs, raw, smoothed = [], [], []
    avg, best = 0.0, math.inf
    stop_reason = f"reached num_steps ({task.num_steps}) without diverging"
    for i, iterator in zip(range(task.num_steps), batches()):
        loss = float(trainer.train(iterator, 1).last_loss.numpy())
        if not math.isfinite(loss):
            stop_reason = f"the loss became {loss} at step {i} (lr {planned[i]:.3g})"
            break
        avg = beta * avg + (1 - beta) * loss
        value = avg / (1 - beta ** (i + 1))
        lrs.append(float(planned[i]))
        raw.append(loss)
        smoothed.append(value)
        best = min(best, value)
        if value > task.divergence_threshold * best:
            stop_reason = (f"diverged at step {i} (lr {planned[i]:.3g}): smoothed loss {value:.4g} > "
                           f"{task.divergence_threshold:g} x best {best:.4g}")
            break
    stopped_early = len(lrs) < task.num_steps
    if len(lrs) < 3:
        raise TftrainError(f"lr_find stopped after {len(lrs)} step(s): {stop_reason}. Fix: lower task.min_lr "
                           f"(now {task.min_lr:g}) so the test starts where training is stable.")
    suggestions = suggest(lrs, smoothed, task.num_steps, diverged=stopped_early)
    result = {
        "task": "lr_find",
        "optimizer": label(cfg.optimizer, "optimizer"),
        "model": label(cfg.model, "model"),
        "data": label(cfg.data, "data"),
        "batch_size": t.batch_size,
        "min_lr": task.min_lr,
        "max_lr": task.max_lr,
        "num_steps": task.num_steps,
        "smoothing": beta,
        "divergence_threshold": task.divergence_threshold,
        "steps": len(lrs),
        "stopped_early": stopped_early,
        "stop_reason": stop_reason,
        "best_loss": float(min(smoothed)),
        "lrs": lrs,
        "losses": smoothed,  # smoothed
        "raw_losses": raw,
        "suggestions": suggestions,
        "suggested": task.suggestion,
        "suggested_lr": suggestions[task.suggestion],
        "wall_time_s": time.perf_counter() - t_start,
        "run_dir": str(run_dir.resolve()),
    }
    (run_dir / "lr_find.json").write_text(json.dumps(result, indent=2) + "\n")
    plot_lr_find(result, run_dir / "lr_find.png")
    log.info("lr_find: %s; %d steps in %.1fs", stop_reason, len(lrs), result["wall_time_s"])
    log.info("lr_find: suggested optimizer.lr=%.3g (%s); valley %.3g, steepest %.3g, minimum/10 %.3g, slide %.3g",
             result["suggested_lr"], task.suggestion, suggestions["valley"], suggestions["steepest"],
             suggestions["minimum"], suggestions["slide"])
    log.info("Outputs in %s: lr_find.png, lr_find.json. Train with: python -m tftrain optimizer.lr=%.3g "
             "(and the same other overrides)", run_dir.resolve(), result["suggested_lr"])
    return result


def plot_lr_find(result: dict, path: Path) -> None:
    """Smoothed (and raw) loss against the rate on a log axis, each suggestion marked."""
    from matplotlib.figure import Figure

    lrs, losses, raw = (np.asarray(result[k]) for k in ("lrs", "losses", "raw_losses"))
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.subplots()
    ax.plot(lrs, raw, color="0.75", linewidth=0.8, label="loss (per step)")
    ax.plot(lrs, losses, color="C0", linewidth=2, label=f"smoothed loss (beta {result['smoothing']:g})")
    styles = {"valley": ("C2", "o"), "steepest": ("C1", "^"), "minimum": ("C3", "s"), "slide": ("C4", "D")}
    for name, lr in result["suggestions"].items():
        color, marker = styles[name]
        y = float(np.interp(np.log(lr), np.log(lrs), losses))
        chosen = name == result["suggested"]
        label = f"{'suggested: ' if chosen else ''}{'minimum/10' if name == 'minimum' else name} {lr:.2g}"
        ax.plot([lr], [y], marker=marker, color=color, markersize=11 if chosen else 7, linestyle="none",
                markeredgecolor="black" if chosen else color, label=label, zorder=3)
        if chosen:
            ax.axvline(lr, color=color, linestyle="--", linewidth=1)
    # Keep the divergence from flattening the interesting part: show up to a bit above the start.
    lowest = float(losses.min())
    top = float(max(losses[: int(np.argmin(losses)) + 1].max(), lowest)) if len(losses) else 1.0
    ax.set_ylim(lowest - 0.05 * (top - lowest + 1e-12), top + 0.25 * (top - lowest + 1e-12))
    ax.set_xscale("log")
    ax.set(xlabel="learning rate (log scale)", ylabel="training loss",
           title=f"lr_find: {result['optimizer']}, {result['model']} on {result['data']} "
                 f"(batch {result['batch_size']}, {result['steps']} steps)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)
