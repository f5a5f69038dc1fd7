"""A finished run's directory, read for `task=predict` and `task=evaluate`, and their inputs.

The run directory gives the model (model.keras, which takes raw inputs: its normalization is a
layer), its config (config.yaml: the problem, the data's columns and image size) and
preprocessing.json (the class or target names, the CSV's feature columns). Inputs, read whole
into memory: a .npz (`x`, or `x_test`; with targets `y` / `y_test`), a .csv with the run's feature
columns (and its label columns, to evaluate), or a folder of images (one sub-folder per class,
to evaluate; any images, to predict).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from tftrain.errors import ConfigError, DataError, TftrainError
from tftrain.schema import validate

log = logging.getLogger("tftrain")


# ---------------------------------------------------------------- the run


class FinishedRun:
    """A finished run's directory: config, preprocessing facts and model."""

    def __init__(self, path: str):
        self.dir = Path(os.path.expanduser(path))
        if not (self.dir / "config.yaml").is_file():
            what = "does not exist" if not self.dir.exists() else "has no config.yaml (not a tftrain run directory)"
            raise ConfigError("task.run", path, f"a tftrain run directory (with config.yaml and model.keras); {self.dir} "
                              f"{what}", "pass task.run=<the run's directory, printed at the end of its training>")
        self.cfg = validate(OmegaConf.load(self.dir / "config.yaml"))
        pre = self.dir / "preprocessing.json"
        self.facts = json.loads(pre.read_text()) if pre.is_file() else {}

    def model(self):
        from tftrain.console import quiet_tensorflow

        with quiet_tensorflow():  # TensorFlow's start-up lines off the console (tftrain.console)
            import keras

            import tftrain.layers  # noqa: F401 - tftrain's registered layers and schedules deserialize
            import tftrain.schedules  # noqa: F401

        path = self.dir / "model.keras"
        if not path.is_file():
            raise ConfigError("task.run", str(self.dir), f"a run whose model was saved: {path} is missing (the run did "
                              "not finish, or saved only model.weights.h5)", "train the run to its end first")
        return keras.models.load_model(path, compile=False)

    def problem(self):
        from tftrain.config.factory import build_problem

        problem = build_problem(self.cfg)
        norm = self.facts.get("target_normalization")
        if norm is not None:
            problem.target_normalization = (np.asarray(norm["mean"], "float32"), np.asarray(norm["std"], "float32"))
        return problem

    @property
    def input_shape(self) -> tuple:
        return tuple(self.facts.get("input_shape") or ())


# ---------------------------------------------------------------- reading inputs


def read_input(path: str, run: FinishedRun, with_targets: bool) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """(x, y or None, the examples' file names for an image folder)."""
    p = Path(os.path.expanduser(path))
    if not p.exists():
        raise ConfigError("task.input", path, "an existing .npz, .csv file or image folder", "pass task.input=<path>")
    if p.is_dir():
        return _read_images(p, run, with_targets)
    if p.suffix == ".npz":
        return _read_npz(p, with_targets)
    if p.suffix == ".csv":
        return _read_csv(p, run, with_targets)
    raise ConfigError("task.input", path, "a .npz file, a .csv file or a folder of images", "pass one of those")


def _read_npz(p: Path, with_targets: bool):
    try:
        with np.load(p, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise DataError(f"task.input={str(p)!r} is not a readable .npz file ({e}). Fix: save it with "
                        "numpy.savez(path, x=...[, y=...]).") from None
    x_key = next((k for k in ("x", "x_test") if k in arrays), None)
    y_key = next((k for k in ("y", "y_test") if k in arrays), None)
    if x_key is None or (with_targets and y_key is None):
        want = "x and y (or x_test and y_test)" if with_targets else "x (or x_test)"
        raise DataError(f"task.input={str(p)!r} has the arrays {sorted(arrays)}, not {want}. Fix: save them under "
                        "those names.")
    return arrays[x_key], (arrays[y_key] if with_targets else None), None


def _read_csv(p: Path, run: FinishedRun, with_targets: bool):
    d = run.cfg.data
    delimiter, header = d.get("delimiter", ","), d.get("header", True)
    features = run.facts.get("feature_names")
    label = d.get("label_column")
    targets = [label] if isinstance(label, str) else list(label or [])
    with open(p, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f, delimiter=delimiter) if r and any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"task.input={str(p)!r} is empty. Fix: give it a header line and rows.")
    columns = [c.strip() for c in rows[0]] if header else [str(i) for i in range(len(rows[0]))]
    rows = rows[1:] if header else rows
    if features is None:  # a run on arrays: every column (but the targets) in order
        features = [c for c in columns if c not in targets] if header else columns
    missing = [c for c in features + (targets if with_targets else []) if c not in columns]
    if missing:
        raise DataError(f"task.input={str(p)!r} lacks the columns {missing} the run trained with (its columns: "
                        f"{columns[:20]}). Fix: give it the run's feature columns {features}"
                        f"{' and targets ' + str(targets) if with_targets else ''}.")
    index = {c: i for i, c in enumerate(columns)}

    def take(names):
        try:
            return np.array([[float(r[index[c]]) if r[index[c]].strip() else np.nan for c in names] for r in rows],
                            "float32")
        except (ValueError, IndexError) as e:
            raise DataError(f"task.input={str(p)!r}: a row is not all numbers or has too few fields ({e}). Fix: "
                            "correct the file.") from None

    x = take(features)
    if not np.all(np.isfinite(x)):
        raise DataError(f"task.input={str(p)!r} holds {int(np.sum(~np.isfinite(x)))} empty, NaN or Inf values. Fix: "
                        "clean or impute them first.")
    y = None
    if with_targets:
        y = take(targets)
        y = y[:, 0] if isinstance(label, str) else y
    return x, y, None


def _read_images(p: Path, run: FinishedRun, with_targets: bool):
    import keras

    d = run.cfg.data
    size = tuple(d.get("image_size") or run.input_shape[:2])
    color = d.get("color_mode", "rgb" if run.input_shape[-1] == 3 else "grayscale")
    try:
        ds = keras.utils.image_dataset_from_directory(
            str(p), labels="inferred" if with_targets else None, label_mode="int" if with_targets else None,
            class_names=(run.facts.get("target_names") if with_targets else None), color_mode=color, batch_size=None,
            image_size=size, shuffle=False, verbose=False)
    except ValueError as e:
        raise DataError(f"task.input={str(p)!r}: {e} Fix: a folder of images"
                        f"{' in one sub-folder per class, named as in training' if with_targets else ''}.") from None
    names = list(ds.file_paths)
    if with_targets:
        pairs = list(ds.as_numpy_iterator())
        return np.stack([a for a, _ in pairs]), np.array([b for _, b in pairs]), names
    return np.stack(list(ds.as_numpy_iterator())), None, names


def check_shape(x: np.ndarray, run: FinishedRun, path: str) -> None:
    want = run.input_shape
    if want and tuple(x.shape[1:]) != want:
        raise DataError(f"task.input={path!r} has examples of shape {tuple(x.shape[1:])}, but the run's model takes "
                        f"{want}. Fix: give inputs shaped like the run's training data.")
