"""Opening a run: the one way in for every task (train, lr_find, predict, evaluate) and every
sweep job. `open_run` validates the config, makes the run directory, takes its lock, fixes the
seed, precision and devices, builds the strategy and plans the resume, in that order, and hands
the task a `Run`.

TensorFlow is imported only after validation, so a bad config fails in well under a second.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig

from tftrain.errors import ArgumentError, ConfigError, TftrainError
from tftrain.schema import validate
from tftrain.tasks.resume import ResumePlan, RunLock, plan_resume, save_config
from tftrain.tasks.startup import Phases

log = logging.getLogger("tftrain")


@dataclass
class Run:
    """An opened run: what every task starts from."""

    cfg: DictConfig  # validated
    run_dir: Path
    write_dir: Path  # run_dir, or a scratch directory on a non-chief multi-worker task
    strategy: object = None  # tf.distribute.Strategy (None for tasks that do not train)
    chief: bool = True
    resume: ResumePlan = field(default_factory=ResumePlan)
    phases: Phases = field(default_factory=Phases)
    stop: object = None  # tftrain.loop.signals.StopSignals while the run trains


def run_dir_of(cfg: DictConfig, output_dir: str | Path | None, probe: bool = True) -> Path:
    """The run directory (created, and checked writable unless `probe=False`, when taking its
    lock is the check: nothing may be written there before the lock): `output_dir`, else
    `cfg.output_dir`, else a new outputs/api/<date>/<time> directory (a notebook's tftrain.train())."""
    path = output_dir if output_dir is not None else cfg.get("output_dir")
    if path is None:
        path = Path("outputs") / "api" / datetime.now().strftime("%Y-%m-%d/%H-%M-%S-%f")
    path = Path(os.path.expanduser(str(path)))
    try:
        path.mkdir(parents=True, exist_ok=True)
        if probe:
            probe_file = path / f".tftrain-write-test-{os.getpid()}"
            probe_file.write_text("")
            probe_file.unlink()
    except OSError as e:
        raise _unwritable(path, e) from None
    return path


def _unwritable(path: Path, e: OSError) -> TftrainError:
    return TftrainError(f"The run directory {path} cannot be written: {e.strerror or e} ({e.filename or path}). Fix: "
                        "choose a writable directory (hydra.run.dir=... or output_dir=...) with free space.")


@contextlib.contextmanager
def locked(run_dir: Path):
    """The run directory's lock (RunLock), its creation the directory's write check."""
    try:
        lock = RunLock(run_dir).__enter__()
    except OSError as e:
        raise _unwritable(run_dir, e) from None
    try:
        yield run_dir
    finally:
        lock.__exit__(None, None, None)


@contextlib.contextmanager
def claim_run_dir(cfg: DictConfig, output_dir: str | Path | None):
    """The CLI's hold on a run directory for the whole process: its lock first (chief only; a
    refused process has written and deleted nothing there), then Hydra's record of the run
    (.hydra/config.yaml, hydra.yaml, overrides.yaml; conf/config.yaml sets hydra.output_subdir
    to null so that Hydra itself does not write them before the lock). Yields the directory."""
    chief = chief_by_environment(cfg)
    run_dir = run_dir_of(cfg, output_dir, probe=not chief)
    if not chief:  # multi-worker: only the chief writes in the shared run directory, its log included
        root = logging.getLogger()  # (srun gives every task the same command: Hydra's file handler too)
        for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
            if Path(handler.baseFilename).parent == Path(run_dir).resolve():
                root.removeHandler(handler)
                handler.close()
        yield run_dir
        return
    with locked(run_dir):
        if not (run_dir / "config.yaml").exists():  # a run there: recorded once its resume is accepted (open_run)
            write_hydra_record(cfg, run_dir)
        yield run_dir


def write_hydra_record(cfg: DictConfig, run_dir: Path) -> None:
    """What Hydra's run_job writes in <run>/.hydra (the composed config unresolved, Hydra's own
    config, the command line's overrides), when a Hydra app runs this process; a tracking URI's
    credentials masked wherever the URI appears (an override repeats it)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from tftrain.loggers.mlflow import scrub

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.instance().cfg
    uris = credential_uris(cfg)
    record = Path(run_dir) / ".hydra"
    try:
        record.mkdir(exist_ok=True)
        files = {"config.yaml": cfg, "hydra.yaml": hydra_cfg, "overrides.yaml": hydra_cfg.hydra.overrides.task}
        for name, node in files.items():
            # Replaced whole: a summary in another process (a second copy of the sweep) may be reading it.
            part = record / f".{name}.{os.getpid()}.part"
            part.write_text(scrub(OmegaConf.to_yaml(node), uris), encoding="utf-8")
            os.replace(part, record / name)
    except OSError as e:
        raise _unwritable(run_dir, e) from None


def credential_uris(cfg: DictConfig) -> list[str]:
    """The loggers' tracking URIs that carry credentials (`https://user:token@host`)."""
    from tftrain.loggers.mlflow import masked

    uris = [_tracking_uri(node) for node in (cfg.get("logger") or {}).values()]
    return [uri for uri in uris if uri is not None and masked(uri) != uri]


def _tracking_uri(node) -> str | None:
    """A logger node's tracking_uri, when it has one that resolves to a string (an unresolvable
    value is validation's to report, with its key and fix)."""
    from omegaconf import OmegaConf

    uri = OmegaConf.select(node, "tracking_uri", throw_on_resolution_failure=False) \
        if isinstance(node, DictConfig) else None
    return uri if isinstance(uri, str) else None


def without_credentials(cfg: DictConfig) -> DictConfig:
    """`cfg` as the run directory keeps it (config.yaml, and what a resume or a rerun sweep
    compares with it): its loggers' tracking URIs with credentials masked. `cfg` itself when
    none carries any; the run's loggers are built from the real one."""
    import copy

    from omegaconf import open_dict

    from tftrain.loggers.mlflow import masked

    if not credential_uris(cfg):
        return cfg
    shown = copy.deepcopy(cfg)
    with open_dict(shown):
        for node in shown.logger.values():
            uri = _tracking_uri(node)
            if uri is not None:
                node.tracking_uri = masked(uri)
    return shown


def ensure_console_logging() -> None:
    """Hydra configures logging on the CLI; from a notebook or script nothing would be shown without
    this. tftrain's lines then go to its own handler only: importing TensorFlow installs absl's
    handler on the root logger, which would print every line a second time."""
    if not logging.getLogger().handlers and not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def _strategy(cfg: DictConfig):
    """Seed, determinism, precision policy and the strategy, in that order (devices are fixed by
    the first TensorFlow operation): (strategy, is_chief). TensorFlow's start-up lines are kept
    off the console meanwhile (tftrain.console; trainer.verbose=3 shows them)."""
    from tftrain.console import quiet_known_warnings, quiet_tensorflow

    t = cfg.trainer
    if t.verbose < 3:
        quiet_known_warnings()
    with quiet_tensorflow(t.verbose):
        import keras
        import tensorflow as tf

        from tftrain.loop.distribute import is_chief, make_strategy

        for noisy in ("absl", "tensorflow"):  # tf.data's and collectives' per-step INFO lines are noise
            logging.getLogger(noisy).setLevel(logging.DEBUG if t.verbose >= 3 else logging.WARNING)
        keras.utils.set_random_seed(t.seed)
        if t.deterministic:
            tf.config.experimental.enable_op_determinism()
        keras.mixed_precision.set_global_policy(t.mixed_precision or "float32")
        try:
            strategy = make_strategy(t.strategy, t.cpu_devices)
        except ArgumentError as e:
            raise ConfigError(f"trainer.{e.arg}", e.value, e.requirement) from None
    return strategy, is_chief(strategy)


def describe_training(run: Run, steps_per_epoch: int) -> None:
    """The run's first lines: what trains, on what, in which batches; XLA and the steps per call."""
    from tftrain.console import device_summary
    from tftrain.loop.distribute import strategy_name, use_xla

    t, strategy = run.cfg.trainer, run.strategy
    replicas = strategy.num_replicas_in_sync
    log.info("Run directory: %s", run.run_dir.resolve())
    accumulate = f", {t.accumulate_steps} batches of {t.batch_size // t.accumulate_steps} per update" \
        if t.accumulate_steps > 1 else ""
    log.info("Training on %s: %d replica(s) (%s), global batch %d (%d per replica%s), %d steps per epoch",
             device_summary(strategy), replicas, strategy_name(strategy), t.batch_size, t.batch_size // replicas,
             accumulate, steps_per_epoch)
    xla, why = use_xla(t.jit_compile, t.deterministic)
    log.info("XLA %s (%s); steps per call: %s", "on" if xla else "off", why,
             "chosen early in the run (trainer.steps_per_execution=auto)" if t.steps_per_execution == "auto"
             else t.steps_per_execution)


def chief_by_environment(cfg: DictConfig | None = None, *, refuse: bool = False) -> bool:
    """Whether this process is the chief, from the environment (before TensorFlow is imported):
    TF_CONFIG's `chief` task, or worker 0 of a cluster without one; any process outside a cluster.
    When `cfg` trains with trainer.strategy=multi_worker without TF_CONFIG, the SLURM step's task 0
    (tftrain.loop.distribute.multi_worker_cluster); without any cluster, `refuse`: ConfigError."""
    import json

    from omegaconf import OmegaConf

    try:
        spec = json.loads(os.environ.get("TF_CONFIG") or "{}")
    except ValueError:
        return True
    task, cluster = spec.get("task") or {}, spec.get("cluster") or {}
    if not task and cfg is not None and OmegaConf.select(cfg, "trainer.strategy") == "multi_worker":
        from tftrain.loop.distribute import multi_worker_cluster

        try:
            return multi_worker_cluster().index == 0
        except ConfigError:
            if refuse:
                raise
            return True
    if not task:
        return True
    if "chief" in cluster:
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


@contextlib.contextmanager
def open_run(cfg: DictConfig, output_dir: str | Path | None = None, *, trains: bool = True, resumes: bool = True,
             before_resume=None):
    """The opened run of `cfg` in `output_dir` (see run_dir_of), as a context manager holding the
    run directory's lock (chief only) and, while a run `trains`, the stop signals.

    `trains=False` (predict, evaluate): validation, the directory and the console only, no lock,
    no TensorFlow. `resumes=False` (lr_find): no resume plan and no config.yaml history.
    `before_resume(cfg, run_dir, strategy) -> cfg` settles the config before the resume is
    planned and config.yaml written (task.find_lr's rate).
    """
    from tftrain.console import quiet_tensorflow

    phases = Phases()
    cfg = validate(cfg)  # before TensorFlow is imported: a bad config fails in well under a second
    phases.mark("validate")
    chief = chief_by_environment(cfg if trains else None, refuse=True)
    # The lock before anything is written (taking it is the write check): a refused process
    # changes nothing another one owns. The CLI holds it already (claim_run_dir).
    run_dir = run_dir_of(cfg, output_dir, probe=not (trains and chief))
    ensure_console_logging()
    if not trains:
        yield Run(cfg, run_dir, run_dir, phases=phases)
        return
    with locked(run_dir) if chief else contextlib.nullcontext():
        from tftrain.config.targets import preflight

        with quiet_tensorflow(cfg.trainer.verbose):  # the targets' modules import Keras, and so TensorFlow
            preflight(cfg)
        phases.mark("import_tensorflow_and_check_targets")
        import keras

        policy = keras.mixed_precision.global_policy().name  # _strategy sets the run's; put back after it
        strategy, chief = _strategy(cfg)
        phases.mark("devices_and_strategy")
        from tftrain.loop.signals import StopSignals

        # Non-chief multi-worker tasks compute like the chief but write to a scratch directory.
        write_dir = run_dir if chief else Path(tempfile.mkdtemp(prefix="tftrain-worker-"))
        try:
            with StopSignals() as stop:
                if before_resume is not None:
                    cfg = before_resume(cfg, run_dir, strategy)
                # config.yaml holds no credentials, so the comparison is with the masked form too.
                shown = without_credentials(cfg)
                plan = plan_resume(run_dir, shown, chief) if resumes else ResumePlan()
                if chief and resumes:
                    save_config(shown, write_dir, plan)
                    write_hydra_record(cfg, run_dir)  # a refused resume has left the record as it was
                phases.mark("run_directory")
                yield Run(cfg, run_dir, write_dir, strategy, chief, plan, phases, stop)
        finally:
            # The precision policy is process-wide: a notebook's next model (or run) must not
            # inherit this run's mixed precision.
            keras.mixed_precision.set_global_policy(policy)
            if not chief:
                shutil.rmtree(write_dir, ignore_errors=True)
