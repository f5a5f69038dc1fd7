"""The tf.distribute strategy named by `trainer.strategy`, and which worker writes outputs."""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass

from tftrain.errors import ArgumentError, ConfigError

log = logging.getLogger("tftrain")


def configure_cpu_devices(n: int) -> None:
    """Split the CPU into `n` logical devices, so MirroredStrategy runs on machines without GPUs.

    Must happen before TensorFlow initializes its devices (before the first op of the process).
    """
    import tensorflow as tf

    if n <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have != n:
            raise ArgumentError("cpu_devices", n, f"the CPU split this process already has ({have}): TensorFlow "
                                "fixes its devices at its first operation; run in a fresh process (restart the "
                                "notebook kernel) with the same trainer.cpu_devices throughout") from None


def _mirrored():
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy()
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(cpus)


def _auto():
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    cpus = tf.config.list_logical_devices("CPU")
    # Several GPUs (or a split CPU): mirror across them. One GPU or the CPU: the default strategy.
    tasks = os.environ.get("SLURM_STEP_NUM_TASKS", "1")
    if tasks.isdigit() and int(tasks) > 1 and "TF_CONFIG" not in os.environ:
        # Unchanged by the scheduler (multi-worker training is asked for, never guessed), but said.
        log.warning("trainer.strategy=auto trains this process on its own, although it is task %s of %s of a "
                    "SLURM step: each task trains a copy. To train them as one, set trainer.strategy=multi_worker",
                    os.environ.get("SLURM_PROCID", "?"), tasks)
    return _made("mirrored") if len(gpus) >= 2 or (not gpus and len(cpus) >= 2) else _default()


def _default():
    import tensorflow as tf

    return tf.distribute.get_strategy()


def _one_device():
    import tensorflow as tf

    return tf.distribute.OneDeviceStrategy("/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0")


# The multi-worker cluster from the scheduler's environment. TensorFlow's own
# tf.distribute.cluster_resolver.SlurmClusterResolver (2.21) is not used: on a node without GPUs it
# fails (it runs nvidia-smi when CUDA_VISIBLE_DEVICES is unset; with it empty, or gpus_per_node=0,
# it divides the GPUs among the node's tasks and fails with "range() arg 3 must not be zero"), it
# rewrites CUDA_VISIBLE_DEVICES, which SLURM already sets per task (--gpus-per-task), and it needs
# TensorFlow imported, so a missing cluster could not be refused before TensorFlow starts. The
# logic is the resolver's: the step's node list expanded (in its own order, which is SLURM's node
# order; the resolver sorts it by name), each node's tasks on ports port base + local task index,
# task i (SLURM_PROCID) worker i, worker 0 the chief.
PORT_VARIABLE = "TFTRAIN_PORT"
DEFAULT_PORT = 8888  # SlurmClusterResolver's port_base


@dataclass(frozen=True)
class Cluster:
    """The workers' host:port list, this process' index in it, and where both came from."""

    workers: tuple[str, ...]
    index: int
    source: str  # where they came from, for the log: "TF_CONFIG", or SLURM's variables

    def describe(self) -> str:
        chief = "the chief" if self.index == 0 else "worker 0 is the chief"
        return (f"multi_worker: the cluster from {self.source}: worker {self.index} of {len(self.workers)} "
                f"({', '.join(self.workers)}); {chief}")


def expand_hostlist(text: str) -> list[str]:
    """SLURM's compressed node list in its order, e.g. `gpu[01-03,07],login1` ->
    gpu01 gpu02 gpu03 gpu07 login1 (zero padding kept). Done here rather than by `scontrol show
    hostnames`, which exists only on the cluster's nodes (the same expansion as TensorFlow's)."""
    parts = re.findall(r"(?:[^,\[]|\[[^\]]*\])+", text)
    if not parts or ",".join(parts) != text:
        raise ValueError(f"not a SLURM node list: {text!r}")
    hosts = []
    for part in parts:
        m = re.fullmatch(r"([^\[\]]*)(?:\[([0-9]+(?:-[0-9]+)?(?:,[0-9]+(?:-[0-9]+)?)*)\]([^\[\]]*))?", part)
        if m is None:
            raise ValueError(f"not a SLURM node list: {text!r}")
        prefix, ranges, suffix = m.groups()
        if ranges is None:
            hosts.append(prefix)
            continue
        for r in ranges.split(","):
            first, _, last = r.partition("-")
            hosts += [f"{prefix}{str(i).zfill(len(first))}{suffix}" for i in range(int(first), int(last or first) + 1)]
    return hosts


