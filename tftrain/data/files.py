"""What file-backed data options share with their schemas: path patterns and image colour modes.

Light on purpose (no TensorFlow): the config schemas import it to check paths before training.
"""

from __future__ import annotations

import glob
import os

# keras.utils.image_dataset_from_directory's colour modes -> channels
COLOR_MODES = {"grayscale": 1, "rgb": 3, "rgba": 4}


def expand_paths(pattern: str) -> list[str]:
    """The files a path or glob pattern (`data/train-*.csv`, `~/d/*.tfrecord`) names, sorted."""
    pattern = os.path.expanduser(str(pattern))
    if glob.has_magic(pattern):
        return sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
    return [pattern] if os.path.isfile(pattern) else []
