"""`python -m tftrain [overrides]`: a thin Hydra shell around the task `task.name` names.

One run (`python -m tftrain ...`): a tftrain error prints one paragraph and exits with status 2.
A sweep (`python -m tftrain -m ...`): a run that fails, whatever the error, is recorded in its
directory (error.txt, metrics.json with "status": "failed") and the sweep goes on; at the end
tftrain.sweep.SweepSummary (hydra.callbacks) writes summary.csv/.md/.png in the sweep directory.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import hydra
from omegaconf import DictConfig

from tftrain.config import config_dir
from tftrain.errors import TftrainError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of the log

log = logging.getLogger("tftrain")


# Tasks by `task.name`: callable(cfg, output_dir) -> dict. Each imports its module on use, so
# --help and --cfg job never load TensorFlow.
def _train(cfg: DictConfig, output_dir: str) -> dict:
    from tftrain.train import train

    return train(cfg, output_dir=output_dir)


def _lr_find(cfg: DictConfig, output_dir: str) -> dict:
    from tftrain.lr_find import lr_find

    return lr_find(cfg, output_dir=output_dir)


TASKS = {"train": _train, "lr_find": _lr_find}


def run_task(cfg: DictConfig, output_dir: str) -> dict:
    name = cfg.task.name
    if name not in TASKS:
        from tftrain.errors import ConfigError

        raise ConfigError("task.name", name, f"one of {sorted(TASKS)}", "choose a task with `task=<name>`")
    return TASKS[name](cfg, output_dir)


def _objective(cfg: DictConfig, metrics: dict):
    """What sweepers optimize: metrics[trainer.objective] (None when the task has no such metric)."""
    value = metrics.get(cfg.trainer.objective)
    return float(value) if isinstance(value, (int, float)) else value


def _run_in_sweep(cfg: DictConfig, output_dir: str):
    """One job of a sweep: a failure becomes a row of the summary, not the end of the sweep.

    Hydra's launchers catch a job's exception, but its sweepers then re-raise it (the basic one
    after its batch, Optuna's beyond max_failure_rate) and the sweep stops before on_multirun_end.
    """
    from tftrain.sweep import record_failure

    t0 = time.perf_counter()
    try:
        return _objective(cfg, run_task(cfg, output_dir))
    except Exception as e:  # any failure of one job, recorded with its traceback
        record_failure(output_dir, e, time.perf_counter() - t0)
        if isinstance(e, TftrainError) and os.environ.get("HYDRA_FULL_ERROR") != "1":
            log.error("tftrain: error: %s (run marked failed; the sweep goes on)", e)
        else:
            log.exception("Run failed (marked failed; the sweep goes on)")
        # None: Optuna marks the trial failed (it is not float-castable) without skewing its sampler
        # and goes on (hparams_search/optuna.yaml: max_failure_rate 1.0); NaN would stop it (Optuna
        # 2.10 refuses a NaN value, then a failed state with values). The basic sweeper ignores it.
        return None


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    output_dir = hydra_cfg.runtime.output_dir
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return _run_in_sweep(cfg, output_dir)
    try:
        metrics = run_task(cfg, cfg.get("output_dir") or output_dir)  # output_dir=... beats hydra.run.dir
    except TftrainError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"tftrain: error: {e}", file=sys.stderr)
        sys.exit(2)
    return _objective(cfg, metrics)


def fast_help(overrides: list[str]) -> str:
    """`--help` without Hydra's help renderer, which loads every option of every group (~1.2 s):
    the groups and their options from the config directory, and the composed config."""
    from omegaconf import OmegaConf

    from tftrain.config import compose

    root = config_dir()
    top = OmegaConf.load(root / "config.yaml")
    lines = [str(top.hydra.help.header).rstrip(), "", "== Config groups (choose one option each: group=option) =="]
    for group in sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "hydra"))):
        lines.append(f"{group}: {', '.join(sorted(q.stem for q in (root / group).glob('*.yaml')))}")
    try:
        cfg = compose(overrides)
    except Exception as e:  # a bad override: Hydra's message, as the CLI would show it
        print(f"tftrain: error: {e}", file=sys.stderr)
        sys.exit(2)
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    lines += ["", "== Config (defaults shown; override any key: key=value) ==", OmegaConf.to_yaml(cfg).rstrip(),
              "", str(top.hydra.help.footer).rstrip(), "Hydra's own help: python -m tftrain --hydra-help"]
    return "\n".join(lines)


def cli() -> None:
    """The console entry: `--help` answers fast; everything else goes to Hydra."""
    args = sys.argv[1:]
    if ("--help" in args or "-h" in args) and not any(a.startswith(("hydra", "-m", "--multirun")) for a in args):
        print(fast_help([a for a in args if a not in ("--help", "-h")]))
        return
    main()


if __name__ == "__main__":
    cli()
