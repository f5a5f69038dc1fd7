"""Schemas of the `model` group: the built-in models, a user's own, and a saved one.

The target is called as `target(input_shape, num_outputs, **keys)` and returns a keras.Model
producing raw outputs (logits). `l2` is tftrain's, for every model: it adds an L2 penalty on
every kernel of the built model, whoever built it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, List

from omegaconf import MISSING

from tftrain.errors import require
from tftrain.schema.registry import schema

# Keras activation names (checked against keras.activations by a test; not imported here,
# because validation runs before TensorFlow is loaded).
ACTIVATIONS = ("relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "silu", "swish", "mish", "tanh",
               "sigmoid", "hard_sigmoid", "softplus", "softsign", "linear")


# The keys of every model option that tftrain applies itself (never passed to the target).
OWN_KEYS = frozenset({"l2", "trainable", "unfreeze"})

_PATTERNS = "a layer-name pattern (an fnmatch glob such as logits or dense_*) or a non-empty list of them"


def _is_patterns(value) -> bool:
    values = value if isinstance(value, list) else [value]
    return bool(values) and all(isinstance(v, str) and v for v in values)


@dataclass(kw_only=True)
class ModelConf:
    _target_: str = MISSING
    l2: float = 0.0  # adds l2 * sum(kernel**2) of every kernel to the loss (gradient 2 * l2 * kernel)
    trainable: Any = None  # fine-tuning: the layers that train (a layer name or path, fnmatch globs: logits, dense_*; or a list), the rest frozen; null: as the model has them
    unfreeze: List[Any] = field(default_factory=list)  # gradual unfreezing: [{epoch: N, pattern: ...}]: from epoch N (counted from 1, as the console) these layers train too

    def __post_init__(self):
        require(self.l2 >= 0, "l2", self.l2, "a number >= 0 (0: no penalty)")
        require(self.trainable is None or _is_patterns(self.trainable), "trainable", self.trainable,
                f"null (every layer trains) or {_PATTERNS}")
        for i, stage in enumerate(self.unfreeze):
            key = f"unfreeze[{i}]"
            require(isinstance(stage, dict) and set(stage) == {"epoch", "pattern"}, key, stage,
                    "a mapping {epoch: N, pattern: ...}: from epoch N (counted from 1) the layers matching the pattern "
                    "train too", f"write it as `{{epoch: 3, pattern: dense_1}}`")
            epoch = stage["epoch"]
            require(isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 1, f"{key}.epoch", epoch,
                    "an epoch number >= 1, counted as the console counts (Epoch 1/N is the first)")
            require(_is_patterns(stage["pattern"]), f"{key}.pattern", stage["pattern"], _PATTERNS)
        require(not self.unfreeze or self.trainable is not None, "trainable", self.trainable,
                f"{_PATTERNS}: the layers that train from the first epoch, which model.unfreeze then extends",
                "set e.g. `model.trainable=logits` (or remove model.unfreeze: with model.trainable=null every layer "
                "trains from the start)")


@dataclass(kw_only=True)
class _BuiltinConf(ModelConf):
    activation: str = "relu"  # of the hidden layers: any Keras activation name (relu, gelu, tanh, swish, ...)
    batch_norm: bool = False  # BatchNormalization before each hidden activation (the layer then has no bias)
    dropout: float = 0.0  # dropout rate

    def __post_init__(self):
        super().__post_init__()
        require(self.activation in ACTIVATIONS, "activation", self.activation, f"one of {list(ACTIVATIONS)}")
        require(0 <= self.dropout < 1, "dropout", self.dropout, "a rate in [0, 1)")


def _positive_list(conf, key: str, empty_ok: bool = False) -> None:
    values = list(getattr(conf, key))
    require((empty_ok or values) and all(v > 0 for v in values), key, values,
            f"a {'' if empty_ok else 'non-empty '}list of positive integers")


@schema("model", "mlp")
@dataclass(kw_only=True)
class MlpConf(_BuiltinConf):
    _target_: str = "tftrain.models.mlp"
    hidden_units: List[int] = field(default_factory=lambda: [256, 128])  # one Dense layer each

    def __post_init__(self):
        super().__post_init__()
        _positive_list(self, "hidden_units", empty_ok=True)


@schema("model", "cnn")
@dataclass(kw_only=True)
class CnnConf(_BuiltinConf):
    _target_: str = "tftrain.models.cnn"
    filters: List[int] = field(default_factory=lambda: [32, 64])  # one block (convs, then 2x2 max pooling) each
    kernel_size: int = 3
    convs_per_block: int = 1  # 'valid' convs before each pooling
    global_pool: bool = False  # average the last feature map (true) or flatten it (false)
    dense_units: int = 0  # a hidden dense layer before the outputs (0: none)
    dropout: float = 0.5  # before the outputs

    def __post_init__(self):
        super().__post_init__()
        _positive_list(self, "filters")
        require(self.kernel_size > 0, "kernel_size", self.kernel_size, "an integer > 0")
        require(self.convs_per_block > 0, "convs_per_block", self.convs_per_block, "an integer > 0")
        require(self.dense_units >= 0, "dense_units", self.dense_units, "an integer >= 0 (0: no hidden dense layer)")


@schema("model", "resnet")
@dataclass(kw_only=True)
class ResnetConf(_BuiltinConf):
    _target_: str = "tftrain.models.resnet"
    batch_norm: bool = True
    filters: List[int] = field(default_factory=lambda: [16, 32, 64])  # one stage each; stages 2+ halve the resolution
    blocks_per_stage: int = 3  # depth 6 * blocks_per_stage + 2 with 3 stages: 3 -> ResNet-20

    def __post_init__(self):
        super().__post_init__()
        _positive_list(self, "filters")
        require(self.blocks_per_stage > 0, "blocks_per_stage", self.blocks_per_stage, "an integer > 0")


@schema("model", "custom")
@dataclass(kw_only=True)
class CustomModelConf(ModelConf):
    """Your own model function: `_target_(input_shape, num_outputs, **other keys) -> keras.Model`."""

    OPEN: ClassVar[bool] = True


@schema("model", "saved")
@dataclass(kw_only=True)
class SavedModelConf(ModelConf):
    _target_: str = "tftrain.models.saved"
    path: str = MISSING  # a .keras file (e.g. an earlier run's model.keras), loaded in Keras' safe mode
    safe_mode: bool = True  # false: a Lambda layer's Python code in the file may run (only for a file you trust)

    def __post_init__(self):
        super().__post_init__()
        require(Path(self.path).expanduser().is_file() and self.path.endswith(".keras"), "path", self.path,
                "the path of an existing .keras file (e.g. an earlier run's model.keras)",
                "pass model.path=/path/to/model.keras")
