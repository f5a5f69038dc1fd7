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
import zipfile
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from tftrain.errors import ConfigError, DataError, TftrainError
from tftrain.schema import SCHEMAS, default_target, validate

log = logging.getLogger("tftrain")


# ---------------------------------------------------------------- the run


class FinishedRun:
    """A finished run's directory: config, preprocessing facts and model.

    Its files are data: nothing named in them is imported or instantiated unless the user trusts
    the run (`trust`: task.trust_run=true) or names that code again (`named`: the `_target_`s of
    the command's own config). Without that, a run whose config names code other than tftrain's
    own options is refused, the model loads in Keras' safe mode and the problem is rebuilt by kind
    from Keras loss and metric names."""

    def __init__(self, path: str, *, trust: bool = False, named: frozenset = frozenset()):
        self.dir = Path(os.path.expanduser(path))
        self.trust = bool(trust)
        if not (self.dir / "config.yaml").is_file():
            what = "does not exist" if not self.dir.exists() else "has no config.yaml (not a tftrain run directory)"
            raise ConfigError("task.run", path, f"a tftrain run directory (with config.yaml and model.keras); {self.dir} "
                              f"{what}", "pass task.run=<the run's directory, printed at the end of its training>")
        raw = _load_yaml(self.dir / "config.yaml")
        self.foreign = [(k, t) for k, t in targets_in(raw) if t not in own_targets()]
        unnamed = [(k, t) for k, t in self.foreign if t not in named]
        if unnamed and not self.trust:
            raise TftrainError(refusal(self.dir, unnamed))
        try:
            self.cfg = validate(OmegaConf.create(raw))
        except ConfigError as e:
            raise TftrainError(f"task.run={str(self.dir)!r}: its config.yaml does not fit this version of tftrain "
                               f"({e}). Fix: evaluate it with the tftrain version that trained it, or retrain it.") from None
        pre = self.dir / "preprocessing.json"
        try:
            self.facts = json.loads(pre.read_text()) if pre.is_file() else {}
        except (OSError, ValueError) as e:
            raise TftrainError(f"task.run={str(self.dir)!r}: its preprocessing.json is not readable JSON ({e}). Fix: "
                               "restore it from the run's copy (e.g. its MLflow artifacts) or retrain the run.") from None
        if not isinstance(self.facts, dict):
            raise TftrainError(f"task.run={str(self.dir)!r}: its preprocessing.json holds no JSON object. Fix: restore "
                               "it from the run's copy (e.g. its MLflow artifacts) or retrain the run.")

    @property
    def trusted(self) -> bool:
        """Whether the user vouched for this run's own code (trust_run, or named on the command line)."""
        return self.trust or bool(self.foreign)

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
        if not zipfile.is_zipfile(path):
            raise TftrainError(f"task.run={str(self.dir)!r}: its model.keras is not a Keras model file (not a zip "
                               "archive: truncated, or something else saved under that name). Fix: restore it from "
                               "the run's copy (e.g. its MLflow artifacts) or retrain the run.")
        if self.trusted:
            self._import_model_code()
        try:
            return keras.models.load_model(path, compile=False, safe_mode=not self.trust)
        except Exception as e:  # noqa: BLE001 - Keras' errors for a file it cannot rebuild, classified below
            text = " ".join(str(e).split())
            if "safe_mode" in text or "Lambda" in text:
                raise TftrainError(
                    f"task.run={str(self.dir)!r}: its model.keras holds Python code (a Lambda layer), which Keras' "
                    "safe mode does not load: a run directory is data, and code in it runs only if you say so. Fix: "
                    "if you trust this run, pass task.trust_run=true; otherwise rebuild the model with a registered "
                    "custom layer (keras.saving.register_keras_serializable).") from None
            if "locate" in text or "custom_objects" in text or "Unknown" in text:
                raise TftrainError(
                    f"task.run={str(self.dir)!r}: its model.keras uses a class that is not tftrain's or Keras' own "
                    f"({text[:300]}). Fix: name the code that defines it on the command line as when training "
                    "(e.g. model=custom model._target_=mymodule.build), or pass task.trust_run=true if you trust "
                    "this run.") from None
            raise TftrainError(f"task.run={str(self.dir)!r}: Keras cannot load its model.keras ({text[:300]}). Fix: "
                               "restore it from the run's copy (e.g. its MLflow artifacts) or retrain the run.") from None

    def _import_model_code(self) -> None:
        """The user's vouched-for model code, imported so the classes it registers deserialize."""
        from tftrain.config.targets import locate

        for key, target in self.foreign:
            if key == "model":
                locate(target, "model._target_")

    def problem(self):
        if self.trusted:
            from tftrain.config.factory import build_problem

            problem = build_problem(self.cfg)
        else:
            problem = problem_by_name(self.cfg.problem)
        norm = self.facts.get("target_normalization")
        if norm is not None:
            problem.target_normalization = (np.asarray(norm["mean"], "float32"), np.asarray(norm["std"], "float32"))
        return problem

    def data(self, problem):
        """The run's own data (its splits), rebuilt from its config: one of tftrain's data sources,
        or the user's own when the run is trusted (`foreign` holds it then)."""
        from tftrain.config.factory import build_data

        return build_data(self.cfg, None, problem)

    @property
    def input_shape(self) -> tuple:
        return tuple(self.facts.get("input_shape") or ())


def _load_yaml(path: Path) -> dict:
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as e:  # noqa: BLE001 - YAML's and OmegaConf's parse errors alike: the file is damaged
        text = " ".join(str(e).split())[:300]
        raise TftrainError(f"task.run={str(path.parent)!r}: its config.yaml is not a readable YAML mapping ({text}). "
                           "Fix: restore it from the run's copy (e.g. its MLflow artifacts or .hydra/config.yaml) "
                           "or retrain the run.") from None
    if not isinstance(raw, dict):
        raise TftrainError(f"task.run={str(path.parent)!r}: its config.yaml holds no YAML mapping. Fix: restore it "
                           "from the run's copy (e.g. .hydra/config.yaml) or retrain the run.")
    return raw


