"""The compiled steps: training steps and an evaluation pass, under any tf.distribute strategy.

Why not `model.fit`: under MultiWorkerMirroredStrategy Keras 3's fit fails (keras-team/keras#20585,
tensorflow#72388), its TensorBoard callback writes the learning rate once per epoch only,
and it cannot resume mid-epoch. The `Trainer` owns the step instead (orbit's Trainer; the outer
loop of epochs, evaluation and checkpoints is tftrain.loop.controller's): a `tf.function` runs
`num_steps` steps, each `strategy.run(replica_step)` with the loss averaged over the *global*
batch's real examples (`tf.nn.compute_average_loss`: an epoch's last batch may be partial) and the Keras optimizer applying the gradients (it
all-reduces them across replicas); it sums the problem's additive metric state over replicas
and steps and writes per-step scalars from cross-replica context. The same step serves training
and `task=lr_find`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import tensorflow as tf
from tensorboard.plugins.scalar import metadata as scalar_metadata

from tftrain.problems import Problem

SUM = tf.distribute.ReduceOp.SUM
_SCALAR_METADATA = scalar_metadata.create_summary_metadata(display_name=None, description=None)


def batch_loss(problem: Problem, model, y, outputs, count, parts: int = 1):
    """(loss, per-example losses) of one replica's batch as the training step minimizes it: the
    problem's per-example loss averaged over the global batch's `count` examples, plus the model's
    regularizers, counted once over all replicas and, for one of an update's `parts` micro-batches,
    1/parts of them. Without loss scaling. In replica context."""
    per_example = problem.per_example_loss(y, outputs)
    loss = tf.nn.compute_average_loss(per_example, global_batch_size=count)
    if model.losses:
        regularization = tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        loss += regularization / parts if parts > 1 else regularization
    return loss, per_example


def _scalar(tag: str, value, step):
    # tf.summary.scalar prefixes the tag with the enclosing name scope, which inside the compiled
    # step loop is "while/"; writing with the scalar plugin's metadata keeps the tag as given.
    tf.summary.write(tag, tf.cast(value, tf.float32), step=step, metadata=_SCALAR_METADATA)


CLIPPING = ("clipvalue", "clipnorm", "global_clipnorm")


def _inner(optimizer):
    return getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer wraps the configured one


def _take_clipping(optimizer) -> dict:
    """The optimizer's clipping settings, taken off it (the Trainer clips instead: `_clipped`)."""
    inner = _inner(optimizer)
    taken = {k: getattr(inner, k, None) for k in CLIPPING if getattr(inner, k, None)}
    for k in taken:
        setattr(inner, k, None)
    return taken


def _put_clipping(optimizer, settings: dict) -> None:
    for k, v in settings.items():
        setattr(_inner(optimizer), k, v)


_NOT_CONVERTED = tf.autograph.experimental.do_not_convert


class Steps(NamedTuple):
    """What one call of `Trainer.train` returns (tensors)."""

    totals: tf.Tensor  # the epoch's summed metric state so far (float64)
    last_loss: tf.Tensor  # the loss of the call's last step (all replicas)
    first_bad: tf.Tensor  # the first step whose loss was not finite, or -1
    stop: tf.Tensor  # > 0 when any replica or worker was asked to stop
    step_log: tf.Tensor  # [num_steps, 4]: step, batch_loss, learning_rate, grad_norm (or [0, 4])


@dataclass(frozen=True)
class StepOptions:
    """How the step trains: `trainer.batch_size` (global) and `trainer.accumulate_steps`, whether
    the replica step is XLA-compiled (`trainer.jit_compile` resolved: tftrain.loop.distribute.use_xla),
    and for the loggers how often the step writes its scalars and whether it returns a step log."""

    global_batch_size: int
    accumulate_steps: int
    jit_compile: bool
    update_freq: int = 1
    record_steps: bool = False


