"""`python -m tftrain [overrides]`: a thin Hydra shell around the task `task.name` names."""

from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig

from tftrain.config import config_dir
from tftrain.errors import TftrainError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of the log


def _task(name: str):
    # Imported on use so --help and --cfg job never load TensorFlow.
    if name == "train":
        from tftrain.train import train

        return train
    raise TftrainError(f"Unknown task {name!r}")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    try:
        metrics = _task(cfg.task.name)(cfg, output_dir=HydraConfig.get().runtime.output_dir)
    except TftrainError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"tftrain: error: {e}", file=sys.stderr)
        sys.exit(2)
    return metrics.get(cfg.trainer.objective)


if __name__ == "__main__":
    main()
