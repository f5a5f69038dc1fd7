"""Regularization options proven by their effect through `tftrain.train`: gradient clipping
(clipvalue, clipnorm, global_clipnorm), decoupled weight decay, the EMA of the weights, the
models' l2 penalty, and early stopping with best-model checkpointing.

The optimizer runs share one setup: plain SGD, 2 deterministic steps, a checkpoint after each
step. With SGD the first update is exactly `w1 - w0 = -lr * transformed(grad(w0))`, so each
option's transformation can be checked exactly against a run without it.
"""

from __future__ import annotations

import numpy as np
import pytest

import keras
import tftrain
from tftrain.schema import validate

from conftest import compose_small

LR, CLIP = 0.5, 1e-3
SGD = ("optimizer=sgd", f"optimizer.lr={LR}", "trainer.batch_size=128", "trainer.epochs=1",
       "trainer.deterministic=true", "trainer.checkpoint_every_steps=1", "logger=[]")


def _fresh_model(cfg):
    from tftrain.config.factory import build_data, build_model

    data = build_data(cfg)
    return build_model(cfg, data.input_shape, data.num_outputs)


def _val_arrays(cfg):
    from tftrain.config.factory import build_data

    batches = list(build_data(validate(cfg)).val)
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])


def _run(tmp_path_factory, *overrides):
    """Train; return the weights at step 0 (rebuilt: same seeds, same weights), step 1 (checkpoint)
    and at the end (model.keras, which holds the EMA weights when use_ema is on)."""
    import tensorflow as tf

    run_dir = tmp_path_factory.mktemp("run")
    cfg = compose_small(*SGD, *overrides)
    metrics = tftrain.train(cfg, output_dir=run_dir)
    assert metrics["steps"] == 2
    cfg = validate(cfg)
    w0 = _fresh_model(cfg).get_weights()
    step1 = _fresh_model(cfg)
    tf.train.Checkpoint(model=step1).read(str(run_dir / "checkpoints" / "ckpt-1")).expect_partial()
    final = keras.models.load_model(run_dir / "model.keras")
    return [np.asarray(w, "float64") for w in w0], [np.asarray(w, "float64") for w in step1.get_weights()], \
        [np.asarray(w, "float64") for w in final.get_weights()]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    return _run(tmp_path_factory)


def _first_update(run):
    w0, w1, _ = run
    return [b - a for a, b in zip(w0, w1)]


def _global_norm(arrays):
    return float(np.sqrt(sum(np.sum(a ** 2) for a in arrays)))


def test_unclipped_baseline_moves_far_more_than_the_clipping_bounds(baseline):
    update = _first_update(baseline)
    assert min(np.linalg.norm(u) for u in update) > 10 * LR * CLIP
    assert max(np.abs(u).max() for u in update) > 10 * LR * CLIP


def test_clipvalue_bounds_every_element_of_the_update(baseline, tmp_path_factory):
    run = _run(tmp_path_factory, f"optimizer.clipvalue={CLIP}")
    update = _first_update(run)
    assert max(np.abs(u).max() for u in update) == pytest.approx(LR * CLIP, rel=1e-3)
    # Elements whose gradient is inside the bound move exactly as without clipping.
    for u, b in zip(update, _first_update(baseline)):
        inside = np.abs(b) < 0.5 * LR * CLIP
        np.testing.assert_allclose(u[inside], b[inside], rtol=1e-3, atol=1e-7)  # float32 weights: ~3e-8 resolution
    w0, _, final = run
    assert max(np.abs(b - a).max() for a, b in zip(w0, final)) <= 2 * LR * CLIP * (1 + 1e-3)


def test_clipnorm_bounds_each_tensors_update_norm(baseline, tmp_path_factory):
    update = _first_update(_run(tmp_path_factory, f"optimizer.clipnorm={CLIP}"))
    for u, b in zip(update, _first_update(baseline)):
        # Every tensor's gradient norm exceeds CLIP here (see the baseline test): all are rescaled to it,
        # each keeping its direction.
        assert np.linalg.norm(u) == pytest.approx(LR * CLIP, rel=1e-3)
        np.testing.assert_allclose(u / np.linalg.norm(u), b / np.linalg.norm(b), atol=1e-4)
    assert _global_norm(update) > 1.5 * LR * CLIP  # per tensor, not global


