"""The default sweep launcher (`hydra/launcher=tftrain`, hydra_plugins/tftrain_launcher): Hydra's
basic launcher, except that the jobs of a batch that differ only in `trainer.seed` train together.

A seed group's members are opened one after another in this thread, each as its own job would
be (Hydra's record of the job, its log file, the run directory's lock, the seed set and its model,
optimizer and data built: `tftrain.cli.main.sweep_job` up to the loop), so each starts from what
its separate run starts from. Then each member's loop runs in its own thread and their training
calls run as one compiled call (tftrain.loop.group.StepGroup); each member's log lines go to its
own tftrain.log (and to the console marked with its job number). Last, each member's job ends as
any job does (its outcome recorded, its lock released) and Hydra's callbacks hear of it.

Hydra's `run_job` cannot be used for the members: it sets the process-wide HydraConfig and
logging for one job at a time and runs the job to its end. What it does around the task is done
here instead, member by member.
"""

from __future__ import annotations

import copy
import logging
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger("tftrain")
hydra_log = logging.getLogger(__name__)

SEED_KEY = "trainer.seed"
# Strategies with one model copy per process: a group holds one copy per member instead.
SINGLE_COPY = ("auto", "default", "one_device")


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def plan_groups(job_overrides, seed_groups: bool = True, max_group: int = 8) -> list[list[int]]:
    """The batch's jobs (positions in `job_overrides`) in the order they run: jobs whose overrides
    differ only in trainer.seed together (at most `max_group` at a time), every other job alone."""
    if not seed_groups or max_group < 2:
        return [[i] for i in range(len(job_overrides))]
    order: list[list[int]] = []
    groups: dict[tuple, list[int]] = {}
    for i, overrides in enumerate(job_overrides):
        if not any(_key(o) == SEED_KEY for o in overrides):
            order.append([i])
            continue
        rest = tuple(sorted(o for o in overrides if _key(o) != SEED_KEY))
        if rest not in groups:
            groups[rest] = []
            order.append(groups[rest])
        groups[rest].append(i)
    return [g[k:k + max_group] for g in order for k in range(0, len(g), max_group)]


def why_alone(cfg: DictConfig) -> str | None:
    """Why the jobs of `cfg` (a member's composed config) cannot train as a seed group, or None."""
    select = lambda key: OmegaConf.select(cfg, key, default=None)  # noqa: E731
    if select("task._target_") != "tftrain.tasks.train.train":
        return f"task={select('hydra.runtime.choices.task') or select('task._target_')} runs one job at a time"
    if select("task.find_lr"):
        return "task.find_lr runs its range test in each job"
    strategy = select("trainer.strategy")
    if strategy not in SINGLE_COPY or int(select("trainer.cpu_devices") or 1) > 1:
        return f"trainer.strategy={strategy} with trainer.cpu_devices={select('trainer.cpu_devices')} trains replicas"
    if select("trainer.mixed_precision"):
        return "trainer.mixed_precision sets Keras' policy per thread"
    loggers = select("logger") or {}
    if any("mlflow" in str(OmegaConf.select(node, "_target_", default="")).lower() for node in loggers.values()):
        return "logger=mlflow keeps one active MLflow run per process"
    if strategy == "auto":
        from tftrain.console import quiet_tensorflow

        with quiet_tensorflow(int(select("trainer.verbose") or 0)):  # its start-up lines, as a run keeps them off
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
        if len(gpus) > 1:
            return "trainer.strategy=auto mirrors each job over this machine's GPUs"
    return None


def launch(launcher, job_overrides, initial_job_idx: int) -> list:
    """Hydra's Launcher.launch: the batch's JobReturns, in the batch's order."""
    from hydra.core.utils import configure_log, filter_overrides, setup_globals

    setup_globals()
    config = launcher.config
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    hydra_log.info(f"Launching {len(job_overrides)} jobs locally")
    for idx, overrides in enumerate(job_overrides):
        hydra_log.info(f"\t#{initial_job_idx + idx} : {' '.join(filter_overrides(overrides))}")
    try:
        return _launch_groups(launcher, job_overrides, initial_job_idx)
    finally:
        forget_compositions(launcher.hydra_context.config_loader)


