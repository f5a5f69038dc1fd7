"""`task=evaluate`: a finished run's model scored on a file or on one of its data's splits,
written to evaluation.json (the loss and every metric of the run's problem).

    python -m tftrain task=evaluate task.run=outputs/2026-01-01/12-00-00 task.input=holdout.npz
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from tftrain.errors import TftrainError
from tftrain.tasks.runs import checked_inputs, open_finished_run, read_input

log = logging.getLogger("tftrain")


def evaluate(cfg: DictConfig, output_dir: str | Path | None = None) -> dict:
    """Score the model of `task.run` on `task.input` (a file with targets) or on its data's
    `task.split`; write evaluation.json (loss and every metric of the run's problem)."""
    t0 = time.perf_counter()
    cfg, out_dir, run, model, problem = open_finished_run(cfg, output_dir)
    task = cfg.task
    import tensorflow as tf

    if task.input is not None:
        x, y, _ = read_input(task.input, run, with_targets=True)
        x, y = checked_inputs(x, y, run, task.input)
        _check_targets(problem, model, y, task.input)
        y = np.asarray(y).astype(problem.label_dtype)
        batches = tf.data.Dataset.from_tensor_slices((x.astype("float32"), y)).batch(task.batch_size)
        source = str(task.input)
    else:
        data = run.data(problem)
        batches = {"train": data.train(0), "val": data.val, "test": data.test}[task.split]
        source = f"the run's {task.split} split"
    x0, y0 = next(iter(batches))
    problem.build(y0, model(x0))

    @tf.function
    def state(x, y):
        return problem.batch_state(y, model(x, training=False))

    totals = problem.zeros()
    for x, y in batches:
        totals += state(x, y).numpy()
    if not totals[1]:
        raise TftrainError(f"task.input={task.input!r} has no examples. Fix: give it some.")
    scores = problem.results(totals)
    result = {"task": "evaluate", "run": str(run.dir.resolve()), "input": source, "examples": int(totals[1]),
              **scores, "wall_time_s": time.perf_counter() - t0}
    (out_dir / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
    log.info("Evaluated %s on %s (%d examples): %s; evaluation.json in %s", run.dir, source, int(totals[1]),
             " - ".join(f"{k} {v:.4f}" for k, v in scores.items()), out_dir.resolve())
    return result


def _check_targets(problem, model, y, path) -> None:
    """The file's targets checked by the run's problem as training checked its own, against the
    model's outputs (a class index >= the run's classes would fail inside TensorFlow's loss)."""
    from tftrain.data.labels import Labels
    from tftrain.errors import DataError

    outputs = int(model.output_shape[-1])
    try:
        if not np.issubdtype(np.asarray(y).dtype, np.number) and np.asarray(y).dtype != bool:
            raise DataError(f"y has dtype {np.asarray(y).dtype}, not numbers. Fix: store numeric targets.")
        problem.check({"train": Labels.of("input", y)}, outputs)
    except DataError as e:
        raise DataError(f"task.input={str(path)!r}: its targets do not fit the run's model ({outputs} output(s)): "
                        f"{str(e).replace('y_input ', 'y ')}") from None
