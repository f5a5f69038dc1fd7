"""trainer.strategy=multi_worker from the scheduler's environment: the cluster built from a SLURM
step, the refusal without any cluster, and the multi-node examples (the sbatch script and the
Kubernetes Indexed Job)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import ROOT, SMALL, metrics_of, same_numbers
from tftrain.errors import ConfigError
from tftrain.loop.distribute import multi_worker_cluster, slurm_cluster
from tftrain.tasks.run import chief_by_environment

SBATCH = ROOT / "docs" / "slurm" / "multi-node.sbatch"
MANIFEST = ROOT / "docs" / "kubernetes" / "tftrain-job.yaml"


def _bare_env() -> dict:
    """This environment without a cluster in it (no TF_CONFIG, no SLURM_*)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG" and not k.startswith(("SLURM", "TFTRAIN_PORT"))}
    return {**env, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0", "TF_CPP_MIN_LOG_LEVEL": "2",
            "CUDA_VISIBLE_DEVICES": ""}


# --- the cluster from SLURM's variables (no processes) --------------------------------------------------------

def _step(procid: int, nodelist: str, per_node: str, ntasks: int, **more) -> dict:
    return {"SLURM_PROCID": str(procid), "SLURM_STEP_NODELIST": nodelist, "SLURM_STEP_TASKS_PER_NODE": per_node,
            "SLURM_STEP_NUM_TASKS": str(ntasks), **more}


def test_two_nodes_one_task_each():
    for rank in (0, 1):
        cluster = slurm_cluster(_step(rank, "node[01-02]", "1(x2)", 2, SLURMD_NODENAME=f"node0{rank + 1}",
                                      SLURM_LOCALID="0"))
        assert cluster.workers == ("node01:8888", "node02:8888") and cluster.index == rank
    assert "worker 1 of 2 (node01:8888, node02:8888)" in cluster.describe()
    assert "SLURM_STEP_NODELIST=node[01-02]" in cluster.describe()


def test_tasks_sharing_a_node_get_consecutive_ports():
    env = _step(3, "gpu[7,9],cpu1", "2(x2),1", 5, TFTRAIN_PORT="20000", SLURMD_NODENAME="gpu9", SLURM_LOCALID="1")
    cluster = slurm_cluster(env)
    assert cluster.workers == ("gpu7:20000", "gpu7:20001", "gpu9:20000", "gpu9:20001", "cpu1:20000")
    assert cluster.index == 3
    # SLURM_NTASKS / SLURM_TASKS_PER_NODE stand in for the step's own counts when those are missing
    env = {"SLURM_PROCID": "0", "SLURM_STEP_NODELIST": "a-[008-010]", "SLURM_NTASKS": "3",
           "SLURM_TASKS_PER_NODE": "1(x3)"}
    assert slurm_cluster(env).workers == ("a-008:8888", "a-009:8888", "a-010:8888")


@pytest.mark.parametrize("env, says", [
    ({"SLURM_PROCID": "0", "SLURM_JOB_ID": "7"}, "not in a step of it"),  # the batch script, without srun
    (_step(1, "node[01-02]", "1(x2)", 2, SLURMD_NODENAME="node01"), "--distribution=block"),  # placed cyclically
    (_step(0, "node[01-02]", "1(x2)", 3), "3 tasks, 2 nodes"),
    (_step(0, "node[01-02", "1(x2)", 2), "could not be read"),
])
def test_an_unusable_slurm_environment_is_refused(env, says):
    with pytest.raises(ConfigError, match=re.escape(says)) as e:
        slurm_cluster(env)
    assert e.value.key == "trainer.strategy" and "srun" in str(e.value)


