"""`train(cfg) -> metrics`: config -> validated once -> strategy -> data, model, optimizer and
schedule built inside its scope -> the loop -> evaluation -> outputs in the run directory.

TensorFlow is imported only after validation, so a bad config fails in well under a second.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from tftrain.schema import validate

log = logging.getLogger("tftrain")


def _run_dir(cfg: DictConfig, output_dir: str | None) -> Path:
    path = output_dir or cfg.get("output_dir")
    if path is None:
        path = Path("outputs") / "api" / datetime.now().strftime("%Y-%m-%d/%H-%M-%S-%f")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _ensure_console_logging():
    # Hydra configures logging on the CLI; from a notebook nothing would be shown without this.
    if not logging.getLogger().handlers and not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("[%(asctime)s][tftrain] %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def train(cfg: DictConfig, output_dir: str | Path | None = None) -> dict:
    """Train the configured model; write outputs to `output_dir`; return the metrics.json dict.

    >>> import tftrain
    >>> metrics = tftrain.train(tftrain.compose(["trainer.epochs=2"]))  # doctest: +SKIP
    """
    t_start = time.perf_counter()
    cfg = validate(cfg)
    run_dir = _run_dir(cfg, str(output_dir) if output_dir is not None else None)
    _ensure_console_logging()
    for noisy in ("absl", "tensorflow"):  # tf.data's and collectives' per-step INFO lines are noise
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import keras
    import numpy as np
    import tensorflow as tf

    from tftrain.callbacks import build_callbacks, write_hparams
    from tftrain.data import build_datasets
    from tftrain.distribute import is_chief, make_strategy
    from tftrain.initializers import Initializers
    from tftrain.loop import Loop
    from tftrain.models import build_model
    from tftrain.optimizers import build_optimizer
    from tftrain.schedules import build_schedule

    t = cfg.trainer
    keras.utils.set_random_seed(t.seed)
    if t.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(t.mixed_precision or "float32")
    strategy = make_strategy(t)
    chief = is_chief(strategy)
    # Non-chief multi-worker tasks compute like the chief but write to a scratch directory.
    write_dir = run_dir if chief else Path(tempfile.mkdtemp(prefix="tftrain-worker-"))
    OmegaConf.save(cfg, write_dir / "config.yaml", resolve=True)
    data = build_datasets(cfg.data, t, strategy)
    steps_per_epoch, replicas = data.steps_per_epoch, strategy.num_replicas_in_sync
    log.info("Run directory: %s", run_dir.resolve())
    log.info("%d replica(s) (%s), global batch %d (%d per replica), %d steps per epoch", replicas,
             type(strategy).__name__, t.batch_size, t.batch_size // replicas, steps_per_epoch)
    make_train_dataset, val_ds, test_ds = data.train, data.val, data.test

    with strategy.scope():
        schedule = build_schedule(cfg, steps_per_epoch)
        lr_scale = None
        if t.scale_lr or t.nan_recovery:
            from tftrain.schedules import Scaled

            schedule = Scaled(schedule, float(replicas) if t.scale_lr else 1.0)
            lr_scale = schedule.scale
        model = build_model(cfg.model, data.input_shape, data.num_classes, Initializers(cfg.initializer, t.seed))
        optimizer = build_optimizer(cfg.optimizer, schedule, t.mixed_precision)
        # Compiled (though trained by our loop) so model.keras carries the optimizer and loss, and
        # a reloaded model can evaluate() or keep training with fit().
        model.compile(optimizer=optimizer,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    loop = Loop(strategy=strategy, model=model, optimizer=optimizer, schedule=schedule,
                global_batch_size=t.batch_size, steps_per_epoch=steps_per_epoch, run_dir=run_dir,
                write_dir=write_dir, is_chief=chief, steps_per_execution=t.steps_per_execution,
                jit_compile=t.jit_compile, update_freq=cfg.callbacks.tensorboard.update_freq,
                keep_checkpoints=t.keep_checkpoints, checkpoint_every_steps=t.checkpoint_every_steps,
                nan_recovery=t.nan_recovery, nan_lr_factor=t.nan_lr_factor, lr_scale=lr_scale,
                tensorboard=cfg.callbacks.tensorboard.enabled,
                verbose=t.verbose, callbacks=build_callbacks(cfg, write_dir))
    if cfg.initializer.get("data_init"):  # weight norm: g and biases from the first training batch
        from tftrain.layers import data_dependent_init

        # A resumed run's checkpoint restore (in loop.fit) then overwrites what this computes.
        data_dependent_init(model, strategy, next(iter(make_train_dataset(0, 0))))
    history = loop.fit(make_train_dataset, val_ds, epochs=t.epochs)
    if cfg.optimizer.use_ema:
        optimizer.finalize_variable_values(model.trainable_variables)  # evaluate and save the EMA weights
    test_loss, test_acc = loop.evaluate(test_ds)
    # Identical on every replica and worker when they are in sync: logged so runs can be compared.
    fingerprint = float(sum(np.sum(np.square(w.astype("float64"))) for w in model.get_weights()))
    log.info("weights fingerprint %.17g", fingerprint)
    model.save(write_dir / "model.keras")

    epochs = history.epochs
    metrics = {
        "train_loss": epochs[-1].loss if epochs else None,
        "train_accuracy": epochs[-1].accuracy if epochs else None,
        "val_loss": epochs[-1].val_loss if epochs else None,
        "val_accuracy": epochs[-1].val_accuracy if epochs else None,
        "best_val_loss": min((e.val_loss for e in epochs), default=None),
        "best_val_accuracy": max((e.val_accuracy for e in epochs), default=None),
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        "epochs": history.steps // steps_per_epoch,
        "steps": history.steps,
        "stopped_early": history.stopped_early,
        "nan_recoveries": history.nan_recoveries,
        "wall_time_s": time.perf_counter() - t_start,
        "train_time_s": history.train_seconds,
        "steps_per_s": (history.steps_run / history.train_seconds) if history.train_seconds else None,
        "history": {k: [getattr(e, k) for e in epochs]
                    for k in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds")},
        "weights_fingerprint": fingerprint,
        "run_dir": str(run_dir.resolve()),
    }
    (write_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_hparams(cfg, metrics, write_dir)  # HParams dashboard: the config and its final metrics
    if not chief:
        shutil.rmtree(write_dir, ignore_errors=True)
    log.info("test_loss %.4f - test_accuracy %.4f - %d epochs, %d steps in %.1fs",
             test_loss, test_acc, metrics["epochs"], metrics["steps"], metrics["wall_time_s"])
    if chief:
        log.info("Outputs in %s: metrics.json, model.keras, checkpoints/, tensorboard/ "
                 "(tensorboard --logdir %s)", run_dir.resolve(), run_dir)
    else:
        log.info("Non-chief worker done; the chief writes the outputs to %s", run_dir.resolve())
    return metrics
