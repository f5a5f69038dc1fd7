"""`python -m tftrain task=budgets schedule=wsd`: one warmup-stable-decay run for several training
budgets (Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training
Durations", section 3: cooldowns branched from one constant-rate run).

`schedule=wsd`'s rate before its decay starts does not depend on `trainer.epochs` (warmup, then
`optimizer.lr`), so a run of budget B epochs and a longer one train the same steps up to B's decay
start S_B = warmup_steps + T - round(decay_fraction * T), T = B * steps_per_epoch - warmup_steps
(tftrain.schedules.WarmupStableDecay). The task

1. trains the longest budget once in `<run>/budget_<E>/` (an ordinary training run), with
   `trainer.checkpoint_at_steps` listing every shorter budget's S_B: the loop lands a call on
   each, checkpoints there (mid-epoch too) and keeps those checkpoints through rotation;
2. for each shorter budget B, copies that run's checkpoint at S_B (its `ckpt-S_B.*`, then
   `state-S_B.json`, the commit, and `config.yaml`) into `<run>/budget_<B>/` and resumes it
   through the normal train path with `trainer.epochs=B`: only B's cooldown is trained, and
   the run ends bit-identical to `schedule=wsd trainer.epochs=B` trained from scratch (the resume
   is exact; the rates agree at every step before S_B, which this task checks);
3. writes `budgets.csv` and `metrics.json` (the table: the final metric per budget, the epochs
   trained by branching against training each budget separately) and prints the table.

Rerunning the same command in the same run directory resumes: finished runs are reused, an
interrupted one resumes from its checkpoints, a branch without a checkpoint is branched again.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from tftrain.config.targets import label
from tftrain.errors import ConfigError, TftrainError
from tftrain.tasks.resume import completed_earlier
from tftrain.tasks.run import locked, open_run, without_credentials

log = logging.getLogger("tftrain")

WSD = "tftrain.schedules.build.wsd"
TABLE = "budgets.csv"


def budgets(cfg: DictConfig, output_dir: str | Path | None = None) -> dict:
    """Train every budget of `cfg.task.budgets` (fractions of trainer.epochs) in `output_dir`
    (see the module's docstring); write budgets.csv and metrics.json there; return metrics.json's dict.

    >>> import tftrain
    >>> from tftrain.tasks.budgets import budgets
    >>> result = budgets(tftrain.compose(["task=budgets", "schedule=wsd", "trainer.epochs=12"]))  # doctest: +SKIP
    """
    if "budgets" not in cfg.task:
        raise ConfigError("task", label(cfg.task), "task=budgets (this function trains the budgets)",
                          "compose the config with `task=budgets`")
    with open_run(cfg, output_dir, trains=False) as run:  # validated, the run directory made
        cfg, run_dir = run.cfg, run.run_dir
    epochs = _budget_epochs(cfg)
    started = time.perf_counter()
    longest = epochs[-1]
    main_dir = run_dir / f"budget_{longest}"
    spe = _steps_per_epoch(_as_train(cfg, longest, []), main_dir)
    starts = {e: _decay_start(cfg, e, spe) for e in epochs}
    if len(epochs) > 1 and starts[epochs[0]] == 0:
        raise ConfigError("schedule.decay_fraction", cfg.schedule.decay_fraction,
                          "below 1 with task=budgets and no warmup: decaying over the whole run, the budgets share "
                          "no step to branch from", "lower schedule.decay_fraction (0.2 is typical)")
    main_cfg = _as_train(cfg, longest, [starts[e] for e in epochs[:-1]])
    fresh = cfg.trainer.resume == "never"
    branches = {e: _as_train(cfg, e, [], resume="auto" if fresh else None) for e in epochs[:-1]}
    for e, branch_cfg in branches.items():
        _check_same_rates(main_cfg, branch_cfg, spe, starts[e])
    OmegaConf.save(without_credentials(cfg), run_dir / "config.yaml", resolve=True)

    log.info("Budgets %s epochs (%d steps each): decay starts at steps %s; training the longest in %s, then branching "
             "the others' cooldowns from its checkpoints", epochs, spe, [starts[e] for e in epochs], main_dir)
    results = {longest: _train_once(main_cfg, main_dir, reuse=not fresh)}
    for e, branch_cfg in branches.items():
        branch_dir = run_dir / f"budget_{e}"
        done = None if fresh else completed_earlier(without_credentials(branch_cfg), branch_dir)
        if done is None:
            _branch(main_dir, branch_dir, starts[e], aside=fresh)
            done = _train_once(branch_cfg, branch_dir, reuse=False)
        results[e] = done

    metric = _metric(cfg)
    rows = table(cfg.task.budgets, epochs, spe, starts, results, metric)
    _write_csv(run_dir / TABLE, rows)
    summary = {
        # The longest budget's metrics.json at the top level (the CLI's objective, a sweep's summary
        # and its figure read them), each budget's val_/test_ metric as keys a sweep aggregates.
        **results[longest],
        "task": "budgets",
        **{f"{split}_{metric}_{e}ep": results[e].get(f"{split}_{metric}") for e in epochs
           for split in ("val", "best_val", "test")},
        "steps_per_epoch": spe,
        "epochs_branching": rows[-1]["epochs_branching"],
        "epochs_separately": rows[-1]["epochs_separately"],
        "budgets": rows,
        "wall_time_s": time.perf_counter() - started,
        "run_dir": str(run_dir.resolve()),
    }
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("Budgets (%s):\n%s", metric, format_table(rows, metric))
    log.info("Outputs in %s: %s, metrics.json, %s", run_dir.resolve(), TABLE,
             ", ".join(f"budget_{e}/" for e in epochs))
    return summary


# ---------------------------------------------------------------- the plan


def _budget_epochs(cfg) -> list[int]:
    """Each budget's whole number of epochs; ConfigError for a config the branches cannot serve."""
    if cfg.schedule.get("_target_") != WSD:
        raise ConfigError("schedule", label(cfg.schedule, "schedule"),
                          "schedule=wsd with task=budgets: only warmup-stable-decay keeps the same rate in runs of "
                          "every length until a budget's decay starts, where its cooldown branches off",
                          "add `schedule=wsd` to the command (and its keys, e.g. schedule.decay_fraction=0.2)")
    t = cfg.trainer
    if t.strategy == "multi_worker":
        raise ConfigError("trainer.strategy", t.strategy, "a strategy of one process with task=budgets (it copies "
                          "checkpoints between run directories)", "train the budgets on one machine")
    if cfg.callbacks.early_stopping.enabled:
        raise ConfigError("callbacks.early_stopping.enabled", True, "false with task=budgets: a budget's run stopped "
                          "early would not reach the shorter budgets' branch points",
                          "leave early stopping off (callbacks=default)")
    epochs = []
    for b in cfg.task.budgets:
        e = b * t.epochs
        if abs(e - round(e)) > 1e-6 or round(e) < 1:
            raise ConfigError("task.budgets", list(cfg.task.budgets),
                              f"fractions of trainer.epochs={t.epochs} that give whole numbers of epochs (>= 1): "
                              f"{b} gives {e:g}", f"choose fractions that are multiples of 1/{t.epochs}, or change "
                              "trainer.epochs")
        epochs.append(int(round(e)))
    warmup = float(cfg.schedule.get("warmup_epochs") or 0.0)
    if warmup >= epochs[0]:
        raise ConfigError("task.budgets", list(cfg.task.budgets),
                          f"budgets longer than the warmup (schedule.warmup_epochs={warmup:g}): the shortest is "
                          f"{epochs[0]} epoch(s)", "drop the shortest budgets, or shorten the warmup")
    return epochs


def _as_train(cfg, epochs: int, pinned: list[int], resume: str | None = None) -> DictConfig:
    """The training run of one budget: the same config with task=train, `epochs` epochs and
    checkpoints kept at the steps `pinned`."""
    run = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    with open_dict(run):
        run.task = {"_target_": "tftrain.tasks.train.train"}
        run.trainer.epochs = epochs
        run.trainer.checkpoint_at_steps = list(pinned)
        run.output_dir = None
        if resume is not None:
            run.trainer.resume = resume
    return run


def _steps_per_epoch(cfg, run_dir: Path) -> int:
    """The steps per epoch of the longest budget's run, from its data built as the run builds
    it (the strategy in place: it decides whether a partial last batch is kept)."""
    from tftrain.config.factory import build_data

    with open_run(cfg, run_dir, resumes=False) as run:
        return int(build_data(run.cfg, run.strategy).steps_per_epoch)


def _schedule(cfg, spe: int):
    from tftrain.config.factory import build_schedule
    from tftrain.schema import validate

    return build_schedule(validate(cfg), spe)


def _decay_start(cfg, epochs: int, spe: int) -> int:
    """The step where the decay of a run of `epochs` epochs starts: its warmup, then its stable phase."""
    from tftrain.schedules import Warmup

    s = _schedule(_as_train(cfg, epochs, []), spe)
    return int(s.warmup_steps + s.schedule.decay_start) if isinstance(s, Warmup) else int(s.decay_start)


def _check_same_rates(main_cfg, branch_cfg, spe: int, start: int) -> None:
    """The two runs' rates (as the optimizer gets them) agree exactly at every step the main run
    trained before the branch point: what makes the branch continue the same computation as a run
    of the budget from scratch."""
    import numpy as np
    import tensorflow as tf

    steps = tf.range(start, dtype=tf.int64)
    a = _schedule(main_cfg, spe)(steps).numpy()
    b = _schedule(branch_cfg, spe)(steps).numpy()
    if not np.array_equal(a, b):
        bad = int(np.flatnonzero(a != b)[0])
        raise TftrainError(f"The {main_cfg.trainer.epochs}-epoch run's rate differs from the "
                           f"{branch_cfg.trainer.epochs}-epoch run's at step {bad} ({a[bad]:.6g} against "
                           f"{b[bad]:.6g}), before the branch point {start}: a branch would not equal the budget "
                           "trained from scratch. Fix: report this with the command (schedule=wsd should agree).")


# ---------------------------------------------------------------- the runs


def _train_once(cfg, run_dir: Path, reuse: bool) -> dict:
    """metrics.json of the training run `cfg` in `run_dir`: reused when an earlier call completed
    it with the same config, else trained (resuming from its checkpoints)."""
    from tftrain.tasks.train import train

    done = completed_earlier(without_credentials(cfg), run_dir) if reuse else None
    if done is not None:
        return done
    try:
        return train(cfg, run_dir)
    finally:
        # open_run records the CLI's Hydra job (task=budgets) in each run it opens: not this run's
        # command, and a sweep's summary would count the budgets' runs as jobs of their own.
        shutil.rmtree(run_dir / ".hydra", ignore_errors=True)


def _branch(main_dir: Path, branch_dir: Path, step: int, aside: bool) -> None:
    """`branch_dir` set up to resume from `main_dir`'s checkpoint at `step`, unless it holds a
    committed checkpoint of its own (an interrupted branch resumes from it). `aside`
    (trainer.resume=never): an earlier branch is moved aside first."""
    from tftrain.loop.checkpoints import committed_steps

    if aside and branch_dir.exists():
        moved = branch_dir.with_name(f"{branch_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        branch_dir.rename(moved)
        log.warning("trainer.resume=never: moved the earlier %s aside to %s", branch_dir.name, moved)
    if committed_steps(branch_dir / "checkpoints"):
        return
    source = main_dir / "checkpoints"
    if step not in committed_steps(source):
        raise TftrainError(f"{source} holds no committed checkpoint at step {step}, the branch point of "
                           f"{branch_dir.name}. Fix: rerun with trainer.resume=never to train the budgets again, "
                           "or delete the run directory.")
    branch_dir.mkdir(parents=True, exist_ok=True)
    with locked(branch_dir):
        target = branch_dir / "checkpoints"
        target.mkdir(exist_ok=True)
        shutil.copyfile(main_dir / "config.yaml", branch_dir / "config.yaml")  # what the checkpoint trained with
        for f in sorted(source.glob(f"ckpt-{step}.*")):
            shutil.copyfile(f, target / f.name)
        # The state file last, through a rename: its arrival commits the copy (tftrain.loop.checkpoints).
        tmp = target / f"state-{step}.json.tmp"
        shutil.copyfile(source / f"state-{step}.json", tmp)
        os.replace(tmp, target / f"state-{step}.json")
    log.info("Branched %s from %s at step %d", branch_dir.name, main_dir.name, step)


# ---------------------------------------------------------------- the table


def _metric(cfg) -> str:
    """The objective's metric name (trainer.objective or the problem's first metric) without `val_`."""
    from tftrain.problems.direction import metric_of
    from tftrain.schema.problem import default_objective

    return metric_of(cfg.trainer.objective or default_objective(cfg.problem.get("metrics")))


def table(fractions, epochs: list[int], spe: int, starts: dict, results: dict, metric: str) -> list[dict]:
    """One row per budget, shortest first. `epochs_trained`: the epochs that budget's own run
    trained (the longest all of them, a branch its cooldown); `epochs_branching`: getting every
    budget up to this one by branching (this budget trained whole, the shorter ones' cooldowns);
    `epochs_separately`: training each of them from scratch."""
    rows, cooldowns, separately = [], 0, 0
    for fraction, e in zip(fractions, epochs):
        own = e * spe if e == epochs[-1] else e * spe - starts[e]
        separately += e
        metrics = results[e]
        rows.append({
            "budget": float(fraction),
            "epochs": e,
            "decay_start_step": starts[e],
            f"val_{metric}": metrics.get(f"val_{metric}"),
            f"test_{metric}": metrics.get(f"test_{metric}"),
            "epochs_trained": round(own / spe, 4),
            "epochs_branching": round((e * spe + cooldowns) / spe, 4),
            "epochs_separately": separately,
            "run": f"budget_{e}",
        })
        cooldowns += e * spe - starts[e]
    return rows


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def format_table(rows: list[dict], metric: str) -> str:
    head = ("budget", "epochs", "decay start", f"val_{metric}", f"test_{metric}", "epochs trained",
            "branching (cum.)", "separately (cum.)")
    body = [(f"{r['budget']:g}", str(r["epochs"]), str(r["decay_start_step"]), _num(r[f"val_{metric}"]),
             _num(r[f"test_{metric}"]), f"{r['epochs_trained']:g}", f"{r['epochs_branching']:g}",
             str(r["epochs_separately"])) for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    return "\n".join("  ".join(x.rjust(w) for x, w in zip(line, widths)) for line in (head, *body))


def _num(value) -> str:
    return "-" if value is None else f"{value:.4f}"
