"""The outer loop (orbit's Controller): epochs of `Trainer` steps, validation, callbacks, the
loggers (tftrain.loggers), checkpoints, resume, preemption, and recovery from a diverged loss.

A run resumed from a checkpoint continues exactly: every epoch's data order is a function of
(seed, epoch), the data pipeline skips the batches already trained on, and the checkpoint holds
the summed metrics of the epoch in progress, the random-number state and the callbacks' state
(see tftrain/checkpoints.py). The per-epoch outputs (history.csv, the loggers' epochs) are written
after each checkpoint, from the checkpointed history: a kill between the two cannot repeat a row.

Preemption: on SIGTERM (what SLURM, Kubernetes and cloud schedulers send first) or SIGINT the
loop finishes the compiled call in progress, writes a checkpoint at that step, flushes its
outputs and raises `Preempted`; a second signal ends the process at once. Under multi-worker
training the request is reduced inside the step (tftrain.loop.trainer), so every worker stops at the
same step.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import keras
import tensorflow as tf

from tftrain.loop.checkpoints import Checkpointer
from tftrain.errors import DivergenceError, Preempted
from tftrain.loggers.base import Loggers, RunInfo
from tftrain.loop.pacing import StepsPerCall
from tftrain.loop.progress import Progress
from tftrain.loop.signals import StopSignals
from tftrain.loop.trainer import Trainer

log = logging.getLogger("tftrain")


@dataclass
class LoopOptions:
    """The loop's settings, each `trainer.<same name>`: the factory (tftrain.config.factory) fills
    every field from the validated config, so no default is written here a second time."""

    epochs: int
    steps_per_execution: int | str  # or "auto" (tftrain.loop.pacing)
    checkpoint_every_steps: int  # 0: at epoch ends only
    checkpoint_at_steps: list[int]  # also at these steps, kept through rotation (branch points)
    keep_checkpoints: int
    nan_recovery: int
    nan_lr_factor: float
    verbose: int


@dataclass
class RunIO:
    """Where the loop reads and writes, and who hears about it: checkpoints in
    `run_dir/checkpoints`, outputs in `write_dir` (a scratch directory on non-chief workers), the
    stop signals, the loggers (started with `run_info` once the checkpoint is restored), and
    `on_restore(step, host_state)`, the run's check of a restored checkpoint (it raises to refuse)."""

    run_dir: Path
    write_dir: Path
    is_chief: bool = True
    stop: StopSignals = field(default_factory=StopSignals)
    loggers: Loggers = field(default_factory=lambda: Loggers([]))
    run_info: RunInfo | None = None
    on_restore: Callable[[int, dict], None] | None = None


@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)  # per epoch: loss, metrics, val_*, learning_rate, seconds
    steps: int = 0
    steps_run: int = 0  # steps run by this process (a resumed run counts only its own)
    train_seconds: float = 0.0  # time inside training steps only (no evaluation, no checkpoints)
    stopped_early: bool = False
    nan_recoveries: int = 0


