"""`train(cfg) -> metrics`: config -> validated once -> strategy -> data, model, optimizer and
schedule built inside its scope -> the loop -> evaluation -> outputs in the run directory.

TensorFlow is imported only after validation, so a bad config fails in well under a second.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig

from tftrain.errors import Preempted
from tftrain.schema import validate

log = logging.getLogger("tftrain")


def run_dir_of(cfg: DictConfig, output_dir: str | None) -> Path:
    """The run directory (created, and checked writable)."""
    from tftrain.errors import TftrainError

    path = output_dir or cfg.get("output_dir")
    if path is None:
        path = Path("outputs") / "api" / datetime.now().strftime("%Y-%m-%d/%H-%M-%S-%f")
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".tftrain-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise TftrainError(f"The run directory {path} cannot be written: {e.strerror or e} ({e.filename or path}). Fix: "
                           "choose a writable directory (hydra.run.dir=... or output_dir=...) with free space.") from None
    return path


def ensure_console_logging():
    """Hydra configures logging on the CLI; from a notebook or script nothing would be shown without
    this. tftrain's lines then go to its own handler only: importing TensorFlow installs absl's
    handler on the root logger, which would print every line a second time."""
    if not logging.getLogger().handlers and not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def setup(cfg: DictConfig):
    """Seed, determinism, precision policy and the strategy, in that order (devices are fixed by
    the first TensorFlow operation); returns (strategy, is_chief). TensorFlow's start-up lines are
    kept off the console meanwhile (tftrain.console; trainer.verbose=3 shows them)."""
    from tftrain.console import quiet_known_warnings, quiet_tensorflow

    t = cfg.trainer
    if t.verbose < 3:
        quiet_known_warnings()
    with quiet_tensorflow(t.verbose):
        import keras
        import tensorflow as tf

        from tftrain.distribute import is_chief, make_strategy

        for noisy in ("absl", "tensorflow"):  # tf.data's and collectives' per-step INFO lines are noise
            logging.getLogger(noisy).setLevel(logging.DEBUG if t.verbose >= 3 else logging.WARNING)
        keras.utils.set_random_seed(t.seed)
        if t.deterministic:
            tf.config.experimental.enable_op_determinism()
        keras.mixed_precision.set_global_policy(t.mixed_precision or "float32")
        strategy = make_strategy(t)
    return strategy, is_chief(strategy)


def train(cfg: DictConfig, output_dir: str | Path | None = None) -> dict:
    """Train the configured model; write outputs to `output_dir`; return the metrics.json dict.
    Rerun with the same directory to resume (see trainer.resume).

    >>> import tftrain
    >>> metrics = tftrain.train(tftrain.compose(["trainer.epochs=2"]))  # doctest: +SKIP
    """
    from tftrain.build import preflight
    from tftrain.resume import RunLock, plan_resume, save_config
    from tftrain.startup import Phases

    phases = Phases()
    cfg = validate(cfg)  # before TensorFlow is imported: a bad config fails in well under a second
    phases.mark("validate")
    run_dir = run_dir_of(cfg, str(output_dir) if output_dir is not None else None)
    ensure_console_logging()
    from tftrain.console import quiet_tensorflow

    with quiet_tensorflow(cfg.trainer.verbose):  # the targets' modules import Keras, and so TensorFlow
        preflight(cfg)
    phases.mark("import_tensorflow_and_check_targets")
    strategy, chief = setup(cfg)
    phases.mark("devices_and_strategy")
    from tftrain.checkpoints import steps_in  # these import TensorFlow
    from tftrain.controller import StopSignals

    # wall_time_s: from here, not counting the process' start-up and TensorFlow's import (seconds, and
    # only in a sweep's first job in-process), which would make the first job look slow.
    t_start = time.perf_counter()
    # Non-chief multi-worker tasks compute like the chief but write to a scratch directory.
    write_dir = run_dir if chief else Path(tempfile.mkdtemp(prefix="tftrain-worker-"))
    with RunLock(run_dir) if chief else contextlib.nullcontext(), StopSignals() as stop:
        if cfg.task.get("find_lr"):
            cfg = _find_lr(cfg, run_dir, strategy)
        has_checkpoints = cfg.trainer.resume != "never" and bool(steps_in(run_dir / "checkpoints"))
        plan = plan_resume(run_dir, cfg, has_checkpoints)
        if chief:
            save_config(cfg, write_dir, plan)
        phases.mark("run_directory")
        metrics = _train(cfg, run_dir, write_dir, strategy, chief, plan, t_start, stop, phases)
    if not chief:
        shutil.rmtree(write_dir, ignore_errors=True)
    return metrics


def _train(cfg, run_dir: Path, write_dir: Path, strategy, chief: bool, plan, t_start: float, stop, phases) -> dict:
    from tftrain.build import (build_data, build_loggers, build_model, build_optimizer, build_problem, build_schedule,
                               prepare_problem)
    from tftrain.callbacks import build_callbacks
    from tftrain.console import device_summary
    from tftrain.controller import Controller, LoopOptions
    from tftrain.distribute import use_xla
    from tftrain.loggers.base import Loggers, RunInfo, flat_params, sweep_dir_of_job
    from tftrain.pruning import pruning_callback
    from tftrain.schedules import Scaled
    from tftrain.trainer import Trainer

    t = cfg.trainer
    problem = build_problem(cfg)
    data = build_data(cfg, strategy, problem)
    write_preprocessing(data, write_dir)
    phases.mark("data")
    replicas = strategy.num_replicas_in_sync
    log.info("Run directory: %s", run_dir.resolve())
    accumulate = f", {t.accumulate_steps} batches of {t.batch_size // t.accumulate_steps} per update" \
        if t.accumulate_steps > 1 else ""
    log.info("Training on %s: %d replica(s) (%s), global batch %d (%d per replica%s), %d steps per epoch",
             device_summary(strategy), replicas, strategy_name(strategy), t.batch_size, t.batch_size // replicas,
             accumulate, data.steps_per_epoch)
    with strategy.scope():
        # The rate multiplier: the linear scaling rule, lowered by divergence recoveries.
        schedule = Scaled(build_schedule(cfg, data.steps_per_epoch), float(replicas) if t.scale_lr else 1.0)
        _check_resume(cfg, plan, run_dir, data.steps_per_epoch, schedule)
        model = build_model(cfg, data.input_shape, data.num_outputs, data.normalization, data.target_normalization)
        optimizer = build_optimizer(cfg, schedule)
        prepare_problem(problem, model, data)
        # Compiled (though trained by tftrain's loop) so model.keras carries the optimizer and loss,
        # and a reloaded model can evaluate() or keep training with fit().
        model.compile(optimizer=optimizer, **problem.compile_args())
    phases.mark("model_and_optimizer")
    loggers = Loggers(build_loggers(cfg) if chief else [])  # only the chief logs
    xla, why = use_xla(t.jit_compile, t.deterministic)
    log.info("XLA %s (%s); steps per call: %s", "on" if xla else "off", why,
             "chosen early in the run (trainer.steps_per_execution=auto)" if t.steps_per_execution == "auto"
             else t.steps_per_execution)
    trainer = Trainer(strategy, model, optimizer, problem, global_batch_size=t.batch_size, jit_compile=xla,
                      update_freq=loggers.graph_freq(), record_steps=loggers.record_steps, accumulate=t.accumulate_steps)
    # A sweep's jobs print plain lines: live lines of parallel jobs would overwrite each other.
    verbose = 2 if t.verbose == 1 and sweep_dir_of_job() is not None else t.verbose
    options = LoopOptions(epochs=t.epochs, steps_per_execution=t.steps_per_execution,
                          checkpoint_every_steps=t.checkpoint_every_steps, keep_checkpoints=t.keep_checkpoints,
                          nan_recovery=t.nan_recovery, nan_lr_factor=t.nan_lr_factor, verbose=verbose, resume=t.resume)
    run_info = RunInfo(write_dir, cfg, model, flat_params(cfg), sweep_dir=sweep_dir_of_job())
    pruning = pruning_callback(cfg, strategy)  # an Optuna trial with a pruner (hparams_search=optuna)
    callbacks = build_callbacks(cfg, write_dir) + ([pruning] if pruning is not None else [])
    controller = Controller(trainer, data, options, run_dir=run_dir, schedule=schedule, write_dir=write_dir,
                            is_chief=chief, callbacks=callbacks, stop=stop, loggers=loggers, run_info=run_info)
    from tftrain.layers import data_dependent_init, needs_data_init

    if needs_data_init(model):
        # Weight norm: g and biases from the first training batch; a resumed run's checkpoint
        # restore (in Controller.fit) then overwrites what this computes.
        data_dependent_init(model, strategy, next(iter(data.train(0, 0))))
    status = "failed"
    try:
        phases.mark("loop_setup")
        metrics, saved = _fit_and_test(cfg, controller, data, problem, model, optimizer, trainer, strategy, run_dir,
                                       write_dir, chief, t_start, pruning, phases)
        loggers.finish(metrics, [write_dir / name for name in (saved, "history.csv", "metrics.json", "config.yaml",
                                                               "preprocessing.json")])
        status = metrics.get("status", "completed")
        return metrics
    except Preempted:
        status = "stopped"
        raise
    finally:
        loggers.close(status)


def _fit_and_test(cfg, controller, data, problem, model, optimizer, trainer, strategy, run_dir: Path, write_dir: Path,
                  chief: bool, t_start: float, pruning=None, phases=None) -> tuple[dict, str]:
    """The loop, then the test evaluation and the outputs: (metrics.json's dict, the model's file name)."""
    import numpy as np

    try:
        history = controller.fit()
    finally:
        trainer.restore_clipping()  # model.keras keeps the optimizer's settings as configured
    if phases is not None and controller.first_call_done is not None:  # restore, loggers, tracing, the first call
        phases.mark("first_step", at=controller.first_call_done)
    if cfg.optimizer.use_ema:
        optimizer.finalize_variable_values(model.trainable_variables)  # evaluate and save the EMA weights
    test = trainer.evaluate(data.test)
    saved = save_model(model, write_dir)

    epochs = history.epochs
    names = problem.names
    last = epochs[-1] if epochs else {}
    metrics = {
        "status": "pruned" if pruning is not None and pruning.pruned else "completed",
        **{k: last.get(k) for k in names},  # the last epoch's training values, as Keras logs them
        **{f"train_{k}": last.get(k) for k in names},
        **{f"val_{k}": last.get(f"val_{k}") for k in names},
        **{f"best_val_{k}": _best(k, [e[f"val_{k}"] for e in epochs]) for k in names},
        **{f"test_{k}": v for k, v in test.items()},
        "epochs": history.steps // data.steps_per_epoch,
        "steps": history.steps,
        "stopped_early": history.stopped_early,
        "nan_recoveries": history.nan_recoveries,
        "wall_time_s": time.perf_counter() - t_start,
        "train_time_s": history.train_seconds,
        "steps_per_s": (history.steps_run / history.train_seconds) if history.train_seconds else None,
        "history": {k: [e.get(k) for e in epochs] for k in (epochs[0] if epochs else {})},
        # Sum of squares of every weight: identical on every replica and worker when they are in
        # sync, and between runs that should be bit-identical (a resume check).
        **({"found_lr": float(cfg.optimizer.lr)} if cfg.task.get("find_lr") else {}),  # task.find_lr's rate
        "startup_s": phases.seconds if phases is not None else None,  # launch to first step, by phase
        "weights_fingerprint": float(sum(np.sum(np.square(w.astype("float64"))) for w in model.get_weights())),
        "run_dir": str(run_dir.resolve()),
    }
    if strategy.extended._in_multi_worker_mode():
        log.info("weights fingerprint (the sum of squares of every weight: equal on every worker when they are in "
                 "sync) %.17g", metrics["weights_fingerprint"])
    (write_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log.info("%s - %d epochs, %d steps in %.1fs", " - ".join(f"test_{k} {v:.4f}" for k, v in test.items()),
             metrics["epochs"], metrics["steps"], metrics["wall_time_s"])
    if chief:
        log.info("Outputs in %s: %s", run_dir.resolve(), outputs_of(write_dir))
        if (write_dir / "tensorboard").is_dir():
            log.info("TensorBoard: tensorboard --logdir %s", run_dir)
    else:
        log.info("Non-chief worker done; the chief writes the outputs to %s", run_dir.resolve())
    return metrics, saved


# What the run directory holds, in the order the "Outputs in" line names them.
OUTPUTS = ("metrics.json", "model.keras", "model.weights.h5", "best.keras", "history.csv", "steps.csv", "config.yaml",
           "preprocessing.json", "checkpoints/", "tensorboard/", "config_history/", "mlflow_run.json")


def outputs_of(run_dir: Path) -> str:
    return ", ".join(name for name in OUTPUTS if (run_dir / name.rstrip("/")).exists())


def strategy_name(strategy) -> str:
    """The strategy as users choose it (trainer.strategy), not its class' private name."""
    return {"_DefaultDistributionStrategy": "default", "MirroredStrategy": "mirrored", "OneDeviceStrategy": "one_device",
            "MultiWorkerMirroredStrategy": "multi_worker",
            "CollectiveAllReduceStrategy": "multi_worker"}.get(type(strategy).__name__, type(strategy).__name__)


