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

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.scalar import metadata as scalar_metadata

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
    seconds: float

    def as_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")}


@dataclass
class History:
    epochs: list[EpochLogs] = field(default_factory=list)
    steps: int = 0
    train_seconds: float = 0.0  # time inside training steps only (no evaluation, no checkpoints)
    stopped_early: bool = False


class Loop:
    """Trains `model` with `optimizer` on distributed datasets under `strategy`."""

    def __init__(self, *, strategy, model, optimizer, schedule, global_batch_size: int, run_dir: Path,
                 steps_per_execution: int = 1, jit_compile: bool = False, update_freq: int = 1,
                 keep_checkpoints: int = 3, verbose: int = 1, callbacks=()):
        self.strategy, self.model, self.optimizer, self.schedule = strategy, model, optimizer, schedule
        self.global_batch_size = global_batch_size
        self.steps_per_execution, self.update_freq, self.verbose = steps_per_execution, update_freq, verbose
        self.callbacks = keras.callbacks.CallbackList(list(callbacks), model=model)
        replica_step = tf.function(self._replica_train_step, jit_compile=True) if jit_compile else self._replica_train_step
        self._replica_step = replica_step
        self._train_fns: dict[int, tf.types.experimental.GenericFunction] = {}
        self._eval_fn = tf.function(self._eval_all)

        self.run_dir = Path(run_dir)
        tb = self.run_dir / "tensorboard"
        self.train_writer = tf.summary.create_file_writer(str(tb / "train"))
        self.val_writer = tf.summary.create_file_writer(str(tb / "validation"))

        with strategy.scope():
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            # Slots must exist before a restore, or Keras' optimizer state is silently skipped.
            optimizer.build(model.trainable_variables)
        schedule_state = {f"v{i}": v for i, v in enumerate(getattr(schedule, "variables", []))}
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=self.epoch,
                                              schedule=tf.train.Checkpoint(**schedule_state))
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.run_dir / "checkpoints"),
                                                  max_to_keep=keep_checkpoints)

    # ------------------------------------------------------------------ compiled steps

    def _replica_train_step(self, x, y):
        model, optimizer = self.model, self.optimizer
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            per_example = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch_size)
            if model.losses:  # kernel regularizers: counted once over all replicas
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            scaled_loss = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled_loss, model.trainable_variables)
        # Norm of this replica's share of the global-batch gradient, unscaled from loss scaling.
        grad_norm = tf.linalg.global_norm(grads) / tf.cast(optimizer.scale_loss(1.0), tf.float32)
        optimizer.apply(grads, model.trainable_variables)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1), tf.cast(y, tf.int64)), tf.float32))
        count = tf.cast(tf.shape(y)[0], tf.float32)
        return loss, tf.reduce_sum(per_example), correct, count, grad_norm

    def _train_steps(self, iterator, num_steps: int):
        """`num_steps` training steps in one graph call; returns summed loss/correct/count and last loss."""
        totals = tf.zeros([3])
        last_loss = tf.constant(0.0)
        for _ in tf.range(num_steps):
            step = tf.identity(self.optimizer.iterations)  # read now: apply() increments it
            lr = self._current_lr()
            loss, loss_sum, correct, count, grad_norm = self.strategy.run(self._replica_step, args=next(iterator))
            last_loss = self.strategy.reduce(SUM, loss, axis=None)
            totals += tf.stack([self.strategy.reduce(SUM, t, axis=None) for t in (loss_sum, correct, count)])
            with tf.summary.record_if(step % self.update_freq == 0):
                _scalar("batch_loss", last_loss, step)
                _scalar("learning_rate", lr, step)
                _scalar("grad_norm", self._global_grad_norm(grad_norm), step)
        return totals, last_loss

    def _global_grad_norm(self, replica_norms):
        """Global-batch gradient norm: exact with one replica. With n replicas, n times the RMS of the
        replicas' norms (each holds ~1/n of the gradient): an estimate that avoids a second all-reduce
        of every gradient just to log it."""
        n = float(self.strategy.num_replicas_in_sync)
        return tf.sqrt(self.strategy.reduce(SUM, tf.square(replica_norms), axis=None) / n) * n

    def _current_lr(self):
        lr = self.optimizer.learning_rate
        return tf.cast(lr, tf.float32)

    def _eval_all(self, dataset):
        totals = tf.zeros([3])
        for x, y in dataset:
            totals += tf.stack([self.strategy.reduce(SUM, t, axis=None)
                                for t in self.strategy.run(self._replica_eval_step, args=(x, y))])
        return totals

    def _replica_eval_step(self, x, y):
        logits = self.model(x, training=False)
        per_example = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1), tf.cast(y, tf.int64)), tf.float32))
        return tf.reduce_sum(per_example), correct, tf.cast(tf.shape(y)[0], tf.float32)

    def _train_fn(self, num_steps: int):
        # One trace per distinct count (the epoch's remainder after whole executions may differ).
        if num_steps not in self._train_fns:
            self._train_fns[num_steps] = tf.function(lambda it: self._train_steps(it, num_steps))
        return self._train_fns[num_steps]

    # ------------------------------------------------------------------ host side

    def evaluate(self, dist_dataset) -> tuple[float, float]:
        loss_sum, correct, count = self._eval_fn(dist_dataset).numpy()
        return float(loss_sum / count), float(correct / count)

    def restore(self) -> int:
        """Restore the latest checkpoint if any; returns the number of epochs already done."""
        latest = self.manager.latest_checkpoint
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            log.info("Resumed from %s (epoch %d, step %d)", latest, int(self.epoch.numpy()),
                     int(self.optimizer.iterations.numpy()))
        return int(self.epoch.numpy())

    def fit(self, train_ds, val_ds, *, epochs: int, steps_per_epoch: int) -> History:
        history = History()
        start_epoch = self.restore()
        self.callbacks.on_train_begin()
        for epoch in range(start_epoch, epochs):
            logs = self._run_epoch(epoch, epochs, train_ds, val_ds, steps_per_epoch, history)
            history.epochs.append(logs)
            self.epoch.assign(epoch + 1)
            self.manager.save(checkpoint_number=epoch + 1)
            if hasattr(self.schedule, "on_epoch_end"):
                self.schedule.on_epoch_end(epoch, logs.as_dict())
            self.callbacks.on_epoch_end(epoch, logs.as_dict())
            if getattr(self.model, "stop_training", False):
                history.stopped_early = True
                log.info("Early stopping after epoch %d", epoch + 1)
                break
        self.callbacks.on_train_end()
        history.steps = int(self.optimizer.iterations.numpy())
        return history

    def _run_epoch(self, epoch, epochs, train_ds, val_ds, steps_per_epoch, history) -> EpochLogs:
        progbar = keras.utils.Progbar(steps_per_epoch, verbose=1 if self.verbose == 1 else 0,
                                      stateful_metrics=["loss", "accuracy"])
        iterator = iter(train_ds)
        totals = np.zeros(3)
        done, t0 = 0, time.perf_counter()
        with self.train_writer.as_default():
            while done < steps_per_epoch:
                n = min(self.steps_per_execution, steps_per_epoch - done)
                sums, last_loss = self._train_fn(n)(iterator)
                totals += sums.numpy()
                done += n
                last_loss = float(last_loss.numpy())
                if not math.isfinite(last_loss):
                    self._diverged(last_loss)
                progbar.update(done, [("loss", totals[0] / totals[2]), ("accuracy", totals[1] / totals[2])])
        seconds = time.perf_counter() - t0
        history.train_seconds += seconds
        val_loss, val_acc = self.evaluate(val_ds)
        lr = float(self._current_lr().numpy())
        logs = EpochLogs(totals[0] / totals[2], totals[1] / totals[2], val_loss, val_acc, lr, seconds)
        self._write_epoch_summaries(epoch, logs)
        if self.verbose:
            log.info("epoch %d/%d - %.2fs - loss %.4f - accuracy %.4f - val_loss %.4f - val_accuracy %.4f - lr %.3g",
                     epoch + 1, epochs, seconds, logs.loss, logs.accuracy, logs.val_loss, logs.val_accuracy, lr)
        return logs

    def _diverged(self, loss: float):
        step = int(self.optimizer.iterations.numpy())
        lr = float(self._current_lr().numpy())
        last = self.manager.latest_checkpoint or "none (no epoch finished)"
        raise DivergenceError(
            f"The training loss became {loss} at step {step} (learning rate {lr:.4g}). No checkpoint was "
            f"written after it; the last good checkpoint is {last}. Fix: lower optimizer.lr, add warmup "
            "(schedule.warmup_epochs) or gradient clipping (optimizer.global_clipnorm=1.0), then rerun.")

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

