"""The range test's `slide` suggestion (fastai's interval slide rule) and `task.suggestion=slide`."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tftrain
from tftrain.schema import validate
from tftrain.tasks.lr_find import lr_find
from tftrain.tasks.range_test import ramp_lrs, slide, suggest


def kinked_curve():
    """50 points: a straight descent (slope -0.02 per point) up to point 30, then the loss bends up
    (+0.02 * (i - 30)**2). np.gradient is -0.02 up to point 29, -0.01 at 30 (half of its
    neighbourhood curves) and -0.02 + 0.04 * (i - 30) after."""
    i = np.arange(50)
    return ramp_lrs(1e-5, 1.0, 50), 2.0 - 0.02 * i + np.where(i > 30, 0.02 * (i - 30.0) ** 2, 0.0)


def test_slide_returns_the_left_end_of_the_last_window_whose_slope_changes():
    lrs, losses = kinked_curve()
    # Windows (r, r - 15) slide left from r = 49. At r = 30 the ends' gradients differ by
    # |-0.01 - (-0.02)| = 0.01 > 0.005, so the suggestion becomes lrs[15]; at r = 29 both ends lie
    # on the straight part (difference 0) and the slide stops.
    assert slide(lrs, losses) == lrs[15]
    assert slide(lrs, losses, adjust_value=0.5) == pytest.approx(lrs[15] / 2)
    # A window of 5 points: stops at r = 29 with its left end at 24, after setting lrs[25] at r = 30.
    assert slide(lrs, losses, lr_diff=5) == lrs[25]


def test_slide_on_a_straight_line_keeps_the_first_window():
    lrs = ramp_lrs(1e-5, 1.0, 40)
    # Constant gradient: the first window already passes, the rate 15 points before the end.
    assert slide(lrs, 3.0 - 0.01 * np.arange(40)) == lrs[40 - 16]


def test_slide_on_a_curve_shorter_than_its_window_uses_the_whole_curve():
    lrs = ramp_lrs(1e-5, 1.0, 6)
    losses = np.array([1.0, 0.9, 0.8, 0.7, 1.5, 3.0])
    # lr_diff shrinks to 5: one window (5, 0), gradients -0.1 and 1.5 differ, so lrs[0].
    assert slide(lrs, losses) == lrs[0]


def test_suggest_includes_slide_on_the_window_it_reads():
    lrs, losses = kinked_curve()
    # num_steps 50: the first 5 points are left out, so point 15 of the curve is point 10 of the window.
    assert suggest(lrs, losses, num_steps=50, diverged=False)["slide"] == lrs[15]


def test_task_suggestion_slide_is_accepted_and_reported(tmp_path):
    from conftest import compose_small

    cfg = validate(tftrain.compose(["task=lr_find", "task.suggestion=slide"]))
    assert cfg.task.suggestion == "slide"
    result = lr_find(compose_small("task=lr_find", "task.suggestion=slide", "task.num_steps=30",
                                   "optimizer=sgd"), output_dir=tmp_path)
    written = json.loads((tmp_path / "lr_find.json").read_text())
    assert written["suggested"] == "slide" and set(written["suggestions"]) == {"valley", "steepest", "minimum", "slide"}
    assert written["suggested_lr"] == written["suggestions"]["slide"] == result["suggested_lr"]
    assert written["suggested_lr"] in written["lrs"]  # adjust_value 1: one of the tested rates


def test_train_with_find_lr_trains_at_the_named_suggestion(tmp_path, caplog):
    from conftest import compose_small

    with caplog.at_level("INFO", logger="tftrain"):
        metrics = tftrain.train(compose_small("task.find_lr=true", "task.suggestion=steepest", "optimizer=sgd",
                                              "trainer.epochs=1"), output_dir=tmp_path)
    found = json.loads((tmp_path / "lr_find" / "lr_find.json").read_text())
    assert metrics["found_lr"] == float(f"{found['suggestions']['steepest']:.3g}")
    assert "(steepest; see" in caplog.text


def test_an_unknown_train_suggestion_names_the_key_and_the_choices():
    from tftrain.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        validate(tftrain.compose(["task.find_lr=true", "task.suggestion=slid"]))
    assert "task.suggestion" in str(e.value) and "'slide'" in str(e.value)
