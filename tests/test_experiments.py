"""The `experiment` presets: one command each runs a tuning practice as a seeded sweep ending in
aggregate.md and summary.png. Each runs here shrunk (1 epoch, 2 seeds, 2 of its options)."""

from __future__ import annotations

import csv

import pytest
import yaml

from tftrain.config.files import config_dir

PRESETS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))
# Each preset's swept group, shrunk to two of its options.
SHRINK = {"compare_optimizers": ["optimizer=sgd,adam"], "compare_schedules": ["schedule=constant,cosine"],
          "compare_initializers": ["initializer=zeros,he_normal", "model.hidden_units=[16,16]"],
          "warmup": ["model.hidden_units=[32]"], "lr_range": []}
EPOCHS = {"warmup": 3}  # its 2 warmup epochs must fit in the run


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


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_runs_and_ends_in_an_aggregate(preset, cli, tmp_path):
    sweep = tmp_path / "sweep"
    result = cli(f"experiment={preset}", f"trainer.epochs={EPOCHS.get(preset, 1)}", "trainer.seed=0,1", *SHRINK[preset],
                 f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(sweep / "aggregate.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(r["n"] == "2" and r["seeds"] == "0 1" for r in rows)
    assert all(r["val_accuracy_ci95_low"] and r["verdict"] for r in rows)
    assert (sweep / "aggregate.md").read_text().startswith("# Sweep aggregate")
    assert (sweep / "summary.png").read_bytes()[:4] == b"\x89PNG"


def test_seeds_on_the_command_line_replace_the_presets(cli, tmp_path):
    sweep = tmp_path / "sweep"
    result = cli("experiment=warmup", "trainer.epochs=3", "model.hidden_units=[32]", "trainer.seeds=2",
                 f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(sweep / "aggregate.csv", newline="") as f:
        assert [r["n"] for r in csv.DictReader(f)] == ["2", "2"]
