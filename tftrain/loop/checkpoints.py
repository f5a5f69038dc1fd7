"""Checkpoints a killed, preempted or damaged run resumes from: TensorFlow variables plus the
loop's host-side state.

A checkpoint is `ckpt-<step>` (model, optimizer and its step counter, schedule state, the summed
metrics of the epoch in progress, random-number state, callbacks' variables), written with
`tf.train.Checkpoint.write`, plus `state-<step>.json` (per-epoch history, callback state, the
rate multiplier).

Committed: the order of a save is (1) `tf.train.Checkpoint.write` (its data files, then its
`.index`, through a `ckpt-<step>_temp/` directory), (2) `state-<step>.json`, written to a
temporary file and renamed into place last. That rename is the commit: a checkpoint is committed
exactly when `state-<step>.json` exists under its final name. Anything else carrying a step (an
index or data file without its state, a `.tmp`, a `_temp/` directory, a stray file) is a write
that never finished or not a checkpoint at all: it is set aside and never decides where a run
resumes. The state file is bound to its checkpoint: it holds the step and a sha256 of the
checkpoint's `.index` file (which holds each tensor's CRC, so the data are bound too) together
with the state's own canonical JSON, and the step restored into the optimizer's own counter must
equal the step in the name.

Restoring does not trust any bookkeeping file: it scans the directory and tries the committed
checkpoints newest first. One that does not load or does not match (an index or data file missing
or truncated, a corrupt or edited state JSON, files swapped between checkpoints) is damage: it is
moved to `checkpoints/damaged/` with a warning naming it, and the next older one is tried; when
committed checkpoints exist but none loads, it fails with the options (never silently from step
0). Rotation keeps the `keep` newest checkpoints by step, so good checkpoints are never
rotated away in favour of damaged ones; checkpoints at `pinned` steps are kept besides them. A failed write (disk full, read-only directory) removes
its partial files and fails with a clear error; earlier checkpoints stay intact.

Under MultiWorkerMirroredStrategy every worker must take part in saving (variables may be read
collectively), but only the chief's copy is kept: the others save into a temporary directory, and
all workers restore from the chief's.

Background writes (`save(..., background=True)`, what the training loop asks for when the run has
no loggers: loggers must hear of an epoch only after its commit): the values are copied on the
calling thread, to host copies of every variable, so the training steps that follow cannot change
what is written; the files, the commit and the rotation are then written by one background
thread, in the order above. At most one write is in flight: the next save, `restore`,
`latest`, `wait` and `close` wait for it first. A write that fails there removes its partial files
like a synchronous one and raises the same CheckpointError at the next of those calls. A kill
during it leaves what a kill during a synchronous write leaves: an uncommitted write, set aside
on resume. Distributed variables (a tf.distribute strategy) are written synchronously: their reads
may be collective and are done by every worker at the same point.

TFTRAIN_SYNC_CHECKPOINTS=1 (environment variable, read when a Checkpointer is made) writes every
checkpoint synchronously on the calling thread, as before background writes existed: the baseline
of scripts/checkpoint_cost.py, and a way out should a background write misbehave.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import keras
import tensorflow as tf

from tftrain.errors import TftrainError

log = logging.getLogger("tftrain")



class CheckpointError(TftrainError):
    """Checkpoints cannot be written or none can be restored."""


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_json_atomic(path: Path, data) -> None:
    _write_atomic(path, json.dumps(data))


def _step_of(name: str) -> int | None:
    m = re.match(r"(?:ckpt|state)-(\d+)(?:\.|_temp|$)", name)
    return int(m.group(1)) if m else None


def steps_in(directory: Path) -> list[int]:
    """Steps that any file in `directory` carries (committed or not), newest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = {_step_of(p.name) for p in directory.iterdir() if p.name != "damaged"}
    return sorted((s for s in found if s is not None), reverse=True)


