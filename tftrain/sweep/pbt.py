"""Population-based training as a Hydra sweeper (`hparams_search=pbt`; the plugin is
hydra_plugins/tftrain_pbt_sweeper, which only wraps `PbtSearch`). Jaderberg et al. 2017, with
Ray Tune's `PopulationBasedTraining` rules (synchronous mode).

A population of `population` members trains in rounds of `perturbation_interval` epochs. Member i
is always the job directory `member_<i>` of the sweep; round r launches every member with
`trainer.epochs = r x interval` (the last round: trainer.epochs), so each job resumes its own
checkpoints exactly and trains the next epochs. Between rounds, by the last epoch's objective,
each member of the bottom quantile copies the latest committed checkpoint of a member drawn from
the top quantile (weights, optimizer and schedule state, data position, history: the whole
checkpoint, `copy_checkpoint`) and takes that member's hyper-parameters, perturbed (`explore`).
The changed values reach the job as config changes that a resume accepts (optimizer.lr, ...);
keys a resume refuses are refused in the search space.

The population lives in `<sweep dir>/pbt.json`, written atomically after each round: the values
of each member, each round's objectives and every exploitation (the lineage). Rerunning the same
command continues it: finished rounds are not run again, and a member a kill interrupted resumes
from its checkpoints (a member that had finished the round is reused, as in any sweep). The
report `pbt.md` / `pbt.png` follows the winner's lineage back through the members it copied.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

from omegaconf import OmegaConf

from tftrain.errors import ConfigError, TftrainError
from tftrain.sweep.sweeper import LaunchingSweeper
from tftrain.tasks.locks import HolderLock

log = logging.getLogger("tftrain")

STATE_FILE = "pbt.json"
MEMBER_DIR = "member_{}"


# ---------------------------------------------------------------- the explore rules (pure)


def quantiles(scores: Sequence[float | None], fraction: float) -> tuple[list[int], list[int]]:
    """(bottom, top) member indices, Ray's rule: ceil(P x fraction) members each, at most P / 2.
    `scores` are oriented so that higher is better; None (a failed or non-finite run) ranks
    lowest, and every such member is in the bottom (it has nothing to continue from)."""
    ok = [i for i, s in enumerate(scores) if s is not None]
    failed = [i for i, s in enumerate(scores) if s is None]
    ranked = failed + sorted(ok, key=lambda i: scores[i])  # stable: ties keep member order
    n = int(math.ceil(len(scores) * fraction))
    if n > len(scores) / 2:
        n = len(scores) // 2
    if n == 0 or not ok:
        return failed, []
    bottom = ranked[:max(n, len(failed))]
    top = [i for i in ranked[-n:] if i not in bottom]
    return bottom, top


def sample(dist, rng: random.Random):
    """A value of one Optuna distribution (log-uniform for log=True, on the step's grid)."""
    if hasattr(dist, "choices"):
        return rng.choice(list(dist.choices))
    integer = type(dist).__name__.startswith("Int")
    if dist.log:
        value = math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))
    else:
        value = rng.uniform(dist.low, dist.high)
    return _fit(dist, value, integer)


def _fit(dist, value: float, integer: bool):
    """`value` clipped to the distribution's bounds and put on its step grid."""
    value = min(max(value, dist.low), dist.high)
    step = getattr(dist, "step", None)
    if step:
        value = dist.low + round((value - dist.low) / step) * step
        value = min(value, dist.high)
    return int(round(value)) if integer else float(value)


def perturb(dist, value, rng: random.Random, resample_probability: float,
            factors: Sequence[float]) -> tuple[Any, str]:
    """(new value, how): Ray's explore step for one key. With `resample_probability` a fresh draw
    from the distribution; otherwise a number times one of `factors` (drawn with equal chance;
    clipped to the bounds, integers moved by at least 1), a choice shifted to a neighbour."""
    if hasattr(dist, "choices"):
        choices = list(dist.choices)
        if value not in choices or rng.random() < resample_probability:
            return rng.choice(choices), "resampled"
        i = choices.index(value)
        j = max(0, i - 1) if rng.random() > 0.5 else min(len(choices) - 1, i + 1)
        return choices[j], f"shifted {j - i:+d}"
    if rng.random() < resample_probability:
        return sample(dist, rng), "resampled"
    factor = rng.choice(list(factors))
    integer = type(dist).__name__.startswith("Int")
    new = value * factor
    if integer and int(round(new)) == value and factor != 1:
        new = value + (1 if factor > 1 else -1)  # 2 x 1.2 rounds back to 2: an integer must move
    return _fit(dist, new, integer), f"x{factor:g}"


