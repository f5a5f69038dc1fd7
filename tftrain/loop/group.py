"""Seeds trained together: the training calls of several `Trainer`s (one per seed of a
configuration: its own model, optimizer, data order and dropout stream) run as one compiled call.

Why: a sweep over seeds is mostly small jobs, where a job's time goes to the host (Python, the
dispatch into the graph, one job's start after another) rather than to arithmetic. One graph
holding every member's steps pays the host once per call for all of them, and TensorFlow's
executor runs the members' independent steps side by side on the cores.

Each member's loop (`tftrain.loop.Controller`) runs unchanged in its own thread: its epochs,
evaluation, checkpoints, early stopping, NaN recovery and preemption are its own. Only the
compiled call is shared: `StepGroup.call` waits until every member still in the group has asked
for its next call, then one thread runs them all (`_steps` of each member, with its own iterator,
step count, metric sums and summary writer) and hands each member its own results. A member whose
training ends (its epochs done, stopped early, diverged, failed) leaves the group, and the group
is traced again for the members left. The members' steps are the same operations on the same
values as in their separate runs, so each member's results are those of its separate run.
"""

from __future__ import annotations

import contextlib
import threading

import tensorflow as tf


class StepGroup:
    """The shared compiled call of `trainers` (tftrain.loop.Trainer, one per member). `writers[i]`:
    member i's TensorBoard summary writer (or None), or a function returning it (a logger makes its
    writer when its run starts, after the group is formed), used inside the call as the member's
    own loop would use it. Call `join(i)` for every member first; `leave(i)` when its training ends."""

    def __init__(self, trainers: list, writers: list | None = None):
        self.trainers = list(trainers)
        self.writers = list(writers) if writers is not None else [None] * len(trainers)
        self._active: set[int] = set()
        self._pending: dict[int, tuple] = {}
        self._results: dict[int, object] = {}
        self._error: dict[int, BaseException] = {}
        self._fns: dict[tuple, object] = {}  # members in the call -> its tf.function
        self._captures: dict[tuple, list | None] = {}
        self._cond = threading.Condition()
        self.calls = 0  # compiled group calls run (for the log and the tests of reuse)

    def join(self, i: int) -> None:
        with self._cond:
            self._active.add(i)
        self.trainers[i].group = (self, i)
        if i:  # its evaluation runs the first member's traced one too (on its own variables)
            self.trainers[i].shared_eval = lambda iterator: self._evaluate(i, iterator)

    def _evaluate(self, i: int, iterator):
        lead = self.trainers[0]._eval_fn.get_concrete_function(iterator)
        key = ("eval", i, id(lead))
        if key not in self._captures:
            self._captures[key] = _captures_for(lead, (self.trainers[0], None), (self.trainers[i], None))
        captures = self._captures[key]
        if captures is None:  # not the same variables: its own trace
            self.trainers[i].shared_eval = None
            return self.trainers[i]._eval_fn(iterator)
        return lead._call_flat(tf.nest.flatten(iterator, expand_composites=True), captured_inputs=captures)

    def leave(self, i: int) -> None:
        """Member i trains no more (or trains alone again): the others stop waiting for it."""
        with self._cond:
            self._active.discard(i)
            self.trainers[i].group = None
            self._maybe_run()
            self._cond.notify_all()

    def call(self, i: int, iterator, num_steps, totals):
        """Member i's training call: blocks until the group's call has run; member i's outputs."""
        with self._cond:
            self._pending[i] = (iterator, num_steps, totals)
            self._maybe_run()
            while i not in self._results and i not in self._error:
                self._cond.wait()
            if i in self._error:
                raise self._error.pop(i)
            return self._results.pop(i)

    def _maybe_run(self) -> None:
        # The last member to ask runs the call (holding the lock: the others are waiting for it).
        if not self._pending or not self._active or set(self._pending) != self._active:
            return
        members = tuple(sorted(self._pending))
        args = [self._pending.pop(i) for i in members]
        try:
            outputs = self._fn(members)(*zip(*args))
        except BaseException as e:  # every member of the call gets the error (its loop ends with it)
            for i in members:
                self._error[i] = e
        else:
            self.calls += 1
            for i, out in zip(members, outputs):
                self._results[i] = out
        self._cond.notify_all()

    def _fn(self, members: tuple):
        if members not in self._fns:
            trainers = [self.trainers[i] for i in members]
            writers = [w() if callable(w) else w for w in (self.writers[i] for i in members)]
            self.shared = 0

            def steps(iterators, counts, totals):
                # The first member's step is traced once; every other member whose variables match
                # it one for one runs that same traced function on its own variables (a call of it
                # with the member's variables as its captured inputs): tracing costs one member's.
                with _writing_to(writers[0]):
                    lead = self._lead(trainers[0]).get_concrete_function(iterators[0], counts[0], totals[0])
                out = []
                for k, (trainer, writer, iterator, n, sums) in enumerate(zip(trainers, writers, iterators, counts,
                                                                             totals)):
                    captures = _captures_for(lead, (trainers[0], writers[0]), (trainer, writer)) if k else None
                    if k == 0 or captures is not None:
                        flat = tf.nest.flatten((iterator, n, sums), expand_composites=True)
                        out.append(lead._call_flat(flat, captured_inputs=captures or lead.captured_inputs))
                        self.shared += k > 0
                    else:  # traced for this member (its variables differ from the first's)
                        with _writing_to(writer):
                            out.append(trainer._train_fn(iterator, n, sums))
                return out

            # No autograph: this body has no tensor-dependent control flow (the members' steps are
            # functions traced with it), and converting it, and the Python it calls, cost 2 s here.
            self._fns[members] = tf.function(steps, autograph=False)
        return self._fns[members]


    def _lead(self, trainer):
        """The first member's step as a function the group's call invokes, not inlines: inlined,
        the group's graph would hold every member's copy of the step for the graph optimizer to
        go through at the first call (measured 0.45 s for 4 members against 0.14 s)."""
        if getattr(self, "_lead_fn", None) is None or self._lead_fn[0] is not trainer:
            self._lead_fn = (trainer, tf.function(trainer._steps, experimental_attributes={"_noinline": True}))
        return self._lead_fn[1]


