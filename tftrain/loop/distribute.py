"""The tf.distribute strategy named by `trainer.strategy`, and which worker writes outputs."""

from __future__ import annotations

import json
import os

from tftrain.errors import ArgumentError


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
    return _made("mirrored") if len(gpus) >= 2 or (not gpus and len(cpus) >= 2) else _default()


def _default():
    import tensorflow as tf

    return tf.distribute.get_strategy()


def _one_device():
    import tensorflow as tf

    return tf.distribute.OneDeviceStrategy("/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0")


def _multi_worker():
    import tensorflow as tf

    if "TF_CONFIG" not in os.environ:
        raise ArgumentError("strategy", "multi_worker", "multi_worker only with the TF_CONFIG environment variable "
                            "describing the cluster and this worker's task: start the workers with "
                            "scripts/launch_local_workers.py, or set TF_CONFIG on each machine")
    return tf.distribute.MultiWorkerMirroredStrategy()


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
