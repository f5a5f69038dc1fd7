"""Parameter groups (tftrain.optim.param_groups; `optimizer.weight_decay_on`, `lr_multipliers`,
`layer_decay`): a variable at multiplier m updates exactly as at rate lr * m, for SGD, momentum,
Adam and AdamW (decay included) on 1 replica, and AdamW on 2; kernels-only decay spares biases
and normalization parameters; layer_decay's factors follow the model's order; exact resume holds."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

import tftrain
from conftest import ROOT, compose_small, crash_at, metrics_of, same_numbers
from tftrain.errors import ConfigError
from tftrain.schema import validate


def _model():
    import keras

    keras.utils.set_random_seed(0)  # every call: the same initial weights
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="hidden"),
                             keras.layers.BatchNormalization(name="norm"), keras.layers.Dense(4, name="hidden_2"),
                             keras.layers.Dense(2, name="logits")])


def _optimizer(kind: str, lr: float):
    import keras

    return {"sgd": lambda: keras.optimizers.SGD(lr),
            "momentum": lambda: keras.optimizers.SGD(lr, momentum=0.9),
            "adam": lambda: keras.optimizers.Adam(lr),
            "adamw": lambda: keras.optimizers.AdamW(lr, weight_decay=0.5)}[kind]()


def _updated(optimizer, model, grads, strategy=None) -> dict:
    """The model's trainable variables after applying `grads` (one list per step) in a tf.function,
    in each replica's context as the Trainer does (Keras sums the replicas' gradients)."""
    import tensorflow as tf

    variables = model.trainable_variables
    optimizer.build(variables)
    strategy = strategy or tf.distribute.get_strategy()
    # tf.identity: each replica's own copy, as a gradient computed in the replica is (a tensor
    # from outside the replica has no device to all-reduce from).
    step = tf.function(lambda g: strategy.run(lambda: optimizer.apply([tf.identity(x) for x in g], variables)))
    for g in grads:
        step(g)
    return _values(model)


def _values(model) -> dict:
    """{layer/variable: value}: a Sequential's paths start with its own (numbered) name."""
    return {"/".join(v.path.split("/")[-2:]): v.numpy() for v in model.trainable_variables}


def _grads(model, steps: int, scale: float = 1.0) -> list:
    rng = np.random.default_rng(1)
    return [[scale * rng.normal(size=v.shape).astype("float32") for v in model.trainable_variables]
            for _ in range(steps)]


KINDS = ["sgd", "momentum", "adam", "adamw"]


def check_multiplier(kind: str, strategy=None, others: bool = True) -> None:
    """With multiplier m on `hidden`, its variables end as at rate lr * m (to 1e-6), and (`others`)
    the other variables as at rate lr (bit for bit), after 4 steps of the same gradients (models
    made in `strategy`'s scope)."""
    import tensorflow as tf

    from tftrain.optim.param_groups import apply_param_groups

    strategy = strategy or tf.distribute.get_strategy()
    lr, m = 0.1, 0.3
    with strategy.scope():
        grads = _grads(_model(), steps=4)
        grouped_model, grouped = _model(), _optimizer(kind, lr)
        apply_param_groups(grouped, grouped_model, lr_multipliers={"hidden/*": m})
        with_groups = _updated(grouped, grouped_model, grads, strategy)
        at_lr = _updated(_optimizer(kind, lr), _model(), grads, strategy) if others else None
        at_scaled = _updated(_optimizer(kind, lr * m), _model(), grads, strategy)
        start = _values(_model())
    for path in with_groups:
        if path.startswith("hidden/"):  # AdamW's decay too follows the variable's rate
            np.testing.assert_allclose(with_groups[path], at_scaled[path], rtol=0, atol=1e-6, err_msg=path)
            assert not np.allclose(with_groups[path], start[path], rtol=0, atol=1e-4), path
        elif others:  # at factor 1 the update is Keras' own, bit for bit
            np.testing.assert_array_equal(with_groups[path], at_lr[path], err_msg=path)
            assert not np.array_equal(with_groups[path], start[path]), path


@pytest.mark.parametrize("kind", KINDS)
def test_a_multiplier_gives_the_update_at_the_scaled_rate(kind):
    check_multiplier(kind)


def test_a_zero_multiplier_freezes_a_variable_even_under_weight_decay():
    from tftrain.optim.param_groups import apply_param_groups

    model, optimizer = _model(), _optimizer("adamw", 0.1)
    start = _values(model)
    apply_param_groups(optimizer, model, lr_multipliers={"logits/kernel": 0})
    after = _updated(optimizer, model, _grads(model, steps=2))
    np.testing.assert_array_equal(after["logits/kernel"], start["logits/kernel"])
    assert not np.array_equal(after["logits/bias"], start["logits/bias"])