def explore(space, values: Mapping[str, Any], rng: random.Random, resample_probability: float,
            factors: Sequence[float]) -> tuple[dict, dict]:
    """(new values, how each changed) for every dimension of `space` (a SearchSpace)."""
    new, how = {}, {}
    for key, dist in space.distributions.items():
        new[key], how[key] = perturb(dist, values[key], rng, resample_probability, factors)
    return new, how


def schedule_of(state: dict, member: int) -> list[dict]:
    """The hyper-parameters that trained `member`'s final weights, round by round: each round's
    values of the member whose checkpoint it continued (followed back through the exploitations)."""
    rounds = state.get("rounds", [])
    out, current = [], member
    for rnd in reversed(rounds):
        out.append({"round": rnd["round"], "epochs": rnd["epochs"], "member": current,
                    "values": rnd["values"][current], "objective": rnd["objectives"][current]})
        # Before this round, `current`'s checkpoint was copied from a source at the end of the previous round.
        earlier = rounds[rnd["round"] - 2] if rnd["round"] >= 2 else None
        for event in (earlier or {}).get("exploits", []):
            if event["member"] == current:
                current = event["source"]
    return list(reversed(out))


# ---------------------------------------------------------------- checkpoints


def copy_checkpoint(source_run: Path, target_run: Path) -> int:
    """Replace `target_run`'s checkpoints with the latest committed checkpoint of `source_run`;
    returns its step. Built beside the target's directory and swapped in by renames; the
    target's run directory lock is held meanwhile, so a member training there fails this."""
    from tftrain.tasks.resume import RunLock

    source, target = Path(source_run) / "checkpoints", Path(target_run) / "checkpoints"
    # Committed: its state-<step>.json in place (tftrain.loop.checkpoints, not imported: it loads
    # TensorFlow, which the sweeper's process does not need with a parallel launcher).
    found = [re.fullmatch(r"state-(\d+)\.json", p.name) for p in source.iterdir()] if source.is_dir() else []
    steps = sorted((int(m.group(1)) for m in found if m), reverse=True)
    if not steps:
        raise TftrainError(f"{source} has no committed checkpoint to copy. Fix: delete the sweep directory's "
                           f"{STATE_FILE} to start the population again, or rerun to retrain the round.")
    step = steps[0]
    files = [p for p in source.iterdir() if p.is_file() and (p.name.startswith(f"ckpt-{step}.")
                                                             or p.name == f"state-{step}.json")]
    with RunLock(Path(target_run)):
        staging, old = target.with_name("checkpoints.pbt-copy"), target.with_name("checkpoints.pbt-old")
        for leftover in (staging, old):
            shutil.rmtree(leftover, ignore_errors=True)
        staging.mkdir(parents=True)
        # The state file last: it commits the checkpoint (tftrain.loop.checkpoints).
        for path in sorted(files, key=lambda p: p.name.startswith("state-")):
            shutil.copy2(path, staging / path.name)
        if target.exists():
            target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    return step


# ---------------------------------------------------------------- the sweeper


class PbtLock(HolderLock):
    """`<sweep dir>/.pbt.lock` while a PBT sweeper runs there."""

    def __init__(self, sweep_dir: Path):
        super().__init__(Path(sweep_dir) / ".pbt.lock")

    def busy(self, holder: str) -> Exception:
        return TftrainError(f"The population in {self.path.parent} is already training ({holder}). Fix: wait for "
                            "it to end (rerun then to continue it), or train another in a new hydra.sweep.dir.")


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _int(settings, key: str, low: int) -> int:
    value = settings.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"hydra.sweeper.{key}", value, f"an integer >= {low}")
    return value


def _fraction(settings, key: str, high: float, meaning: str) -> float:
    value = settings.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= high:
        raise ConfigError(f"hydra.sweeper.{key}", value, f"a number in [0, {high}] ({meaning})")
    return float(value)


