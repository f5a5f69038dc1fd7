"""Coming back to a run directory safely: one process at a time (`RunLock`), and the new config
compared with the one the run has been training with (`plan_resume`).

Changes that would corrupt the run fail with the keys and the fix (a new run directory, or
trainer.resume=never to start this one again); changes a user legitimately makes (more epochs, a
new rate, logging, verbosity, checkpointing) go on with a note, and the config the run trained
with so far is kept in `config_history/` rather than overwritten.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from tftrain.errors import TftrainError
from tftrain.locks import HolderLock

log = logging.getLogger("tftrain")

# Keys whose change would corrupt a run in progress: what is learned, from what, in which order.
REFUSED = ("model", "data", "problem", "trainer.batch_size", "trainer.seed", "optimizer._target_", "schedule._target_")
# ... except these, which change how the data is read, not what it is.
HARMLESS = ("data.cache", "data.scan_limit", "output_dir")
# Keys that only matter when a run starts: a resume takes its weights from the checkpoint.
AT_START = ("initializer", "trainer.deterministic")


class RunDirBusy(TftrainError):
    """Another process trains in this run directory."""


class ResumeRefused(TftrainError):
    """The new config would corrupt the run in this directory."""


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
    """What differs from the run's previous config (`changes`: key -> (old, new))."""

    previous: object | None = None
    changes: dict = field(default_factory=dict)

    @property
    def schedule_changed(self) -> bool:
        return any(k.startswith(("schedule.", "optimizer.", "trainer.epochs")) for k in self.changes)


def _matches(key: str, prefixes) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def changes_from_saved(run_dir: Path, cfg) -> tuple[object | None, dict]:
    """(the run's saved config.yaml or None, {key: (old, new)} for every key `cfg` changes)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return None, {}
    previous = OmegaConf.load(path)
    old, new = _flat(previous), _flat(cfg)
    return previous, {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
                      if old.get(k) != new.get(k) and not k.startswith("hydra")}


def plan_resume(run_dir: Path, cfg, has_checkpoints: bool) -> ResumePlan:
    """Compare `cfg` with `run_dir/config.yaml` when the run has checkpoints to resume from."""
    if not has_checkpoints:
        return ResumePlan()
    previous, changes = changes_from_saved(run_dir, cfg)
    if previous is None:
        return ResumePlan()
    refused = {k: v for k, v in changes.items() if _matches(k, REFUSED) and not _matches(k, HARMLESS)}
    if refused:
        listing = ", ".join(f"`{k}` {v[0]!r} -> {v[1]!r}" for k, v in refused.items())
        raise ResumeRefused(
            f"{run_dir} holds checkpoints of a run these changes would corrupt: {listing}. A resumed run continues "
            "with the model, data, problem, batch size, seed, optimizer and schedule kind it started with. Fix: "
            "train in a new run directory (hydra.run.dir=... or output_dir=...), or start this one again from step 0 "
            "with trainer.resume=never (its checkpoints are moved aside), or undo the changes.")
    return ResumePlan(previous, changes)


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
    if plan.schedule_changed and rate_before is not None and rate_after is not None:
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
