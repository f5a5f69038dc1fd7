"""The outer loop (orbit's Controller): epochs of `Trainer` steps, validation, per-epoch
summaries and callbacks, checkpoints, resume, and recovery from a diverged loss.

A run resumed from a checkpoint continues exactly: every epoch's data order is a function of
(seed, epoch), the data pipeline skips the batches already trained on, and the checkpoint holds
the summed metric state of the epoch in progress (see tftrain/checkpoints.py).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import tensorflow as tf

from tftrain.checkpoints import Checkpointer
from tftrain.errors import DivergenceError
from tftrain.progress import Progress
from tftrain.trainer import Trainer

log = logging.getLogger("tftrain")


@dataclass
class LoopOptions:
    epochs: int
    steps_per_execution: int = 1
    checkpoint_every_steps: int = 0  # 0: at epoch ends only
    keep_checkpoints: int = 3
    nan_recovery: int = 0
    nan_lr_factor: float = 0.5
    verbose: int = 1
    tensorboard: bool = True


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
    checkpoints are read from `run_dir/checkpoints`.
    """

    def __init__(self, trainer: Trainer, data, options: LoopOptions, *, run_dir: Path, schedule,
                 write_dir: Path | None = None, is_chief: bool = True, callbacks=()):
        self.trainer, self.data, self.options = trainer, data, options
        self.schedule, self.lr_scale = schedule, schedule.scale
        model = trainer.model
        self.callbacks = keras.callbacks.CallbackList(list(callbacks), model=model)
        tb = Path(write_dir or run_dir) / "tensorboard"
        # A deep queue: per-step scalars reach the disk in large writes (flushed at each epoch end).
        writer = ((lambda path: tf.summary.create_file_writer(path, max_queue=1000)) if options.tensorboard
                  else (lambda _: tf.summary.create_noop_writer()))
        self.train_writer, self.val_writer = writer(str(tb / "train")), writer(str(tb / "validation"))
        # Summed metric state of the epoch in progress, so a mid-epoch resume reports the same epoch
        # metrics as an uninterrupted run.
        self.epoch_sums = tf.Variable(tf.zeros([trainer.problem.size], tf.float64), trainable=False, name="epoch_sums")
        schedule_state = {f"v{i}": v for i, v in enumerate(schedule.variables)}
        # tf.train.Checkpoint(model=...) skips the states of Keras' SeedGenerators (dropout, noise),
        # so a resumed run would redraw the dropout masks it already used: track them explicitly.
        rng_state = {f"s{i}": v.value for i, v in enumerate(v for v in model.variables if "seed_generator" in v.path)}
        self.checkpointer = Checkpointer(Path(run_dir) / "checkpoints", options.keep_checkpoints, is_chief,
                                         model=model, optimizer=trainer.optimizer, epoch_sums=self.epoch_sums,
                                         schedule=tf.train.Checkpoint(**schedule_state),
                                         rng=tf.train.Checkpoint(**rng_state))

    @property
    def step(self) -> int:
        return self.trainer.step

    # ------------------------------------------------------------------ the run

    def fit(self) -> History:
        history = History()
        self.callbacks.on_train_begin()  # before restoring: EarlyStopping resets its state here
        state = self.checkpointer.restore()
        if state is not None:
            self._restore_host_state(state, history)
            log.info("Resumed from %s: epoch %d, step %d", self.checkpointer.latest,
                     self.step // self.data.steps_per_epoch + 1, self.step)
        elif self.options.nan_recovery:
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
        self.checkpointer.close()
        return history

    def _fit_epochs(self, history: History):
        spe, epochs = self.data.steps_per_epoch, self.options.epochs
        while not history.stopped_early and self.step < epochs * spe:
            epoch, done = divmod(self.step, spe)
            self.callbacks.on_epoch_begin(epoch)
            logs = self._run_epoch(epoch, done, history)
            history.epochs.append(logs)
            callback_logs = {k: v for k, v in logs.items() if k != "seconds"}
            self.schedule.on_epoch_end(epoch, callback_logs)
            self.callbacks.on_epoch_end(epoch, callback_logs)
            if getattr(self.trainer.model, "stop_training", False):
                history.stopped_early = True
                log.info("Early stopping after epoch %d", epoch + 1)
            self.epoch_sums.assign(tf.zeros_like(self.epoch_sums))
            self._save(history)

    def _run_epoch(self, epoch: int, done: int, history: History) -> dict:
        spe, problem, every = self.data.steps_per_epoch, self.trainer.problem, self.options.checkpoint_every_steps
        progress = Progress(self.options.verbose, self.options.epochs, spe)
        iterator = iter(self.data.train(epoch, done))
        totals = self.epoch_sums.numpy() if done else problem.zeros()
        t0 = time.perf_counter()
        with self.train_writer.as_default():
            while done < spe:
                n = min(self.options.steps_per_execution, spe - done)
                if every:
                    n = min(n, every - self.step % every)  # land exactly on checkpoint steps
                self.callbacks.on_train_batch_begin(done)
                sums, last_loss, first_bad = self.trainer.train(iterator, n)
                if not math.isfinite(float(last_loss.numpy())) or int(first_bad.numpy()) >= 0:
                    self._diverged(float(last_loss.numpy()), int(first_bad.numpy()))
                totals += sums.numpy()
                done += n
                history.steps_run += n
                # Batch hooks run once per compiled call and get the running loss only (the metrics'
                # results cost a host computation each; the progress line asks for them when it draws).
                self.callbacks.on_train_batch_end(done - 1, {"loss": float(totals[0] / totals[1])})
                progress.update(epoch, done, lambda: problem.results(totals))
                if every and self.step % every == 0 and done < spe:
                    self.epoch_sums.assign(totals)
                    self._save(history)
        seconds = time.perf_counter() - t0
        history.train_seconds += seconds
        logs = problem.results(totals)
        logs.update({f"val_{k}": v for k, v in self.trainer.evaluate(self.data.val).items()})
        logs["learning_rate"] = float(self.trainer.learning_rate().numpy())
        progress.end_epoch(epoch, seconds, logs)
        self._write_epoch_summaries(epoch, logs)
        return {**logs, "seconds": seconds}

    # ------------------------------------------------------------------ checkpoints and recovery

    def _restore_host_state(self, state: dict, history: History):
        history.epochs = list(state.get("history", []))
        history.stopped_early = state.get("stopped_early", False)
        if "lr_scale" in state:  # lowered by an earlier divergence recovery
            self.lr_scale.assign(state["lr_scale"])
        _restore_callback_state(self.callbacks, state.get("callbacks", []))

    def _recover(self, error: DivergenceError, history: History):
        scale = float(self.lr_scale.numpy()) * self.options.nan_lr_factor
        self._restore_host_state(self.checkpointer.restore(), history)
        self.lr_scale.assign(scale)
        log.warning("%s Recovering (trainer.nan_recovery): restored %s at step %d and scaled the learning "
                    "rate by %g (now x%g).", error, self.checkpointer.latest, self.step, self.options.nan_lr_factor,
                    scale)

    def _save(self, history: History):
        model = self.trainer.model
        if not all(bool(tf.reduce_all(tf.math.is_finite(v)).numpy()) for v in model.trainable_variables):
            self._diverged(float("nan"), self.step)
        self.checkpointer.save(self.step, {
            "history": history.epochs,
            "stopped_early": history.stopped_early,
            "callbacks": _callback_state(self.callbacks),
            "lr_scale": float(self.lr_scale.numpy()),
        })

    def _diverged(self, loss: float, step: int):
        lr = float(self.trainer.learning_rate().numpy())
        last = self.checkpointer.latest or "none (nothing was saved yet)"
        at = step if step >= 0 else self.step
        raise DivergenceError(
            f"The training loss became {loss if not math.isfinite(loss) else 'NaN or Inf'} at step {at} (learning "
            f"rate {lr:.4g}). No checkpoint was written after it; the last good checkpoint is {last}. Fix: lower "
            "optimizer.lr, add warmup (schedule.warmup_epochs) or gradient clipping (optimizer.global_clipnorm=1.0), "
            "or retry automatically with trainer.nan_recovery=2.")

    # ------------------------------------------------------------------ summaries

    def _write_epoch_summaries(self, epoch: int, logs: dict):
        step = epoch + 1
        with self.train_writer.as_default():
            for k, v in logs.items():
                if not k.startswith("val_"):
                    tf.summary.scalar(f"epoch_{k}", v, step=step)
        with self.val_writer.as_default():
            for k, v in logs.items():
                if k.startswith("val_"):
                    tf.summary.scalar(f"epoch_{k[4:]}", v, step=step)
        self.train_writer.flush()
        self.val_writer.flush()


# Attributes of Keras callbacks (EarlyStopping, ModelCheckpoint) that decide what they do next.
_CALLBACK_STATE = ("wait", "best", "best_epoch", "stopped_epoch")


def _callback_state(callbacks) -> list[dict]:
    return [{k: float(getattr(cb, k)) for k in _CALLBACK_STATE if isinstance(getattr(cb, k, None), (int, float))}
            for cb in callbacks.callbacks]


def _restore_callback_state(callbacks, states: list[dict]) -> None:
    for cb, state in zip(callbacks.callbacks, states):
        for k, v in state.items():
            setattr(cb, k, type(getattr(cb, k))(v) if isinstance(getattr(cb, k, None), int) else v)
