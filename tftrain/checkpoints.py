"""Checkpoints a killed run resumes from: TensorFlow variables plus the loop's host-side state.

A checkpoint is `ckpt-<step>` (model, optimizer and its step counter, schedule state, the running
sums of the epoch in progress), written by `tf.train.CheckpointManager`, plus `state-<step>.json`
(per-epoch history, callback state). The JSON is written first, by atomic rename; the manager's
`checkpoint` index file is rewritten atomically last, so it is the commit point: a kill at any
moment leaves the previous checkpoint as the latest, loadable one.

Under MultiWorkerMirroredStrategy every worker must take part in saving (variables may be read
collectively), but only the chief's copy is kept: the others save into a temporary directory, and
all workers restore from the chief's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf


def _write_json_atomic(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _step_of(checkpoint_path: str) -> int:
    return int(re.search(r"-(\d+)$", checkpoint_path).group(1))


class Checkpointer:
    def __init__(self, directory: Path, keep: int, is_chief: bool = True, **trackables):
        self.directory = Path(directory)
        self.is_chief = is_chief
        self._write_dir = self.directory if is_chief else Path(tempfile.mkdtemp(prefix="tftrain-worker-ckpt-"))
        self.checkpoint = tf.train.Checkpoint(**trackables)
        self._manager = tf.train.CheckpointManager(self.checkpoint, str(self._write_dir), max_to_keep=keep)

    @property
    def latest(self) -> str | None:
        return tf.train.latest_checkpoint(str(self.directory))

    def save(self, step: int, state: dict) -> None:
        self._write_dir.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(self._write_dir / f"state-{step}.json", state)
        self._manager.save(checkpoint_number=step)
        kept = {_step_of(p) for p in self._manager.checkpoints}
        for f in self._write_dir.glob("state-*.json"):
            if int(f.stem.split("-")[1]) not in kept:
                f.unlink(missing_ok=True)

    def restore(self) -> dict | None:
        """Restore the latest checkpoint into the tracked objects; returns its host state, or None."""
        latest = self.latest
        if latest is None:
            return None
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        state_file = self.directory / f"state-{_step_of(latest)}.json"
        return json.loads(state_file.read_text()) if state_file.exists() else {}

    def close(self) -> None:
        if not self.is_chief:
            shutil.rmtree(self._write_dir, ignore_errors=True)
