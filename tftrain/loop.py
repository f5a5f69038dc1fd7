"""The training loop: compiled distributed steps, per-step summaries, epochs, checkpoints.

Why not `model.fit`: under MultiWorkerMirroredStrategy Keras 3's fit fails (keras-team/keras#20585,
see ../shared/NOTES.md), its TensorBoard callback writes the learning rate once per epoch only,
and it cannot resume mid-epoch. This loop owns the step instead: a `tf.function` runs
`steps_per_execution` steps, each `strategy.run(replica_step)` with the loss averaged over the
*global* batch (`tf.nn.compute_average_loss`) and the Keras optimizer applying the gradients (it
all-reduces them across replicas), then writes per-step scalars from cross-replica context. The
same code runs under the default, one-device, mirrored and multi-worker strategies.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.scalar import metadata as scalar_metadata

from tftrain.checkpoints import Checkpointer
from tftrain.errors import DivergenceError

log = logging.getLogger("tftrain")

SUM = tf.distribute.ReduceOp.SUM
_SCALAR_METADATA = scalar_metadata.create_summary_metadata(display_name=None, description=None)


def _scalar(tag: str, value, step):
    # tf.summary.scalar prefixes the tag with the enclosing name scope, which inside the compiled
    # step loop is "while/"; writing with the scalar plugin's metadata keeps the tag as given.
    tf.summary.write(tag, tf.cast(value, tf.float32), step=step, metadata=_SCALAR_METADATA)


@dataclass
class EpochLogs:
    """What one epoch measured; `as_dict` gives Keras-callback style keys."""

    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    learning_rate: float
    seconds: float  # wall time of the epoch's training steps

    def as_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")}


@dataclass
class History:
    epochs: list[EpochLogs] = field(default_factory=list)
    steps: int = 0
    steps_run: int = 0  # steps run by this process (a resumed run counts only its own)
    train_seconds: float = 0.0  # time inside training steps only (no evaluation, no checkpoints)
    stopped_early: bool = False
    nan_recoveries: int = 0


def _batch_sums(logits, y):
    """Per-example losses, number of correct predictions and number of examples of one batch."""
    per_example = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
    correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1), tf.cast(y, tf.int64)), tf.float32))
    return per_example, correct, tf.cast(tf.shape(y)[0], tf.float32)


class Loop:
    """Trains `model` with `optimizer` on distributed datasets under `strategy`.

    `make_train_dataset(epoch, skip)` returns epoch `epoch`'s distributed training batches with
    the first `skip` left out: each epoch's order depends on (seed, epoch) only, so a run resumed
    mid-epoch sees exactly the batches it had not yet trained on.
    """

    def __init__(self, *, strategy, model, optimizer, schedule, global_batch_size: int, steps_per_epoch: int,
                 run_dir: Path, write_dir: Path | None = None, is_chief: bool = True,
                 steps_per_execution: int = 1, jit_compile: bool = False, update_freq: int = 1,
                 keep_checkpoints: int = 3, checkpoint_every_steps: int = 0, nan_recovery: int = 0,
                 nan_lr_factor: float = 0.5, lr_scale=None, tensorboard: bool = True, verbose: int = 1,
                 callbacks=()):
        self.strategy, self.model, self.optimizer, self.schedule = strategy, model, optimizer, schedule
        self.global_batch_size, self.steps_per_epoch = global_batch_size, steps_per_epoch
        self.steps_per_execution, self.update_freq, self.verbose = steps_per_execution, update_freq, verbose
        self.checkpoint_every_steps = checkpoint_every_steps
        self.nan_recovery, self.nan_lr_factor, self.lr_scale = nan_recovery, nan_lr_factor, lr_scale
        self.callbacks = keras.callbacks.CallbackList(list(callbacks), model=model)
        self._replica_step = (tf.function(self._replica_train_step, jit_compile=True) if jit_compile
                              else self._replica_train_step)
        self._train_fns: dict[int, tf.types.experimental.GenericFunction] = {}
        self._eval_fn = tf.function(self._eval_all)

        write_dir = Path(write_dir or run_dir)
        tb = write_dir / "tensorboard"
        # A deep queue: per-step scalars reach the disk in large writes (flushed at each epoch end).
        writer = ((lambda path: tf.summary.create_file_writer(path, max_queue=1000)) if tensorboard
                  else (lambda _: tf.summary.create_noop_writer()))
        self.train_writer, self.val_writer = writer(str(tb / "train")), writer(str(tb / "validation"))

        with strategy.scope():
            # Slots must exist before a restore, or Keras' optimizer state is silently skipped.
            optimizer.build(model.trainable_variables)
        # Sums (loss, correct, count) of the epoch in progress, so a mid-epoch resume reports the
        # same epoch metrics as an uninterrupted run.
        self.epoch_sums = tf.Variable(tf.zeros([3], tf.float64), trainable=False, name="epoch_sums")
        schedule_state = {f"v{i}": v for i, v in enumerate(getattr(schedule, "variables", []))}
        # tf.train.Checkpoint(model=...) skips the states of Keras' SeedGenerators (dropout, noise),
        # so a resumed run would redraw the dropout masks it already used: track them explicitly.
        rng_state = {f"s{i}": v.value for i, v in enumerate(v for v in model.variables if "seed_generator" in v.path)}
        self.checkpointer = Checkpointer(Path(run_dir) / "checkpoints", keep_checkpoints, is_chief,
                                         model=model, optimizer=optimizer, epoch_sums=self.epoch_sums,
                                         schedule=tf.train.Checkpoint(**schedule_state),
                                         rng=tf.train.Checkpoint(**rng_state))

    # ------------------------------------------------------------------ compiled steps

    def _replica_train_step(self, x, y):
        model, optimizer = self.model, self.optimizer
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            per_example, correct, count = _batch_sums(logits, y)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch_size)
            if model.losses:  # kernel regularizers: counted once over all replicas
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            scaled_loss = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled_loss, model.trainable_variables)
        # Squared norm of this replica's share of the global-batch gradient, without loss scaling.
        grad_norm_sq = tf.square(tf.linalg.global_norm(grads) / tf.cast(optimizer.scale_loss(1.0), tf.float32))
        optimizer.apply(grads, model.trainable_variables)
        return loss, tf.reduce_sum(per_example), correct, count, grad_norm_sq

    def _train_steps(self, iterator, num_steps: int):
        """`num_steps` training steps in one graph call; returns summed loss/correct/count and last loss."""
        totals = tf.zeros([3])
        last_loss = tf.constant(0.0)
        for _ in tf.range(num_steps):
            step = tf.identity(self.optimizer.iterations)  # read now: apply() increments it
            lr = self._current_lr()
            loss, loss_sum, correct, count, grad_norm_sq = self.strategy.run(self._replica_step, args=next(iterator))
            last_loss = self.strategy.reduce(SUM, loss, axis=None)
            totals += self._sum_replicas((loss_sum, correct, count))
            with tf.summary.record_if(step % self.update_freq == 0):
                _scalar("batch_loss", last_loss, step)
                _scalar("learning_rate", lr, step)
                _scalar("grad_norm", self._global_grad_norm(grad_norm_sq), step)
        return totals, last_loss

    def _global_grad_norm(self, replica_norms_sq):
        """Global-batch gradient norm: exact with one replica. With n replicas, n times the RMS of the
        replicas' norms (each holds ~1/n of the gradient): an estimate that avoids a second all-reduce
        of every gradient just to log it."""
        n = float(self.strategy.num_replicas_in_sync)
        return tf.sqrt(self.strategy.reduce(SUM, replica_norms_sq, axis=None) / n) * n

    def _current_lr(self):
        lr = self.optimizer.learning_rate
        return tf.cast(lr, tf.float32)

    def _eval_all(self, dataset):
        totals = tf.zeros([3])
        for x, y in dataset:
            totals += self._sum_replicas(self.strategy.run(self._replica_eval_step, args=(x, y)))
        return totals

    def _sum_replicas(self, values):
        """(loss sum, correct, count) summed over replicas, as one tensor."""
        return tf.stack([self.strategy.reduce(SUM, v, axis=None) for v in values])

    def _replica_eval_step(self, x, y):
        per_example, correct, count = _batch_sums(self.model(x, training=False), y)
        return tf.reduce_sum(per_example), correct, count

    def _train_fn(self, num_steps: int):
        # One trace per distinct count (the epoch's remainder after whole executions may differ).
        if num_steps not in self._train_fns:
            self._train_fns[num_steps] = tf.function(lambda it: self._train_steps(it, num_steps))
        return self._train_fns[num_steps]

    # ------------------------------------------------------------------ host side

    def evaluate(self, dist_dataset) -> tuple[float, float]:
        loss_sum, correct, count = self._eval_fn(dist_dataset).numpy()
        return float(loss_sum / count), float(correct / count)

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def fit(self, make_train_dataset, val_ds, *, epochs: int) -> History:
        history = History()
        self.callbacks.on_train_begin()  # before restoring: EarlyStopping resets its state here
        state = self.checkpointer.restore()
        if state is not None:
            self._restore_host_state(state, history)
            if self.lr_scale is not None and "lr_scale" in state:  # lowered by an earlier NaN recovery
                self.lr_scale.assign(state["lr_scale"])
            log.info("Resumed from %s: epoch %d, step %d", self.checkpointer.latest,
                     self.step // self.steps_per_epoch + 1, self.step)
        elif self.nan_recovery and self.lr_scale is not None:
            self._save(history)  # the initial weights: a divergence in the first steps can recover too
        retries = self.nan_recovery
        while True:
            try:
                self._fit_epochs(make_train_dataset, val_ds, epochs, history)
                break
            except DivergenceError as e:
                if retries == 0 or self.lr_scale is None or self.checkpointer.latest is None:
                    raise
                retries -= 1
                history.nan_recoveries += 1
                self._recover(e, history)
        self.callbacks.on_train_end()
        history.steps = self.step
        self.checkpointer.close()
        return history

    def _restore_host_state(self, state: dict, history: History):
        history.epochs = [EpochLogs(**e) for e in state.get("history", [])]
        history.stopped_early = state.get("stopped_early", False)
        _restore_callback_state(self.callbacks, state.get("callbacks", []))

    def _recover(self, error: DivergenceError, history: History):
        self._restore_host_state(self.checkpointer.restore(), history)
        self.lr_scale.assign(self.lr_scale.numpy() * self.nan_lr_factor)
        log.warning("%s Recovering (trainer.nan_recovery): restored %s at step %d and scaled the learning "
                    "rate by %g (now x%g).", error, self.checkpointer.latest, self.step, self.nan_lr_factor,
                    float(self.lr_scale.numpy()))

    def _fit_epochs(self, make_train_dataset, val_ds, epochs: int, history: History):
        spe = self.steps_per_epoch
        while not history.stopped_early and self.step < epochs * spe:
            epoch, done = divmod(self.step, spe)
            logs = self._run_epoch(epoch, epochs, make_train_dataset(epoch, done), val_ds, done, history)
            history.epochs.append(logs)
            if hasattr(self.schedule, "on_epoch_end"):
                self.schedule.on_epoch_end(epoch, logs.as_dict())
            self.callbacks.on_epoch_end(epoch, logs.as_dict())
            if getattr(self.model, "stop_training", False):
                history.stopped_early = True
                log.info("Early stopping after epoch %d", epoch + 1)
            self.epoch_sums.assign(tf.zeros([3], tf.float64))
            self._save(history)

    def _run_epoch(self, epoch, epochs, train_ds, val_ds, done, history) -> EpochLogs:
        spe = self.steps_per_epoch
        progbar = keras.utils.Progbar(spe, verbose=1 if self.verbose == 1 else 0,
                                      stateful_metrics=["loss", "accuracy"])
        iterator = iter(train_ds)
        totals = self.epoch_sums.numpy() if done else np.zeros(3)
        every = self.checkpoint_every_steps
        t0 = time.perf_counter()
        with self.train_writer.as_default():
            while done < spe:
                n = min(self.steps_per_execution, spe - done)
                if every:
                    n = min(n, every - self.step % every)  # land exactly on checkpoint steps
                sums, last_loss = self._train_fn(n)(iterator)
                last_loss = float(last_loss.numpy())
                if not math.isfinite(last_loss):
                    self._diverged(last_loss)
                totals += sums.numpy()
                done += n
                history.steps_run += n
                progbar.update(done, [("loss", totals[0] / totals[2]), ("accuracy", totals[1] / totals[2])])
                if every and self.step % every == 0 and done < spe:
                    self.epoch_sums.assign(totals)
                    self._save(history)
        seconds = time.perf_counter() - t0
        history.train_seconds += seconds
        val_loss, val_acc = self.evaluate(val_ds)
        lr = float(self._current_lr().numpy())
        logs = EpochLogs(float(totals[0] / totals[2]), float(totals[1] / totals[2]), val_loss, val_acc, lr, seconds)
        self._write_epoch_summaries(epoch, logs)
        if self.verbose:
            log.info("epoch %d/%d - %.2fs - loss %.4f - accuracy %.4f - val_loss %.4f - val_accuracy %.4f - lr %.3g",
                     epoch + 1, epochs, seconds, logs.loss, logs.accuracy, logs.val_loss, logs.val_accuracy, lr)
        return logs

    def _save(self, history: History):
        finite = all(bool(tf.reduce_all(tf.math.is_finite(v)).numpy()) for v in self.model.trainable_variables)
        if not finite:
            self._diverged(float("nan"))
        self.checkpointer.save(self.step, {
            "history": [dataclasses.asdict(e) for e in history.epochs],
            "stopped_early": history.stopped_early,
            "callbacks": _callback_state(self.callbacks),
            **({"lr_scale": float(self.lr_scale.numpy())} if self.lr_scale is not None else {}),
        })

    def _diverged(self, loss: float):
        lr = float(self._current_lr().numpy())
        last = self.checkpointer.latest or "none (nothing was saved yet)"
        raise DivergenceError(
            f"The training loss became {loss} at step {self.step} (learning rate {lr:.4g}). No checkpoint "
            f"was written after it; the last good checkpoint is {last}. Fix: lower optimizer.lr, add warmup "
            "(schedule.warmup_epochs) or gradient clipping (optimizer.global_clipnorm=1.0), or retry "
            "automatically with trainer.nan_recovery=2.")

    def _write_epoch_summaries(self, epoch: int, logs: EpochLogs):
        step = epoch + 1
        with self.train_writer.as_default():
            tf.summary.scalar("epoch_loss", logs.loss, step=step)
            tf.summary.scalar("epoch_accuracy", logs.accuracy, step=step)
            tf.summary.scalar("epoch_learning_rate", logs.learning_rate, step=step)
        with self.val_writer.as_default():
            tf.summary.scalar("epoch_loss", logs.val_loss, step=step)
            tf.summary.scalar("epoch_accuracy", logs.val_accuracy, step=step)
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
