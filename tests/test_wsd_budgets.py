"""task=budgets (issue 22, section 4): one warmup-stable-decay run, each shorter budget's cooldown
branched from its checkpoint, every branch bit-identical to that budget trained from scratch."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from conftest import crash_at, metrics_of, run_cli, same_numbers

from tftrain.errors import ConfigError

# Digits, a tiny MLP, 4 epochs of 19 steps: warmup 1 epoch, so the 2-epoch budget's decay starts
# mid-epoch, at step 19 + 19 - round(0.2 * 19) = 34 (the branch point is a mid-epoch checkpoint);
# the 4-epoch one at 19 + 57 - round(0.2 * 57) = 65.
RUN = ["schedule=wsd", "schedule.warmup_epochs=1", "model.hidden_units=[16]", "trainer.batch_size=64",
       "trainer.verbose=0", "logger=[]"]
BUDGETS = ["task=budgets", "trainer.epochs=4", "task.budgets=[0.5,1.0]"]


def _compose(*overrides):
    import tftrain

    return tftrain.compose([*RUN, *overrides])


def _weights(run_dir):
    import keras

    import tftrain  # noqa: F401 - registers tftrain's serializable classes

    return keras.models.load_model(run_dir / "model.keras", compile=False).get_weights()


def _same_weights(a, b):
    wa, wb = _weights(a), _weights(b)
    assert len(wa) == len(wb) and all(np.array_equal(x, y) for x, y in zip(wa, wb))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The budgets task's run directory, and schedule=wsd trained from scratch for 2 and 4 epochs."""
    from tftrain.tasks.budgets import budgets
    from tftrain.tasks.train import train

    root = tmp_path_factory.mktemp("budgets")
    result = budgets(_compose(*BUDGETS), root / "run")
    for epochs in (2, 4):
        train(_compose(f"trainer.epochs={epochs}"), root / f"scratch_{epochs}")
    return root, result


@pytest.mark.slow
@pytest.mark.parametrize("epochs", [2, 4])
def test_each_budget_ends_bit_identical_to_training_it_from_scratch(trained, epochs):
    root, _ = trained
    branch, scratch = root / "run" / f"budget_{epochs}", root / f"scratch_{epochs}"
    same_numbers(metrics_of(branch), metrics_of(scratch))  # every metric, the weights' fingerprint, the history
    assert metrics_of(branch)["steps"] == epochs * 19
    _same_weights(branch, scratch)


def test_the_table_counts_the_epochs_branching_saves(trained):
    root, result = trained
    run = root / "run"
    rows = list(csv.DictReader((run / "budgets.csv").open()))
    assert [(r["epochs"], r["decay_start_step"], r["epochs_trained"], r["epochs_branching"], r["epochs_separately"])
            for r in rows] == [("2", "34", str(round(4 / 19, 4)), "2.0", "2"),
                               ("4", "65", "4.0", str(round(4 + 4 / 19, 4)), "6")]
    assert [float(r["test_accuracy"]) for r in rows] == \
        [metrics_of(run / f"budget_{e}")["test_accuracy"] for e in (2, 4)]
    assert result["epochs_branching"] == round(4 + 4 / 19, 4) and result["epochs_separately"] == 6
    assert result["test_accuracy_2ep"] == metrics_of(run / "budget_2")["test_accuracy"]  # what a sweep aggregates
    # The branch point outlived keep_checkpoints' rotation (3 kept): epoch 1's checkpoint did not.
    names = {p.name for p in (run / "budget_4" / "checkpoints").glob("state-*.json")}
    assert names == {"state-34.json", "state-38.json", "state-57.json", "state-76.json"}


def test_a_rerun_reuses_finished_runs_and_branches_a_missing_one_again(trained):
    from tftrain.tasks.budgets import budgets

    root, _ = trained
    run = root / "run"
    before = metrics_of(run / "budget_2")
    main_written = (run / "budget_4" / "metrics.json").stat().st_mtime_ns
    shutil.rmtree(run / "budget_2")  # as if killed before the branch was made
    budgets(_compose(*BUDGETS), run)
    same_numbers(metrics_of(run / "budget_2"), before)
    assert (run / "budget_4" / "metrics.json").stat().st_mtime_ns == main_written  # reused, not trained again


@pytest.mark.slow
def test_a_task_killed_in_its_longest_run_resumes_to_the_same_budgets(trained, tmp_path):
    from tftrain.tasks.budgets import budgets

    root, _ = trained
    # Killed at the end of epoch 3 of the 4-epoch run, after the 2-epoch budget's branch point (step 34).
    with pytest.raises(KeyboardInterrupt):
        budgets(_compose(*BUDGETS, crash_at(2)), tmp_path / "run")
    assert not (tmp_path / "run" / "budget_2").exists()
    budgets(_compose(*BUDGETS), tmp_path / "run")
    for epochs in (2, 4):
        same_numbers(metrics_of(tmp_path / "run" / f"budget_{epochs}"), metrics_of(root / f"scratch_{epochs}"))


@pytest.mark.parametrize("overrides, key, words", [
    (["task.budgets=[0.3,1.0]"], "task.budgets", "whole numbers of epochs"),
    (["callbacks=early_stopping"], "callbacks.early_stopping.enabled", "branch points"),
    (["schedule.warmup_epochs=2"], "task.budgets", "longer than the warmup"),
    (["schedule.warmup_epochs=0", "schedule.decay_fraction=1.0"], "schedule.decay_fraction", "share no step"),
])
def test_budgets_the_branches_cannot_serve_are_refused(tmp_path, overrides, key, words):
    from tftrain.tasks.budgets import budgets

    with pytest.raises(ConfigError, match=f"`{key}`.*{words}"):
        budgets(_compose(*BUDGETS, *overrides), tmp_path / "run")
    assert not (tmp_path / "run" / "budget_4" / "checkpoints").exists()  # refused before training


@pytest.mark.parametrize("override", ["task.budgets=[0.5,1.5]", "task.budgets=[1.0,0.5]"])
def test_budgets_out_of_range_or_unsorted_are_refused(override):
    from tftrain.schema import validate

    with pytest.raises(ConfigError, match="`task.budgets`.*strictly increasing list of fractions"):
        validate(_compose(*BUDGETS, override))


def test_a_schedule_other_than_wsd_exits_2_with_the_fix(tmp_path):
    result = run_cli("task=budgets", "schedule=cosine", "trainer.epochs=4", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("tftrain: error:")]
    assert len(errors) == 1 and "`schedule`" in errors[0] and "add `schedule=wsd`" in errors[0], result.stderr[-3000:]


def test_checkpoint_steps_must_be_positive_integers():
    from tftrain.schema import validate

    with pytest.raises(ConfigError, match="`trainer.checkpoint_at_steps`.*each an integer >= 1"):
        validate(_compose("trainer.checkpoint_at_steps=[10,0]"))