def targets_in(node, key: str = "") -> list[tuple[str, str]]:
    """Every `_target_` in a plain container, with the dotted key of its node (`problem.loss`)."""
    found = []
    if isinstance(node, dict):
        if "_target_" in node:
            found.append((key, str(node["_target_"])))
        for k, v in node.items():
            found += targets_in(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += targets_in(v, f"{key}[{i}]")
    return found


def own_targets() -> frozenset:
    """The `_target_`s of tftrain's own options: each schema's default (conf/<group>/*.yaml)."""
    return frozenset(t for options in SCHEMAS.values() for cls in options.values()
                     if (t := default_target(cls)) is not None)


def named_targets(cfg) -> frozenset:
    """The `_target_`s the user's own command names (its composed config): code they vouch for."""
    return frozenset(t for _, t in targets_in(OmegaConf.to_container(cfg, resolve=False)))


def refusal(run_dir: Path, foreign: list[tuple[str, str]]) -> str:
    names = ", ".join(f"{k}._target_={t}" for k, t in foreign[:5]) + (" ..." if len(foreign) > 5 else "")
    key, target = foreign[0]
    return (f"task.run={str(run_dir)!r}: its config.yaml names code that is not one of tftrain's or Keras' own "
            f"options ({names}). A run directory is data: tftrain imports and runs nothing named in it unless you "
            f"say so, as Keras' safe_mode does. Fix: if you trust this run and have its code, name that code again "
            f"on the command line as when training it (e.g. `++{key}._target_={target}`), or pass "
            "task.trust_run=true.")


def problem_by_name(node):
    """The run's problem rebuilt as one of tftrain's kinds, by name, with its loss and metrics
    looked up by name in Keras' registries (tftrain.problems resolves the names): nothing is
    instantiated from a `_target_` in the file."""
    from tftrain.errors import ArgumentError
    from tftrain.problems import kinds

    by_target = {f"tftrain.problems.{name}": getattr(kinds, name)
                 for name in ("Classification", "Binary", "Multilabel", "Regression")}
    cls = by_target.get(node.get("_target_"))
    loss, metrics = node.get("loss"), list(node.get("metrics") or [])
    named = isinstance(loss, str) and all(isinstance(m, str) for m in metrics)
    if cls is None or not named:  # own_targets() let it through only if it is one of those
        raise TftrainError(f"problem={node.get('_target_')}: not a problem kind tftrain rebuilds by name. Fix: pass "
                           "task.trust_run=true if you trust this run.")
    kwargs = {"loss": loss, "metrics": metrics, "num_outputs": node.get("num_outputs")}
    if "label_smoothing" in node:
        kwargs["label_smoothing"] = float(node.get("label_smoothing"))
    try:
        return cls(**kwargs)
    except ArgumentError as e:
        raise ConfigError(f"problem.{e.arg}", e.value, e.requirement) from None


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
    x = arrays[x_key]
    if x.dtype.kind not in "biuf":  # strings, objects, complex numbers: not what the model took
        raise DataError(f"task.input={str(p)!r}: its array {x_key!r} holds {x.dtype} values, not numbers. Fix: save "
                        "the examples as a numeric array (e.g. x.astype('float32')).")
    if x.ndim == 0 or len(x) == 0:
        raise DataError(f"task.input={str(p)!r}: its array {x_key!r} has shape {x.shape}, not (examples, features...) "
                        "with at least one example. Fix: save a batch of examples, one per row.")
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise DataError(f"task.input={str(p)!r}: its array {x_key!r} holds {int(np.sum(~np.isfinite(x)))} NaN or Inf "
                        "values. Fix: clean or impute them first.")
    return x, (arrays[y_key] if with_targets else None), None


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
    if not rows:
        raise DataError(f"task.input={str(p)!r} has a header line but no rows. Fix: add the rows to "
                        f"{'evaluate' if with_targets else 'predict'}.")
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
    if run.input_shape and len(run.input_shape) != 3:
        raise DataError(f"task.input={str(p)!r} is a folder of images, but the run's model takes examples of shape "
                        f"{run.input_shape}, not images (height, width, channels). Fix: give a .csv or .npz of "
                        "examples like the run's training data.")
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


def checked_inputs(x, y, run: FinishedRun, path: str):
    """`x` and `y` of an input file, checked against the run: the examples' shape, a warning when
    the inputs lie far outside the training inputs' range, and class names as the run's class
    indices (a name training never saw is a DataError)."""
    from tftrain.data.labels import class_indices, is_text
    from tftrain.data.ranges import input_range_warning

    check_shape(x, run, path)
    warning = input_range_warning(x, run.facts)
    if warning:
        log.warning("task.input=%r: %s", path, warning)
    if y is not None and is_text(y):
        y = class_indices(y, list(run.facts.get("target_names") or []), f"task.input={path!r}'s labels")
    return x, y


def open_finished_run(cfg, output_dir):
    """predict's and evaluate's start: the opened task (tftrain.tasks.run.open_run, no lock and no
    TensorFlow), then `task.run` read as data: (cfg, output directory, FinishedRun, model, problem)."""
    from tftrain.tasks.run import open_run

    with open_run(cfg, output_dir, trains=False) as opened:
        cfg, out_dir = opened.cfg, opened.run_dir
    run = FinishedRun(cfg.task.run, trust=cfg.task.trust_run, named=named_targets(cfg))
    return cfg, out_dir, run, run.model(), run.problem()  # TensorFlow loads here, quietly

