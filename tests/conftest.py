"""Shared test helpers: compose the real configs and shrink them; run the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

ROOT = Path(__file__).resolve().parent.parent

# Small enough that a whole training run takes a few seconds on 2 CPU cores.
SMALL = [
    "data=synthetic", "data.num_train=256", "data.num_val=64", "data.num_test=64",
    "model.hidden_units=[32]", "trainer.epochs=2", "trainer.batch_size=32", "trainer.verbose=0",
]


def small(*overrides: str) -> list[str]:
    """SMALL then `overrides`, without SMALL's keys of a group whose option `overrides` changes
    (`model=custom` has no hidden_units)."""
    switched = {o.split("=", 1)[0] for o in overrides if "=" in o and "." not in o.split("=", 1)[0]}
    return [o for o in SMALL if o.split(".", 1)[0] not in switched] + list(overrides)


def compose_small(*overrides: str):
    """The packaged config with the SMALL shrink applied, then `overrides`."""
    import tftrain

    return tftrain.compose(small(*overrides))


@pytest.fixture
def small_cfg():
    return compose_small


def options(group: str) -> list[str]:
    """The options of config group `group`, as conf/<group>/*.yaml lists them. Tests parametrize over
    these, so a new option is tested without editing a test (there is no list of options to forget)."""
    from tftrain.config.files import config_dir

    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def option_schema(group: str, option: str) -> type:
    """The schema class conf/<group>/<option>.yaml extends: named in its defaults list
    (`/schema/<group>/<name>`), or through the option it extends (optimizer=nesterov extends sgd's)."""
    import yaml

    from tftrain.config.files import config_dir
    from tftrain.schema import SCHEMAS

    defaults = (yaml.safe_load((config_dir() / group / f"{option}.yaml").read_text()) or {}).get("defaults", [])
    entry = next((e for e in defaults if isinstance(e, str) and e != "_self_"), None)
    assert entry is not None, f"conf/{group}/{option}.yaml extends no schema"
    if entry.startswith("/schema/"):
        return SCHEMAS[group][entry.split("@")[0].rsplit("/", 1)[1]]
    return option_schema(group, entry)


def per_option(table: dict, group: str, option: str, name: str):
    """`table[option]`: a test's parameters for one option of `group`, or a failure saying what to add.
    A test that needs settings per option fails for a new option that has none, rather than skip it."""
    if option not in table:
        pytest.fail(f"conf/{group}/{option}.yaml has no entry in {name}: add one for {option!r} so that the "
                    "option is tested", pytrace=False)
    return table[option]


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300):
    """`python -m tftrain ARGS` in a subprocess; returns the CompletedProcess (text output)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run([sys.executable, "-m", "tftrain", *args], cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli


def wait_until(condition, proc, what: str, timeout: float = 180) -> None:
    """Poll `condition()` until it holds; fail naming `what` if the process ends or time runs out first."""
    deadline = time.monotonic() + timeout
    while not condition() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert condition(), f"{what} never happened (process exit status {proc.poll()})"


class CrashAtEpoch:
    """A Keras callback (through the public `callbacks.extra`) that raises KeyboardInterrupt at the
    end of epoch `epoch` (0-based): after that epoch's steps, before its checkpoint, as a kill then
    would. Build it with the override `crash_at(epoch)`."""

    def __new__(cls, epoch: int):
        import keras

        class _Crash(keras.callbacks.Callback):
            def on_epoch_end(self, e, logs=None):
                if e == epoch:
                    raise KeyboardInterrupt(f"simulated kill at the end of epoch {epoch + 1}, before its checkpoint")

        return _Crash()


def crash_at(epoch: int) -> str:
    return f"callbacks.extra=[{{_target_:conftest.CrashAtEpoch,epoch:{epoch}}}]"


class PauseAt:
    """A Keras callback (through `callbacks.extra`) that, at the end of the first compiled call
    reaching batch `batch` of epoch `epoch` (0-based), writes the file `marker` and waits until the
    file is gone (at most 120 s): a test signals the process in that pause and then removes the file,
    so the signal lands mid-epoch however loaded the machine is. Build it with `pause_at(...)`."""

    def __new__(cls, epoch: int, batch: int, marker: str):
        import keras

        class _Pause(keras.callbacks.Callback):
            epoch_now, done = -1, False

            def on_epoch_begin(self, e, logs=None):
                self.epoch_now = e

            def on_train_batch_end(self, b, logs=None):
                if self.done or self.epoch_now != epoch or b < batch:
                    return
                self.done = True
                path = Path(marker)
                path.write_text("paused")
                deadline = time.monotonic() + 120
                while path.exists() and time.monotonic() < deadline:
                    time.sleep(0.01)

        return _Pause()


def pause_at(epoch: int, batch: int, marker: Path) -> str:
    return f"callbacks.extra=[{{_target_:conftest.PauseAt,epoch:{epoch},batch:{batch},marker:'{marker}'}}]"


# metrics.json keys that hold wall-clock times (or the directory): they differ between equal runs.
TIMING = {"wall_time_s", "train_time_s", "steps_per_s", "startup_s", "run_dir"}


def metrics_of(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def same_numbers(a: dict, b: dict) -> None:
    """Every metric but wall-clock ones is identical, history included (minus epoch seconds)."""
    for key in set(a) - TIMING:
        if key == "history":
            assert {k: v for k, v in a[key].items() if k != "seconds"} == \
                   {k: v for k, v in b[key].items() if k != "seconds"}
        else:
            assert a[key] == b[key], key
