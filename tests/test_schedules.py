"""Learning-rate schedules: PyTorch-exact rates, composition, serialization, checkpointed state,
distribution, and config validation."""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from omegaconf import OmegaConf

import tftrain
from conftest import ROOT, options, per_option
from tftrain import schedules as S
from tftrain.errors import ConfigError, TftrainError
from tftrain.schema import validate
from tftrain.schema import SCHEMAS

RTOL = 1e-6
SPE, EPOCHS, LR = 7, 12, 0.1  # 7 steps per epoch: fractional epochs round to odd step counts
RUN = SPE * EPOCHS
STEPS = np.arange(RUN + 10)  # the whole run and a little beyond


@functools.lru_cache(maxsize=None)
def composed(option: str):
    return tftrain.compose([f"schedule={option}"])


def cfg_of(name: str, lr: float = LR, epochs: int = EPOCHS, **keys):
    """The option's composed config (its defaults) with `keys`, the base rate and the run length."""
    return OmegaConf.merge(OmegaConf.to_container(composed(name)),
                           {"schedule": keys, "optimizer": {"lr": lr}, "trainer": {"epochs": epochs}})


def build(name: str, spe: int = SPE, **keys):
    return tftrain.build_schedule(cfg_of(name, **keys), spe)


def rates(schedule, steps=STEPS) -> np.ndarray:
    return np.asarray(schedule(steps), dtype=np.float64)


def assert_matches(schedule, reference, steps=STEPS):
    """float32 rates within RTOL of a float64 reference at every step."""
    got, want = rates(schedule, steps), np.array([reference(int(t)) for t in steps], dtype=np.float64)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=0)


# ---------------------------------------------------------------- float64 references (PyTorch semantics)


def ref_cosine(t, lr, T, min_lr):
    return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * min(t, T) / T)) / 2


def ref_restarts(t, lr, t0, t_mult, min_lr):
    # PyTorch's per-step recursion: T_cur += 1; a cycle ends when T_cur reaches T_i.
    t_cur, t_i = t, t0
    while t_cur >= t_i:
        t_cur, t_i = t_cur - t_i, t_i * t_mult
    return ref_cosine(t_cur, lr, t_i, min_lr)


def ref_cyclic(t, lo, hi, size, mode, gamma):
    # The CLR paper's form (not PyTorch's arithmetic): an independent check.
    cycle = math.floor(1 + t / (2 * size))
    x = abs(t / size - 2 * cycle + 1)
    f = {"triangular": 1.0, "triangular2": 1 / 2 ** (cycle - 1), "exp_range": gamma ** t}[mode]
    return lo + (hi - lo) * max(0.0, 1 - x) * f


def ref_onecycle(t, max_lr, T, pct, anneal, div, final_div, three_phase):
    initial = max_lr / div
    final = initial / final_div
    ends = [pct * T - 1, 2 * pct * T - 2, T - 1] if three_phase else [pct * T - 1, T - 1]
    values = [initial, max_lr, initial, final] if three_phase else [initial, max_lr, final]
    start = 0.0
    for i, end in enumerate(ends):
        if t <= end or i == len(ends) - 1:
            p = (min(t, T - 1) - start) / (end - start)
            a, b = values[i], values[i + 1]
            return b + (a - b) * (1 + math.cos(math.pi * p)) / 2 if anneal == "cos" else a + (b - a) * p
        start = end


def ref_wsd(t, lr, T, D, f, shape):
    p = min(max(t - (T - D), 0), D) / D
    g = {"linear": 1 - p, "cosine": (1 + math.cos(math.pi * p)) / 2, "1-sqrt": 1 - math.sqrt(p)}[shape]
    return lr * (f + (1 - f) * g)


def ref_warmup(inner, W, factor):
    return lambda t: inner(0) * (factor + (1 - factor) * t / W) if t < W else inner(t - W)


