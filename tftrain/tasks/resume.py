"""Every resume decision, in one place: one process at a time in a run directory (`RunLock`),
`trainer.resume` (auto | never | must), the new config compared with the one the run has been
training with (`plan_resume`), the restored checkpoint checked against the run (its replica
count, its step against trainer.epochs: `ResumePlan.on_restore`), and whether a sweep's job
completed in an earlier run of the sweep (`completed_earlier`).

Changes that would corrupt the run fail with the keys and the fix (a new run directory, or
trainer.resume=never to start this one again); changes a user legitimately makes (more epochs, a
new rate, logging, verbosity, checkpointing) go on with a note, and the config the run trained
with so far is kept in `config_history/` rather than overwritten.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from tftrain.errors import ResumeRefused, RunDirBusy, TftrainError
from tftrain.tasks.locks import HolderLock

log = logging.getLogger("tftrain")

# Keys whose change would corrupt a run in progress: what is learned, from what, in which order.
REFUSED = ("model", "data", "problem", "trainer.batch_size", "trainer.seed", "optimizer._target_", "schedule._target_")
# ... except these, which change how the data is read, not what it is.
HARMLESS = ("data.cache", "data.scan_limit", "output_dir")
# ... and a dropout rate changed between two rates above 0: the same layers, another rate (at 0 the
# model has no Dropout layer, so its variables would not match the checkpoint's). PBT
# (hparams_search=pbt) perturbs it between the rounds of a resumed run.
def retunable(key: str, change: tuple) -> bool:
    return key == "model.dropout" and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                                          for v in change)


# Keys that add or remove state the checkpoint holds, refused rather than resumed with that state
# started fresh: Keras builds an optimizer's moving averages (use_ema) from the weights before the
# restore, so a fresh average would pull the resumed weights back towards the initial ones; and
# callbacks' checkpointed state is matched by position, so adding or removing a stateful callback
# would hand one callback's state to another. (`callbacks.extra` come after these, so changing them
# shifts no built-in callback's state.)
STATEFUL = ("optimizer.use_ema", "callbacks.early_stopping.enabled", "callbacks.best_checkpoint.enabled",
            "callbacks.swa.enabled")
# Keys that only matter when a run starts: a resume takes its weights from the checkpoint.
AT_START = ("initializer", "trainer.deterministic")


class RunLock(HolderLock):
    """`<run_dir>/.tftrain.lock`, held while this process trains there."""

    def __init__(self, run_dir: Path):
        super().__init__(Path(run_dir) / ".tftrain.lock")

    def busy(self, holder: str) -> Exception:
        return RunDirBusy(f"{self.path.parent} is in use: {holder} is training there. Fix: wait for it to end (or "
                          "stop it), or train in another run directory (hydra.run.dir=... or output_dir=...).")

    def took_over(self, previous: str) -> None:
        log.info("Took over the lock of a process that is gone (%s)", previous)


def _flat(node, prefix: str = "") -> dict:
    out = {}
    container = OmegaConf.to_container(node, resolve=True) if not isinstance(node, dict) else node
    for k, v in container.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v and key.count(".") < 2:
            out.update(_flat(v, key))
        else:
            out[key] = v
    return out


@dataclass
class ResumePlan:
    """What differs from the run's previous config (`changes`: key -> (old, new)); `previous` is
    None for a run that starts from step 0."""

    previous: object | None = None
    changes: dict = field(default_factory=dict)

    @property
    def schedule_changed(self) -> bool:
        return any(k.startswith(("schedule.", "optimizer.", "trainer.epochs")) for k in self.changes)

    def on_restore(self, run_dir: Path, epochs: int, steps_per_epoch: int, replicas: int, rates=None):
        """The check the loop calls with (step, host state) once it restored a checkpoint: the run's
        replica count and its step against trainer.epochs (refused: ResumeRefused), then the
        accepted changes logged with what they do to the learning rate (`rates(step)` -> (before,
        after), or None)."""
        def check(step: int, state: dict) -> None:
            if state.get("replicas", replicas) != replicas:
                raise ResumeRefused(
                    f"The run in {run_dir} was training on {state['replicas']} replica(s); this process has "
                    f"{replicas}: its steps would not continue the same computation. Fix: resume with the same "
                    "trainer.strategy, trainer.cpu_devices and devices, or train in a new run directory.")
            end = epochs * steps_per_epoch
            if step > end:
                raise ResumeRefused(
                    f"The run in {run_dir} is already at step {step} (epoch {step // steps_per_epoch + 1}), past the "
                    f"end of trainer.epochs={epochs} ({end} steps): it cannot end there. Fix: set trainer.epochs to "
                    f"at least {-(-step // steps_per_epoch)}, or start a new run directory.")
            before, after = (None, None)
            if self.previous is not None and self.schedule_changed and rates is not None:
                try:
                    before, after = rates(step)
                except Exception:  # noqa: BLE001 - only a note: the old config may not rebuild (a removed option)
                    pass
            describe(self, before, after, step)

        return check


def _matches(key: str, prefixes) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def changes_from_saved(run_dir: Path, cfg) -> tuple[object | None, dict]:
    """(the run's saved config.yaml or None, {key: (old, new)} for every key `cfg` changes)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return None, {}
    try:
        previous = OmegaConf.load(path)
    except Exception as e:  # noqa: BLE001 - yaml's and OmegaConf's parse errors, undecodable bytes: all mean damage
        mark = getattr(e, "problem_mark", None)  # yaml's parse errors say where
        previous = None
        reason = (f"{e.problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None
                  and getattr(e, "problem", None) else " ".join(str(e).split())[:200])
    else:
        reason = "" if isinstance(previous, DictConfig) else f"it holds a {type(previous).__name__}, not a mapping"
    if reason:
        # Read as data: a damaged config cannot say what the checkpoints were trained with.
        raise ResumeRefused(
            f"{path} cannot be read as the config the run in {run_dir} trained with ({reason}), so it cannot be "
            "compared with this command's config to resume the run. Fix: train in a new run directory "
            "(hydra.run.dir=... or output_dir=...), or start this one again from step 0 with trainer.resume=never "
            "(its checkpoints are moved aside), or restore config.yaml from a copy of the run.")
    old, new = _flat(previous), _flat(cfg)
    return previous, {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
                      if old.get(k) != new.get(k) and not k.startswith("hydra")}


def _listing(changes: dict) -> str:
    """`key` old -> new, for a refusal's paragraph."""
    return ", ".join(f"`{k}` {v[0]!r} -> {v[1]!r}" for k, v in changes.items())


def plan_resume(run_dir: Path, cfg, chief: bool = True) -> ResumePlan:
    """`trainer.resume` applied to `run_dir` and `cfg` compared with `run_dir/config.yaml` when the
    run has checkpoints to resume from. `never` moves earlier checkpoints aside (the chief does);
    `must` without a checkpoint, and changes that would corrupt the run, raise ResumeRefused."""
    from tftrain.loop.checkpoints import committed_steps, steps_in

    mode, directory = cfg.trainer.resume, Path(run_dir) / "checkpoints"
    # Only committed checkpoints count: an interrupted first write is not something to resume.
    steps = committed_steps(directory)
    if mode == "never":
        if steps_in(directory) and chief:
            aside = directory.with_name(f"{directory.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
            directory.rename(aside)
            log.warning("trainer.resume=never: moved the %d earlier checkpoint(s) aside to %s; starting from step 0.",
                        len(steps_in(aside)), aside)
        return ResumePlan()
    if not steps:
        if mode == "must":
            raise ResumeRefused(f"trainer.resume=must but there is no checkpoint to resume in {directory}. Fix: point "
                                "hydra.run.dir (or output_dir) at the run to resume, or use trainer.resume=auto to "
                                "start a new run.")
        return ResumePlan()
    previous, changes = changes_from_saved(run_dir, cfg)
    if previous is None:
        return ResumePlan()
    refused = {k: v for k, v in changes.items() if _matches(k, REFUSED) and not _matches(k, HARMLESS)
               and not retunable(k, v)}
    if refused:
        raise ResumeRefused(
            f"{run_dir} holds checkpoints of a run these changes would corrupt: {_listing(refused)}. A resumed run continues "
            "with the model, data, problem, batch size, seed, optimizer and schedule kind it started with. Fix: "
            "train in a new run directory (hydra.run.dir=... or output_dir=...), or start this one again from step 0 "
            "with trainer.resume=never (its checkpoints are moved aside), or undo the changes.")
    stateful = {k: v for k, v in changes.items() if _matches(k, STATEFUL)}
    if stateful:
        raise ResumeRefused(
            f"{run_dir} holds checkpoints without the state these changes need: {_listing(stateful)}. An optimizer's moving "
            "average (optimizer.use_ema) started at a resume would average towards the initial weights, and a "
            "callback added or removed would receive another callback's checkpointed state. Fix: keep the settings "
            "the run started with to resume it; or start this run again from step 0 with trainer.resume=never (its "
            "checkpoints are moved aside); or train with the new settings in a new run directory "
            "(hydra.run.dir=... or output_dir=...).")
    return ResumePlan(previous, changes)


def completed_earlier(cfg, run_dir: Path) -> dict | None:
    """The metrics of a sweep job's directory when an earlier run of the same sweep completed it
    with the same config (a rerun sweep skips it); None otherwise. A failed job's record is
    removed, so it runs again (resuming from its checkpoints, if it has any)."""
    from tftrain.schema import validate

    run_dir = Path(run_dir)
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    if metrics.get("status", "completed") not in ("completed", "pruned"):
        for name in ("metrics.json", "error.txt"):
            (run_dir / name).unlink(missing_ok=True)
        log.info("Job %s failed in an earlier run of this sweep: running it again", run_dir.name)
        return None
    try:
        previous, changes = changes_from_saved(run_dir, validate(cfg))
    except TftrainError:
        return None  # an invalid config: let the task report it
    if previous is None or changes:
        return None  # changed since (e.g. new code defaults): the task resumes or refuses, as for any run
    log.info("Job %s completed in an earlier run of this sweep: reusing its metrics.json (delete the directory to "
             "run it again)", run_dir.name)
    return metrics


def describe(plan: ResumePlan, rate_before: float | None = None, rate_after: float | None = None,
             step: int | None = None) -> None:
    """Log the accepted changes and what they do."""
    if not plan.changes:
        return
    at_start = [k for k in plan.changes if _matches(k, AT_START)]
    others = [k for k in plan.changes if k not in at_start]
    if others:
        log.warning("Resuming with changed settings: %s.",
                    ", ".join(f"{k} {plan.changes[k][0]!r} -> {plan.changes[k][1]!r}" for k in others))
    if at_start:
        log.warning("Ignored on resume (they apply when a run starts; the weights come from the checkpoint): %s.",
                    ", ".join(at_start))
    # Equal rates (a constant schedule given more epochs): nothing changes, so nothing to say.
    if plan.schedule_changed and rate_before is not None and rate_after is not None \
            and not math.isclose(rate_before, rate_after, rel_tol=1e-6, abs_tol=1e-12):
        log.warning("The schedule is rebuilt for the new settings: at step %d the learning rate goes from %.4g to %.4g.",
                    step, rate_before, rate_after)


def save_config(cfg, run_dir: Path, plan: ResumePlan) -> None:
    """config.yaml: the config this process trains with. On a resume with changes the previous one
    goes to config_history/<n>.yaml first, with the changes that replaced it."""
    run_dir = Path(run_dir)
    if plan.changes and (run_dir / "config.yaml").is_file():
        history = run_dir / "config_history"
        history.mkdir(exist_ok=True)
        n = len(list(history.glob("*.yaml")))
        note = json.dumps({k: [v[0], v[1]] for k, v in plan.changes.items()}, default=str)
        (history / f"{n}.yaml").write_text(f"# replaced on {time.strftime('%Y-%m-%d %H:%M:%S')} by the changes "
                                           f"{note}\n" + (run_dir / "config.yaml").read_text())
    if plan.previous is None or plan.changes:
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
