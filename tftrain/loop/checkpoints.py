"""Checkpoints a killed, preempted or damaged run resumes from: TensorFlow variables plus the
loop's host-side state.

A checkpoint is `ckpt-<step>` (model, optimizer and its step counter, schedule state, the summed
metrics of the epoch in progress, random-number state, callbacks' variables), written with
`tf.train.Checkpoint.write`, plus `state-<step>.json` (per-epoch history, callback state, the
rate multiplier). The JSON is written first, by atomic rename; TensorFlow writes the `.index`
file last, so a checkpoint is complete when its index exists and it loads.

Restoring does not trust any bookkeeping file: it scans the directory and tries the checkpoints
newest first. One that does not load (an index or data file missing or truncated, a corrupt
state JSON) is moved to `checkpoints/damaged/` with a warning naming it, and the next older one
is tried; when checkpoints exist but none loads, it fails with the options (never silently from
step 0). Rotation keeps the `keep` newest checkpoints by step, so good checkpoints are never
rotated away in favour of damaged ones. A failed write (disk full, read-only directory) removes
its partial files and fails with a clear error; earlier checkpoints stay intact.

Under MultiWorkerMirroredStrategy every worker must take part in saving (variables may be read
collectively), but only the chief's copy is kept: the others save into a temporary directory, and
all workers restore from the chief's.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

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
    m = re.match(r"(?:ckpt|state)-(\d+)(?:\.|$)", name)
    return int(m.group(1)) if m else None


def steps_in(directory: Path) -> list[int]:
    """Steps of the checkpoints in `directory` (complete or not), newest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = {_step_of(p.name) for p in directory.iterdir() if p.is_file()}
    return sorted((s for s in found if s is not None), reverse=True)


class Checkpointer:
    def __init__(self, directory: Path, keep: int, is_chief: bool = True, **trackables):
        self.directory = Path(directory)
        self.keep, self.is_chief = keep, is_chief
        self._write_dir = self.directory if is_chief else Path(tempfile.mkdtemp(prefix="tftrain-worker-ckpt-"))
        self.checkpoint = tf.train.Checkpoint(**trackables)
        self.restored: str | None = None  # the checkpoint this run resumed from

    # ------------------------------------------------------------------ what is on disk

    def steps(self, directory: Path | None = None) -> list[int]:
        """Steps of the checkpoints on disk (complete or not), newest first."""
        return steps_in(directory or self.directory)

    def complete(self, step: int, directory: Path | None = None) -> bool:
        directory = directory or self.directory
        return ((directory / f"ckpt-{step}.index").is_file() and (directory / f"state-{step}.json").is_file()
                and any(directory.glob(f"ckpt-{step}.data-*")))

    @property
    def latest(self) -> str | None:
        """The newest complete checkpoint (its path prefix), or None."""
        step = next((s for s in self.steps(self._write_dir) if self.complete(s, self._write_dir)), None)
        return None if step is None else str(self._write_dir / f"ckpt-{step}")

    # ------------------------------------------------------------------ saving

    def save(self, step: int, state: dict) -> None:
        d = self._write_dir
        try:
            d.mkdir(parents=True, exist_ok=True)
            _write_json_atomic(d / f"state-{step}.json", state)
            self.checkpoint.write(str(d / f"ckpt-{step}"))
            # The bookkeeping file of tf.train.latest_checkpoint, for users' own tools (tftrain scans).
            # Written by hand (a two-line text proto): TensorFlow's writer for it is deprecated.
            _write_atomic(d / "checkpoint", f'model_checkpoint_path: "ckpt-{step}"\n'
                                            f'all_model_checkpoint_paths: "ckpt-{step}"\n')
        except (OSError, tf.errors.OpError) as e:
            self._remove(step, d)
            reason = getattr(e, "message", None) or str(e)
            last = self.latest or "none"
            raise CheckpointError(
                f"Could not write checkpoint ckpt-{step} in {d}: {reason.strip().splitlines()[0][:300]} (disk full, or "
                f"the directory not writable?). Its partial files were removed; the last good checkpoint is {last}. "
                "Fix: free disk space or make the run directory writable, then rerun the same command: it resumes "
                "from the last good checkpoint.") from None
        for old in self.steps(d)[self.keep:]:
            self._remove(old, d)

    @staticmethod
    def _remove(step: int, directory: Path) -> None:
        for f in list(directory.glob(f"ckpt-{step}.*")) + list(directory.glob(f"state-{step}.json*")):
            f.unlink(missing_ok=True)

    # ------------------------------------------------------------------ restoring

    def restore(self) -> dict | None:
        """Restore the newest checkpoint that loads into the tracked objects; return its host state,
        or None when there is none. Raises CheckpointError when checkpoints exist but none loads.
        (Whether to resume at all, `trainer.resume`, is the run's decision: tftrain.tasks.resume.)"""
        steps = self.steps()
        if not steps:
            return None
        skipped: list[tuple[str, str]] = []
        for step in steps:
            prefix = self.directory / f"ckpt-{step}"
            reason = self._try(step)
            if reason is None:
                state = json.loads((self.directory / f"state-{step}.json").read_text())
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
        try:
            self.checkpoint.read(str(self.directory / f"ckpt-{step}")).assert_existing_objects_matched()
        except (tf.errors.OpError, ValueError, IndexError, AssertionError, OSError) as e:
            message = getattr(e, "message", None) or str(e) or type(e).__name__
            return f"it does not load ({message.strip().splitlines()[0][:200]})"
        return None

    def _set_aside(self, skipped: list[tuple[str, str]]) -> None:
        """Move newer checkpoints that did not load to checkpoints/damaged/, with a warning."""
        for name, reason in skipped:
            log.warning("Checkpoint %s was skipped: %s.", name, reason)
        if not self.is_chief:
            return
        damaged = self.directory / "damaged"
        damaged.mkdir(exist_ok=True)
        for name, _ in skipped:
            step = _step_of(name)
            for f in list(self.directory.glob(f"ckpt-{step}.*")) + list(self.directory.glob(f"state-{step}.json*")):
                f.rename(damaged / f.name)
        log.warning("Fell back to %s; the skipped checkpoint(s) are in %s.", self.restored, damaged)

    def close(self) -> None:
        if not self.is_chief:
            shutil.rmtree(self._write_dir, ignore_errors=True)