class PbtSearch(LaunchingSweeper):
    """The sweeper (see the module's docstring); its arguments are `hydra.sweeper.*`."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        direction = settings.get("direction")
        if direction not in ("maximize", "minimize"):
            raise ConfigError("hydra.sweeper.direction", direction, "maximize or minimize",
                              "leave it to trainer.objective_mode (hparams_search=pbt sets it) or set "
                              "maximize/minimize")
        self.direction = direction
        self.population = _int(settings, "population", 2)
        self.interval = _int(settings, "perturbation_interval", 1)
        self.quantile = _fraction(settings, "quantile_fraction", 0.5, "the share of members copied from and to")
        self.resample = _fraction(settings, "resample_probability", 1, "the chance of a fresh draw per key")
        factors = settings.get("perturbation_factors")
        factors = list(factors) if factors is not None and not isinstance(factors, (str, int, float)) else None
        if not factors or not all(isinstance(f, (int, float)) and not isinstance(f, bool) and f > 0 for f in factors):
            raise ConfigError("hydra.sweeper.perturbation_factors", settings.get("perturbation_factors"),
                              "a list of numbers > 0 (a perturbed value is multiplied by one of them)",
                              "e.g. [1.2, 0.8]")
        self.factors = [float(f) for f in factors]
        exploit = settings.get("exploit", True)
        if not isinstance(exploit, bool):
            raise ConfigError("hydra.sweeper.exploit", exploit, "true or false (false: the members only train)")
        self.exploit = exploit
        seed = settings.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConfigError("hydra.sweeper.seed", seed, "an integer, or null for a random seed")
        self.seed = seed
        self.params = settings.get("params")

    # ------------------------------------------------------------ the loop

    def sweep(self, arguments: list[str]) -> None:
        from tftrain.sweep.search_space import SYNTAX, parse_search_space

        space = parse_search_space(self.params, arguments, self.hydra_context.config_loader)
        if not space.distributions:
            raise ConfigError("hydra.sweeper.params", dict(self.params or {}), "at least one dimension to train "
                              "the population over (" + SYNTAX + ")", "add one, e.g. 'optimizer.lr=tag(log, "
                              "interval(1e-4, 1e-1))'")
        _check_resumable(space)
        epochs = int(self.config.trainer.epochs)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        with PbtLock(sweep_dir):
            state = self._state(sweep_dir, space)
            self.validate_batch_is_legal([self._overrides(space, state["values"][0], 0, min(self.interval, epochs))])
            done = state["rounds"][-1]["epochs"][1] if state["rounds"] else 0
            log.info("Population-based training in %s: %d members, %s, rounds of %d epoch(s) to %d (%d done); %s",
                     sweep_dir, self.population, self.direction, self.interval, epochs, done,
                     f"bottom {self.quantile:.0%} copy the top {self.quantile:.0%}" if self.exploit
                     else "no exploitation")
            while done < epochs:
                end = min(done + self.interval, epochs)
                self._round(state, space, sweep_dir, done, end, exploit=self.exploit and end < epochs)
                done = end
            write_report(sweep_dir, state, self.direction)
        return None

    def _state(self, sweep_dir: Path, space) -> dict:
        settings = {"population": self.population, "perturbation_interval": self.interval,
                    "quantile_fraction": self.quantile, "resample_probability": self.resample,
                    "perturbation_factors": self.factors, "exploit": self.exploit, "seed": self.seed,
                    "direction": self.direction, "params": {k: repr(d) for k, d in space.distributions.items()}}
        path = sweep_dir / STATE_FILE
        if path.is_file():
            state = json.loads(path.read_text())
            differ = {k: (state["settings"].get(k), v) for k, v in settings.items() if state["settings"].get(k) != v}
            if differ:
                raise TftrainError(
                    f"{path} holds a population trained with other settings: " + ", ".join(
                        f"{k} {a!r} -> {b!r}" for k, (a, b) in differ.items()) + ". Fix: rerun with the settings it "
                    "started with to continue it, or train a new population in another hydra.sweep.dir.")
            return state
        rng = random.Random(f"pbt-{self.seed}-init") if self.seed is not None else random.Random()
        values = [{k: sample(d, rng) for k, d in space.distributions.items()} for _ in range(self.population)]
        state = {"settings": settings, "initial": values, "values": [dict(v) for v in values], "rounds": []}
        _write_json(path, state)
        return state

    def _overrides(self, space, values: dict, member: int, end: int) -> list[str]:
        return [*space.overrides(values), f"trainer.epochs={end}", f"hydra.sweep.subdir={MEMBER_DIR.format(member)}"]

    def _round(self, state: dict, space, sweep_dir: Path, start: int, end: int, exploit: bool) -> None:
        from hydra.core.utils import JobStatus

        from tftrain.errors import Preempted

        number = len(state["rounds"]) + 1
        values = [dict(v) for v in state["values"]]
        overrides = [self._overrides(space, v, i, end) for i, v in enumerate(values)]
        returns = self.launcher.launch(overrides, initial_job_idx=(number - 1) * self.population)
        for ret in returns:
            if ret.status == JobStatus.FAILED and isinstance(ret._return_value, Preempted):
                raise ret._return_value  # told to stop: the members checkpointed; a rerun redoes this round
        objectives = [_value_of(ret) for ret in returns]
        sign = 1.0 if self.direction == "maximize" else -1.0
        scores = [None if v is None else sign * v for v in objectives]
        record = {"round": number, "epochs": [start, end], "values": values, "objectives": objectives, "exploits": []}
        log.info("PBT round %d (epochs %s): %s", number, _span([start, end]), "  ".join(
            f"member {i} {_short(v)}" for i, v in enumerate(objectives)))
        if all(s is None for s in scores):
            raise TftrainError(f"Every member of the population failed in round {number} (epochs {start + 1}-{end}): "
                               f"there is nothing to continue from. See the members' error.txt in {sweep_dir}; fix the "
                               "cause and rerun the same command to retry the round.")
        if exploit:
            rng = random.Random(f"pbt-{self.seed}-round-{number}") if self.seed is not None else random.Random()
            bottom, top = quantiles(scores, self.quantile)
            for member in bottom:
                if not top:
                    break
                source = rng.choice(top)
                new, how = explore(space, values[source], rng, self.resample, self.factors)
                step = copy_checkpoint(sweep_dir / MEMBER_DIR.format(source), sweep_dir / MEMBER_DIR.format(member))
                record["exploits"].append({"member": member, "source": source, "step": step,
                                           "objective": objectives[member], "source_objective": objectives[source],
                                           "old": values[member], "source_values": values[source],
                                           "new": new, "how": how})
                state["values"][member] = new
                log.info("PBT: member %d (%s) copies member %d (%s) at step %d: %s", member,
                         _short(objectives[member]), source, _short(objectives[source]), step,
                         " ".join(f"{k}={_short(values[source][k])}->{_short(new[k])} ({how[k]})" for k in new))
        state["rounds"].append(record)
        _write_json(sweep_dir / STATE_FILE, state)  # the round's commit: a rerun goes on from here


def _check_resumable(space) -> None:
    """Keys whose change a resume refuses cannot change between rounds."""
    from tftrain.tasks.resume import HARMLESS, REFUSED, STATEFUL, retunable

    def matches(key, prefixes):
        return any(key == p or key.startswith(p + ".") for p in prefixes)

    for key, dist in space.distributions.items():
        bare = key.lstrip("+~")
        if matches(bare, STATEFUL) or (matches(bare, REFUSED) and not matches(bare, HARMLESS)
                                       and not all(retunable(bare, (v, v)) for v in _extremes(dist))):
            raise ConfigError(f"hydra.sweeper.params.{key}", repr(dist), "a key a resumed run accepts changed "
                              "(optimizer.lr, optimizer.weight_decay, optimizer.momentum, model.dropout above 0, ...)",
                              "search it with hparams_search=optuna instead: PBT changes values between the rounds "
                              "of a run that resumes its checkpoints, and a change of this key is refused on resume")


def _extremes(dist) -> list:
    return list(dist.choices) if hasattr(dist, "choices") else [dist.low, dist.high]


def _value_of(ret):
    from hydra.core.utils import JobStatus

    value = ret._return_value if ret.status == JobStatus.COMPLETED else None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _span(epochs) -> str:
    """A round's epochs, counted from 1: "3" or "4-6"."""
    return str(epochs[1]) if epochs[1] == epochs[0] + 1 else f"{epochs[0] + 1}-{epochs[1]}"


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------- the report


