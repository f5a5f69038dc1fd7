"""What a training run leaves in its run directory besides checkpoints: metrics.json, the saved
model, preprocessing.json, and the closing lines that name them."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

log = logging.getLogger("tftrain")

# Every file and folder a run directory can hold, in the order the "Outputs in" line names them.
METRICS, MODEL, WEIGHTS, BEST = "metrics.json", "model.keras", "model.weights.h5", "best.keras"
HISTORY, STEPS, CONFIG, PREPROCESSING = "history.csv", "steps.csv", "config.yaml", "preprocessing.json"
OUTPUTS = (METRICS, MODEL, WEIGHTS, BEST, HISTORY, STEPS, CONFIG, PREPROCESSING, "checkpoints/", "tensorboard/",
           "config_history/", "mlflow_run.json")
# What a run writes before its first step; removed again when it stops before training.
BEFORE_TRAINING = (".hydra", CONFIG, PREPROCESSING)
# What marks a run directory as holding work (a failed start leaves such a directory as it is).
OF_VALUE = ("checkpoints", METRICS)


def outputs_of(run_dir: Path) -> str:
    return ", ".join(name for name in OUTPUTS if (run_dir / name.rstrip("/")).exists())


def write_preprocessing(data, directory: Path) -> None:
    """preprocessing.json: what the saved model's preprocessing layers hold (the training split's
    input and target statistics) and what `task=predict` needs to read raw inputs."""
    def plain(stats):
        return None if stats is None else {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in stats.items()}

    text = json.dumps({
        "input_shape": list(data.input_shape), "num_outputs": data.num_outputs,
        "normalization": plain(data.normalization), "target_normalization": plain(data.target_normalization),
        "target_names": data.target_names, "feature_names": data.feature_names,
        # The training inputs' range (tftrain.data.ranges.input_range_warning compares new inputs with it).
        "input_range": getattr(data, "input_range", None)}, indent=2) + "\n"
    # Replaced whole: a reader (task=predict on a running run, a sweep summary) never sees it half written.
    part = directory / f".{PREPROCESSING}.{os.getpid()}.part"
    part.write_text(text)
    os.replace(part, directory / PREPROCESSING)


def save_model(model, directory: Path) -> str:
    """`model.keras`, or the weights alone (`model.weights.h5`) when Keras cannot serialize the
    model (a subclassed model without get_config): the run's work is kept either way."""
    try:
        model.save(directory / MODEL)
        return MODEL
    except (NotImplementedError, TypeError, ValueError) as e:
        (directory / MODEL).unlink(missing_ok=True)
        model.save_weights(directory / WEIGHTS)
        log.warning("The model cannot be saved whole (%s: %s); saved its weights to model.weights.h5 instead. To get "
                    "model.keras, give the model's classes get_config() (keras.saving.register_keras_serializable).",
                    type(e).__name__, str(e).strip().splitlines()[0][:200])
        return WEIGHTS


def metrics_of(run, built, history, test: dict, status: str, started: float) -> dict:
    """metrics.json's dict for the opened `run` (tftrain.tasks.run.Run) whose `built` components
    trained to `history` and scored `test` on the test split."""
    import numpy as np

    epochs, names, spe = history.epochs, built.problem.names, built.data.steps_per_epoch
    last = epochs[-1] if epochs else {}
    return {
        "status": status,
        **{k: last.get(k) for k in names},  # the last epoch's training values, as Keras logs them
        **{f"train_{k}": last.get(k) for k in names},
        **{f"val_{k}": last.get(f"val_{k}") for k in names},
        **{f"best_val_{k}": built.problem.best(k, [e[f"val_{k}"] for e in epochs]) for k in names},
        **{f"test_{k}": v for k, v in test.items()},
        "epochs": history.steps // spe,
        "steps": history.steps,
        "stopped_early": history.stopped_early,
        "nan_recoveries": history.nan_recoveries,
        "wall_time_s": time.perf_counter() - started,
        "train_time_s": history.train_seconds,
        "steps_per_s": (history.steps_run / history.train_seconds) if history.train_seconds else None,
        "history": {k: [e.get(k) for e in epochs] for k in (epochs[0] if epochs else {})},
        **({"found_lr": float(run.cfg.optimizer.lr)} if run.cfg.task.get("find_lr") else {}),  # task.find_lr's rate
        "startup_s": run.phases.seconds,  # launch to first step, by phase
        # Sum of squares of every weight: identical on every replica and worker when they are in
        # sync, and between runs that should be bit-identical (a resume check).
        "weights_fingerprint": float(sum(np.sum(np.square(w.astype("float64"))) for w in built.model.get_weights())),
        "run_dir": str(run.run_dir.resolve()),
    }


def write_metrics(run, metrics: dict) -> None:
    """metrics.json, and the closing lines that name the outputs."""
    (run.write_dir / METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
    if run.strategy.extended._in_multi_worker_mode():
        log.info("weights fingerprint (the sum of squares of every weight: equal on every worker when they are in "
                 "sync) %.17g", metrics["weights_fingerprint"])
    tests = {k[5:]: v for k, v in metrics.items() if k.startswith("test_")}
    log.info("%s - %d epochs, %d steps in %.1fs", " - ".join(f"test_{k} {v:.4f}" for k, v in tests.items()),
             metrics["epochs"], metrics["steps"], metrics["wall_time_s"])
    if not run.chief:
        log.info("Non-chief worker done; the chief writes the outputs to %s", run.run_dir.resolve())
        return
    log.info("Outputs in %s: %s", run.run_dir.resolve(), outputs_of(run.write_dir))
    if (run.write_dir / "tensorboard").is_dir():
        log.info("TensorBoard: tensorboard --logdir %s", run.run_dir)