def test_global_clipnorm_bounds_the_norm_of_the_whole_update(baseline, tmp_path_factory):
    update = _first_update(_run(tmp_path_factory, f"optimizer.global_clipnorm={CLIP}"))
    assert _global_norm(update) == pytest.approx(LR * CLIP, rel=1e-3)
    base = _first_update(baseline)
    scale = _global_norm(update) / _global_norm(base)  # one factor for all tensors
    for u, b in zip(update, base):
        np.testing.assert_allclose(u, scale * b, rtol=1e-3, atol=1e-7)  # float32 weights: ~3e-8 resolution


def test_weight_decay_shrinks_the_weights(baseline, tmp_path_factory):
    wd = 0.2
    decayed = _run(tmp_path_factory, f"optimizer.weight_decay={wd}")
    w0, base_w1, base_final = baseline
    # Decoupled: w1 = w0 - lr * grad(w0) - lr * wd * w0, i.e. the plain step plus a pull toward 0.
    for a, b, d in zip(w0, base_w1, decayed[1]):
        np.testing.assert_allclose(d, b - LR * wd * a, rtol=1e-4, atol=1e-7)
    assert _global_norm(decayed[2]) < 0.9 * _global_norm(base_final)


def test_ema_weights_are_evaluated_and_saved_instead_of_the_raw_ones(baseline, tmp_path_factory):
    momentum = 0.9
    _, _, ema_final = _run(tmp_path_factory, "optimizer.use_ema=true", f"optimizer.ema_momentum={momentum}")
    _, w1, w2 = baseline  # the EMA run's raw weights: the EMA does not change the trajectory
    # Keras starts the average at the first step's weights: ema = m * w1 + (1 - m) * w2 after step 2.
    for e, a, b in zip(ema_final, w1, w2):
        np.testing.assert_allclose(e, momentum * a + (1 - momentum) * b, rtol=1e-4, atol=1e-7)
    assert _global_norm([e - b for e, b in zip(ema_final, w2)]) > 0.1 * _global_norm([b - a for a, b in zip(w1, w2)])


def test_early_stopping_stops_restores_the_best_weights_and_saves_best_keras(tmp_path):
    # Adam at lr 3 makes the validation loss worse from the second epoch on; patience 0 stops there.
    cfg = compose_small("callbacks=early_stopping", "callbacks.early_stopping.patience=0", "optimizer.lr=3.0",
                        "trainer.epochs=6", "trainer.deterministic=true", "logger=[]")
    metrics = tftrain.train(cfg, output_dir=tmp_path)
    history = metrics["history"]
    assert metrics["stopped_early"] and metrics["epochs"] == 2 < 6
    assert history["val_loss"][1] > history["val_loss"][0]
    x_val, y_val = _val_arrays(cfg)
    # model.keras holds the weights of the epoch with the lowest val_loss (restore_best_weights) ...
    final = keras.models.load_model(tmp_path / "model.keras").evaluate(x_val, y_val, verbose=0, return_dict=True)
    assert final["loss"] == pytest.approx(min(history["val_loss"]), rel=1e-4)
    # ... best.keras those of the best val_accuracy (best_checkpoint's monitor).
    best = keras.models.load_model(tmp_path / "best.keras").evaluate(x_val, y_val, verbose=0, return_dict=True)
    assert best["accuracy"] == pytest.approx(max(history["val_accuracy"]), abs=1e-6)


def test_model_l2_penalizes_the_kernels_only(baseline, tmp_path_factory):
    l2 = 0.1
    penalized = _run(tmp_path_factory, f"model.l2={l2}")
    w0, base_w1, _ = baseline
    # l2 * sum(w**2) per kernel adds 2 * l2 * w to its gradient; biases are not penalized.
    kernels = [w.ndim == 2 for w in w0]
    assert kernels == [True, False, True, False]
    for a, b, p, kernel in zip(w0, base_w1, penalized[1], kernels):
        np.testing.assert_allclose(p, b - LR * 2 * l2 * a if kernel else b, rtol=1e-4, atol=1e-7)
