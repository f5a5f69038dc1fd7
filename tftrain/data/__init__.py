"""Data sets and the tf.data pipelines that feed the training loop.

`build_datasets(cfg.data, cfg.trainer, strategy) -> Datasets` is the entry point; `LOADERS` maps
each `data.name` to its loader. See tftrain/data/pipeline.py for the design.
"""

from tftrain.data.arrays import KERAS_DATASETS, Splits, check_splits, keras_home, load_data
from tftrain.data.pipeline import LOADERS, Datasets, build_datasets
from tftrain.data.streams import Stream, StreamSource

__all__ = ["build_datasets", "Datasets", "LOADERS", "Splits", "Stream", "StreamSource", "load_data",
           "check_splits", "keras_home", "KERAS_DATASETS"]