def write_report(sweep_dir: Path, state: dict, direction: str) -> Path | None:
    """pbt.md (every round, the lineage, the winner's schedule) and pbt.png (the winner's values
    over epochs); returns pbt.md's path, None before the first round."""
    rounds = state.get("rounds", [])
    if not rounds:
        return None
    last = rounds[-1]
    sign = 1.0 if direction == "maximize" else -1.0
    finished = [i for i, v in enumerate(last["objectives"]) if v is not None]
    winner = max(finished, key=lambda i: (sign * last["objectives"][i], -i)) if finished else 0
    schedule = schedule_of(state, winner)
    keys = list(state["values"][0]) if state.get("values") else []
    lines = [f"# Population-based training: {len(state['values'])} members, {len(rounds)} rounds", "",
             f"Winner: member {winner} (`{MEMBER_DIR.format(winner)}`), objective {_short(last['objectives'][winner])} "
             f"({direction}).", "", "## The winner's schedule (its lineage followed back)", "",
             "| epochs | trained as member | " + " | ".join(keys) + " | objective |",
             "|---|---|" + "---|" * len(keys) + "---|"]
    for s in schedule:
        lines.append(f"| {_span(s['epochs'])} | {s['member']} | "
                     + " | ".join(_short(s["values"][k]) for k in keys) + f" | {_short(s['objective'])} |")
    members = range(len(state["values"]))
    lines += ["", "## Rounds", "", "| round | epochs | " + " | ".join(f"member {i}" for i in members) + " |",
              "|---|---|" + "---|" * len(members)]
    for rnd in rounds:
        lines.append(f"| {rnd['round']} | {_span(rnd['epochs'])} | "
                     + " | ".join(_short(v) for v in rnd["objectives"]) + " |")
    lines += ["", "## Lineage (exploitations)", ""]
    events = [(rnd["round"], e) for rnd in rounds for e in rnd["exploits"]]
    if not events:
        lines.append("None (hydra.sweeper.exploit=false, or a single round).")
    for number, e in events:
        lines.append(f"- after round {number}: member {e['member']} ({_short(e['objective'])}) copied member "
                     f"{e['source']}'s checkpoint at step {e['step']} ({_short(e['source_objective'])}); "
                     + ", ".join(f"{k} {_short(e['source_values'][k])} -> {_short(e['new'][k])} ({e['how'][k]})"
                                 for k in e["new"]))
    path = Path(sweep_dir) / "pbt.md"
    path.write_text("\n".join(lines) + "\n")
    try:
        _plot(schedule, keys, Path(sweep_dir) / "pbt.png", winner)
    except Exception as e:  # noqa: BLE001 - the table holds the same numbers
        log.warning("Could not draw pbt.png (%s: %s)", type(e).__name__, e)
    log.info("PBT winner: member %d, %s; its schedule in %s", winner, _short(last["objectives"][winner]), path)
    return path


def _plot(schedule: list[dict], keys: list[str], path: Path, winner: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numeric = [k for k in keys if all(isinstance(s["values"][k], (int, float)) and not isinstance(s["values"][k], bool)
                                      for s in schedule)]
    if not numeric:
        return
    fig, axes = plt.subplots(len(numeric), 1, figsize=(6, 2.2 * len(numeric)), sharex=True, squeeze=False)
    for ax, key in zip(axes[:, 0], numeric):
        xs = [s["epochs"][0] for s in schedule] + [schedule[-1]["epochs"][1]]
        ys = [s["values"][key] for s in schedule]
        ax.step(xs, ys + ys[-1:], where="post")
        if all(y > 0 for y in ys) and max(ys) / min(ys) > 10:
            ax.set_yscale("log")
        ax.set_ylabel(key)
    axes[-1, 0].set_xlabel("epoch")
    axes[0, 0].set_title(f"The winner (member {winner}) by epoch, through its lineage", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
