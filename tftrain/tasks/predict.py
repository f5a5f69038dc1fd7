"""`task=predict`: a CSV of predictions for raw inputs, from a finished run's model.

    python -m tftrain task=predict task.run=outputs/2026-01-01/12-00-00 task.input=new.csv task.output=pred.csv

The columns are the run's problem's (tftrain.problems: `prediction`, `prediction_<name>`,
`prob_<class>`); an image folder's rows start with the `file`.
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path

from omegaconf import DictConfig

from tftrain.tasks.runs import checked_inputs, open_finished_run, read_input

log = logging.getLogger("tftrain")


def predict(cfg: DictConfig, output_dir: str | Path | None = None) -> dict:
    """Predict `task.input` with the model of `task.run`; write `task.output` (a CSV: `prediction`,
    or `prediction_<i>` for several outputs; `prob_<class>` for classification)."""
    t0 = time.perf_counter()
    cfg, out_dir, run, model, problem = open_finished_run(cfg, output_dir)
    task = cfg.task
    x, _, files = read_input(task.input, run, with_targets=False)
    x, _ = checked_inputs(x, None, run, task.input)
    outputs = model.predict(x, batch_size=task.batch_size, verbose=0)
    columns, table = problem.columns(outputs, run.facts.get("target_names"))
    if files is not None:
        columns, table = ["file", *columns], [[f, *row] for f, row in zip(files, table)]
    output = Path(task.output) if task.output else out_dir / "predictions.csv"
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(table)
    result = {"task": "predict", "run": str(run.dir.resolve()), "input": str(task.input), "output": str(output),
              "examples": int(len(x)), "columns": columns, "wall_time_s": time.perf_counter() - t0}
    log.info("Predicted %d example(s) of %s with %s: %s", len(x), task.input, run.dir, output)
    return result