class Controller:
    """Runs `trainer` over `data` (tftrain.data.Datasets) for `options.epochs` epochs.

    `schedule`: the optimizer's tftrain.schedules.Scaled schedule; its `scale` is the rate
    multiplier a divergence recovery lowers, its variables are checkpointed, and it sees every
    epoch's logs (plateau). Outputs go to `write_dir` (a scratch directory on non-chief workers);
    checkpoints are read from `run_dir/checkpoints`. Callbacks that define `get_state()` /
    `set_state(state)` (and `checkpoint_variables`, a list of tf.Variables) are checkpointed.
    `loggers` are started with `run_info` (and the step the run resumes from) once the checkpoint
    is restored; the caller finishes and closes them.
    """

    def __init__(self, trainer: Trainer, data, options: LoopOptions, io: RunIO, *, schedule, callbacks=()):
        self.trainer, self.data, self.options, self.io = trainer, data, options, io
        self.stop, self.loggers, self.write_dir = io.stop, io.loggers, Path(io.write_dir)
        self.stop.attach(trainer.stop_flag)
        self.schedule, self.lr_scale = schedule, schedule.scale
        model = trainer.model
        self.callbacks = keras.callbacks.CallbackList(list(callbacks), model=model)
        self.pacer = StepsPerCall(options.steps_per_execution, data.steps_per_epoch, agree=trainer.agree)
        self.first_call_done: float | None = None  # perf_counter time the first training call returned
        self._after_commit: list = []  # the loggers' calls that wait for the checkpoint in flight
        # Summed metric state of the epoch in progress, so a mid-epoch resume reports the same epoch
        # metrics as an uninterrupted run.
        self.epoch_sums = tf.Variable(tf.zeros([trainer.problem.size], tf.float64), trainable=False, name="epoch_sums")
        schedule_state = {f"v{i}": v for i, v in enumerate(schedule.variables)}
        # tf.train.Checkpoint(model=...) skips the states of Keras' SeedGenerators (dropout, noise),
        # so a resumed run would redraw the dropout masks it already used: track them explicitly.
        rng_state = {f"s{i}": v.value for i, v in enumerate(v for v in model.variables if "seed_generator" in v.path)}
        callback_vars = {f"c{i}": tf.train.Checkpoint(**{f"v{j}": v for j, v in enumerate(cb.checkpoint_variables)})
                         for i, cb in enumerate(self.callbacks.callbacks) if getattr(cb, "checkpoint_variables", None)}
        self.checkpointer = Checkpointer(Path(io.run_dir) / "checkpoints", options.keep_checkpoints, io.is_chief,
                                         pinned=options.checkpoint_at_steps, model=model,
                                         optimizer=trainer.optimizer, epoch_sums=self.epoch_sums,
                                         schedule=tf.train.Checkpoint(**schedule_state),
                                         rng=tf.train.Checkpoint(**rng_state),
                                         callbacks=tf.train.Checkpoint(**callback_vars))

    @property
    def step(self) -> int:
        return self.trainer.step

    # ------------------------------------------------------------------ the run

    def fit(self) -> History:
        try:
            history = self._fit()
        except BaseException:
            # However the run ends, its checkpoint write in flight ends (committed or removed) before
            # the run directory's lock is given up; the loggers still hear of the committed epochs.
            try:
                self._committed()
            except Exception:  # noqa: BLE001 - the run's own error is the one to report
                pass
            self.checkpointer.close(quiet=True)
            raise
        self._committed()
        self.checkpointer.close()  # a failed last write is this run's error
        return history

    def _fit(self) -> History:
        history = History()
        self.callbacks.on_train_begin()  # before restoring: Keras' EarlyStopping resets its state here
        state = self.checkpointer.restore()
        if state is not None:
            if self.io.on_restore is not None:
                self.io.on_restore(self.step, state)
            self._restore_host_state(state, history)
            log.info("Resumed from %s at step %d (epoch %d)", self.checkpointer.restored, self.step,
                     self.step // self.data.steps_per_epoch + 1)
        if self.io.run_info is not None:
            self.loggers.start(replace(self.io.run_info, resumed_at=self.step))
        if state is None and self.options.nan_recovery:
            self._save(history)  # the initial weights: a divergence in the first steps can recover too
        retries = self.options.nan_recovery
        while True:
            try:
                self._fit_epochs(history)
                break
            except DivergenceError as e:
                if retries == 0 or self.checkpointer.latest is None:
                    raise
                retries -= 1
                history.nan_recoveries += 1
                self._recover(e, history)
        self.callbacks.on_train_end()
        history.steps = self.step
        return history

    def _fit_epochs(self, history: History):
        spe, epochs = self.data.steps_per_epoch, self.options.epochs
        if self.stop.signum is not None and self.step < epochs * spe:  # signalled while the run was being set up
            self._preempted(1)
        while not history.stopped_early and self.step < epochs * spe:
            epoch, done = divmod(self.step, spe)
            self.callbacks.on_epoch_begin(epoch)
            logs, stop = self._run_epoch(epoch, done, history)
            if logs is None:  # stopped mid-epoch: checkpointed at this step
                self._preempted(stop)
            history.epochs.append(logs)
            callback_logs = {k: v for k, v in logs.items() if k != "seconds"}
            self.schedule.on_epoch_end(epoch, callback_logs)
            self.callbacks.on_epoch_end(epoch, callback_logs)
            if getattr(self.trainer.model, "stop_training", False):
                history.stopped_early = True
                log.info("Training stops after epoch %d (a callback asked: early stopping or pruning)", epoch + 1)
            self.epoch_sums.assign(tf.zeros_like(self.epoch_sums))
            self._save(history)
            # After the checkpoint's commit: never logged twice across a resume (sent at the next save,
            # or sooner: `_committed`).
            self._after_commit.append(lambda epoch=epoch, logs=logs: self.loggers.log_epoch(epoch, logs))
            # The signal came during the epoch's last steps (stop) or after them, during validation or
            # the save (stop_requested): the epoch was completed and saved; no further call is trained.
            if stop or self._stop_requested():
                self._preempted(stop or 1)

    def _run_epoch(self, epoch: int, done: int, history: History) -> tuple[dict | None, int]:
        """The epoch's remaining steps, then validation: (logs, stop signal or 0). A stop request
        mid-epoch checkpoints at the current step and returns (None, signal)."""
        spe, problem, every = self.data.steps_per_epoch, self.trainer.problem, self.options.checkpoint_every_steps
        progress = Progress(self.options.verbose, self.options.epochs, spe)
        iterator = iter(self.data.train(epoch, done))
        totals = self.epoch_sums.numpy() if done else problem.zeros()
        stop = 0
        t0 = time.perf_counter()
        writer, _ = self.loggers.graph_writer()
        with writer.as_default() if writer is not None else contextlib.nullcontext():
            while done < spe:
                n = min(self.pacer.next(), spe - done)
                if every:
                    n = min(n, every - self.step % every)  # land exactly on checkpoint steps
                n = min([n, *(s - self.step for s in self.checkpointer.pinned if s > self.step)])  # and on pinned ones
                t_call = time.perf_counter()
                self.callbacks.on_train_batch_begin(done)
                sums, last_loss, first_bad, stop, step_log = self.trainer.train(iterator, n, totals)
                if self.first_call_done is None:
                    last_loss.numpy()
                    self.first_call_done = time.perf_counter()
                if not math.isfinite(float(last_loss.numpy())) or int(first_bad.numpy()) >= 0:
                    self._diverged(float(last_loss.numpy()), int(first_bad.numpy()))
                totals = sums.numpy()  # the epoch's running sums, this call's steps added
                if self.loggers.record_steps:
                    self._committed()
                    self.loggers.log_steps(step_log.numpy())
                done += n
                history.steps_run += n
                stop = int(stop.numpy())
                # Batch hooks run once per compiled call and get the running loss only (the metrics'
                # results cost a host computation each; the progress line asks for them when it draws).
                self.callbacks.on_train_batch_end(done - 1, {"loss": float(totals[0] / totals[1])})
                progress.update(epoch, done, lambda: problem.results(totals))
                if self.pacer.chosen is None:
                    self.pacer.observe(n, time.perf_counter() - t_call)
                    if self.pacer.chosen is not None:
                        progress.clear()  # the log line in place of the live bar, not after it
                        log.info("%s", self.pacer.describe())
                pinned = self.step in self.checkpointer.pinned
                if done < spe and (stop or (every and self.step % every == 0) or pinned):
                    self.epoch_sums.assign(totals)
                    self._save(history)
                    if stop:
                        progress.clear()
                        history.train_seconds += time.perf_counter() - t0
                        return None, stop
        seconds = time.perf_counter() - t0
        history.train_seconds += seconds
        logs = problem.results(totals)
        logs.update({f"val_{k}": v for k, v in self.trainer.evaluate(self.data.val).items()})
        logs["learning_rate"] = float(self.trainer.learning_rate().numpy())
        progress.end_epoch(epoch, seconds, logs)
        return {**logs, "seconds": seconds}, stop

    # ------------------------------------------------------------------ preemption

    def _stop_requested(self) -> bool:
        """Whether to stop at this epoch end, the same on every worker (every worker calls this at the
        same point): the chief's signal decides; another worker's stops the run inside the next call,
        where the request is reduced."""
        return self.trainer.agree([1.0 if self.stop.signum is not None else 0.0])[0] > 0

    def _preempted(self, stop: int):
        self._committed()
        """Raise Preempted: this process got a signal, or (stop > 0 all the same) another worker did."""
        signum = self.stop.signum or signal.SIGTERM
        name = signal.Signals(signum).name if self.stop.signum else "a stop request from another worker"
        latest = self.checkpointer.latest
        if latest is None:  # signalled before the first step: nothing trained, nothing to save
            saved = ("before its first step: nothing was trained, so no checkpoint was needed. Fix: rerun the same "
                     "command with the same run directory to start it")
        else:
            saved = (f"after writing checkpoint {latest}. Fix: rerun the same command with the same run directory "
                     "to resume from it (no step is lost or repeated)")
        raise Preempted(f"Stopped on {name} at step {self.step} (epoch {self.step // self.data.steps_per_epoch + 1}) "
                        f"{saved}.", signum)

    # ------------------------------------------------------------------ checkpoints and recovery

    def _restore_host_state(self, state: dict, history: History):
        history.epochs = list(state.get("history", []))
        history.stopped_early = state.get("stopped_early", False)
        if "lr_scale" in state:  # lowered by an earlier divergence recovery
            self.lr_scale.assign(state["lr_scale"])
        for cb, cb_state in zip(self.callbacks.callbacks, state.get("callbacks", [])):
            if cb_state is not None and hasattr(cb, "set_state"):
                cb.set_state(cb_state)

    def _recover(self, error: DivergenceError, history: History):
        self._committed()
        scale = float(self.lr_scale.numpy()) * self.options.nan_lr_factor
        self._restore_host_state(self.checkpointer.restore(), history)
        self.lr_scale.assign(scale)
        log.warning("%s Recovering (trainer.nan_recovery): restored %s at step %d and scaled the learning "
                    "rate by %g (now x%g).", error, self.checkpointer.restored, self.step, self.options.nan_lr_factor,
                    scale)

    def _save(self, history: History):
        model = self.trainer.model
        if not all(bool(tf.reduce_all(tf.math.is_finite(v)).numpy()) for v in model.trainable_variables):
            self._diverged(float("nan"), self.step)
        path, epochs = self.write_dir / "history.csv", [dict(logs) for logs in history.epochs]
        self._committed()  # the previous checkpoint's loggers' lines, once it is committed
        # Written in the background (tftrain.loop.checkpoints): the variables are copied here, the
        # files and the commit follow on the writer thread, history.csv after the commit. What the
        # loggers send after this checkpoint (the flush, the epoch's logs `_fit_epochs` queues next,
        # MLflow's buffered per-step rows) waits for its commit (`_committed`): a kill in between
        # would have the resumed run send them again.
        self.checkpointer.save(self.step, {
            "history": epochs,
            "stopped_early": history.stopped_early,
            "callbacks": [cb.get_state() if hasattr(cb, "get_state") else None for cb in self.callbacks.callbacks],
            "lr_scale": float(self.lr_scale.numpy()),
            "replicas": self.trainer.strategy.num_replicas_in_sync,
        }, background=True, then=(lambda: write_history_csv(path, epochs)) if self.checkpointer.is_chief else None)
        self._after_commit.append(self.loggers.flush)

    def _committed(self) -> None:
        """Wait for the checkpoint in flight to be committed, then send what the loggers were to
        send after it, in order."""
        if not self._after_commit:
            return
        self.checkpointer.wait()
        actions, self._after_commit = self._after_commit, []
        for action in actions:
            action()

    def _diverged(self, loss: float, step: int):
        lr = float(self.trainer.learning_rate().numpy())
        last = self.checkpointer.latest or "none (nothing was saved yet)"
        at = step if step >= 0 else self.step
        raise DivergenceError(
            f"The training loss became {loss if not math.isfinite(loss) else 'NaN or Inf'} at step {at} (learning "
            f"rate {lr:.4g}). No checkpoint was written after it; the last good checkpoint is {last}. Fix: lower "
            "optimizer.lr, add warmup (schedule.warmup_epochs) or gradient clipping (optimizer.global_clipnorm=1.0), "
            "or retry automatically with trainer.nan_recovery=2.")


def write_history_csv(path: Path, epochs: list[dict]) -> None:
    """history.csv from the checkpointed history (rewritten whole, atomically): one row per epoch,
    `epoch` then every logged value. Written after each checkpoint rather than by Keras' CSVLogger
    at the epoch's end, so a kill in between cannot repeat or lose a row on resume."""
    columns = ["epoch", *[k for k in (epochs[0] if epochs else {}) if k != "seconds"]]
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for i, logs in enumerate(epochs):
            writer.writerow([i, *(logs.get(k) for k in columns[1:])])
    os.replace(tmp, path)
