"""Data sources and the tf.data pipelines that feed the training loop.

`build_datasets(source, ...) -> Datasets` is the entry point (tftrain/data/pipeline.py has the
design); the sources (tftrain/data/sources.py, streams.py) are what the `data` options'
`_target_`s name. Names load on first use, so the config schemas can import the light
`tftrain.data.files` without TensorFlow.
"""

import importlib

_EXPORTS = {
    "build_datasets": "pipeline", "Datasets": "pipeline", "Pipeline": "pipeline",
    "Splits": "sources", "check_splits": "sources", "keras_home": "sources",
    "KERAS_DATASETS": "sources", "Stream": "streams", "StreamSource": "streams",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):  # PEP 562
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"tftrain.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'tftrain.data' has no attribute {name!r}")