def _launch_groups(launcher, job_overrides, initial_job_idx: int) -> list:
    from hydra.core.utils import configure_log

    config = launcher.config
    returns: list = [None] * len(job_overrides)
    for positions in plan_groups(job_overrides, launcher.seed_groups, launcher.max_group):
        first = _sweep_config(launcher, job_overrides[positions[0]], initial_job_idx + positions[0])
        why = why_alone(first) if len(positions) > 1 else None
        configs = [first] + [_sweep_config(launcher, job_overrides[i], initial_job_idx + i) if why is not None
                             else _with_seed(first, job_overrides[i], initial_job_idx + i) for i in positions[1:]]
        if why is not None:
            log.info("Jobs %s differ only in trainer.seed but train one after another: %s.",
                     _numbers(initial_job_idx, positions), why)
        if len(positions) == 1 or why is not None:
            for i, cfg in zip(positions, configs):
                returns[i] = _run_alone(launcher, cfg)
        else:
            for i, ret in zip(positions, _run_group(launcher, configs)):
                returns[i] = ret
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    return returns


def _numbers(initial: int, positions: list[int]) -> str:
    return ", ".join(f"#{initial + i}" for i in positions)


def _sweep_config(launcher, overrides, idx: int) -> DictConfig:
    cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
    with open_dict(cfg):
        cfg.hydra.job.id = idx
        cfg.hydra.job.num = idx
    return cfg


def _seed_free(overrides) -> tuple | None:
    """A job's overrides without its `trainer.seed=VALUE`, sorted; None for a job without one (or
    one that adds or deletes the key instead of setting it)."""
    seeds = [o for o in overrides if _key(o) == SEED_KEY]
    if len(seeds) != 1 or not seeds[0].startswith(SEED_KEY + "="):
        return None
    return tuple(sorted(o for o in overrides if _key(o) != SEED_KEY))