def _writing_to(writer):
    """The member's own summary writer as the default, or none: the calling thread's default
    writer is another member's."""
    return writer.as_default() if writer is not None else tf.summary.record_if(False)


def _resources(trainer, writer) -> list:
    """Every resource the training step can capture, in an order that depends only on how the
    trainer was built: the model's and optimizer's variables, the stop flag, the variables of the
    rate schedule (found through the optimizer's learning_rate object), the summary writer."""
    found: list = []
    seen: set[int] = set()

    def add(v):
        handle = getattr(v, "handle", None)
        if handle is None and hasattr(v, "value") and hasattr(v.value, "handle"):
            handle = v.value.handle
        if handle is not None and id(handle) not in seen:
            seen.add(id(handle))
            found.append((handle, (str(v.dtype), tuple(v.shape))))

    def walk(obj, depth):
        if depth > 4 or id(obj) in seen_objects:
            return
        seen_objects.add(id(obj))
        if isinstance(obj, (tf.Variable,)) or type(obj).__name__ == "Variable":
            add(obj)
            return
        items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else \
            vars(obj).values() if hasattr(obj, "__dict__") and not callable(obj) or hasattr(obj, "get_config") else ()
        for item in items:
            if isinstance(item, (dict, list, tuple)) or hasattr(item, "__dict__"):
                walk(item, depth + 1)

    seen_objects: set[int] = set()
    for v in [*trainer.model.variables, *trainer.optimizer.variables, trainer.stop_flag]:
        add(v)
    walk(getattr(trainer.optimizer, "_learning_rate", None), 0)
    if writer is not None and getattr(writer, "_resource", None) is not None:
        found.append((writer._resource, "summary writer"))
    return found


def _captures_for(lead, leader: tuple, member: tuple) -> list | None:
    """`lead`'s captured inputs with each of the leader's resources replaced by the member's
    counterpart, or None when any capture has none (a constant, a resource of another kind)."""
    mine, theirs = _resources(*leader), _resources(*member)
    if len(mine) != len(theirs):
        return None
    counterpart = {}
    for (a, kind_a), (b, kind_b) in zip(mine, theirs):
        if kind_a != kind_b:  # dtype and shape
            return None
        counterpart[id(a)] = b
    captures = [counterpart.get(id(c)) for c in lead.captured_inputs]
    return None if any(c is None for c in captures) else captures


@contextlib.contextmanager
def member_of(group: StepGroup | None, i: int):
    """Member i of `group` for the block (its training), leaving it however the block ends."""
    if group is None:
        yield
        return
    try:
        yield
    finally:
        group.leave(i)


class _Follower:
    """A member's steps-per-call pacer that follows the group's first member's (tftrain.loop.pacing):
    one count for every member's call, calibrated on the group's calls once."""

    def __init__(self, leader):
        self.leader = leader

    def next(self) -> int:
        return self.leader.next()

    def observe(self, n: int, seconds: float) -> None:
        pass  # the leader times the group's calls

    def __getattr__(self, name):  # chosen, describe, estimate
        return getattr(self.leader, name)


def follow(pacer):
    return _Follower(pacer)
