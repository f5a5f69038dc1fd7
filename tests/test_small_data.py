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