# optimizer option and overrides -> whether biases and normalization scales/offsets decay
DECAY_CASES = {
    "adamw": (["optimizer=adamw"], False),  # its default: kernels
    "sgd": (["optimizer=sgd", "optimizer.weight_decay=0.004"], True),  # its default: all (Keras' rule)
    "sgd-kernels-mixed16": (["optimizer=sgd", "optimizer.weight_decay=0.004", "optimizer.weight_decay_on=kernels",
                             "trainer.mixed_precision=mixed_float16"], False),
    "muon": (["optimizer=muon"], False),
}


@pytest.mark.parametrize("case", list(DECAY_CASES))
def test_weight_decay_on_kernels_spares_biases_and_normalization(case):
    import keras

    from tftrain.config.factory import build_optimizer

    overrides, others_decay = DECAY_CASES[case]
    lr = 0.5
    cfg = validate(compose_small(*overrides, f"optimizer.lr={lr}"))
    model = _model()
    for v in model.trainable_variables:  # nothing at 0, so a decay shows everywhere
        v.assign(v.numpy() + 1.0)
    start = _values(model)
    optimizer = build_optimizer(cfg, lr, model)
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer) == case.endswith("mixed16")
    # Zero gradients: every change is the decoupled decay, w -= lr * weight_decay * w.
    after = _updated(optimizer, model, _grads(model, steps=1, scale=0.0))
    kept = 1 - lr * cfg.optimizer.weight_decay
    for path, value in after.items():
        if path.endswith("kernel") or others_decay:
            np.testing.assert_allclose(value, start[path] * kept, rtol=1e-6, err_msg=path)
        else:
            np.testing.assert_array_equal(value, start[path], err_msg=path)


def test_layer_decay_counts_layers_from_the_output_and_multipliers_multiply():
    from tftrain.optim.param_groups import rate_factors

    factors = rate_factors(_model(), {"logits/*": 2.0, "*kernel": 3.0}, layer_decay=0.5)
    factors = {"/".join(p.split("/")[-2:]): f for p, f in factors.items()}
    # hidden, hidden_2, logits: three layers; the BatchNormalization shares the depth of `hidden`.
    assert factors == {"hidden/kernel": 0.25 * 3, "hidden/bias": 0.25, "norm/gamma": 0.25, "norm/beta": 0.25,
                       "hidden_2/kernel": 0.5 * 3, "hidden_2/bias": 0.5, "logits/kernel": 2.0 * 3, "logits/bias": 2.0}


def test_layer_decay_sees_the_layers_of_the_model_inside_the_preprocessing_wrapper():
    from tftrain.config.factory import build_model
    from tftrain.optim.param_groups import layer_depths

    cfg = validate(compose_small("model.hidden_units=[8,4]", "model.batch_norm=true"))
    model = build_model(cfg, (3,), 2, {"offset": [0.0] * 3, "scale": [1.0] * 3})
    assert model.layers[1].name == "normalize_inputs"  # the core model is nested in the wrapper
    depths = layer_depths(model)
    assert sorted(set(depths.values())) == [0, 1, 2]
    assert [d for p, d in depths.items() if p.endswith("gamma")] == [2, 1]  # each BN with its Dense
    assert [p for p, d in depths.items() if d == 0] == ["logits/kernel", "logits/bias"]


@pytest.mark.parametrize("override, key", [
    ("++optimizer.lr_multipliers={logits/*:-1}", "optimizer.lr_multipliers.logits/*"),
    ("++optimizer.lr_multipliers={logits/*:inf}", "optimizer.lr_multipliers.logits/*"),
    ("optimizer.layer_decay=1.5", "optimizer.layer_decay"),
    ("optimizer.layer_decay=0", "optimizer.layer_decay"),
    ("optimizer.weight_decay_on=bias", "optimizer.weight_decay_on"),
])
def test_bad_factors_name_their_key(override, key):
    with pytest.raises(ConfigError, match=re.escape(f"Invalid config `{key}`")):
        validate(compose_small(override))


def test_a_pattern_that_matches_no_variable_is_one_paragraph_listing_the_paths(tmp_path):
    from tftrain.cli.main import exit_status

    with pytest.raises(ConfigError) as e:
        tftrain.train(compose_small("++optimizer.lr_multipliers={head/*:0.1}"), output_dir=tmp_path)
    said = str(e.value)
    assert said.startswith("Invalid config `optimizer.lr_multipliers`: received 'head/*'") and "\n" not in said
    # Keras numbers layer names per process: dense, dense_1, ...
    assert re.search(r"the model's are: (dense\w*)/kernel, \1/bias, logits/kernel, logits/bias\. Fix:", said), said
    assert exit_status(e.value) == 2


TWO_REPLICAS = """
import sys
sys.path.insert(0, {tests!r})
from tftrain.loop.distribute import configure_cpu_devices
configure_cpu_devices(2)
import tensorflow as tf
import test_param_groups as t
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
for kind in t.KINDS:  # SGD, momentum, Adam, and AdamW's decay
    t.check_multiplier(kind, strategy, others=False)  # factor 1 bit for bit: in-process
print("checked", ", ".join(t.KINDS), "on", strategy.num_replicas_in_sync, "replicas")
"""