def expand_tasks_per_node(text: str) -> list[int]:
    """SLURM's tasks per node, e.g. `2(x3),1` -> [2, 2, 2, 1]."""
    counts = []
    for part in text.split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if m is None:
            raise ValueError(f"not a SLURM tasks-per-node list: {text!r}")
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    return counts


def _slurm_refusal(why: str) -> ConfigError:
    return ConfigError("trainer.strategy", "multi_worker", f"multi_worker only where a cluster is described, and {why}",
                       "set TF_CONFIG on each worker (the same `cluster`, each its own `task.index`), or start the "
                       "workers as the tasks of one SLURM step (`srun python -m tftrain trainer.strategy=multi_worker "
                       "...` in an sbatch script), or on one machine use scripts/launch_local_workers.py; or choose "
                       "another trainer.strategy")


def slurm_cluster(env=None) -> Cluster | None:
    """The cluster of the SLURM step this process is a task of (srun's environment); None outside
    SLURM. Inside a job but not in an srun step (the batch script itself) it refuses."""
    env = os.environ if env is None else env
    if "SLURM_PROCID" not in env and "SLURM_STEP_NODELIST" not in env:
        return None
    if "SLURM_STEP_NODELIST" not in env or "SLURM_PROCID" not in env:
        raise _slurm_refusal("this process is in a SLURM job but not in a step of it (SLURM_PROCID or "
                             "SLURM_STEP_NODELIST missing: the batch script runs once, on the first node)")
    try:
        hosts = expand_hostlist(env["SLURM_STEP_NODELIST"])
        rank = int(env["SLURM_PROCID"])
        ntasks = int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or len(hosts))
        per_node_text = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
        per_node = expand_tasks_per_node(per_node_text) if per_node_text else [ntasks // len(hosts)] * len(hosts)
        port = int(env.get(PORT_VARIABLE) or DEFAULT_PORT)
    except (ValueError, ZeroDivisionError) as e:
        raise _slurm_refusal(f"SLURM's environment could not be read ({e})") from None
    if len(per_node) != len(hosts) or sum(per_node) != ntasks or not 0 <= rank < ntasks:
        raise _slurm_refusal(f"SLURM's environment is inconsistent (SLURM_PROCID={rank}, {ntasks} tasks, "
                             f"{len(hosts)} nodes with {per_node} tasks)")
    if not 0 < port <= 65535 - max(per_node):
        raise _slurm_refusal(f"{PORT_VARIABLE}={port} leaves no room for {max(per_node)} port(s) per node")
    workers = [f"{host}:{port + local}" for host, n in zip(hosts, per_node) for local in range(n)]
    # Worker i must run where the list says: SLURM's block distribution (its default) fills each
    # node in turn; a cyclic one would put task 1 on the second node while the list expects it
    # on the first, and the workers would wait for each other until the timeout.
    where = [(host, local) for host, n in zip(hosts, per_node) for local in range(n)][rank]
    actual = (env.get("SLURMD_NODENAME", where[0]), int(env.get("SLURM_LOCALID", where[1])))
    if actual != where:
        raise _slurm_refusal(f"SLURM placed task {rank} as local task {actual[1]} on {actual[0]}, not as local task "
                             f"{where[1]} on {where[0]} (the tasks are not distributed in blocks: use srun's default "
                             "--distribution=block)")
    source = (f"SLURM (SLURM_PROCID={rank}, SLURM_STEP_NODELIST={env['SLURM_STEP_NODELIST']}, "
              f"{PORT_VARIABLE}={port})")
    return Cluster(tuple(workers), rank, source)


def _tf_config_cluster() -> Cluster | None:
    if "TF_CONFIG" not in os.environ:
        return None
    try:
        spec = json.loads(os.environ["TF_CONFIG"])
        cluster, task = spec.get("cluster") or {}, spec.get("task") or {}
        workers = [*cluster.get("chief", []), *cluster.get("worker", [])]
        index = int(task.get("index", 0)) + (len(cluster.get("chief", [])) if task.get("type") == "worker" else 0)
    except (ValueError, AttributeError, TypeError):
        return Cluster((), 0, "TF_CONFIG")  # TensorFlow reports what is wrong with it
    return Cluster(tuple(workers), index, "TF_CONFIG")


def multi_worker_cluster() -> Cluster:
    """The cluster trainer.strategy=multi_worker trains on: TF_CONFIG's when it is set (as
    written), else the SLURM step's. Refuses (ConfigError) when there is neither; it needs no
    TensorFlow, so the refusal comes before TensorFlow starts."""
    cluster = _tf_config_cluster() or slurm_cluster()
    if cluster is None:
        raise _slurm_refusal("here neither the TF_CONFIG environment variable nor a SLURM step (SLURM_PROCID, "
                         "SLURM_STEP_NODELIST) describes one")
    return cluster


def _multi_worker():
    import tensorflow as tf

    cluster = multi_worker_cluster()
    log.info("%s", cluster.describe())
    if cluster.source == "TF_CONFIG":
        return tf.distribute.MultiWorkerMirroredStrategy()
    # As with TF_CONFIG, each worker mirrors over the GPUs it sees (SLURM's CUDA_VISIBLE_DEVICES),
    # else its CPU. Physical devices: listing the logical ones would start TensorFlow's context,
    # and the strategy must configure its collectives before that ("at program startup").
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec({"worker": list(cluster.workers)}), task_type="worker", task_id=cluster.index,
        rpc_layer="grpc", num_accelerators={"GPU": len(tf.config.list_physical_devices("GPU"))})
    return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)