def test_tf_config_wins_and_only_task_zero_is_the_chief(monkeypatch):
    for key in [k for k in os.environ if k.startswith("SLURM") or k == "TF_CONFIG"]:
        monkeypatch.delenv(key)
    multi = OmegaConf.create({"trainer": {"strategy": "multi_worker"}})
    auto = OmegaConf.create({"trainer": {"strategy": "auto"}})
    for key, value in _step(1, "localhost", "2", 2).items():
        monkeypatch.setenv(key, value)
    assert not chief_by_environment(multi) and chief_by_environment(auto)  # auto: SLURM changes nothing
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert chief_by_environment(multi)
    tf_config = {"cluster": {"worker": ["h:1", "h:2"]}, "task": {"type": "worker", "index": 1}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    cluster = multi_worker_cluster()
    assert (cluster.source, cluster.index, cluster.workers) == ("TF_CONFIG", 1, ("h:1", "h:2"))
    assert not chief_by_environment(multi)


def test_auto_in_a_slurm_step_of_several_tasks_says_each_trains_alone(monkeypatch, caplog):
    from tftrain.loop.distribute import STRATEGIES

    monkeypatch.delenv("TF_CONFIG", raising=False)
    for key, value in _step(1, "node[01-02]", "1(x2)", 2).items():
        monkeypatch.setenv(key, value)
    with caplog.at_level("WARNING", logger="tftrain"):
        STRATEGIES["auto"]()
    assert "task 1 of 2 of a SLURM step: each task trains a copy" in caplog.text
    assert "set trainer.strategy=multi_worker" in caplog.text


# --- two local processes ------------------------------------------------------------------------------------

def _consecutive_free_ports() -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base < 65535:
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", base + 1))
                except OSError:
                    continue
            return base
    raise RuntimeError("no two consecutive free ports")


def _start_two_workers(run_dir, tmp_path, env_of) -> list:
    """Two `python -m tftrain` processes with the same command line, as srun starts them."""
    args = [sys.executable, "-m", "tftrain", "trainer.strategy=multi_worker", *SMALL, "trainer.verbose=2",
            "trainer.deterministic=true", f"hydra.run.dir={run_dir}"]
    started = []
    for i in (0, 1):
        log = tmp_path / f"{run_dir.name}-{i}.log"
        with open(log, "w") as out:
            started.append((subprocess.Popen(args, cwd=ROOT, env={**_bare_env(), **env_of(i)}, stdout=out,
                                             stderr=subprocess.STDOUT), log))
    return started


def _outputs(started) -> list[str]:
    """The workers' outputs once all ended (each must end with status 0)."""
    try:
        codes = [p.wait(timeout=240) for p, _ in started]
    finally:
        for p, _ in started:
            if p.poll() is None:
                p.kill()
    texts = [log.read_text() for _, log in started]
    assert codes == [0] * len(started), "\n".join(t[-3000:] for t in texts)
    return texts


@pytest.mark.slow
def test_a_slurm_step_on_one_node_trains_as_the_tf_config_workers_do(tmp_path):
    """Two tasks of a SLURM-like step (node list `localhost`, 2 tasks on it) end bit-identical to
    the same two workers given TF_CONFIG (both pairs at once: their set-up waits overlap)."""
    began = time.monotonic()
    ports = _consecutive_free_ports()
    cluster = {"worker": [f"127.0.0.1:{ports}", f"127.0.0.1:{ports + 1}"]}
    tf_config_pair = _start_two_workers(tmp_path / "tf_config", tmp_path, lambda i: {
        "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})})
    base = _consecutive_free_ports()
    while base in (ports - 1, ports, ports + 1):
        base = _consecutive_free_ports()
    slurm_pair = _start_two_workers(tmp_path / "slurm", tmp_path, lambda i: {
        **_step(i, "localhost", "2", 2), "SLURM_NTASKS": "2", "SLURM_LOCALID": str(i), "SLURMD_NODENAME": "localhost",
        "SLURM_JOB_ID": "4242", "TFTRAIN_PORT": str(base)})
    by_tf_config, by_slurm = _outputs(tf_config_pair), _outputs(slurm_pair)
    took = time.monotonic() - began

    workers = f"localhost:{base}, localhost:{base + 1}"
    assert f"worker 0 of 2 ({workers}); the chief" in by_slurm[0]
    assert f"worker 1 of 2 ({workers}); worker 0 is the chief" in by_slurm[1]
    assert "the cluster from SLURM (SLURM_PROCID=1, SLURM_STEP_NODELIST=localhost" in by_slurm[1]
    assert "the cluster from TF_CONFIG: worker 1 of 2" in by_tf_config[1]
    a, b = metrics_of(tmp_path / "tf_config"), metrics_of(tmp_path / "slurm")
    assert a["steps"] == b["steps"] == 16
    same_numbers(a, b)
    assert not list((tmp_path / "slurm").glob("tftrain-worker-*"))  # only the chief wrote there, its log too
    log = (tmp_path / "slurm" / "tftrain.log").read_text()
    assert "worker 0 of 2" in log and "worker 1 of 2" not in log
    print(f"fingerprint {b['weights_fingerprint']} after {b['steps']} steps; final loss {b['history']['loss'][-1]}; "
          f"both pairs {took:.1f} s")


def test_multi_worker_without_any_cluster_is_refused_before_tensorflow(tmp_path):
    began = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "tftrain", *SMALL, "trainer.strategy=multi_worker",
                             f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, env=_bare_env(), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    error = result.stderr.strip()
    assert error.startswith("tftrain: error: ") and "\n" not in error, error  # one paragraph, nothing before it
    for needed in ("`trainer.strategy`", "TF_CONFIG", "srun", "SLURM_PROCID"):
        assert needed in error, needed
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "config.yaml").exists()
    print(f"refused in {time.monotonic() - began:.1f} s")


# --- the examples: sbatch script, Kubernetes Indexed Job ----------------------------------------------------

def test_multi_node_sbatch_script():
    script = SBATCH.read_text()
    subprocess.run(["bash", "-n", str(SBATCH)], check=True)
    assert script.startswith("#!/bin/bash\n")
    options = " ".join(line for line in script.splitlines() if line.startswith("#SBATCH"))
    for option in ("--nodes=2", "--ntasks-per-node=1", "--signal=TERM@", "--requeue"):
        assert option in options, option
    assert re.search(r"^srun --kill-on-bad-exit=0 --wait=\d+ python -m tftrain trainer\.strategy=multi_worker ",
                     script, re.M)
    assert 'scontrol requeue "$SLURM_JOB_ID"' in script


def test_kubernetes_indexed_job_derives_each_pods_tf_config(tmp_path):
    if shutil.which("sh") is None:
        pytest.skip("no /bin/sh")
    docs = list(yaml.safe_load_all(MANIFEST.read_text()))
    service = next(d for d in docs if d["kind"] == "Service")
    job = next(d for d in docs if d["kind"] == "Job")
    assert service["spec"]["clusterIP"] == "None"
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    n = spec["completions"]
    assert spec["completionMode"] == "Indexed" and spec["parallelism"] == n == 2
    assert pod["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["selector"] == {"job-name": job["metadata"]["name"]}
    container = pod["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert int(env["WORKERS"]) == n
    script = container["args"][0]
    assert container["command"] == ["/bin/sh", "-c"]
    assert "exec python -m tftrain trainer.strategy=multi_worker" in script
    # The pod's own lines up to the exec, then TF_CONFIG printed; `python` is this interpreter.
    derive = script.split("exec python -m tftrain")[0] + 'printf %s "$TF_CONFIG"\n'
    path = f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"
    names = [f"{job['metadata']['name']}-{k}.{service['metadata']['name']}:{env['TFTRAIN_PORT']}" for k in range(n)]
    for index in range(n):
        out = subprocess.run(["/bin/sh", "-c", derive], env={"PATH": path, "JOB_COMPLETION_INDEX": str(index), **env},
                             capture_output=True, text=True, check=True, cwd=tmp_path).stdout
        tf_config = json.loads(out)
        assert tf_config == {"cluster": {"worker": names}, "task": {"type": "worker", "index": index}}
    assert names[0] == "tftrain-0.tftrain:8888"
    assert service["spec"]["ports"][0]["port"] == container["ports"][0]["containerPort"] == int(env["TFTRAIN_PORT"])