class Trainer:
    """Trains `model` with `optimizer` on `problem` under `strategy`, global batch `global_batch_size`.

    `train(iterator, num_steps)` -> (summed batch states, last loss, first non-finite step or -1,
    stop, step log), where `stop` is the sum of `stop_flag` over every replica and worker: a worker
    asked to stop (a preemption signal) sets its flag to 1, and all of them see stop > 0 at the end
    of the same call; the step log is a [num_steps, 4] float64 tensor of (step, batch_loss,
    learning_rate, grad_norm) with `record_steps` (for loggers on the host), else [0, 4].
    `evaluate(dataset)` -> the metrics. Per-step scalars (batch_loss, learning_rate, grad_norm,
    every `update_freq` steps) also go to the caller's default summary writer, from inside the
    compiled loop (TensorBoard's, cheaper than writing them from the host). `variables`: what the
    optimizer is built for (default: the model's trainable variables); a change of the model's
    trainable set between calls retraces the step (`trainable_changed`).
    """

    def __init__(self, strategy, model, optimizer, problem: Problem, options: "StepOptions", variables=None):
        self.strategy, self.model, self.optimizer, self.problem = strategy, model, optimizer, problem
        self.global_batch_size, self.accumulate = options.global_batch_size, int(options.accumulate_steps)
        self.update_freq, self.record_steps = options.update_freq, options.record_steps
        self._jit_compile = options.jit_compile
        self._clipping = _take_clipping(optimizer) if strategy.num_replicas_in_sync > 1 else {}
        self._make_train_fn()
        self._replica_eval_step = _NOT_CONVERTED(self._replica_eval)
        self._eval_fn = tf.function(self._eval_all)
        self._agree_fn = None
        self.group = None  # (tftrain.loop.group.StepGroup, member index) while trained with other seeds
        self.shared_eval = None  # iterator -> summed state: another seed's traced evaluation on these variables
        # This process' request to stop (set by a signal handler), reduced across workers in the step.
        self.stop_flag = tf.Variable(0, dtype=tf.int32, trainable=False, name="tftrain_stop")
        with strategy.scope():
            # Slots must exist before a restore, or Keras' optimizer state is silently skipped.
            # `variables`: every one that ever trains, those a later epoch unfreezes included
            # (tftrain.loop.unfreeze): Keras refuses variables it was not built for, and the
            # checkpoint then holds the same slots at every epoch.
            optimizer.build(model.trainable_variables if variables is None else list(variables))
        self._trainable = self._trainable_ids()

    def _make_train_fn(self):
        # The replica step has no tensor-dependent Python control flow: autograph need not
        # convert it (nor the model, problem and schedule code it calls), which saves tracing time
        # (Keras' own train step is do_not_convert too). The accumulating step loops with tf.range.
        replica = _NOT_CONVERTED(self._replica_step) if self.accumulate == 1 \
            else self._replica_accumulated_step
        self._replica = tf.function(replica, jit_compile=True) if self._jit_compile else replica
        # One trace for every count of steps per call: the count is a tensor argument.
        self._train_fn = tf.function(self._steps)

    def _trainable_ids(self) -> tuple:
        return tuple(id(v) for v in self.model.trainable_variables)

    def trainable_changed(self) -> None:
        """Trace the step again for the model's current trainable variables: the compiled step
        holds the list (and a BatchNormalization's mode) it was traced with. `train` calls it
        when a layer was frozen or unfrozen since its last call (`model.unfreeze`, a callback).
        A member of a seed group trains alone from then on (the group's call holds its old list)."""
        if self.group is not None:
            group, i = self.group
            group.leave(i)
        self._make_train_fn()
        self._trainable = self._trainable_ids()

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def learning_rate(self):
        return tf.cast(self.optimizer.learning_rate, tf.float32)

    # ------------------------------------------------------------------ replica context

    def _loss_and_grads(self, x, y, parts: int = 1, count=None):
        """One batch's loss (averaged over the global batch's `count` examples, plus the
        regularizers: counted once over all replicas and, for one of an update's `parts`
        micro-batches, 1/parts of them), its metric state, and the gradient of the loss as the
        optimizer scales it. `count` None: the global batch size (accumulated micro-batches are
        always full), or with one replica the batch's own size."""
        model, optimizer = self.model, self.optimizer
        if count is None:
            single = parts == 1 and self.strategy.num_replicas_in_sync == 1
            count = tf.shape(y)[0] if single else self.global_batch_size
        with tf.GradientTape() as tape:
            outputs = model(x, training=True)
            loss, per_example = batch_loss(self.problem, model, y, outputs, count, parts)
            scaled_loss = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled_loss, model.trainable_variables)
        return loss, self.problem.batch_state(y, outputs, per_example), grads

    def _apply(self, grads):
        """Apply `grads` (`_clipped`); returns the squared norm of this replica's share of the
        global-batch gradient, without loss scaling."""
        optimizer = self.optimizer
        grad_norm_sq = tf.square(tf.linalg.global_norm(grads) / tf.cast(optimizer.scale_loss(1.0), tf.float32))
        optimizer.apply(self._clipped(grads), self.model.trainable_variables)
        return grad_norm_sq

    def _replica_step(self, x, y, count=None):
        loss, state, grads = self._loss_and_grads(x, y, count=count)
        return loss, state, self._apply(grads)

    def _replica_accumulated_step(self, xs, ys):
        """One update from `accumulate` micro-batches (stacked: [accumulate, batch, ...]): their
        gradients summed, in sequence (a while loop: one micro-batch's activations alive at a
        time), then applied once. The loss of each is averaged over the whole update's global
        batch, so the sum is the gradient of that batch in one go: the same update, the schedule,
        clipping and EMA seeing one step."""
        grads = [tf.zeros_like(v) for v in self.model.trainable_variables]
        loss, state = tf.constant(0.0), tf.zeros([self.problem.size])
        for i in tf.range(self.accumulate):
            micro, micro_state, micro_grads = self._loss_and_grads(xs[i], ys[i], parts=self.accumulate)
            grads = [g if d is None else g + tf.convert_to_tensor(d) for g, d in zip(grads, micro_grads)]
            loss += micro
            state += micro_state
        return loss, state, self._apply(grads)

    def _clipped(self, grads):
        """With several replicas and clipping: the gradient all-reduced and clipped here, since
        Keras 3 clips before it all-reduces (BaseOptimizer._backend_apply_gradients clips, then
        TFOptimizer._backend_update_step sums the replicas), which clips each replica's share
        rather than the global batch's gradient. Divided by the replicas, which Keras then sums."""
        if not self._clipping:
            return grads
        replicas = float(self.strategy.num_replicas_in_sync)
        scale = tf.cast(self.optimizer.scale_loss(1.0), tf.float32)  # clip the unscaled gradient
        dense = [tf.convert_to_tensor(g) / scale for g in grads]
        dense = tf.distribute.get_replica_context().all_reduce(SUM, dense)
        c = self._clipping
        if c.get("clipvalue"):
            dense = [tf.clip_by_value(g, -c["clipvalue"], c["clipvalue"]) for g in dense]
        if c.get("clipnorm"):
            dense = [tf.clip_by_norm(g, c["clipnorm"]) for g in dense]
        if c.get("global_clipnorm"):
            dense, _ = tf.clip_by_global_norm(dense, c["global_clipnorm"])
        return [g * scale / replicas for g in dense]

    def restore_clipping(self) -> None:
        """Put the optimizer's clipping settings back (before it is saved with the model)."""
        _put_clipping(self.optimizer, self._clipping)

    def _replica_eval(self, x, y):
        return self.problem.batch_state(y, self.model(x, training=False))

    # ------------------------------------------------------------------ compiled loops

    def _steps(self, iterator, num_steps, totals):
        # `totals` carries the epoch's running sums in, in float64, added one step at a time: the
        # epoch's metrics come out the same however its steps are grouped into calls (and after a
        # mid-epoch resume, which feeds the checkpointed sums back in).
        last_loss = tf.constant(0.0)
        first_bad = tf.constant(-1, tf.int64)
        steps_log = tf.TensorArray(tf.float64, size=num_steps if self.record_steps else 0, element_shape=[4])
        for i in tf.range(num_steps):
            step = tf.identity(self.optimizer.iterations)  # read now: apply() increments it
            lr = self.learning_rate()
            loss, state, grad_norm_sq = self.strategy.run(self._replica, args=self._with_count(self._next_update(iterator)))
            last_loss = self.strategy.reduce(SUM, loss, axis=None)
            totals += tf.cast(self.strategy.reduce(SUM, state, axis=None), tf.float64)
            first_bad = tf.where((first_bad < 0) & ~tf.math.is_finite(last_loss), step, first_bad)
            grad_norm = self._global_grad_norm(grad_norm_sq)
            with tf.summary.record_if(step % self.update_freq == 0):
                _scalar("batch_loss", last_loss, step)
                _scalar("learning_rate", lr, step)
                _scalar("grad_norm", grad_norm, step)
            if self.record_steps:
                steps_log = steps_log.write(i, tf.stack([tf.cast(v, tf.float64) for v in (step, last_loss, lr, grad_norm)]))
        stop = self.strategy.reduce(SUM, self.strategy.run(lambda: tf.identity(self.stop_flag)), axis=None)
        return totals, last_loss, first_bad, stop, steps_log.stack() if self.record_steps else tf.zeros([0, 4], tf.float64)

    def _with_count(self, update):
        """With several replicas, the update's (x, y) and the number of examples in the global
        batch (a partial last batch has fewer than global_batch_size, unevenly shared); each
        replica divides its loss sum by it. One replica counts its own batch."""
        if self.accumulate > 1 or self.strategy.num_replicas_in_sync == 1:
            return update
        sizes = self.strategy.run(lambda x, y: tf.shape(y)[0], args=update)
        return (*update, self.strategy.reduce(SUM, sizes, axis=None))

    def _next_update(self, iterator):
        """The next update's input: one batch, or `accumulate` micro-batches stacked."""
        if self.accumulate == 1:
            return next(iterator)
        batches = [next(iterator) for _ in range(self.accumulate)]
        stack = lambda *parts: tf.stack(parts)  # noqa: E731 - per replica
        return tuple(self.strategy.run(stack, args=[b[k] for b in batches]) for k in (0, 1))

    def _global_grad_norm(self, replica_norms_sq):
        """Global-batch gradient norm: exact with one replica. With n replicas, n times the RMS of the
        replicas' norms (each holds ~1/n of the gradient): an estimate that avoids a second all-reduce
        of every gradient just to log it."""
        n = float(self.strategy.num_replicas_in_sync)
        return tf.sqrt(self.strategy.reduce(SUM, replica_norms_sq, axis=None) / n) * n

    def _eval_all(self, iterator):
        # An iterator argument, not the dataset: a dataset passed into a tf.function is rebuilt
        # inside the graph on every call (on 2 cores 35-50 ms for a 2-batch split, 3x the cost
        # of iter(); it was most of a small dataset's epoch).
        totals = tf.zeros([self.problem.size])
        for x, y in iterator:  # autograph: get_next_as_optional until the end
            totals += self.strategy.reduce(SUM, self.strategy.run(self._replica_eval_step, args=(x, y)), axis=None)
        return totals

    # ------------------------------------------------------------------ host side

    def train(self, iterator, num_steps: int, totals=None) -> "Steps":
        """`num_steps` training steps in one graph call (traced once, whatever the count), their
        summed metric state added to `totals` (float64; zeros by default)."""
        totals = tf.zeros([self.problem.size], tf.float64) if totals is None else tf.constant(totals, tf.float64)
        if self._trainable_ids() != self._trainable:  # ~0.1 ms for a ResNet-20
            self.trainable_changed()
        count = tf.constant(num_steps, tf.int32)
        if self.group is not None:  # one compiled call with the other seeds' steps (tftrain.loop.group)
            group, i = self.group
            return Steps(*group.call(i, iterator, count, totals))
        return Steps(*self._train_fn(iterator, count, totals))

    def agree(self, values: list[float]) -> list[float]:
        """`values` as the chief's first replica has them, on every worker: a decision taken from
        host timings (the steps per call) must be the same everywhere, or the workers' collectives
        stop matching and the run hangs. A collective itself: every worker calls it at the same
        point. Exact: every other replica adds zeros."""
        if not self.strategy.extended._in_multi_worker_mode():
            return list(values)
        if self._agree_fn is None:
            def first_replica(v):
                ctx = tf.distribute.get_replica_context()
                return tf.where(tf.equal(ctx.replica_id_in_sync_group, 0), v, tf.zeros_like(v))

            self._agree_fn = tf.function(lambda v: self.strategy.reduce(
                SUM, self.strategy.run(first_replica, args=(v,)), axis=None))
        return [float(v) for v in self._agree_fn(tf.constant(values, tf.float64)).numpy()]

    def evaluate(self, dataset) -> dict[str, float]:
        """The problem's loss and metrics over a whole (distributed) dataset."""
        iterator = iter(dataset)
        totals = self._eval_fn(iterator) if self.shared_eval is None else self.shared_eval(iterator)
        return self.problem.results(totals.numpy())
