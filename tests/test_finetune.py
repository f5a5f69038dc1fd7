"""Fine-tuning: `model.trainable` (the rest frozen, BatchNorm included) and gradual unfreezing
(`model.unfreeze`), with exact resume."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import compose_small, crash_at, metrics_of, same_numbers

import tftrain
from tftrain.errors import ConfigError, ResumeRefused

# Weights of every layer, by path, as `Record` saw them: {key: [("begin" | epoch, {path: [arrays]})]}.
SNAPSHOTS: dict[str, list] = {}


class Record:
    """A Keras callback (through `callbacks.extra`) keeping every layer's weights at the start of
    training and at each epoch's end in SNAPSHOTS[key]."""

    def __new__(cls, key: str):
        import keras

        from tftrain.loop.unfreeze import named_layers

        def weights(model):
            return {path: [w.numpy().copy() for w in layer.weights] for path, layer in named_layers(model)}

        class _Record(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                SNAPSHOTS[key] = [("begin", weights(self.model))]

            def on_epoch_end(self, epoch, logs=None):
                SNAPSHOTS[key].append((epoch, weights(self.model)))

        return _Record()


def _same(a: list, b: list) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


TWO_LAYERS = ("model.hidden_units=[16,16]", "model.trainable=logits", "model.unfreeze=[{epoch: 2, pattern: dense_1}]")


def test_a_saved_model_fine_tunes_with_frozen_layers_and_frozen_batch_norm_statistics(tmp_path):
    """model=saved through the preprocessing wrapper of an earlier run's model.keras: the patterns
    name the layers of the model it built. A frozen BatchNormalization keeps its moving statistics
    (inference mode), a trainable one updates them."""
    import keras

    from tftrain.loop.unfreeze import user_model

    data = ("data=digits", "trainer.batch_size=64", "trainer.epochs=1")
    tftrain.train(compose_small(*data, "model.hidden_units=[16,16]", "model.batch_norm=true"), tmp_path / "base")
    base = tmp_path / "base" / "model.keras"
    tftrain.train(compose_small(*data, "model=saved", f"model.path={base}",
                                "model.trainable=[logits,batch_normalization_1]"), tmp_path / "tuned")
    before = user_model(keras.models.load_model(base))
    after = user_model(keras.models.load_model(tmp_path / "tuned" / "model.keras"))
    assert after.layers[0].name != "normalize_inputs" and before.name == "mlp"  # looked through the wrapper

    def weights(model, name):
        return [w.numpy() for w in model.get_layer(name).weights]

    for frozen in ("dense", "batch_normalization", "dense_1"):  # moving_mean/variance of the first BN too
        assert _same(weights(before, frozen), weights(after, frozen)), frozen
    bn = {w.path.rsplit("/", 1)[-1]: w.numpy() for w in after.get_layer("batch_normalization_1").weights}
    bn_before = {w.path.rsplit("/", 1)[-1]: w.numpy() for w in before.get_layer("batch_normalization_1").weights}
    assert not np.array_equal(bn["moving_mean"], bn_before["moving_mean"])
    assert not np.array_equal(bn["gamma"], bn_before["gamma"])
    assert not np.array_equal(weights(after, "logits")[0], weights(before, "logits")[0])
    assert not after.get_layer("dense").trainable and after.get_layer("logits").trainable


@pytest.mark.slow
def test_a_layer_unfrozen_at_epoch_2_trains_from_then_on_and_a_killed_run_resumes_exactly(tmp_path):
    import keras

    args = (*TWO_LAYERS, "trainer.epochs=3")
    record = "callbacks.extra=[{_target_: test_finetune.Record, key: unfreeze}]"
    whole = tftrain.train(compose_small(*args, record), tmp_path / "whole")
    (_, begin), (_, first), (_, second), _ = SNAPSHOTS["unfreeze"]
    assert _same(begin["dense"], first["dense"]) and _same(first["dense"], second["dense"])  # never trains
    assert _same(begin["dense_1"], first["dense_1"])  # frozen in "epoch 1/3"
    assert not np.array_equal(first["dense_1"][0], second["dense_1"][0])  # trains from "epoch 2/3"
    assert not np.array_equal(begin["logits"][0], first["logits"][0])
    saved = keras.models.load_model(tmp_path / "whole" / "model.keras")  # its optimizer built on the trainable layers
    assert [(layer.name, layer.trainable) for layer in saved.layers[1:]] == \
        [("flatten", False), ("dense", False), ("dense_1", True), ("logits", True)]
    assert int(saved.optimizer.iterations.numpy()) == 24

    with pytest.raises(KeyboardInterrupt):  # end of epoch 3, before its checkpoint: resumes after epoch 2
        tftrain.train(compose_small(*args, crash_at(2)), tmp_path / "killed")
    resumed = tftrain.train(compose_small(*args), tmp_path / "killed")
    same_numbers(whole, resumed)  # weights_fingerprint included
    same_numbers(whole, metrics_of(tmp_path / "killed"))
    with pytest.raises(ResumeRefused, match=r"model\.unfreeze"):
        tftrain.train(compose_small(*args[:2], "model.unfreeze=[{epoch: 3, pattern: dense_1}]", "trainer.epochs=4"),
                      tmp_path / "killed")


def test_a_pattern_that_matches_no_layer_is_one_paragraph_naming_the_key_and_the_layers(tmp_path):
    from tftrain.cli.main import exit_status

    with pytest.raises(ConfigError) as e:
        tftrain.train(compose_small("model.trainable=[logits,Dense*]"), tmp_path / "one")
    said = str(e.value)
    assert said.startswith("Invalid config `model.trainable`: received 'Dense*'") and "\n" not in said
    assert "its layers: flatten, dense, logits. Fix:" in said  # the names of the model built, not the wrapper's
    assert exit_status(e.value) == 2
    with pytest.raises(ConfigError, match=r"`model.unfreeze\[1\].pattern`: received 'conv\*'.*its layers: flatten, "
                                          r"dense, logits"):
        tftrain.train(compose_small("model.trainable=logits",
                                    "model.unfreeze=[{epoch: 2, pattern: dense}, {epoch: 3, pattern: 'conv*'}]"),
                      tmp_path / "two")


@pytest.mark.parametrize("keys, key", [
    ({"trainable": []}, "trainable"),
    ({"trainable": 3}, "trainable"),
    ({"unfreeze": [{"epoch": 2, "pattern": "dense"}]}, "trainable"),  # nothing frozen to unfreeze
    ({"trainable": "logits", "unfreeze": [{"epoch": 0, "pattern": "dense"}]}, r"unfreeze\[0\].epoch"),
    ({"trainable": "logits", "unfreeze": [{"epoch": 2, "pattern": ""}]}, r"unfreeze\[0\].pattern"),
    ({"trainable": "logits", "unfreeze": [{"epoch": 2, "layers": "dense"}]}, r"unfreeze\[0\]"),
])
def test_bad_fine_tuning_settings_are_refused_naming_the_key(keys, key):
    from tftrain.schema.model import MlpConf
    from tftrain.schema.validate import check_node

    with pytest.raises(ConfigError, match=rf"Invalid config `model.{key}`"):
        check_node("model", keys, MlpConf)
    check_node("model", {"trainable": ["logits", "dense*"], "unfreeze": [{"epoch": 2, "pattern": ["dense"]}]}, MlpConf)


def test_patterns_match_names_and_paths_at_every_depth():
    import keras

    from tftrain.loop.unfreeze import set_trainable, unmatched

    inputs = keras.Input((4,))
    inner_in = keras.Input((4,))
    backbone = keras.Model(inner_in, keras.layers.Dense(3, name="b1")(keras.layers.Dense(3, name="b0")(inner_in)),
                           name="backbone")
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(backbone(inputs)), name="net")
    set_trainable(model, ["backbone/b1", "head"])
    assert [v.path for v in model.trainable_variables] == ["b1/kernel", "b1/bias", "head/kernel", "head/bias"]
    assert backbone.trainable and not backbone.get_layer("b0").trainable
    set_trainable(model, ["backbone"])  # a matched model trains whole
    assert [v.path for v in model.trainable_variables] == ["b0/kernel", "b0/bias", "b1/kernel", "b1/bias"]
    assert unmatched(model, ["b?", "nothing", "backbone/*"]) == ["nothing"]
