"""The `experiment` presets: one command each runs a tuning practice as a seeded sweep ending in
aggregate.md and summary.png."""

from __future__ import annotations

import csv

import pytest
import yaml

from tftrain.config.files import config_dir

PRESETS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))


def test_the_issue_presets_exist():
    assert set(PRESETS) >= {"compare_optimizers", "compare_schedules", "compare_initializers", "warmup", "lr_range"}


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_opens_with_the_command_that_runs_it(preset):
    lines = (config_dir() / "experiment" / f"{preset}.yaml").read_text().splitlines()
    assert lines[0] == "# @package _global_"  # Hydra reads a package header on the first line only
    assert lines[1].startswith(f"# python -m tftrain experiment={preset}")
    conf = yaml.safe_load("\n".join(lines))
    assert conf["hydra"]["mode"] == "MULTIRUN"  # one command, no -m
    assert "trainer.seed" in conf["hydra"]["sweeper"]["params"]  # several seeds: an aggregate with intervals


# Each preset runs, narrowed, as the README's command in tests/test_readme.py::test_experiment_preset.


@pytest.mark.slow
def test_seeds_on_the_command_line_replace_the_presets(cli, tmp_path):
    sweep = tmp_path / "sweep"
    result = cli("experiment=warmup", "trainer.epochs=3", "model.hidden_units=[32]", "trainer.seeds=2",
                 f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(sweep / "aggregate.csv", newline="") as f:
        assert [r["n"] for r in csv.DictReader(f)] == ["2", "2"]
