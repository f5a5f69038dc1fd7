"""Small data: every training example is used every epoch (a last partial batch), and resuming
mid-epoch replays exactly the rest of the epoch, partial batch included."""

from __future__ import annotations

import numpy as np
import pytest

import tftrain
from tftrain.schema import validate

tf = pytest.importorskip("tensorflow")

from tftrain.config.factory import build_data  # noqa: E402


def test_100_rows_at_batch_64_are_two_steps_covering_every_example(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(140, 3)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    np.savez(tmp_path / "d.npz", x_train=x[:100], y_train=y[:100], x_val=x[100:120], y_val=y[100:120],
             x_test=x[120:], y_test=y[120:])
    ds = build_data(validate(tftrain.compose(["data=npz", f"data.path={tmp_path / 'd.npz'}",
                                              "trainer.batch_size=64"])))
    epoch = [(xb.numpy(), yb.numpy()) for xb, yb in ds.train(0)]
    assert ds.steps_per_epoch == 2 and [len(b) for _, b in epoch] == [64, 36]
    seen = np.concatenate([xb for xb, _ in epoch])
    assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, x[:100].tolist()))
    resumed = [xb.numpy() for xb, _ in ds.train(0, 1)]
    assert len(resumed) == 1 and np.array_equal(resumed[0], epoch[1][0])


def _rows(tmp_path, n_train=100):
    """An npz of `n_train` training rows (4 features, 3 classes) and 20 + 20 held-out ones."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n_train + 40, 4)).astype("float32")
    y = (np.argmax(x[:, :3], axis=1)).astype("int64")
    path = tmp_path / "rows.npz"
    np.savez(path, x_train=x[:n_train], y_train=y[:n_train], x_val=x[n_train:n_train + 20],
             y_val=y[n_train:n_train + 20], x_test=x[n_train + 20:], y_test=y[n_train + 20:])
    return path


def _small(path, *overrides):
    return ["data=npz", f"data.path={path}", "model.hidden_units=[8]", "trainer.batch_size=64", "trainer.verbose=0",
            "trainer.steps_per_execution=1", *overrides]


def test_drop_remainder_gives_only_full_batches(tmp_path):
    path = _rows(tmp_path)
    ds = build_data(validate(tftrain.compose(_small(path, "data.drop_remainder=true"))))
    assert ds.steps_per_epoch == 1
    assert [len(yb) for _, yb in ds.train(0)] == [64]
    # The default keeps every example: 2 steps, the second of the 36 left.
    ds = build_data(validate(tftrain.compose(_small(path))))
    assert ds.steps_per_epoch == 2 and [len(yb) for _, yb in ds.train(0)] == [64, 36]


def test_the_partial_batch_loss_is_the_mean_over_its_real_examples(tmp_path):
    """SGD at a rate too small to change a float32 weight: the model after training is the one
    each step saw, so the trainer's loss for the second (partial) step can be computed by hand."""
    import csv

    import keras

    path = _rows(tmp_path)
    overrides = _small(path, "optimizer=sgd", "optimizer.lr=1e-30", "trainer.epochs=1", "logger=csv",
                       "logger.csv.update_freq=1", "data.normalize=null")
    tftrain.train(tftrain.compose(overrides), output_dir=tmp_path / "run")
    with open(tmp_path / "run" / "steps.csv", newline="") as f:
        reported = {int(r["step"]): float(r["batch_loss"]) for r in csv.DictReader(f)}
    model = keras.models.load_model(tmp_path / "run" / "model.keras")
    batches = [(xb.numpy(), yb.numpy()) for xb, yb in build_data(validate(tftrain.compose(overrides))).train(0)]
    assert [len(yb) for _, yb in batches] == [64, 36]
    per_example = [keras.losses.sparse_categorical_crossentropy(yb, model.predict(xb, verbose=0), from_logits=True)
                   .numpy() for xb, yb in batches]
    assert sorted(reported) == [0, 1]  # steps.csv counts steps from 0
    assert reported[0] == pytest.approx(float(np.mean(per_example[0])), rel=1e-5)
    assert reported[1] == pytest.approx(float(np.mean(per_example[1])), rel=1e-5)  # / 36, not / 64
    assert reported[1] != pytest.approx(float(np.sum(per_example[1]) / 64), rel=1e-3)


@pytest.mark.slow
def test_two_mirrored_replicas_end_with_the_weights_of_one_on_a_partial_batch(tmp_path):
    import keras

    from conftest import metrics_of, run_cli

    path = _rows(tmp_path)
    args = [*_small(path, "trainer.epochs=3", "optimizer=sgd", "optimizer.lr=0.1", "logger=[]")]
    one = run_cli(*args, f"hydra.run.dir={tmp_path / 'one'}")
    two = run_cli(*args, "trainer.cpu_devices=2", "trainer.strategy=mirrored", f"hydra.run.dir={tmp_path / 'two'}")
    assert one.returncode == 0 and two.returncode == 0, (one.stderr + two.stderr)[-3000:]
    assert "2 replica(s) (mirrored)" in two.stdout + two.stderr
    a = keras.models.load_model(tmp_path / "one" / "model.keras").get_weights()
    b = keras.models.load_model(tmp_path / "two" / "model.keras").get_weights()
    assert len(a) == len(b) and len(a) > 2
    for wa, wb in zip(a, b):
        np.testing.assert_allclose(wa, wb, rtol=0, atol=1e-5)
    # Both trained every example every epoch: 3 epochs of a full and a partial batch.
    assert metrics_of(tmp_path / "one")["steps"] == metrics_of(tmp_path / "two")["steps"] == 6


class CrashBeforeCall:
    """A Keras callback (through `callbacks.extra`) that raises KeyboardInterrupt before the
    `call`-th compiled call (1-based), as a kill there would."""

    def __new__(cls, call: int):
        import keras

        class _Crash(keras.callbacks.Callback):
            calls = 0

            def on_train_batch_begin(self, batch, logs=None):
                _Crash.calls += 1
                if _Crash.calls == call:
                    raise KeyboardInterrupt(f"simulated kill before call {call}")

        return _Crash()


@pytest.mark.slow
def test_a_run_killed_before_its_partial_batch_resumes_to_the_same_weights(tmp_path):
    from conftest import same_numbers
    from tftrain.loop.checkpoints import committed_steps

    path = _rows(tmp_path)
    args = _small(path, "trainer.epochs=3", "trainer.checkpoint_every_steps=1", "trainer.deterministic=true",
                  "logger=[]")
    whole = tftrain.train(tftrain.compose(args), output_dir=tmp_path / "whole")
    # 2 steps per epoch (64 + 36): the 4th call is epoch 2's partial batch; step 3 is checkpointed.
    with pytest.raises(KeyboardInterrupt):
        tftrain.train(tftrain.compose([*args, "callbacks.extra=[{_target_:test_small_data.CrashBeforeCall,call:4}]"]),
                      output_dir=tmp_path / "killed")
    assert committed_steps(tmp_path / "killed" / "checkpoints")[0] == 3  # mid-epoch: before the partial batch
    resumed = tftrain.train(tftrain.compose(args), output_dir=tmp_path / "killed")
    same_numbers(whole, resumed)
    assert whole["steps"] == resumed["steps"] == 6