def _find_lr(cfg, run_dir: Path, strategy):
    from tftrain.errors import ConfigError
    from tftrain.lr_find import with_found_lr

    if strategy.extended._in_multi_worker_mode():
        raise ConfigError("task.find_lr", True, "false under trainer.strategy=multi_worker",
                          "run the range test once on one machine (task=lr_find), then train with its optimizer.lr")
    return with_found_lr(cfg, run_dir, strategy)


def _check_resume(cfg, plan, run_dir: Path, steps_per_epoch: int, schedule) -> None:
    """The run's step against the new trainer.epochs; the accepted changes logged with what they
    do to the learning rate."""
    from tftrain.build import build_schedule
    from tftrain.checkpoints import steps_in
    from tftrain.resume import ResumeRefused, describe

    if plan.previous is None:
        return
    step = next(iter(steps_in(run_dir / "checkpoints")), 0)
    end = cfg.trainer.epochs * steps_per_epoch
    if step > end:
        raise ResumeRefused(f"The run in {run_dir} is already at step {step} (epoch {step // steps_per_epoch + 1}), past "
                            f"the end of trainer.epochs={cfg.trainer.epochs} ({end} steps): it cannot end there. Fix: "
                            f"set trainer.epochs to at least {-(-step // steps_per_epoch)}, or start a new run directory.")
    before = after = None
    if plan.schedule_changed:
        try:
            before = float(build_schedule(validate(plan.previous), steps_per_epoch)(step))
            after = float(schedule.schedule(step))
        except Exception:  # noqa: BLE001 - only a note: the old config may not rebuild (a removed option)
            pass
    describe(plan, before, after, step)