# Each case: (option, keys, reference with durations already converted to steps by hand). Every
# option in conf/schedule needs one, and one with a warm-up (a new option without fails below).
CASES = {
    "constant": ("constant", {}, lambda t: LR),
    "step": ("step", {"step_size": 2.5, "gamma": 0.5}, lambda t: LR * 0.5 ** (t // 18)),  # round(17.5) = 18
    "step_gamma_above_1": ("step", {"step_size": 1, "gamma": 1.5}, lambda t: LR * 1.5 ** (t // 7)),
    "multistep": ("multistep", {"milestones": [1.5, 4, 9], "gamma": 0.3},
                  lambda t: LR * 0.3 ** sum(t >= m for m in (10, 28, 63))),  # round(10.5) = 10
    "exponential": ("exponential", {"gamma": 0.8}, lambda t: LR * 0.8 ** (t // SPE)),
    "polynomial": ("polynomial", {"power": 2.0, "min_lr": 0.001},
                   lambda t: (LR - 0.001) * (1 - min(t, RUN) / RUN) ** 2 + 0.001),
    "polynomial_sqrt": ("polynomial", {"power": 0.5}, lambda t: LR * (1 - min(t, RUN) / RUN) ** 0.5),
    "cosine": ("cosine", {}, lambda t: ref_cosine(t, LR, RUN, 0.0)),
    "cosine_min_lr": ("cosine", {"min_lr": 0.001}, lambda t: ref_cosine(t, LR, RUN, 0.001)),
    "cosine_restarts": ("cosine_restarts", {"t0": 1, "t_mult": 2}, lambda t: ref_restarts(t, LR, 7, 2, 0.0)),
    "cosine_restarts_x3": ("cosine_restarts", {"t0": 0.5, "t_mult": 3, "min_lr": 0.01},
                           lambda t: ref_restarts(t, LR, 4, 3, 0.01)),  # round(3.5) = 4
    "cosine_restarts_x1": ("cosine_restarts", {"t0": 1.5, "t_mult": 1}, lambda t: ref_restarts(t, LR, 10, 1, 0.0)),
    "cyclic": ("cyclic", {"min_lr": 0.01, "max_lr": 0.2, "step_size": 1.5},
               lambda t: ref_cyclic(t, 0.01, 0.2, 10, "triangular", 1.0)),
    "cyclic_triangular2": ("cyclic", {"min_lr": 0.01, "step_size": 1, "mode": "triangular2"},
                           lambda t: ref_cyclic(t, 0.01, LR, 7, "triangular2", 1.0)),  # max_lr null: optimizer.lr
    "cyclic_exp_range": ("cyclic", {"min_lr": 0.01, "max_lr": 0.2, "step_size": 2, "mode": "exp_range", "gamma": 0.99},
                         lambda t: ref_cyclic(t, 0.01, 0.2, 14, "exp_range", 0.99)),
    "onecycle": ("onecycle", {}, lambda t: ref_onecycle(t, LR, RUN, 0.3, "cos", 25.0, 1e4, False)),
    "onecycle_linear_3phase": ("onecycle", {"max_lr": 0.5, "pct_start": 0.25, "anneal": "linear", "three_phase": True,
                                            "div_factor": 10.0, "final_div_factor": 100.0},
                               lambda t: ref_onecycle(t, 0.5, RUN, 0.25, "linear", 10.0, 100.0, True)),
    "onecycle_cos_3phase": ("onecycle", {"pct_start": 0.4, "three_phase": True},
                            lambda t: ref_onecycle(t, LR, RUN, 0.4, "cos", 25.0, 1e4, True)),
    "warmup": ("warmup", {}, ref_warmup(lambda t: ref_cosine(t, LR, RUN - 14, 0.0), 14, 0.1)),
    "plateau": ("plateau", {}, lambda t: LR),
    "wsd": ("wsd", {}, lambda t: ref_wsd(t, LR, RUN, 17, 0.0, "1-sqrt")),  # round(0.2 * 84) = 17
    "wsd_linear": ("wsd", {"decay_fraction": 0.5, "shape": "linear", "final_lr_factor": 0.1},
                   lambda t: ref_wsd(t, LR, RUN, 42, 0.1, "linear")),
    "wsd_cosine": ("wsd", {"decay_fraction": 1.0, "shape": "cosine"}, lambda t: ref_wsd(t, LR, RUN, RUN, 0.0, "cosine")),
    # Warmup composes with every option; the main schedule counts its own steps from 0.
    "step+warmup": ("step", {"step_size": 2, "gamma": 0.5, "warmup_epochs": 1.5},
                    ref_warmup(lambda t: LR * 0.5 ** (t // 14), 10, 0.1)),
    "multistep+warmup": ("multistep", {"milestones": [2, 5], "warmup_epochs": 1, "warmup_start_factor": 0.0},
                         ref_warmup(lambda t: LR * 0.1 ** sum(t >= m for m in (14, 35)), 7, 0.0)),
    "exponential+warmup": ("exponential", {"gamma": 0.7, "warmup_epochs": 0.5},
                           ref_warmup(lambda t: LR * 0.7 ** (t // SPE), 4, 0.1)),
    "polynomial+warmup": ("polynomial", {"warmup_epochs": 3, "warmup_start_factor": 0.5},
                          ref_warmup(lambda t: LR * (1 - min(t, RUN - 21) / (RUN - 21)), 21, 0.5)),
    "cosine+warmup": ("cosine", {"warmup_epochs": 2, "min_lr": 0.002},
                      ref_warmup(lambda t: ref_cosine(t, LR, RUN - 14, 0.002), 14, 0.1)),
    "cosine_restarts+warmup": ("cosine_restarts", {"t0": 2, "t_mult": 2, "warmup_epochs": 1},
                               ref_warmup(lambda t: ref_restarts(t, LR, 14, 2, 0.0), 7, 0.1)),
    "cyclic+warmup": ("cyclic", {"min_lr": 0.01, "step_size": 1, "warmup_epochs": 1},
                      ref_warmup(lambda t: ref_cyclic(t, 0.01, LR, 7, "triangular", 1.0), 7, 0.1)),
    "onecycle+warmup": ("onecycle", {"warmup_epochs": 2},
                        ref_warmup(lambda t: ref_onecycle(t, LR, RUN - 14, 0.3, "cos", 25.0, 1e4, False), 14, 0.1)),
    "wsd+warmup": ("wsd", {"warmup_epochs": 2, "decay_fraction": 0.25},
                   ref_warmup(lambda t: ref_wsd(t, LR, RUN - 14, 18, 0.0, "1-sqrt"), 14, 0.1)),  # round(17.5) = 18
    "plateau+warmup": ("plateau", {"warmup_epochs": 1}, ref_warmup(lambda t: LR, 7, 0.1)),
    "constant+warmup": ("constant", {"warmup_epochs": 11.5}, ref_warmup(lambda t: LR, 80, 0.1)),  # round(80.5) = 80
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rates_match_pytorch_reference(case):
    option, keys, reference = CASES[case]
    assert_matches(build(option, **keys), reference)


def test_docstring_examples_run():
    import doctest
    import importlib

    for module in ("decay", "cyclic", "plateau", "compose", "build"):
        result = doctest.testmod(importlib.import_module(f"tftrain.schedules.{module}"))
        assert result.attempted > 0 and result.failed == 0, module


def by_option(cases) -> dict[str, list[tuple]]:
    """Per-option cases (tuples whose first item is the option) grouped by their option."""
    grouped = {}
    for case in cases:
        grouped.setdefault(case[0], []).append(case)
    return grouped


@pytest.mark.parametrize("option", options("schedule"))
def test_every_option_has_reference_cases_one_with_warmup(option):
    cases = per_option(by_option(CASES.values()), "schedule", option, "CASES")
    default_warmup = composed(option).schedule.warmup_epochs
    assert any(keys.get("warmup_epochs", default_warmup) > 0 for _, keys, _ in cases), \
        f"CASES has no case of schedule={option} with warmup_epochs > 0: add an '{option}+warmup' case"


def test_cases_name_only_options_in_conf():
    assert {option for option, _, _ in CASES.values()} <= set(options("schedule"))


def test_single_step_epochs_and_long_runs():
    # One step per epoch (durations = epochs), and a cosine of 10**5 steps: near its end float32
    # arithmetic would lose most digits (1 + cos x cancels), hence float64 inside the schedules.
    assert_matches(build("cosine_restarts", spe=1, t0=3, t_mult=2, min_lr=0.0),
                   lambda t: ref_restarts(t, LR, 3, 2, 0.0), steps=np.arange(200))
    long = S.Cosine(LR, decay_steps=100_000)
    steps = np.array([0, 1, 49_999, 50_000, 99_990, 99_998, 99_999, 100_000])
    assert_matches(long, lambda t: ref_cosine(t, LR, 100_000, 0.0), steps=steps)


def test_join_is_sequential():
    s = S.Join([S.Constant(0.05), S.Step(LR, 10, 0.5), S.Cosine(0.02, 30)], boundaries=[5, 25])

    def ref(t):
        return 0.05 if t < 5 else LR * 0.5 ** ((t - 5) // 10) if t < 25 else ref_cosine(t - 25, 0.02, 30, 0.0)

    assert_matches(s, ref, steps=np.arange(70))


def test_warmup_wraps_keras_schedules():
    inner = keras.optimizers.schedules.ExponentialDecay(LR, decay_steps=10, decay_rate=0.5)
    s = S.Warmup(inner, warmup_steps=4, start_factor=0.25)
    assert_matches(s, ref_warmup(lambda t: LR * 0.5 ** (t / 10), 4, 0.25), steps=np.arange(40))


# ---------------------------------------------------------------- traceable: graph, XLA, optimizer.iterations

# Every class in one schedule: one graph trace and one XLA compilation cover them all.
TRACED = S.Scaled(S.Join([S.Warmup(S.CosineRestarts(LR, 10, 2), 5), S.OneCycle(LR, 100, three_phase=True),
                          S.Cyclic(0.001, LR, 7, "triangular2"), S.Polynomial(LR, 20), S.Plateau(LR),
                          S.MultiStep(LR, [3, 9]), S.Step(LR, 4), S.Cosine(LR, 30), S.Constant(LR)],
                         [40, 130, 160, 180, 185, 200, 215, 240]), 2.0)


@pytest.mark.slow
def test_same_rate_eager_graph_xla_and_optimizer():
    steps = [0, 1, 4, 5, 6, 39, 40, 41, 100, 129, 130, 131, 159, 160, 161, 179, 180, 181, 184, 185, 186, 199, 200,
             201, 214, 215, 216, 239, 240, 241, 300]  # around every boundary
    eager = [float(TRACED(t)) for t in steps]
    graph, xla = tf.function(TRACED.__call__), tf.function(TRACED.__call__, jit_compile=True)
    assert [float(graph(tf.constant(t, tf.int64))) for t in steps] == eager
    np.testing.assert_allclose([float(xla(tf.constant(t, tf.int64))) for t in steps], eager, rtol=1e-7)
    np.testing.assert_array_equal(rates(TRACED, np.array(steps)), eager)  # vectorized over steps
    optimizer = keras.optimizers.SGD(TRACED)
    for t in (0, 33, 187):
        optimizer.iterations.assign(t)
        assert float(optimizer.learning_rate) == float(TRACED(t))
    assert TRACED(optimizer.iterations).dtype == tf.float32


# ---------------------------------------------------------------- serialization

INSTANCES = [S.Constant(0.01), S.Step(LR, 30, 0.5), S.MultiStep(LR, [10, 20], 0.2), S.Polynomial(LR, 100, 2.0, 0.001),
             S.Cosine(LR, 100, 0.001), S.CosineRestarts(LR, 10, 2, 0.001), S.Cyclic(0.001, LR, 5, "exp_range", 0.99),
             S.OneCycle(LR, 100, 0.25, "linear", 10.0, 100.0, True), S.Plateau(LR, "val_accuracy", "max", 0.5, 2),
             S.Warmup(S.Cosine(LR, 100), 10, 0.2), S.Join([S.Constant(LR), S.Step(LR, 10)], [15]),
             S.Scaled(S.Warmup(S.Plateau(LR), 3), 4.0), S.WarmupStableDecay(LR, 100, 0.25, 0.1, "cosine")]


def test_every_public_schedule_class_is_covered():
    classes = {name for name in S.__all__ if isinstance(getattr(S, name), type)
               and issubclass(getattr(S, name), S.Schedule) and getattr(S, name) is not S.Schedule}
    assert classes == {type(s).__name__ for s in INSTANCES}


@pytest.mark.parametrize("schedule", INSTANCES, ids=lambda s: type(s).__name__)
def test_config_round_trips(schedule):
    config = schedule.get_config()
    assert set(config) == set(inspect.signature(type(schedule).__init__).parameters) - {"self"}
    json.dumps(config)  # what .keras files store
    again = type(schedule).from_config(config)
    assert again.get_config() == config
    serialized = keras.saving.serialize_keras_object(schedule)
    assert serialized["registered_name"] == f"tftrain>{type(schedule).__name__}"
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is type(schedule) and revived.get_config() == config
    np.testing.assert_array_equal(rates(revived, np.arange(120)), rates(schedule, np.arange(120)))


# ---------------------------------------------------------------- plateau


class RefPlateau:
    """PyTorch's ReduceLROnPlateau.step(metric), transcribed in plain Python."""

    def __init__(self, lr, mode="min", factor=0.1, patience=10, threshold=1e-4, threshold_mode="rel", cooldown=0,
                 min_lr=0.0, eps=1e-8):
        self.lr, self.mode, self.factor, self.patience, self.cooldown = lr, mode, factor, patience, cooldown
        self.threshold, self.threshold_mode, self.min_lr, self.eps = threshold, threshold_mode, min_lr, eps
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = self.cooldown_counter = 0

    def better(self, a):
        rel, best, th = self.threshold_mode == "rel", self.best, self.threshold
        if self.mode == "min":
            return a < (best * (1 - th) if rel else best - th)
        return a > (best * (th + 1) if rel else best + th)

    def step(self, metric):
        if self.better(metric):
            self.best, self.num_bad_epochs = metric, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            new_lr = max(self.lr * self.factor, self.min_lr)
            if self.lr - new_lr > self.eps:
                self.lr = new_lr
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0


def state(p: S.Plateau):
    return p.current_lr, p.best, p.num_bad_epochs, p.cooldown_counter


PLATEAU_SETTINGS = [
    {"patience": 0}, {"patience": 2}, {"patience": 1, "cooldown": 2}, {"patience": 1, "threshold": 0.05},
    {"patience": 1, "threshold": 0.02, "threshold_mode": "abs"}, {"patience": 0, "factor": 0.5, "min_lr": 0.02},
    {"mode": "max", "patience": 1}, {"mode": "max", "patience": 1, "threshold": 0.01, "threshold_mode": "abs",
                                     "cooldown": 1, "factor": 0.5, "min_lr": 0.01},
]


@pytest.mark.parametrize("settings", PLATEAU_SETTINGS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_plateau_matches_reference(settings):
    rng = np.random.default_rng(len(str(settings)))
    for _ in range(3):
        ours, ref = S.Plateau(LR, monitor="m", **settings), RefPlateau(LR, **settings)
        metrics = np.round(np.cumsum(rng.normal(0, 1, 25)) * 0.05, 2) + 5  # walks with ties and plateaus
        for epoch, m in enumerate(metrics):
            ours.on_epoch_end(epoch, {"m": float(m), "other": 0.0})
            ref.step(float(m))
            assert state(ours) == (ref.lr, ref.best, ref.num_bad_epochs, ref.cooldown_counter)
        assert float(ours(len(metrics))) == np.float32(ref.lr)


def test_plateau_patience_cooldown_and_min_lr_by_hand():
    p = S.Plateau(1.0, factor=0.5, patience=1, cooldown=1, min_lr=0.3)
    lrs = []
    for epoch, loss in enumerate([5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 4]):
        p.on_epoch_end(epoch, {"val_loss": loss})
        lrs.append(p.current_lr)
    # best = 5; bad epochs 1, 2 -> halve; a cooldown epoch; 1, 2 -> 0.25, raised to min_lr 0.3; cooldown;
    # 1, 2 -> min_lr reached, no change (but a cooldown again); cooldown; an improvement.
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.5, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]
    assert (p.best, p.num_bad_epochs, p.cooldown_counter) == (4, 0, 0)


def test_plateau_needs_its_metric():
    with pytest.raises(TftrainError, match="schedule.monitor") as e:
        S.Plateau(LR).on_epoch_end(0, {"loss": 1.0})
    assert "loss" in str(e.value)


def test_wrappers_forward_epoch_ends_and_expose_state():
    p1, p2 = S.Plateau(LR, patience=0, factor=0.5), S.Plateau(0.2, patience=0, factor=0.5)
    s = S.Scaled(S.Join([S.Warmup(p1, 4), p2], [10]), 1.0)
    assert s.variables == p1.variables + p2.variables and len(s.variables) == 8
    for epoch, loss in enumerate([1.0, 1.0]):
        s.on_epoch_end(epoch, {"val_loss": loss})
    assert p1.current_lr == 0.05 and p2.current_lr == 0.1
    # The warmup ramps to the reduced rate; after the boundary the second plateau rules.
    assert_matches(s, lambda t: 0.05 * (0.1 + 0.9 * t / 4) if t < 4 else (0.05 if t < 10 else 0.1), steps=np.arange(14))


def test_plateau_state_survives_checkpoint_and_resume(tmp_path):
    def make():
        return tftrain.build_schedule(cfg_of("plateau", patience=1, cooldown=1, factor=0.5, warmup_epochs=1), SPE)

    def run(schedule, metrics, first_epoch):
        out = []
        for epoch, m in enumerate(metrics, first_epoch):
            schedule.on_epoch_end(epoch, {"val_loss": m})
            out.append((state(schedule.schedule), rates(schedule, np.array([SPE * (epoch + 1)]))[0]))
        return out

    schedule = make()
    run(schedule, [3.0, 2.0, 2.0, 2.0], 0)  # one reduction, then in cooldown
    before = state(schedule.schedule)
    assert before == (0.05, 2.0, 0, 1)
    checkpoint = tf.train.Checkpoint(**{f"v{i}": v for i, v in enumerate(schedule.variables)})
    path = checkpoint.save(tmp_path / "ckpt")
    later = [2.0, 2.0, 1.9, 2.5, 2.5, 2.5, 2.5]
    continued = run(schedule, later, 4)

    checkpoint.restore(path)  # same object, after it went on (a divergence recovery)
    assert state(schedule.schedule) == before
    assert run(schedule, later, 4) == continued

    resumed = make()  # a new process: fresh variables, then the checkpoint
    tf.train.Checkpoint(**{f"v{i}": v for i, v in enumerate(resumed.variables)}).restore(path).assert_consumed()
    assert state(resumed.schedule) == before
    assert run(resumed, later, 4) == continued


# ---------------------------------------------------------------- configs


@pytest.mark.parametrize("option", options("schedule"))
def test_every_option_composes_to_its_schemas_keys_and_names_its_target(option):
    node = composed(option).schedule
    schema = SCHEMAS["schedule"][node._target_.rsplit(".", 1)[1]]
    assert set(node) == {f.name for f in schema.__dataclass_fields__.values()}
    assert {"warmup_epochs", "warmup_start_factor"} <= set(node)
    assert callable(getattr(S.build, node._target_.rsplit(".", 1)[1]))


def with_override(option: str, override: str):
    """`tftrain.compose([f"schedule={option}", override])`, without composing again (Hydra is slow)."""
    cfg = OmegaConf.create(OmegaConf.to_container(composed(option)))  # untyped: any value merges
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist([override.lstrip("+")]))


def test_with_override_composes_like_hydra():
    assert with_override("cyclic", "schedule.max_lr=0.5") == tftrain.compose(["schedule=cyclic", "schedule.max_lr=0.5"])


@pytest.mark.parametrize("option", options("schedule"))
@pytest.mark.parametrize("warmup", [0, 1.5])
def test_every_option_builds_from_its_defaults(option, warmup):
    cfg = validate(composed(option))
    cfg.schedule.warmup_epochs = warmup or cfg.schedule.warmup_epochs
    schedule = tftrain.build_schedule(cfg, steps_per_epoch=10)
    assert isinstance(schedule, S.Warmup) == (cfg.schedule.warmup_epochs > 0)
    assert np.all(np.isfinite(rates(schedule, np.arange(0, cfg.trainer.epochs * 10, 7))))


def test_build_schedule_is_exported_by_the_package():
    from tftrain.config.factory import build_schedule

    assert tftrain.build_schedule is build_schedule


BAD_VALUES = [  # option, override, the key the error must name; every option in conf/schedule needs one
    ("step", "schedule.gamma=0", "schedule.gamma"),
    ("step", "schedule.step_size=0", "schedule.step_size"),
    ("multistep", "schedule.milestones=[20,10]", "schedule.milestones"),
    ("multistep", "schedule.milestones=[0,10]", "schedule.milestones"),
    ("multistep", "schedule.gamma=-0.1", "schedule.gamma"),
    ("exponential", "schedule.gamma=0", "schedule.gamma"),
    ("polynomial", "schedule.power=0", "schedule.power"),
    ("cosine", "schedule.min_lr=-1", "schedule.min_lr"),
    ("cosine_restarts", "schedule.t_mult=0", "schedule.t_mult"),
    ("cosine_restarts", "schedule.t_mult=1.5", "schedule.t_mult"),
    ("cosine_restarts", "schedule.t0=0", "schedule.t0"),
    ("cyclic", "schedule.max_lr=0.0001", "schedule.max_lr"),
    ("cyclic", "schedule.mode=sine", "schedule.mode"),
    ("cyclic", "schedule.gamma=0", "schedule.gamma"),
    ("cyclic", "schedule.step_size=-1", "schedule.step_size"),
    ("onecycle", "schedule.pct_start=1", "schedule.pct_start"),
    ("onecycle", "schedule.pct_start=0", "schedule.pct_start"),
    ("onecycle", "schedule.anneal=quadratic", "schedule.anneal"),
    ("onecycle", "schedule.div_factor=0", "schedule.div_factor"),
    ("onecycle", "schedule.max_lr=0", "schedule.max_lr"),
    ("plateau", "schedule.factor=1", "schedule.factor"),
    ("plateau", "schedule.mode=avg", "schedule.mode"),
    ("plateau", "schedule.threshold_mode=pct", "schedule.threshold_mode"),
    ("plateau", "schedule.patience=-1", "schedule.patience"),
    ("plateau", "schedule.cooldown=-1", "schedule.cooldown"),
    ("plateau", "schedule.threshold=-0.1", "schedule.threshold"),
    ("warmup", "schedule.warmup_start_factor=1.5", "schedule.warmup_start_factor"),
    ("wsd", "schedule.decay_fraction=0", "schedule.decay_fraction"),
    ("wsd", "schedule.shape=exp", "schedule.shape"),
    ("wsd", "schedule.final_lr_factor=2", "schedule.final_lr_factor"),
    ("constant", "schedule.warmup_epochs=-1", "schedule.warmup_epochs"),
    ("cosine", "+schedule.gamma=0.5", "schedule.gamma"),  # a key the option does not have
]


@pytest.mark.parametrize("option", options("schedule"))
def test_every_option_has_a_bad_value_case(option):
    per_option(by_option(BAD_VALUES), "schedule", option, "BAD_VALUES")


@pytest.mark.parametrize("option, override, key", BAD_VALUES, ids=lambda x: str(x))
def test_build_schedule_rejects_bad_values_naming_the_key(option, override, key):
    # The ranges are checked once, by the schedule classes; the factory names the config key.
    with pytest.raises(ConfigError) as e:
        tftrain.build_schedule(with_override(option, override), 10)
    assert e.value.key == key


@pytest.mark.parametrize("option, override, key", [("cosine", "+schedule.gamma=0.5", "schedule.gamma"),
                                                   ("cosine_restarts", "schedule.t_mult=1.5", "schedule.t_mult")])
def test_validate_rejects_keys_the_option_lacks_and_values_of_the_wrong_type(option, override, key):
    # What the schema's types say is checked before TensorFlow starts; ranges wait for the classes.
    with pytest.raises(ConfigError) as e:
        validate(with_override(option, override))
    assert e.value.key == key


BAD_FOR_THE_RUN = [  # option, keys, spe, epochs, the key the error must name
    ("constant", {"warmup_epochs": 12}, SPE, 12, "schedule.warmup_epochs"),  # as long as the run
    ("cosine", {"warmup_epochs": 20}, SPE, 12, "schedule.warmup_epochs"),
    ("warmup", {"warmup_epochs": 0.01}, 10, 12, "schedule.warmup_epochs"),  # rounds to 0 steps
    ("multistep", {"milestones": [5, 12]}, SPE, 12, "schedule.milestones"),  # never reached
    ("multistep", {"milestones": [5, 10], "warmup_epochs": 3}, SPE, 12, "schedule.milestones"),  # 9 epochs after warmup
    ("multistep", {"milestones": [1.01, 1.02]}, 10, 12, "schedule.milestones"),  # same step
    ("step", {"step_size": 0.01}, 10, 12, "schedule.step_size"),
    ("cosine_restarts", {"t0": 0.01}, 10, 12, "schedule.t0"),
    ("cyclic", {"step_size": 0.01}, 10, 12, "schedule.step_size"),
    ("cyclic", {"min_lr": 0.5}, SPE, 12, "schedule.max_lr"),  # max_lr null: optimizer.lr = 0.1 <= min_lr
    ("cosine", {"min_lr": 0.5}, SPE, 12, "schedule.min_lr"),  # above optimizer.lr
    ("plateau", {"min_lr": 0.5}, SPE, 12, "schedule.min_lr"),
    ("onecycle", {"pct_start": 0.1}, 1, 5, "schedule.pct_start"),  # a warm-up phase under one step
    ("onecycle", {}, 1, 1, "trainer.epochs"),  # a one-step cycle
]


@pytest.mark.parametrize("option, keys, spe, epochs, key", BAD_FOR_THE_RUN, ids=lambda x: str(x))
def test_build_schedule_rejects_values_that_do_not_fit_the_run(option, keys, spe, epochs, key):
    with pytest.raises(ConfigError) as e:
        tftrain.build_schedule(cfg_of(option, epochs=epochs, **keys), spe)
    assert e.value.key == key


def test_build_schedule_converts_epochs_to_steps_once():
    s = build("multistep", spe=10, milestones=[0.25, 2.5], warmup_epochs=0.75)
    assert (s.warmup_steps, s.schedule.milestones) == (8, [2, 25])  # Python round: round(7.5) = 8, round(2.5) = 2
    with pytest.raises(ValueError, match="steps_per_epoch"):
        build("constant", spe=0)


@pytest.mark.parametrize("make, message", [
    (lambda: S.Cosine(LR, decay_steps=0), "Argument `decay_steps` must be > 0. Received: decay_steps=0"),
    (lambda: S.Step(LR, 10, gamma=0), "Argument `gamma` must be > 0. Received: gamma=0"),
    (lambda: S.MultiStep(LR, [5, 5]), "Argument `milestones` must be a list of strictly increasing steps"),
    (lambda: S.CosineRestarts(LR, 10, t_mult=0), "Argument `t_mult` must be an integer >= 1"),
    (lambda: S.Cyclic(0.1, 0.1, 10), "Argument `max_lr` must be a finite number > min_lr"),
    (lambda: S.OneCycle(LR, 100, anneal="cosine"), "Argument `anneal` must be one of"),
    (lambda: S.Plateau(LR, factor=2), "Argument `factor` must be in \\(0, 1\\)"),
    (lambda: S.Warmup(0.1, 10), "Argument `schedule` must be a keras.optimizers.schedules.LearningRateSchedule"),
    (lambda: S.Join([S.Constant(LR)] * 2, [5, 6]), "Argument `boundaries` must be a list of 1 steps"),
])
def test_classes_validate_their_arguments_keras_style(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# ---------------------------------------------------------------- a fresh process: reload, distribution

# One fresh process (importing TensorFlow takes seconds) checks two things: models saved with each
# schedule load after only `import tftrain`, and Plateau's state under MirroredStrategy on two
# logical CPUs (which must be configured before TensorFlow initializes).
FRESH_PROCESS = """
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import tftrain

out = {"loaded": {}}
for i in range(int(sys.argv[2])):
    s = keras.models.load_model(f"{sys.argv[1]}/m{i}.keras").optimizer._learning_rate
    out["loaded"][str(i)] = [type(s).__name__, np.asarray(s(np.arange(0, 120, 7)), dtype=np.float64).tolist()]

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    schedule = tftrain.schedules.Warmup(tftrain.schedules.Plateau(0.1, patience=0, factor=0.5), 2, 0.5)
    w = keras.Variable([[0.0]])
    optimizer = keras.optimizers.SGD(schedule)
    optimizer.build([w])

@tf.function
def train_step():
    def replica_fn():
        lr = tf.identity(optimizer.learning_rate)  # the rate this step uses
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(w.value)  # gradient 1 per replica, summed over the 2 replicas
        optimizer.apply_gradients([(tape.gradient(loss, w.value), w)])
        return lr
    return [tf.identity(x) for x in strategy.experimental_local_results(strategy.run(replica_fn))]

out.update(kinds=[type(v).__name__ for v in schedule.variables], lrs=[], deltas=[])
def steps(n):
    for _ in range(n):
        before = float(w.numpy()[0, 0])
        out["lrs"].append([float(x) for x in train_step()])
        out["deltas"].append(before - float(w.numpy()[0, 0]))
steps(3)
for epoch in range(2):
    schedule.on_epoch_end(epoch, {"val_loss": 1.0})  # the second epoch does not improve: halve
steps(2)
ckpt = tf.train.Checkpoint(**{f"v{i}": v for i, v in enumerate(schedule.variables)})
path = ckpt.save(sys.argv[1] + "/ckpt")
schedule.on_epoch_end(2, {"val_loss": 1.0})
out["after_third"] = schedule.schedule.current_lr
ckpt.restore(path)
out["restored"] = schedule.schedule.current_lr
steps(1)
print("RESULT" + json.dumps(out))
"""


class FreshProcess:
    """FRESH_PROCESS running in the background while the other tests run."""

    def __init__(self, tmp):
        self.expected = {}
        for i, schedule in enumerate(INSTANCES):
            model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
            model.compile(optimizer=keras.optimizers.Adam(schedule), loss="mse")
            model.save(tmp / f"m{i}.keras")
            self.expected[str(i)] = [type(schedule).__name__, rates(schedule, np.arange(0, 120, 7)).tolist()]
        self.proc = subprocess.Popen([sys.executable, "-c", FRESH_PROCESS, str(tmp), str(len(INSTANCES))],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})

    @functools.cached_property
    def out(self) -> dict:
        stdout, stderr = self.proc.communicate(timeout=180)
        assert self.proc.returncode == 0, stderr[-3000:]
        return json.loads(stdout.split("RESULT", 1)[1])


@pytest.fixture(scope="module", autouse=True)
def fresh_process(tmp_path_factory):
    process = FreshProcess(tmp_path_factory.mktemp("fresh"))
    yield process
    if process.proc.poll() is None:
        process.proc.kill()
        process.proc.communicate()


def test_saved_models_load_in_a_fresh_process_with_only_import_tftrain(fresh_process):
    assert fresh_process.out["loaded"] == fresh_process.expected


def test_plateau_under_mirrored_strategy(fresh_process):
    out = fresh_process.out
    assert out["kinds"] == ["MirroredVariable"] * 4
    expected = [0.05, 0.075, 0.1, 0.05, 0.05, 0.05]
    for (a, b), want in zip(out["lrs"], expected, strict=True):
        assert a == b == pytest.approx(want, rel=1e-6)  # both replicas use the same rate
    np.testing.assert_allclose(out["deltas"], [2 * x for x in expected], rtol=1e-6)
    assert out["after_third"] == 0.025 and out["restored"] == 0.05
