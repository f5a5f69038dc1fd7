"""Keras callbacks from the `callbacks` group, driven by tftrain's loop at each epoch end.

The loop (tftrain.controller) calls `on_train_begin`, `on_epoch_begin`, `on_epoch_end(epoch, logs)`,
once per compiled call `on_train_batch_begin/end` (with the running loss), and `on_train_end`,
with Keras-style logs (loss and every metric, their val_ versions, learning_rate), so Keras' own
callbacks work unchanged, and so do the user's own (`callbacks.extra`). The loop itself writes
the scalars under `<run>/tensorboard/{train,validation}` and history.csv (after each checkpoint);
this module adds, per run:

- early stopping and best.keras: Keras' EarlyStopping and ModelCheckpoint, with their state
  (best weights included) checkpointed with the run (`get_state`/`set_state`, `checkpoint_variables`:
  the protocol a user's own callback can follow too);
- weight histograms in `tensorboard/train` (`callbacks.tensorboard.histograms`, off by default);
- an HParams session in `tensorboard/`: the run's flattened config when training starts
  (`HParamsCallback`), its final metrics (test ones included) at the end (`write_hparams`), so
  `tensorboard --logdir <sweep dir>` compares a sweep's runs in the HParams dashboard.
"""

from __future__ import annotations

from pathlib import Path

import keras
from omegaconf import DictConfig, OmegaConf

# metrics.json keys written as the HParams dashboard's final metrics (scalars in <run>/tensorboard):
# these prefixes (train_, val_, best_val_, test_ + every metric) and the wall time.
FINAL_PREFIXES = ("train_", "val_", "best_val_", "test_")

# Config keys (prefixes) left out of the hyper-parameters: they do not change what is learned.
_NOT_HPARAMS = ("output_dir", "task", "trainer.verbose", "trainer.keep_checkpoints", "trainer.objective",
                "trainer.checkpoint_every_steps", "callbacks.tensorboard", "callbacks.best_checkpoint",
                "callbacks.csv_logger", "callbacks.extra")

# Session directories whose hyper-parameters this process already wrote (callback, then write_hparams).
_SESSIONS_WRITTEN: set[str] = set()


def build_callbacks(cfg: DictConfig, run_dir: Path) -> list[keras.callbacks.Callback]:
    """The callbacks the whole (validated) config asks for, writing under `run_dir`, then the
    user's own (`callbacks.extra`)."""
    from tftrain.build import build_extra_callbacks

    cb_cfg = cfg.callbacks
    run_dir = Path(run_dir)
    callbacks: list[keras.callbacks.Callback] = []
    es = cb_cfg.early_stopping
    if es.enabled:
        callbacks.append(EarlyStopping(
            monitor=es.monitor, mode=es.mode, patience=es.patience,
            min_delta=es.min_delta, restore_best_weights=es.restore_best_weights, verbose=1))
    best = cb_cfg.best_checkpoint
    if best.enabled:
        callbacks.append(BestCheckpoint(
            str(run_dir / "best.keras"), monitor=best.monitor, mode=best.mode,
            save_best_only=True, verbose=0))
    # history.csv (callbacks.csv_logger) is written by the loop from the checkpointed history.
    tb = cb_cfg.tensorboard
    if tb.enabled and tb.histograms:
        callbacks.append(WeightHistograms(run_dir / "tensorboard" / "train", freq=tb.histogram_freq))
    if tb.enabled and tb.hparams:
        callbacks.append(HParamsCallback(run_dir / "tensorboard", hparams_of(cfg)))
    return callbacks + build_extra_callbacks(cfg)


class EarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' EarlyStopping whose whole state is checkpointed with the run: its counters
    (`get_state`/`set_state`) and, with restore_best_weights, the best epoch's weights (variables
    the checkpoint holds, `checkpoint_variables`). A run killed after its best epoch and resumed
    ends with the same weights as an uninterrupted one."""

    def set_model(self, model):
        super().set_model(model)
        self.checkpoint_variables = []
        if self.restore_best_weights:
            import tensorflow as tf

            self.checkpoint_variables = [tf.Variable(tf.zeros(w.shape, w.dtype), trainable=False) for w in model.weights]
        self._kept = None

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.best_weights is not None and self.best_weights is not self._kept:  # a new best: keep it checkpointed
            for variable, value in zip(self.checkpoint_variables, self.best_weights):
                variable.assign(value)
            self._kept = self.best_weights

    def get_state(self) -> dict:
        return {"wait": self.wait, "best": None if self.best is None else float(self.best),
                "best_epoch": self.best_epoch, "stopped_epoch": self.stopped_epoch,
                "has_best_weights": self.best_weights is not None}

    def set_state(self, state: dict) -> None:
        self.wait, self.best = int(state["wait"]), state["best"]
        self.best_epoch, self.stopped_epoch = int(state["best_epoch"]), int(state["stopped_epoch"])
        if state.get("has_best_weights") and self.checkpoint_variables:
            self.best_weights = [v.numpy() for v in self.checkpoint_variables]
            self._kept = self.best_weights


class BestCheckpoint(keras.callbacks.ModelCheckpoint):
    """Keras' ModelCheckpoint (save_best_only) whose best value is checkpointed with the run, so a
    resumed run does not overwrite best.keras with a worse model."""

    def get_state(self) -> dict:
        return {"best": float(self.best) if self.best is not None else None}

    def set_state(self, state: dict) -> None:
        if state.get("best") is not None:
            self.best = state["best"]


class WeightHistograms(keras.callbacks.Callback):
    """A histogram of every model weight, tagged by its path (e.g. `mlp/dense/kernel`), every
    `freq` epochs at step epoch + 1 (the step of the loop's epoch scalars)."""

    def __init__(self, logdir: Path, freq: int = 1):
        super().__init__()
        self.logdir, self.freq = Path(logdir), freq
        self._writer = None

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        self._writer = tf.summary.create_file_writer(str(self.logdir))

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        if self._writer is None or (epoch + 1) % self.freq:
            return
        with self._writer.as_default():
            for w in self.model.weights:
                tf.summary.histogram(w.path, tf.convert_to_tensor(w), step=epoch + 1)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class HParamsCallback(keras.callbacks.Callback):
    """Writes the run's hyper-parameters (an HParams session) when training starts, so a run that
    later fails still shows in the HParams dashboard with the epochs it completed."""

    def __init__(self, logdir: Path, hparams: dict):
        super().__init__()
        self.logdir, self.hparams = Path(logdir), hparams

    def on_train_begin(self, logs=None):
        _write_session(self.logdir, self.hparams)


def hparams_of(cfg: DictConfig) -> dict[str, bool | int | float | str]:
    """The config as flat `group.key: value` hyper-parameters (lists as strings, nulls left out),
    without the keys that do not change what is learned (verbosity, logging, checkpoint counts);
    on the command line also each group's option (`optimizer: momentum`)."""
    flat: dict[str, bool | int | float | str] = dict(_choices())

    def visit(prefix: str, node):
        if isinstance(node, dict):
            for k, v in node.items():
                visit(f"{prefix}.{k}" if prefix else str(k), v)
        elif node is None or prefix.startswith(_NOT_HPARAMS):
            return
        elif isinstance(node, (bool, int, float, str)):
            flat[prefix] = node
        else:
            flat[prefix] = str(node)

    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    container.pop("hydra", None)
    visit("", container)
    return flat


def _choices() -> dict[str, str]:
    """Hydra's group choices of this run (empty outside a Hydra app, e.g. tftrain.compose)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        choices = HydraConfig.get().runtime.choices
    except (ValueError, ImportError):
        return {}
    return {str(k): str(v) for k, v in choices.items()
            if v is not None and "/" not in str(k) and not str(k).startswith(("hydra", "task"))}


def _write_session(logdir: Path, hparams: dict) -> None:
    # No trial_id: TensorBoard then groups sessions by their hyper-parameters, so runs with the
    # same config (e.g. repeated in two sweeps) form one group, and different ones never do.
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    writer = tf.summary.create_file_writer(str(logdir))
    with writer.as_default():
        hp.hparams(hparams)
    writer.close()
    _SESSIONS_WRITTEN.add(str(Path(logdir).resolve()))


def write_hparams(cfg: DictConfig, metrics: dict, run_dir: str | Path) -> None:
    """Write the run's final metrics (keys starting with FINAL_PREFIXES, and wall_time_s, at step = epochs) as scalars
    in `<run_dir>/tensorboard`, the run's HParams session, and the session's hyper-parameters if
    the HParamsCallback did not already write them in this process.

    Call it after the test evaluation: `write_hparams(cfg, metrics, write_dir)`.
    Does nothing when `callbacks.tensorboard.enabled` or `.hparams` is false.
    """
    tb = cfg.callbacks.tensorboard
    if not (tb.enabled and tb.hparams):
        return
    import tensorflow as tf

    logdir = Path(run_dir) / "tensorboard"
    if str(logdir.resolve()) not in _SESSIONS_WRITTEN:
        _write_session(logdir, hparams_of(cfg))
    step = int(metrics.get("epochs") or 0)
    writer = tf.summary.create_file_writer(str(logdir))
    with writer.as_default():
        for key, value in metrics.items():
            if (key.startswith(FINAL_PREFIXES) or key == "wall_time_s") and isinstance(value, (int, float)) \
                    and not isinstance(value, bool):
                tf.summary.scalar(key, float(value), step=step)
    writer.close()