def write_preprocessing(data, directory: Path) -> None:
    """preprocessing.json: what the saved model's preprocessing layers hold (the training split's
    input and target statistics) and what `task=predict` needs to read raw inputs."""
    def plain(stats):
        return None if stats is None else {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in stats.items()}

    (directory / "preprocessing.json").write_text(json.dumps({
        "input_shape": list(data.input_shape), "num_outputs": data.num_outputs,
        "normalization": plain(data.normalization), "target_normalization": plain(data.target_normalization),
        "target_names": data.target_names, "feature_names": data.feature_names}, indent=2) + "\n")


def save_model(model, directory: Path) -> str:
    """`model.keras`, or the weights alone (`model.weights.h5`) when Keras cannot serialize the
    model (a subclassed model without get_config): the run's work is kept either way."""
    try:
        model.save(directory / "model.keras")
        return "model.keras"
    except (NotImplementedError, TypeError, ValueError) as e:
        (directory / "model.keras").unlink(missing_ok=True)
        model.save_weights(directory / "model.weights.h5")
        log.warning("The model cannot be saved whole (%s: %s); saved its weights to model.weights.h5 instead. To get "
                    "model.keras, give the model's classes get_config() (keras.saving.register_keras_serializable).",
                    type(e).__name__, str(e).strip().splitlines()[0][:200])
        return "model.weights.h5"


def _best(name: str, values: list) -> float | None:
    from tftrain.schema.problem import lower_is_better

    values = [v for v in values if v is not None]
    if not values:
        return None
    return min(values) if lower_is_better(name) else max(values)
