"""TensorBoard over a sweep: one `tensorboard --logdir <sweep dir>` shows every run's scalars and
compares the runs in the HParams dashboard (config and final metrics, test ones included).

Read twice: with TensorBoard's own event reader, and from a real `tensorboard` server on a free
loopback port (bounded wait, always stopped)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

import tftrain
from conftest import compose_small

RUNS = {"0_optimizer=sgd": ("optimizer=sgd", "optimizer.lr=0.05"), "1_optimizer=adam": ("optimizer=adam",)}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Two runs laid out like a Hydra sweep directory."""
    sweep_dir = tmp_path_factory.mktemp("sweep")
    metrics = {name: tftrain.train(compose_small(*overrides), output_dir=sweep_dir / name)
               for name, overrides in RUNS.items()}
    return sweep_dir, metrics


def _accumulator(path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return EventAccumulator(str(path), size_guidance={"tensors": 0}).Reload()


def _value(event) -> float:
    from tensorboard.util import tensor_util

    return float(tensor_util.make_ndarray(event.tensor_proto))


def test_each_run_has_an_hparams_session_with_final_metrics(sweep):
    from tensorboard.plugins.hparams import metadata

    sweep_dir, metrics = sweep
    for name in RUNS:
        acc = _accumulator(sweep_dir / name / "tensorboard")
        content = acc.SummaryMetadata(metadata.SESSION_START_INFO_TAG).plugin_data.content
        hparams = metadata.parse_session_start_info_plugin_data(content).hparams
        assert hparams["optimizer._target_"].string_value.lower() == f"keras.optimizers.{name.split('=')[1]}"
        assert hparams["trainer.batch_size"].number_value == 32
        for key in ("test_accuracy", "test_loss", "val_accuracy", "best_val_loss"):
            (event,) = acc.Tensors(key)
            assert event.step == 2 and _value(event) == pytest.approx(metrics[name][key], rel=1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def server(sweep):
    sweep_dir, _ = sweep
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(sweep_dir), "--host", "127.0.0.1",
         "--port", str(port), "--load_fast", "false", "--reload_interval", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, runs = time.monotonic() + 90, []
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                runs = _get(f"{base}/data/runs")
                if len(runs) >= 3 * len(RUNS):  # each: tensorboard, tensorboard/train, tensorboard/validation
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        if len(runs) < 3 * len(RUNS):
            proc.kill()
            pytest.fail(f"tensorboard did not serve the runs within 90 s (runs: {runs}); stderr: "
                        f"{proc.communicate(timeout=10)[1].decode()[-2000:]}")
        yield base, runs
    finally:
        proc.kill()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_server_shows_every_run_scalars(server, sweep):
    base, runs = server
    _, metrics = sweep
    for name in RUNS:
        assert {f"{name}/tensorboard", f"{name}/tensorboard/train", f"{name}/tensorboard/validation"} <= set(runs)
        query = urllib.parse.urlencode({"run": f"{name}/tensorboard/validation", "tag": "epoch_accuracy"})
        points = _get(f"{base}/data/plugin/scalars/scalars?{query}")  # [[wall_time, step, value], ...]
        assert [p[1] for p in points] == [1, 2]
        assert [p[2] for p in points] == pytest.approx(metrics[name]["history"]["val_accuracy"], rel=1e-6)
        query = urllib.parse.urlencode({"run": f"{name}/tensorboard/train", "tag": "learning_rate"})
        assert len(_get(f"{base}/data/plugin/scalars/scalars?{query}")) == 16  # per step


def test_server_hparams_dashboard_compares_the_runs(server, sweep):
    base, _ = server
    _, metrics = sweep
    experiment = _get(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
    hparams = {h["name"]: h for h in experiment["hparamInfos"]}
    assert {"optimizer._target_", "optimizer.lr", "trainer.batch_size", "model.hidden_units"} <= set(hparams)
    assert sorted(hparams["optimizer._target_"]["domainDiscrete"]) == ["keras.optimizers.Adam", "keras.optimizers.SGD"]
    metric_names = {(m["name"]["group"], m["name"]["tag"]) for m in experiment["metricInfos"]}
    assert {("", "test_accuracy"), ("", "test_loss"), ("validation", "epoch_accuracy")} <= metric_names

    groups = _get(f"{base}/data/plugin/hparams/session_groups", {
        "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [{"hparam": "optimizer._target_"}, {"metric": {"group": "", "tag": "test_accuracy"}}],
        "startIndex": 0, "sliceSize": 10})["sessionGroups"]
    assert len(groups) == len(RUNS)
    for group in groups:
        name = next(k for k in RUNS if k.endswith("=" + group["hparams"]["optimizer._target_"].split(".")[-1].lower()))
        (value,) = [m["value"] for m in group["metricValues"] if m["name"]["tag"] == "test_accuracy"]
        assert value == pytest.approx(metrics[name]["test_accuracy"], rel=1e-6)