def _legacy_uncommitted(directory: Path, step: int) -> bool:
    """A state file of the earlier format (written before the checkpoint, without a checksum)
    whose index never came: an interrupted write of that format, not a checkpoint."""
    if (directory / f"ckpt-{step}.index").is_file():
        return False
    try:
        return "checksum" not in json.loads((directory / f"state-{step}.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def committed_steps(directory: Path) -> list[int]:
    """Steps of the committed checkpoints in `directory` (their `state-<step>.json` in place; see
    the module's docstring), newest first. Whether they load is for `Checkpointer.restore`."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    steps = {_step_of(p.name) for p in directory.glob("state-*.json") if p.is_file()}
    return sorted((s for s in steps if s is not None and not _legacy_uncommitted(directory, s)), reverse=True)


def checksum(index: bytes, state: dict) -> str:
    """What binds a state file to its checkpoint: sha256 of the `.index` file's bytes and the
    state's canonical JSON (its own `checksum` left out)."""
    content = {k: v for k, v in state.items() if k != "checksum"}
    digest = hashlib.sha256(index)
    digest.update(json.dumps(content, sort_keys=True, separators=(",", ":")).encode())
    return digest.hexdigest()


def _files_of(step: int, directory: Path) -> list[Path]:
    # The state file first: removing files in this order uncommits a checkpoint before its data go,
    # so a kill while rotating or clearing leaves an uncommitted write (set aside), never a
    # committed checkpoint without its files.
    return [*directory.glob(f"state-{step}.json*"), *directory.glob(f"ckpt-{step}.*"),
            *directory.glob(f"ckpt-{step}_temp*")]


SYNC_ENV = "TFTRAIN_SYNC_CHECKPOINTS"


class _SnapshotStale(RuntimeError):
    """A background write met a variable that has no copy: one created after the snapshot was set up."""


def _saves_own_state(obj) -> bool:
    """Whether `obj` writes tensors of its own into a checkpoint (rather than only naming children)."""
    base = tf.__internal__.tracking.Trackable
    return any("_serialize_to_tensors" in c.__dict__ or "_gather_saveables_for_checkpoint" in c.__dict__
               for c in type(obj).__mro__ if c is not base)


class _Copies:
    """Each checkpointed variable's host copy, looked up by identity (variables do not hash), as
    TensorFlow's saver asks for it: `get(obj, obj)` for every object of the graph it writes."""

    def __init__(self):
        self._by_id: dict[int, tuple[object, tf.Variable]] = {}

    def add(self, obj, copy: tf.Variable) -> None:
        self._by_id[id(obj)] = (obj, copy)  # the object is held too, so its id is never reused

    def get(self, obj, default=None):
        entry = self._by_id.get(id(obj))
        if entry is not None and entry[0] is obj:
            return entry[1]
        if isinstance(obj, (tf.Variable, keras.Variable)) or _saves_own_state(obj):
            # Written from the live object, it could hold values of later steps: never commit that.
            raise _SnapshotStale(f"{getattr(obj, 'path', None) or getattr(obj, 'name', None) or type(obj).__name__} "
                                 "has no snapshot (created after the first checkpoint)")
        return default


class _Snapshot:
    """What a background write saves: a host copy of every variable of the checkpoint, refreshed by
    `take()` on the training thread, and a second tf.train.Checkpoint over the same objects whose
    saver serializes the copies in their place (TensorFlow's `object_map`, the mechanism of its own
    async checkpoints), so the object graph and the keys written are the checkpoint's own.

    Why not TensorFlow's own `CheckpointOptions(enable_async=True)`: with Keras 3 variables its
    second write fails (Keras' `_copy_trackable_to_cpu` creates a tf.Variable inside TensorFlow's
    traced copy function: "tf.function only supports singleton tf.Variables created on the first
    call"; TensorFlow 2.21, Keras 3.15); its `sync()` does not report a failed write, which the
    commit must know before it renames the state file; and its write callbacks run before the
    state file could be bound to the index. The copies cost host memory the size of the
    checkpoint's variables."""

    def __init__(self, trackables: dict):
        self.checkpoint = tf.train.Checkpoint(**trackables)
        self.unsupported: str | None = None  # why this checkpoint is written synchronously instead
        self._copy = None

    def take(self) -> bool:
        """Copy every variable's value now; False when this checkpoint cannot be copied (see `unsupported`)."""
        if self._copy is None and self.unsupported is None:
            self._build()
        if self.unsupported is not None:
            return False
        self._copy()
        return True

    def _build(self) -> None:
        saver = getattr(self.checkpoint, "_saver", None)
        if not hasattr(saver, "_object_map"):
            self.unsupported = "this TensorFlow's checkpoint saver takes no object map"
            return
        sources = []
        for obj in tf.train.TrackableView(self.checkpoint).descendants():
            variable = obj.value if isinstance(obj, keras.Variable) else obj
            if isinstance(variable, tf.distribute.DistributedValues):
                self.unsupported = "its variables are distributed (a tf.distribute strategy)"
                return
            if isinstance(variable, tf.Variable):
                sources.append((obj, variable))
            elif _saves_own_state(obj):
                self.unsupported = f"it holds a {type(obj).__name__}, whose state has no host copy"
                return
        copies = _Copies()
        pairs = []
        with tf.device("/cpu:0"):
            for obj, variable in sources:
                copy = tf.Variable(variable.read_value(), trainable=False)
                copies.add(obj, copy)
                pairs.append((copy, variable))

        # One traced call for all the copies: a Python loop of assigns would cost per variable.
        @tf.function(autograph=False)
        def copy_all():
            for copy, variable in pairs:
                copy.assign(variable.read_value())

        self._copy = copy_all
        saver._object_map = copies


class Checkpointer:
    def __init__(self, directory: Path, keep: int, is_chief: bool = True, pinned=(), **trackables):
        self.directory = Path(directory)
        self.keep, self.is_chief = keep, is_chief
        # Steps whose checkpoints rotation never removes nor counts (trainer.checkpoint_at_steps):
        # later runs branch from them (task=budgets).
        self.pinned = frozenset(int(s) for s in pinned)
        self._write_dir = self.directory if is_chief else Path(tempfile.mkdtemp(prefix="tftrain-worker-ckpt-"))
        self.checkpoint = tf.train.Checkpoint(**trackables)
        self.restored: str | None = None  # the checkpoint this run resumed from
        self.synchronous = os.environ.get(SYNC_ENV) == "1"
        self._trackables = trackables
        self._snapshot: _Snapshot | None = None  # made at the first background save
        self._writer: ThreadPoolExecutor | None = None
        self._in_flight: Future | None = None

    # ------------------------------------------------------------------ what is on disk

    def steps(self, directory: Path | None = None) -> list[int]:
        """Steps of the committed checkpoints on disk, newest first."""
        return committed_steps(directory or self.directory)

    def complete(self, step: int, directory: Path | None = None) -> bool:
        directory = directory or self.directory
        return ((directory / f"ckpt-{step}.index").is_file() and (directory / f"state-{step}.json").is_file()
                and any(directory.glob(f"ckpt-{step}.data-*")))

    @property
    def latest(self) -> str | None:
        """The newest complete checkpoint (its path prefix), or None; after the write in flight
        (whose CheckpointError, if it failed, is raised here)."""
        self.wait()
        return self._newest()

    def _newest(self) -> str | None:
        step = next((s for s in self.steps(self._write_dir) if self.complete(s, self._write_dir)), None)
        return None if step is None else str(self._write_dir / f"ckpt-{step}")

    # ------------------------------------------------------------------ saving

    def save(self, step: int, state: dict, *, background: bool = False, then=None) -> None:
        """Write checkpoint `step` with the host `state` (JSON), then call `then()` (an output
        derived from the checkpoint) once it is committed.

        background=True: return once the variables are copied (module docstring); the files,
        the commit, the rotation and `then()` follow on the writer thread. Synchronous when
        TFTRAIN_SYNC_CHECKPOINTS=1 or the checkpoint cannot be copied."""
        self.wait()
        if background and not self.synchronous:
            if self._snapshot is None:
                self._snapshot = _Snapshot(self._trackables)
            if self._snapshot.take():
                # A copy taken now: the caller goes on changing `state`'s lists after this returns.
                state = json.loads(json.dumps(state))
                if self._writer is None:
                    self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tftrain-checkpoint")
                self._in_flight = self._writer.submit(self._write, step, state, self._snapshot.checkpoint, then)
                return
            log.debug("Checkpoints are written on the training thread: %s.", self._snapshot.unsupported)
            self.synchronous = True
        self._write(step, state, self.checkpoint, then)

    def wait(self) -> None:
        """Block until the write in flight, if any, is committed; raise its error if it failed."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.result()

    def _write(self, step: int, state: dict, checkpoint: tf.train.Checkpoint, then) -> None:
        d = self._write_dir
        try:
            d.mkdir(parents=True, exist_ok=True)
            self._remove(step, d)  # leftovers of an interrupted write of this step: never mixed into this one
            checkpoint.write(str(d / f"ckpt-{step}"))
            state = {**state, "step": step}
            state["checksum"] = checksum((d / f"ckpt-{step}.index").read_bytes(), state)
            _write_json_atomic(d / f"state-{step}.json", state)  # the commit (module docstring)
            # The bookkeeping file of tf.train.latest_checkpoint, for users' own tools (tftrain scans).
            # Written by hand (a two-line text proto): TensorFlow's writer for it is deprecated.
            _write_atomic(d / "checkpoint", f'model_checkpoint_path: "ckpt-{step}"\n'
                                            f'all_model_checkpoint_paths: "ckpt-{step}"\n')
        except (OSError, tf.errors.OpError) as e:
            self._remove(step, d)
            reason = getattr(e, "message", None) or str(e)
            last = self._newest() or "none"
            raise CheckpointError(
                f"Could not write checkpoint ckpt-{step} in {d}: {reason.strip().splitlines()[0][:300]} (disk full, or "
                f"the directory not writable?). Its partial files were removed; the last good checkpoint is {last}. "
                "Fix: free disk space or make the run directory writable, then rerun the same command: it resumes "
                "from the last good checkpoint.") from None
        except _SnapshotStale as e:
            self._remove(step, d)
            raise CheckpointError(
                f"Could not write checkpoint ckpt-{step} in {d} in the background: {e}. Its partial files were "
                f"removed; the last good checkpoint is {self._newest() or 'none'}. Fix: rerun the same command with "
                f"{SYNC_ENV}=1 (checkpoints written on the training thread); it resumes from the last good "
                "checkpoint.") from None
        for old in [s for s in self.steps(d) if s not in self.pinned][self.keep:]:
            self._remove(old, d)
        if then is not None:
            then()

    @staticmethod
    def _remove(step: int, directory: Path) -> None:
        for f in _files_of(step, directory):
            if f.is_dir():
                shutil.rmtree(f, ignore_errors=True)  # TensorFlow's ckpt-<step>_temp/ of a failed write
            else:
                f.unlink(missing_ok=True)

    # ------------------------------------------------------------------ restoring

    def restore(self) -> dict | None:
        """Restore the newest checkpoint that loads into the tracked objects; return its host state,
        or None when there is none. Raises CheckpointError when checkpoints exist but none loads.
        (Whether to resume at all, `trainer.resume`, is the run's decision: tftrain.tasks.resume.)"""
        self.wait()
        steps = self.steps()
        uncommitted = [s for s in steps_in(self.directory) if s not in steps]
        if uncommitted:
            self._set_aside_uncommitted(uncommitted, steps)
        if not steps:
            return None
        skipped: list[tuple[str, str]] = []
        for step in steps:
            prefix = self.directory / f"ckpt-{step}"
            reason = self._try(step)
            if reason is None:
                state = json.loads((self.directory / f"state-{step}.json").read_text())
                state.pop("checksum", None)
                self.restored = str(prefix)
                if skipped:
                    self._set_aside(skipped)
                return state
            skipped.append((f"ckpt-{step}", reason))
        listing = "; ".join(f"{name}: {why}" for name, why in skipped)
        raise CheckpointError(
            f"None of the {len(skipped)} checkpoint(s) in {self.directory} can be restored ({listing}). Fix: restore "
            "the directory from a backup; or start this run again from step 0 with trainer.resume=never (the "
            "checkpoints are moved aside, not deleted); or train in a new run directory (hydra.run.dir=...).")

    def _try(self, step: int) -> str | None:
        """None when checkpoint `step` loaded into the tracked objects, else why not."""
        if not (self.directory / f"ckpt-{step}.index").is_file():
            return "its .index file is missing (an interrupted or damaged write)"
        if not any(self.directory.glob(f"ckpt-{step}.data-*")):
            return "its data file is missing"
        try:
            state = json.loads((self.directory / f"state-{step}.json").read_text())
            if not isinstance(state, dict):
                raise ValueError("not a JSON object")
        except FileNotFoundError:
            return f"state-{step}.json is missing"
        except (OSError, ValueError) as e:
            return f"state-{step}.json is unreadable ({str(e).splitlines()[0][:120]})"
        if "checksum" in state:  # absent: a checkpoint of the earlier format, bound by its step alone
            if state.get("step") != step:
                return f"state-{step}.json belongs to step {state.get('step')} (a state file copied over another)"
            try:
                index = (self.directory / f"ckpt-{step}.index").read_bytes()
            except OSError as e:
                return f"its .index file is unreadable ({e.strerror or e})"
            if checksum(index, state) != state["checksum"]:
                return (f"state-{step}.json does not match its checkpoint (its checksum differs: the state file was "
                        "edited, or the checkpoint's files were replaced or swapped)")
        try:
            self.checkpoint.read(str(self.directory / f"ckpt-{step}")).assert_existing_objects_matched()
        except (tf.errors.OpError, ValueError, IndexError, AssertionError, OSError) as e:
            message = getattr(e, "message", None) or str(e) or type(e).__name__
            return f"it does not load ({message.strip().splitlines()[0][:200]})"
        optimizer = getattr(self.checkpoint, "optimizer", None)
        iterations = getattr(optimizer, "iterations", None)
        if iterations is not None and int(iterations.numpy()) != step:
            return f"its variables hold step {int(iterations.numpy())}, not {step} (files swapped between checkpoints)"
        return None

    def _set_aside_uncommitted(self, uncommitted: list[int], committed: list[int]) -> None:
        """Files of writes that never committed: set aside (TensorFlow's temporaries removed), said."""
        if self.is_chief:
            damaged = self.directory / "damaged"
            damaged.mkdir(exist_ok=True)
            for step in uncommitted:
                for f in _files_of(step, self.directory):
                    if f.is_dir() or f.name.endswith(".tmp"):
                        shutil.rmtree(f, ignore_errors=True) if f.is_dir() else f.unlink(missing_ok=True)
                    else:
                        os.replace(f, damaged / f.name)
        names = ", ".join(f"ckpt-{s}" for s in uncommitted)
        where = f"the newest committed one, ckpt-{committed[0]}" if committed else "step 0 (no checkpoint was committed)"
        log.warning("Not a checkpoint: %s in %s never committed (an interrupted write, or a stray file): set aside in "
                    "%s. Resuming from %s.", names, self.directory, self.directory / "damaged", where)

    def _set_aside(self, skipped: list[tuple[str, str]]) -> None:
        """Move newer checkpoints that did not load to checkpoints/damaged/, with a warning."""
        for name, reason in skipped:
            log.warning("Checkpoint %s was skipped: %s.", name, reason)
        if not self.is_chief:
            return
        damaged = self.directory / "damaged"
        damaged.mkdir(exist_ok=True)
        for name, _ in skipped:
            for f in _files_of(_step_of(name), self.directory):
                if f.is_dir():
                    shutil.rmtree(f, ignore_errors=True)
                else:
                    os.replace(f, damaged / f.name)
        log.warning("Fell back to %s; the skipped checkpoint(s) are in %s.", self.restored, damaged)

    def close(self, quiet: bool = False) -> None:
        """Wait for the write in flight and stop the writer thread. `quiet`: the run is failing
        already; a failed write is logged rather than raised over the run's own error."""
        try:
            self.wait()
        except Exception as e:  # noqa: BLE001 - see `quiet`
            if not quiet:
                raise
            log.error("%s", e)
        finally:
            if self._writer is not None:
                self._writer.shutdown()
                self._writer = None
            if not self.is_chief:
                shutil.rmtree(self._write_dir, ignore_errors=True)