# trainer.strategy's options: the only list of them (the trainer schema checks against it).
STRATEGIES = {
    "auto": _auto,
    "default": _default,
    "mirrored": _mirrored,
    "one_device": _one_device,
    "multi_worker": _multi_worker,
}


# One strategy object per kind for the life of the process. A second MirroredStrategy over the
# same devices numbers its collectives from the same keys as the first, and TensorFlow's collective
# executor still holds the first run's shapes under them: a second tftrain.train() in a notebook
# failed with "Shape mismatch in the collective instance" (and TensorFlow allows one
# MultiWorkerMirroredStrategy per process anyway). The devices cannot change within a process.
_MADE: dict[str, object] = {}


def _made(kind: str):
    if kind not in _MADE:
        _MADE[kind] = STRATEGIES[kind]()
    return _MADE[kind]


def make_strategy(kind: str, cpu_devices: int = 1):
    """The strategy `kind` (a key of STRATEGIES), with the CPU split into `cpu_devices` first."""
    configure_cpu_devices(cpu_devices)
    return _made(kind)


def strategy_name(strategy) -> str:
    """The strategy as users choose it (trainer.strategy), not its class' private name."""
    found = [kind for kind, made in _MADE.items() if made is strategy and kind != "auto"]
    if found:
        return found[0]
    kind = type(strategy).__name__
    return {"_DefaultDistributionStrategy": "default", "MirroredStrategy": "mirrored", "OneDeviceStrategy": "one_device",
            "MultiWorkerMirroredStrategy": "multi_worker", "CollectiveAllReduceStrategy": "multi_worker"}.get(kind, kind)


def is_chief(strategy) -> bool:
    """Whether this process writes the run's outputs: always, except non-chief multi-worker tasks."""
    import tensorflow as tf

    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return True
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    if "chief" in cluster:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def use_xla(setting, deterministic: bool) -> tuple[bool, str]:
    """`trainer.jit_compile` resolved: (whether to XLA-compile the step, why). `auto` compiles with
    a GPU (fusing a step's many small kernels is where XLA pays) unless op determinism is on
    (XLA's GPU kernels are not all deterministic); on CPUs it stays off: measured no faster there
    (README, Performance)."""
    if setting != "auto":
        return bool(setting), f"trainer.jit_compile={str(setting).lower()}"
    if deterministic:
        return False, "trainer.jit_compile=auto, with trainer.deterministic"
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        return True, "trainer.jit_compile=auto, with a GPU"
    return False, "trainer.jit_compile=auto, without a GPU"