@pytest.mark.slow
def test_a_multiplier_gives_the_update_at_the_scaled_rate_under_two_replicas():
    import os
    import subprocess

    result = subprocess.run([sys.executable, "-c", TWO_REPLICAS.format(tests=str(ROOT / "tests"))],
                            capture_output=True, text=True, timeout=300, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "checked sgd, momentum, adam, adamw on 2 replicas" in result.stdout


@pytest.mark.slow
def test_a_killed_run_with_multipliers_resumes_exactly_and_saves_a_loadable_model(tmp_path, caplog):
    import keras

    args = ("optimizer=momentum", "trainer.epochs=2", "optimizer.layer_decay=0.5", "trainer.checkpoint_every_steps=3",
            "++optimizer.lr_multipliers={logits/bias:0}", "trainer.deterministic=true")
    whole = tftrain.train(compose_small(*args), output_dir=tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):  # after epoch 1's 8 steps, before its checkpoint
        tftrain.train(compose_small(*args, crash_at(0)), output_dir=tmp_path / "killed")
    with caplog.at_level("INFO", logger="tftrain"):
        resumed = tftrain.train(compose_small(*args), output_dir=tmp_path / "killed")
    assert re.search(r"Resumed from \S+ at step 6 \(epoch 1\)", caplog.text), caplog.text[-2000:]
    same_numbers(whole, resumed)
    same_numbers(whole, metrics_of(tmp_path / "killed"))
    model = keras.models.load_model(tmp_path / "killed" / "model.keras")
    assert type(model.optimizer) is keras.optimizers.SGD and model.optimizer.momentum == 0.9
    np.testing.assert_array_equal(model.get_layer("logits").bias.numpy(), 0.0)  # multiplier 0: never moved


def test_groups_cover_the_layers_a_later_epoch_unfreezes():
    """With model.trainable/model.unfreeze, the groups are made for every variable some epoch trains:
    a layer thawed at epoch 2 keeps its bias out of kernels-only decay and has its layer_decay factor."""
    from tftrain.config.factory import build_model, build_optimizer, build_unfreeze

    cfg = validate(compose_small("optimizer=adamw", "optimizer.lr=0.5", "model.hidden_units=[8]",
                                 "model.trainable=logits", "model.unfreeze=[{epoch: 2, pattern: '*'}]"))
    model = build_model(cfg, (3,), 2)
    hidden = [v for v in model.variables if not v.path.startswith("logits/")]
    assert hidden and not any(v.trainable for v in hidden)  # frozen for epoch 1
    optimizer = build_optimizer(cfg, 0.5, model)
    variables = build_unfreeze(cfg, model).optimizer_variables(model)
    for v in model.variables:
        v.trainable = True  # epoch 2: everything trains
        v.assign(v.numpy() + 1.0)
    start = {v.path: v.numpy() for v in variables}
    optimizer.build(variables)
    optimizer.apply([np.zeros(v.shape, "float32") for v in variables], variables)
    kept = 1 - 0.5 * cfg.optimizer.weight_decay
    for v in variables:
        expected = start[v.path] * kept if v.path.endswith("kernel") else start[v.path]
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-6, err_msg=v.path)


def test_learning_rate_free_optimizers_take_the_groups_and_prodigy_refuses_a_partial_rate():
    """Prodigy and D-Adapt Adam step in two passes (no per-variable update_step): the factory hands
    them the factors. A factor of 0 freezes a variable; Prodigy takes 0 or 1 only (as its authors)."""
    from tftrain.config.factory import build_model, build_optimizer

    for option in ("prodigy", "dadapt_adam"):
        cfg = validate(compose_small(f"optimizer={option}", "model.hidden_units=[8]",
                                     "++optimizer.lr_multipliers={logits/bias: 0}"))
        model = build_model(cfg, (3,), 2)
        optimizer = build_optimizer(cfg, 1.0, model)
        before = {v.path: v.numpy() for v in model.trainable_variables}
        _updated(optimizer, model, _grads(model, 3))
        after = {v.path: v.numpy() for v in model.trainable_variables}
        moved = {p for p in before if not np.array_equal(before[p], after[p])}
        frozen = [p for p in before if p.endswith("logits/bias")]
        assert frozen and not moved & set(frozen) and moved, (option, moved)
    cfg = validate(compose_small("optimizer=prodigy", "model.hidden_units=[8]", "optimizer.layer_decay=0.5"))
    model = build_model(cfg, (3,), 2)
    with pytest.raises(ConfigError, match=r"optimizer.layer_decay.*0 or 1 with Prodigy"):
        build_optimizer(cfg, 1.0, model)
