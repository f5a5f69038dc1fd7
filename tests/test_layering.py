"""The lower layers (schedules, layers, initializers, data, models, the loop) import nothing from
the config layer (tftrain.schema, tftrain.config.factory, tftrain.config, Hydra, OmegaConf): they raise their
own errors, and the config layer maps them to keys."""

from __future__ import annotations

import ast

import pytest

from conftest import ROOT

LOWER = ["tftrain/schedules", "tftrain/data", "tftrain/layers.py", "tftrain/initializers.py", "tftrain/models.py",
         "tftrain/problems.py", "tftrain/trainer.py", "tftrain/controller.py", "tftrain/checkpoints.py",
         "tftrain/progress.py"]
CONFIG_LAYER = ("tftrain.schema", "tftrain.config.factory", "tftrain.config", "hydra", "omegaconf")


def _modules():
    for entry in LOWER:
        path = ROOT / entry
        yield from (sorted(path.glob("*.py")) if path.is_dir() else [path])


def _imports(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


@pytest.mark.parametrize("path", list(_modules()), ids=lambda p: str(p.relative_to(ROOT)))
def test_lower_layers_import_nothing_from_the_config_layer(path):
    bad = [m for m in _imports(path) if m.startswith(CONFIG_LAYER)]
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_check_would_catch_an_import():
    assert list(_imports(ROOT / "tftrain" / "build.py")) and any(
        m.startswith(CONFIG_LAYER) for m in _imports(ROOT / "tftrain" / "build.py"))