def remember_compositions(loader) -> None:
    """Make the sweep's config loader compose each job of a batch once.

    Hydra's sweeper composes every job of a batch to check it before the launch, and a launcher
    composes each again to run it: 0.15-0.25 s a job on 2 cores, 1.0 s of a 4-seed sweep and 3.5 s
    of experiment=compare_optimizers (15 jobs). The sweeper and this launcher share one loader
    (Hydra's HydraContext), and Hydra has no hook between them, so its `load_sweep_config` is
    wrapped on the instance: a job composed before is a copy of that composition, and a job that
    differs from a composed one only in trainer.seed is derived from it (_with_seed) as its seed
    group's members are. `forget_compositions` drops them when the batch is launched, so the next
    batch is composed afresh (its jobs see the config files as they are then); a batch's jobs run
    the compositions its check made, not ones made again at their launch as without this."""
    if hasattr(loader.load_sweep_config, "forget"):
        return
    compose = loader.load_sweep_config
    composed: dict[tuple, DictConfig] = {}  # (master config, the job's overrides) -> its composition
    seed_variants: dict[tuple, DictConfig] = {}  # (master config, overrides but the seed) -> the first composed

    def load_sweep_config(master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        key = (id(master_config), tuple(sweep_overrides))
        if key not in composed:
            rest = _seed_free(sweep_overrides)
            like = seed_variants.get((key[0], rest)) if rest is not None else None
            composed[key] = (_with_seed(like, sweep_overrides) if like is not None
                             else compose(master_config, list(sweep_overrides)))
            if rest is not None:
                seed_variants.setdefault((key[0], rest), composed[key])
        return copy.deepcopy(composed[key])

    def forget() -> None:
        composed.clear()
        seed_variants.clear()

    load_sweep_config.forget = forget
    loader.load_sweep_config = load_sweep_config


def forget_compositions(loader) -> None:
    getattr(loader.load_sweep_config, "forget", lambda: None)()


def _with_seed(first: DictConfig, overrides, idx: int | None = None) -> DictConfig:
    """The sweep config of a group's member: its first member's with the member's seed, task
    overrides, override_dirname and job number. The same as Hydra composing it (compared in
    tests/test_seed_groups.py), without composing again (0.15-0.25 s a job on 2 cores): the
    members' overrides differ only in trainer.seed, a value, so nothing else of the composition
    changes (values that interpolate the seed are resolved when read)."""
    from hydra._internal.config_loader_impl import get_overrides_dirname  # what Hydra's own composition calls
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = copy.deepcopy(first)
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    seed = next(o for o in parsed if o.key_or_group == SEED_KEY)
    with read_write(cfg), open_dict(cfg):
        cfg.trainer.seed = seed.value()
        cfg.hydra.overrides.task = list(overrides)
        dirname = cfg.hydra.job.config.override_dirname
        cfg.hydra.job.override_dirname = get_overrides_dirname(
            overrides=parsed, kv_sep=dirname.kv_sep, item_sep=dirname.item_sep, exclude_keys=dirname.exclude_keys)
        if idx is not None:
            cfg.hydra.job.id = idx
            cfg.hydra.job.num = idx
    return cfg


def _run_alone(launcher, cfg: DictConfig):
    from hydra.core.utils import run_job

    return run_job(hydra_context=launcher.hydra_context, task_function=launcher.task_function, config=cfg,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


@dataclass
class _Member:
    config: DictConfig  # the job's sweep config (with its hydra node)
    ret: object = None  # hydra.core.utils.JobReturn
    job: object = None  # tftrain.cli.main.sweep_job(..., together=True)
    training: object = None  # tftrain.tasks.train.Training, while it is to run
    result: dict | None = None
    error: BaseException | None = None
    log_files: tuple = ()  # (file name, formatter, level) of the job's log files
    thread_name: str = ""

    @property
    def num(self) -> int:
        return int(self.config.hydra.job.num)

    def finished(self, value) -> None:
        from hydra.core.utils import JobStatus

        self.ret.return_value, self.ret.status, self.training = value, JobStatus.COMPLETED, None

    def failed(self, e: BaseException) -> None:
        from hydra.core.utils import JobStatus

        self.ret.return_value, self.ret.status, self.training = e, JobStatus.FAILED, None


def _begin(launcher, m: _Member) -> None:
    """What Hydra's run_job does before the task, then the task up to its loop (sweep_job)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import JobReturn, configure_log

    from tftrain.cli.main import sweep_job

    cfg = m.config
    HydraConfig.instance().set_config(cfg)
    output_dir = os.path.abspath(os.path.join(str(OmegaConf.select(cfg, "hydra.sweep.dir")),
                                              str(OmegaConf.select(cfg, "hydra.sweep.subdir"))))
    with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
        cfg.hydra.runtime.output_dir = output_dir
    HydraConfig.instance().set_config(cfg)
    m.ret = ret = JobReturn()
    task_cfg = copy.deepcopy(cfg)
    with read_write(task_cfg), open_dict(task_cfg):
        del task_cfg["hydra"]
    ret.cfg, ret.hydra_cfg = task_cfg, copy.deepcopy(HydraConfig.instance().cfg)
    ret.overrides, ret.working_dir = OmegaConf.to_container(cfg.hydra.overrides.task), os.getcwd()
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    configure_log(cfg.hydra.job_logging, cfg.hydra.verbose)
    m.log_files = tuple((h.baseFilename, h.formatter, h.level) for h in logging.getLogger().handlers
                        if isinstance(h, logging.FileHandler))
    launcher.hydra_context.callbacks.on_job_start(config=cfg, task_function=launcher.task_function)
    m.job = sweep_job(task_cfg, output_dir, together=True)
    try:
        m.training = next(m.job)
    except StopIteration as done:  # completed earlier, skipped, or failed before training (recorded)
        m.finished(done.value)
    except BaseException as e:  # noqa: BLE001 - a stopped sweep (Preempted): as run_job records it
        m.failed(e)


def _end(launcher, m: _Member) -> None:
    """The job's end: its outcome handled by sweep_job (which closes its run), Hydra's callbacks."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import configure_log

    HydraConfig.instance().set_config(m.config)
    if m.training is not None:
        configure_log(m.config.hydra.job_logging, m.config.hydra.verbose)
        try:
            if m.error is not None:
                m.job.throw(m.error)
            else:
                m.job.send(m.result)
        except StopIteration as done:
            m.finished(done.value)
        except BaseException as e:  # noqa: BLE001
            m.failed(e)


def _run_group(launcher, configs: list[DictConfig]) -> list:
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import JobRuntime, _flush_loggers, env_override

    original = HydraConfig.instance().cfg
    members = [_Member(cfg) for cfg in configs]
    try:
        with env_override(dict(configs[0].hydra.job.env_set or {})):
            for m in members:
                _begin(launcher, m)
            together = [m for m in members if m.training is not None]
            if together:
                _train_together(together)
            for m in reversed(together):  # last opened, first closed: each run's signal handlers unwind in order
                _end(launcher, m)
        for m in members:
            HydraConfig.instance().set_config(m.config)
            m.ret.task_name = JobRuntime.instance().get("name")
            _flush_loggers()
            launcher.hydra_context.callbacks.on_job_end(config=m.config, job_return=m.ret)
    finally:
        HydraConfig.instance().cfg = original
    return [m.ret for m in members]


def _train_together(members: list[_Member]) -> None:
    """The members' loops, each in its own thread, their training calls as one compiled call."""
    from tftrain.loop.group import StepGroup, follow

    trainings = [m.training for m in members]
    group = StepGroup([t.trainer for t in trainings],
                      [lambda t=t: t.loggers.graph_writer()[0] for t in trainings])  # made when its run starts
    for i, t in enumerate(trainings):
        group.join(i)
        if i:  # one count of steps per call for all (calibrated on the group's calls by the first member)
            t.controller.pacer = follow(trainings[0].controller.pacer)
    seeds = ", ".join(str(m.config.trainer.seed) for m in members)
    if len(members) > 1:  # the others failed to start (their errors are logged): one left trains as a group of one
        log.info("Jobs %s (trainer.seed=%s) train together: one compiled step for their %d models "
                 "(hydra.launcher.seed_groups=false: one job after another).",
                 ", ".join(f"#{m.num}" for m in members), seeds, len(members))
    for m in members:
        m.thread_name = f"tftrain-job-{m.num}"
    with _member_logs(members), _signals_to(members):
        threads = [threading.Thread(target=_train_member, args=(m,), name=m.thread_name, daemon=True)
                   for m in members]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):  # with a timeout: the main thread takes the signals
            for t in threads:
                t.join(0.2)


def _train_member(m: _Member) -> None:
    try:
        m.result = m.training.run()
    except BaseException as e:  # noqa: BLE001 - handed to the job (sweep_job), as if raised there
        m.error = e


class _ThreadFilter(logging.Filter):
    """A member's log file takes its own thread's lines and the main thread's (a signal's)."""

    def __init__(self, thread_name: str):
        super().__init__()
        self.thread_name = thread_name

    def filter(self, record: logging.LogRecord) -> bool:
        return record.threadName in (self.thread_name, "MainThread")


class _Marked(logging.Formatter):
    """The console's lines of a member marked with its job number: `[12:00:01] #2 epoch 3/15 ...`."""

    def __init__(self, inner: logging.Formatter | None, marks: dict[str, str]):
        super().__init__()
        self.inner, self.marks = inner or logging.Formatter(), marks

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        mark = self.marks.get(record.threadName)
        if mark is None:
            return text
        head, sep, rest = text.partition("] ")
        return f"{head}{sep}{mark} {rest}" if sep and head.startswith("[") else f"{mark} {text}"


class _member_logs:
    """While the members train: each member's log file(s) reopened (appending) for its thread's
    lines, the console's lines marked; the last member's job logging put back after."""

    def __init__(self, members: list[_Member]):
        self.members = members
        self.added: list[logging.Handler] = []
        self.removed: list[logging.Handler] = []
        self.formatters: list[tuple[logging.Handler, logging.Formatter]] = []

    def __enter__(self):
        root = logging.getLogger()
        marks = {m.thread_name: f"#{m.num}" for m in self.members}
        for h in list(root.handlers):
            if isinstance(h, logging.FileHandler):  # the last member's, opened by its job logging
                root.removeHandler(h)
                h.close()
                self.removed.append(h)
            else:
                self.formatters.append((h, h.formatter))
                h.setFormatter(_Marked(h.formatter, marks))
        for m in self.members:
            for name, formatter, level in m.log_files:
                h = logging.FileHandler(name, mode="a", delay=True)
                h.setFormatter(formatter)
                h.setLevel(level)
                h.addFilter(_ThreadFilter(m.thread_name))
                root.addHandler(h)
                self.added.append(h)
        return self

    def __exit__(self, *exc):
        root = logging.getLogger()
        for h in self.added:
            root.removeHandler(h)
            h.close()
        for h, formatter in self.formatters:
            h.setFormatter(formatter)
        return False


class _signals_to:
    """SIGTERM/SIGINT while the members train: every member stops after a checkpoint (each run's
    own StopSignals is asked; the first reports it, and a second signal ends the process)."""

    def __init__(self, members: list[_Member]):
        self.stops = [m.training.run_.stop for m in members]
        self.previous: dict = {}

    def _handle(self, signum, frame) -> None:
        first, *others = self.stops
        first._handle(signum, frame)
        for stop in others:
            stop.request(signum)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            from tftrain.loop.signals import STOP_SIGNALS

            for signum in STOP_SIGNALS:
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, old in self.previous.items():
            signal.signal(signum, old)
        return False
