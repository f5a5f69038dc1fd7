"""Fine-tuning: which layers train (`model.trainable`) and gradual unfreezing (`model.unfreeze`,
ULMFiT's and fastai's: more layers train from a given epoch on).

A layer is frozen the Keras way, `layer.trainable = False`: its variables leave
`model.trainable_variables` (no gradient, no update, no weight decay) and a frozen
BatchNormalization runs in inference mode (Keras 3 uses the batch's statistics only when
`training and self.trainable`), so its moving statistics stay as they were.

Patterns are fnmatch globs (case-sensitive) matched against every layer at every depth, by its
name (`dense_1`, `block3_*`) or by its path of names through nested models (`backbone/conv2d_*`);
a matched layer trains with everything inside it. They refer to the model the user built:
tftrain's preprocessing wrapper (tftrain.models.with_preprocessing: the Normalization layers
around it) is looked through, so the names are the same for `model=mlp` and for its saved
model.keras loaded with `model=saved`.

What trains in an epoch is a function of the epoch alone (`Unfreeze.patterns_at`), applied at the
start of every epoch, a resumed one included: a run resumed at epoch k trains the same layers as
an uninterrupted one. The optimizer is built for every variable that ever trains
(`Unfreeze.optimizer_variables`), so its checkpointed slots are
the same at every epoch; the Trainer retraces its step when the trainable set changes.
(Keras' Adam and its kin count their bias correction from the optimizer's step, not from a
variable's first update: a layer unfrozen late starts with moments of zero at a large step.)
"""

from __future__ import annotations

import logging
from fnmatch import fnmatchcase

import keras

log = logging.getLogger("tftrain")


def user_model(model):
    """`model` without tftrain's preprocessing wrapper: the nested model that the wrapper holds
    beside its Normalization layers (and that carries the wrapper's name); `model` otherwise."""
    inner = [layer for layer in model.layers
             if not isinstance(layer, (keras.layers.InputLayer, keras.layers.Normalization))]
    if len(inner) == 1 and isinstance(inner[0], keras.Model) and inner[0].name == model.name:
        return inner[0]
    return model


def _children(layer) -> list:
    # Keras has no public list of a custom layer's sublayers (Model.layers covers models only).
    return [c for c in layer._flatten_layers(include_self=False, recursive=False)
            if not isinstance(c, keras.layers.InputLayer)]


def named_layers(model) -> list[tuple[str, object]]:
    """Every layer inside `model` (looked through tftrain's wrapper), at every depth, parents
    before their children: (path of names, layer)."""
    out = []

    def walk(layer, prefix: str):
        for child in _children(layer):
            path = f"{prefix}{child.name}"
            out.append((path, child))
            walk(child, f"{path}/")

    walk(user_model(model), "")
    return out


def _matches(path: str, patterns) -> bool:
    name = path.rsplit("/", 1)[-1]
    return any(fnmatchcase(name, p) or fnmatchcase(path, p) for p in patterns)


def unmatched(model, patterns) -> list[str]:
    """The patterns that match no layer of `model`."""
    paths = [path for path, _ in named_layers(model)]
    return [p for p in patterns if not any(_matches(path, [p]) for path in paths)]


def set_trainable(model, patterns) -> None:
    """The layers matching `patterns` (and everything inside them) trainable, every other layer
    frozen; a nested model holding a matched layer stays trainable as a container."""
    layers = named_layers(model)
    matched = [path for path, _ in layers if _matches(path, patterns)]
    model.trainable = True  # the containers train; each layer inside is set below, parents first
    for path, layer in layers:
        inside = any(path == m or path.startswith(f"{m}/") for m in matched)
        holds = any(m.startswith(f"{path}/") for m in matched)
        layer.trainable = inside or holds


class Unfreeze(keras.callbacks.Callback):
    """At the start of each epoch, the layers that epoch trains: those matching `trainable` from
    the first epoch, and those matching a stage's patterns from the stage's epoch on. `stages`:
    (epoch counted from 1 as the console's "Epoch N/M", patterns). Stateless: the checkpoint holds
    nothing of it, a resumed epoch gets the same layers."""

    def __init__(self, trainable, stages):
        super().__init__()
        self.trainable = list(trainable)
        self.stages = sorted((int(epoch), list(patterns)) for epoch, patterns in stages)
        self._applied = self.patterns_at(1)  # as the factory leaves the model (tftrain.config.factory)

    def patterns_at(self, epoch: int) -> list[str]:
        """The patterns epoch `epoch` (counted from 1) trains."""
        return self.trainable + [p for start, patterns in self.stages if start <= epoch for p in patterns]

    def apply(self, model, epoch: int) -> None:
        """`model`'s layers as epoch `epoch` (counted from 1) trains them."""
        patterns = self.patterns_at(epoch)
        set_trainable(model, patterns)
        if patterns != self._applied:  # a stage starts (or a resumed run is past one)
            log.info("Unfreezing at epoch %d (model.unfreeze): %d trainable weight tensors now, the layers matching %s",
                     epoch, len(model.trainable_variables), patterns)
        self._applied = patterns

    def last_epoch(self) -> int:
        return max([1] + [start for start, _ in self.stages])

    def optimizer_variables(self, model) -> list:
        """Every variable some epoch trains, in the model's order (what Keras builds the optimizer
        of a loaded model.keras on: its saved trainable ones, `on_train_end`); `model` is left as
        the first epoch trains it."""
        set_trainable(model, self.patterns_at(self.last_epoch()))
        variables = list(model.trainable_variables)
        set_trainable(model, self.patterns_at(1))
        return variables

    def on_train_end(self, logs=None):
        # model.keras marks trainable every layer this run trains (its optimizer's variables), also
        # when it stopped before the last stage.
        set_trainable(self.model, self.patterns_at(self.last_epoch()))

    def on_epoch_begin(self, epoch, logs=None):
        self.apply(self.model, epoch + 1)  # Keras counts epochs from 0
