"""The factory: a validated config turned into built components (`build_components` -> one
`Components`), each group's `_target_` called with what tftrain supplies (tftrain.config.targets).

The lower layers (tftrain.data, tftrain.models, tftrain.schedules, tftrain.initializers) raise
their own `ArgumentError` / `DataError`; here they become `ConfigError`s naming `group.key`.
"""

from __future__ import annotations

import collections
import contextlib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, fields

from omegaconf import DictConfig, OmegaConf

from tftrain.config.targets import call_target, label, locate, require_returns, user_error
from tftrain.errors import ArgumentError, ConfigError, UserCodeError
from tftrain.schema.data import PIPELINE_KEYS

log = logging.getLogger("tftrain")


# ---------------------------------------------------------------- data


def pipeline_of(cfg):
    """The data group's pipeline keys as tftrain.data.Pipeline."""
    from tftrain.data.pipeline import Augment, Pipeline

    d = cfg.data
    aug = d.get("augment") or {}
    return Pipeline(val_fraction=d.get("val_fraction"), test_fraction=d.get("test_fraction"),
                    split_seed=int(d.get("split_seed", 0)), normalize=d.get("normalize"),
                    normalize_target=bool(d.get("normalize_target", False)),
                    augment=Augment(aug.get("flip"), float(aug.get("translate", 0.0))), cache=d.get("cache"),
                    shuffle_buffer=d.get("shuffle_buffer"), scan_limit=d.get("scan_limit"),
                    drop_remainder=bool(d.get("drop_remainder", False)), name=label(d))


def build_data(cfg, strategy=None, problem=None):
    """The configured data's checked and split pipelines (tftrain.data.Datasets); `problem`
    (default: the configured one) checks the targets. With trainer.accumulate_steps=N the
    pipeline's batches are batch_size / N and its steps count updates of N batches."""
    from tftrain.data.pipeline import accumulated, build_datasets

    problem = problem or build_problem(cfg)
    source = call_target("data", cfg.data, skip=PIPELINE_KEYS)
    t = cfg.trainer
    n = int(t.get("accumulate_steps", 1))
    try:
        data = build_datasets(source, pipeline_of(cfg), batch_size=t.batch_size // n, seed=t.seed, strategy=strategy,
                              targets=problem)
        return accumulated(data, n)
    except ArgumentError as e:
        key = {"batch_size": "trainer.batch_size", "accumulate_steps": "trainer.accumulate_steps"}.get(
            e.arg, f"data.{e.arg}")
        value = {"trainer.batch_size": t.batch_size, "trainer.accumulate_steps": n}.get(key, e.value)
        requirement = e.requirement + (f" (each of the {n} batches of an update holds batch_size / {n} = "
                                       f"{t.batch_size // n})" if key == "trainer.batch_size" and n > 1 else "")
        raise ConfigError(key, value, requirement) from None


# ---------------------------------------------------------------- model


def build_model(cfg, input_shape, num_outputs: int, normalization: dict | None = None,
                target_normalization: dict | None = None):
    """The configured model with the initializer group and `model.l2` applied, inside the
    preprocessing layers that make it take raw inputs (tftrain.models.with_preprocessing; call
    inside the strategy's scope). A saved model is used as it is: it takes raw inputs already.
    `model.trainable` freezes the layers the first epoch does not train (`build_unfreeze`)."""
    import keras

    from tftrain.initializers import add_l2
    from tftrain.models import with_preprocessing
    from tftrain.schema.model import OWN_KEYS

    node = cfg.model
    with _fresh_layer_names():
        model = call_target("model", node, tuple(input_shape), int(num_outputs), skip=OWN_KEYS)
        require_returns("model._target_", node._target_, model, keras.Model, "a keras.Model")
        outputs = _outputs_of(model, tuple(input_shape), node._target_)
        shape = _output_shape(model, tuple(input_shape))
        if shape is not None and len(shape) != 2:
            # Every problem compares one vector of outputs per example with its targets.
            raise UserCodeError(f"`model._target_`={node._target_!r} built a model whose output has shape "
                                f"{tuple(shape)}, but the problem needs one vector of {num_outputs} outputs per example: "
                                f"shape (None, {num_outputs}). Fix: end the model with a flat output, e.g. "
                                f"keras.layers.Flatten() or GlobalAveragePooling, then keras.layers.Dense({num_outputs}).")
        add_l2(model, float(node.get("l2", 0.0)))
        model = call_initializer(cfg, model)
    if outputs != num_outputs:
        raise UserCodeError(f"`model._target_`={node._target_!r} built a model with {outputs} outputs, but the data "
                            f"has {num_outputs} (one per class, label or target value). Fix: give the last layer "
                            f"{num_outputs} units (use the `num_outputs` argument tftrain passes).")
    if str(node._target_) == "tftrain.models.saved":
        if normalization is not None or target_normalization is not None:
            # A data option's own default (data=diabetes standardizes) is no reason to warn; a
            # setting the user typed is.
            said = _overridden(("data.normalize", "data.normalize_target"))
            (log.warning if said else log.info)(
                "model=saved: %s not apply (a saved model takes raw inputs and gives outputs in the targets' units "
                "already).", f"{' and '.join(said)} {'do' if len(said) > 1 else 'does'}" if said else "the data option's normalization does")
        return _fine_tune(cfg, model)
    return _fine_tune(cfg, with_preprocessing(model, input_shape, normalization, target_normalization))


@contextlib.contextmanager
def _fresh_layer_names():
    """Keras numbers auto-named layers per process (dense, dense_1, ...): the model is built with
    the count at zero, so its layer names (what `model.trainable` patterns match) are the same in
    every run, also in a process that built models before (a sweep's jobs, the library API)."""
    from keras.src.backend.common import global_state  # Keras' own counter; no public reset but clear_session

    saved = global_state.get_global_attribute("object_name_uids")
    global_state.set_global_attribute("object_name_uids", collections.defaultdict(int))
    try:
        yield
    finally:
        global_state.set_global_attribute("object_name_uids", saved)


def _patterns(value) -> list[str]:
    return [str(v) for v in value] if not isinstance(value, str) else [value]


def build_unfreeze(cfg, model):
    """`model.trainable` and `model.unfreeze` as a tftrain.loop.unfreeze.Unfreeze (None when every
    layer trains throughout)."""
    from tftrain.loop.unfreeze import Unfreeze

    node = cfg.model
    if node.get("trainable") is None:
        return None
    return Unfreeze(_patterns(node.trainable),
                    [(stage["epoch"], _patterns(stage["pattern"])) for stage in node.get("unfreeze") or []])


def _fine_tune(cfg, model):
    """`model` with the layers its first epoch trains (`model.trainable`, `model.unfreeze`); each
    pattern must match a layer."""
    from tftrain.loop.unfreeze import named_layers, unmatched

    unfreeze = build_unfreeze(cfg, model)
    if unfreeze is None:
        return model
    keys = [("model.trainable", unfreeze.trainable)]
    keys += [(f"model.unfreeze[{i}].pattern", _patterns(s["pattern"])) for i, s in enumerate(cfg.model.unfreeze)]
    for key, patterns in keys:
        missing = unmatched(model, patterns)
        if missing:
            names = [path for path, _ in named_layers(model)]
            raise ConfigError(key, missing[0] if len(missing) == 1 else missing,
                              f"patterns (fnmatch globs) that each match a layer of the model by name or path; "
                              f"its layers: {', '.join(names)}",
                              f"correct `{key}` to one of those names or a glob matching some (e.g. "
                              f"`{names[-1] if names else 'logits'}`)")
    epochs = int(cfg.trainer.epochs)
    for epoch in sorted({start for start, _ in unfreeze.stages if start > epochs}):
        log.warning("model.unfreeze: a stage starts at epoch %d, after the last epoch (trainer.epochs=%d): it never "
                    "trains.", epoch, epochs)
    unfreeze.apply(model, 1)
    return model


def _output_shape(model, input_shape: tuple) -> tuple | None:
    """The model's single output shape with its batch axis (None: several outputs, left to the loss)."""
    import numpy as np

    try:
        shape = tuple(model.output_shape)
    except (AttributeError, ValueError, TypeError):  # a subclassed model: _outputs_of has called it already
        try:
            shape = (None, *model(np.zeros((1, *input_shape), "float32")).shape[1:])
        except Exception:  # noqa: BLE001 - several outputs or a structure: not a shape to judge here
            return None
    return shape if all(d is None or isinstance(d, int) for d in shape) else None


def _overridden(keys: tuple) -> list[str]:
    """Which of `keys` the command line set (none outside a Hydra run, e.g. from the library API)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    given = {o.lstrip("+~").split("=", 1)[0] for o in HydraConfig.get().overrides.task}
    return [k for k in keys if k in given]


def _outputs_of(model, input_shape: tuple, target: str) -> int:
    """The size of the model's last output axis (building a subclassed model on a zero batch)."""
    import numpy as np

    try:
        return int(model.output_shape[-1])
    except (AttributeError, ValueError, TypeError):
        pass
    try:
        return int(model(np.zeros((1, *input_shape), "float32")).shape[-1])
    except Exception as e:  # noqa: BLE001 - the user's model failed on an input of the data's shape
        raise user_error("model._target_", target, f"the model failed on a batch of the data's input shape "
                          f"{input_shape} ({type(e).__name__}: {e})", e) from None


def initializer_of(cfg):
    """The initializer group as tftrain.initializers.initialize takes it: None (keep), a
    WeightNorm or LSUV, or a function seed -> a fresh Keras initializer."""
    from tftrain.initializers import LSUV, WeightNorm

    node = cfg.initializer
    if node.get("_target_") is None:  # initializer=keep
        return None
    fn = locate(node._target_, "initializer._target_")
    if isinstance(fn, type) and issubclass(fn, (WeightNorm, LSUV)):
        try:
            return call_target("initializer", node, skip=frozenset({"bias"}))
        except ArgumentError as e:
            raise ConfigError(f"initializer.{e.arg}", e.value, e.requirement) from None
    takes_seed = "seed" in inspect.signature(fn).parameters

    def kernel(seed: int):  # a fresh initializer per layer, with that layer's seed
        made = call_target("initializer", node, skip=frozenset({"bias"}), **({"seed": seed} if takes_seed else {}))
        require_returns("initializer._target_", node._target_, made, Callable, "an initializer")
        return made

    return kernel


def initialize_from_data(cfg, model, data, strategy) -> int:
    """The data-dependent part of the initializer group, on the first training batch of epoch 0
    (the same batch in every run of the config): weight norm's `data_init` (g and biases) and
    LSUV's rescaling. `build_components` runs it, so every task starts from the initialization
    training starts from; a resumed run's checkpoint restore then overwrites what it computed.
    Returns how many layers it changed (0: nothing to do, nothing run)."""
    from tftrain.initializers import LSUV
    from tftrain.layers import data_dependent_init, needs_data_init

    lsuv = initializer_of(cfg)
    lsuv = lsuv if isinstance(lsuv, LSUV) else None
    if not needs_data_init(model) and lsuv is None:
        return 0
    batch = next(iter(data.train(0, 0)))
    changed = data_dependent_init(model, strategy, batch)
    if lsuv is not None:
        report = lsuv.rescale(model, strategy, batch)
        missed = [r["layer"] for r in report if not r["converged"]]
        log.info("initializer=lsuv: %d layers rescaled to output variance 1 ± %g on the first batch (%d rescalings)%s",
                 len(report), lsuv.tol, sum(r["rescalings"] for r in report),
                 f"; not within tol after initializer.max_iter={lsuv.max_iter}: {', '.join(missed)}" if missed else "")
        changed += len(report)
    return changed


def call_initializer(cfg, model):
    """Apply the initializer group to `model` (tftrain.initializers.initialize)."""
    from tftrain.initializers import initialize

    try:
        return initialize(model, initializer_of(cfg), bias=cfg.initializer.get("bias", "zeros"),
                          seed=int(cfg.trainer.seed))
    except ArgumentError as e:
        raise ConfigError("initializer", cfg.initializer._target_, e.requirement) from None


# ---------------------------------------------------------------- problem


def build_problem(cfg):
    """The configured problem (tftrain.problems): loss, metrics, what the targets must be."""
    return call_target("problem", cfg.problem)


def prepare_problem(problem, model, data) -> None:
    """Give `problem` the targets' statistics and create its metrics' state from one validation
    batch (call inside the strategy's scope)."""
    import tensorflow as tf

    if data.target_normalization is not None:
        problem.target_normalization = (data.target_normalization["mean"], data.target_normalization["std"])
    first = tf.nest.map_structure(lambda v: v.values[0] if hasattr(v, "values") else v, next(iter(data.val)))
    try:
        problem.build(first[1], model(first[0]))
    except ArgumentError as e:
        raise ConfigError(f"problem.{e.arg}", e.value, e.requirement) from None


# ---------------------------------------------------------------- schedule and optimizer

# Schedule class arguments that do not come from a `schedule.<same name>` key.
_SCHEDULE_KEYS = {"lr": "optimizer.lr", "value": "optimizer.lr", "decay_steps": "trainer.epochs",
                  "total_steps": "trainer.epochs", "warmup_steps": "schedule.warmup_epochs",
                  "start_factor": "schedule.warmup_start_factor"}


def build_schedule(cfg, steps_per_epoch: int):
    """The LearningRateSchedule `cfg.schedule` describes, for a run of `cfg.trainer.epochs` epochs of
    `steps_per_epoch` steps from the base rate `cfg.optimizer.lr` (durations in the config are
    epochs; tftrain.schedules.build_for_run converts them). Bad values raise ConfigError naming
    the key (e.g. `schedule.milestones`).

    >>> import tftrain
    >>> cfg = tftrain.compose(["schedule=cosine", "schedule.warmup_epochs=1", "trainer.epochs=10"])
    >>> s = build_schedule(cfg, steps_per_epoch=100)
    >>> type(s).__name__, s.warmup_steps, type(s.schedule).__name__, s.schedule.decay_steps
    ('Warmup', 100, 'Cosine', 900)
    """
    from tftrain.schedules import build_for_run

    node = cfg.schedule
    target = locate(node._target_, "schedule._target_")
    container = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    keys = {k: v for k, v in container.items() if k != "_target_"}
    if keys.get("mode") == "auto" and "monitor" in keys:  # plateau: the monitored metric's direction
        from tftrain.problems.direction import mode_of

        keys["mode"] = mode_of(keys["monitor"])
    params = inspect.signature(target).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = [k for k in keys if k not in params and k not in ("warmup_epochs", "warmup_start_factor")]
        if unknown:
            raise ConfigError(f"schedule.{unknown[0]}", keys[unknown[0]],
                              f"a key of this schedule: {sorted(set(params) - {'run'})} and warmup_epochs, "
                              "warmup_start_factor", f"remove `schedule.{unknown[0]}`")
    try:
        return build_for_run(target, lr=float(cfg.optimizer.lr), epochs=int(cfg.trainer.epochs),
                             steps_per_epoch=int(steps_per_epoch), **keys)
    except ArgumentError as e:
        key = _SCHEDULE_KEYS.get(e.arg, f"schedule.{e.arg}")
        value = {"optimizer.lr": cfg.optimizer.lr, "trainer.epochs": cfg.trainer.epochs}.get(key, keys.get(e.arg, e.value))
        raise ConfigError(key, value, e.requirement if e.arg in keys else
                          f"a value giving {e.arg} {e.requirement} at {steps_per_epoch} steps per epoch") from None


def build_optimizer(cfg, learning_rate, model=None):
    """The configured optimizer with `learning_rate` (a LearningRateSchedule), given `model`, with
    its parameter groups (`optimizer.weight_decay_on`, `lr_multipliers`, `layer_decay`: applied
    before the Trainer builds it); wrapped in a LossScaleOptimizer under mixed_float16 (float16
    gradients underflow without loss scaling)."""
    import keras

    from tftrain.schema.optimizer import OWN_KEYS

    node = cfg.optimizer
    optimizer = call_target("optimizer", node, skip=OWN_KEYS, learning_rate=learning_rate)
    require_returns("optimizer._target_", node._target_, optimizer, keras.optimizers.Optimizer,
                    "a keras.optimizers.Optimizer")
    if model is not None:
        from tftrain.optim.param_groups import apply_param_groups

        # Grouped: every variable some epoch trains (a layer `model.unfreeze` thaws later too).
        unfreeze = build_unfreeze(cfg, model)
        try:
            apply_param_groups(optimizer, model, weight_decay_on=node.get("weight_decay_on") or "all",
                               lr_multipliers=dict(node.get("lr_multipliers") or {}),
                               layer_decay=node.get("layer_decay"),
                               variables=unfreeze.optimizer_variables(model) if unfreeze else None)
        except ArgumentError as e:  # lr_multipliers['<pattern>'] names its pattern's factor
            key = f"optimizer.{e.arg.split('[')[0]}"
            fix = ("use patterns that match the model's variable paths listed, "
                   "e.g. `++optimizer.lr_multipliers={logits/*:0.1}`" if key == "optimizer.lr_multipliers" else None)
            raise ConfigError(key, e.value, e.requirement, fix) from None
    if cfg.trainer.mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def build_extra_callbacks(cfg) -> list:
    """`callbacks.extra`: the user's own Keras callbacks."""
    import keras

    out = []
    for i, node in enumerate(cfg.callbacks.get("extra") or []):
        callback = call_target(f"callbacks.extra[{i}]", node)
        require_returns(f"callbacks.extra[{i}]._target_", node["_target_"], callback, keras.callbacks.Callback,
                        "a keras.callbacks.Callback")
        out.append(callback)
    return out



def build_loggers(cfg) -> list:
    """`logger.<name>` for each chosen logger: tftrain.loggers.Logger instances (a user's own too)."""
    from tftrain.loggers import Logger

    out = []
    for name, node in (cfg.get("logger") or {}).items():
        logger = call_target(f"logger.{name}", node)
        require_returns(f"logger.{name}._target_", node["_target_"], logger, Logger, "a tftrain.loggers.Logger")
        out.append(logger)
    return out


def swa_start_epoch(cfg) -> int:
    """`callbacks.swa.swa_epoch_start` as the 0-based index of the first averaged epoch, read as
    Lightning reads it: an epoch number (1-based), or a fraction f of the run (epoch int(f * epochs))."""
    swa, epochs = cfg.callbacks.swa, int(cfg.trainer.epochs)
    start = float(swa.swa_epoch_start)
    if start > epochs:
        raise ConfigError("callbacks.swa.swa_epoch_start", swa.swa_epoch_start,
                          f"an epoch of the run: 1 to trainer.epochs={epochs}, or a fraction in (0, 1) of the epochs",
                          f"lower callbacks.swa.swa_epoch_start to at most {epochs} (e.g. 0.75 for the last quarter) "
                          "or raise trainer.epochs")
    return max(int(start * epochs) - 1, 0) if start < 1 else int(start) - 1


def swa_schedule(cfg, schedule, steps_per_epoch: int):
    """`schedule` inside the rate of stochastic weight averaging (tftrain.schedules.SWALR) when
    `callbacks.swa` is enabled with a `swa_lr`; as it is otherwise (swa_lr null keeps it)."""
    swa = cfg.callbacks.get("swa")
    if swa is None or not swa.enabled:
        return schedule
    start = swa_start_epoch(cfg)
    if swa.swa_lr is None:
        return schedule
    from tftrain.schedules import SWALR

    return SWALR(schedule, float(swa.swa_lr), start * steps_per_epoch,
                 round(float(swa.annealing_epochs) * steps_per_epoch), swa.annealing_strategy)


def build_callbacks(cfg, write_dir) -> list:
    """The callbacks the (validated) config asks for, writing under `write_dir`, then the user's
    own (`callbacks.extra`)."""
    from tftrain.loop.callbacks import BestCheckpoint, EarlyStopping
    from tftrain.loop.swa import StochasticWeightAveraging

    callbacks = []
    es, best = cfg.callbacks.early_stopping, cfg.callbacks.best_checkpoint
    if es.enabled:
        callbacks.append(EarlyStopping(monitor=es.monitor, mode=es.mode, patience=es.patience, min_delta=es.min_delta,
                                       restore_best_weights=es.restore_best_weights, verbose=1))
    if best.enabled:
        callbacks.append(BestCheckpoint(str(write_dir / "best.keras"), monitor=best.monitor, mode=best.mode,
                                        save_best_only=True, verbose=0))
    if cfg.callbacks.swa.enabled:  # tftrain.tasks.train finalizes it after the loop
        callbacks.append(StochasticWeightAveraging(swa_start_epoch(cfg), verbose=1))
    return callbacks + build_extra_callbacks(cfg)


# ---------------------------------------------------------------- the bundle


@dataclass
class Components:
    """Everything a run trains with, built from one validated config under one strategy."""

    problem: object  # tftrain.problems.Problem
    data: object  # tftrain.data.Datasets
    schedule: object  # tftrain.schedules.Scaled: the configured schedule times the rate multiplier
    model: object  # keras.Model, compiled
    optimizer: object  # keras.optimizers.Optimizer
    loggers: list = field(default_factory=list)  # tftrain.loggers.Logger
    callbacks: list = field(default_factory=list)  # keras.callbacks.Callback
    # What the optimizer is built for (tftrain.loop.Trainer's `variables`): every variable some
    # epoch trains under model.unfreeze; None: the model's trainable variables.
    variables: list | None = None


def build_components(cfg, strategy, write_dir=None, schedule=None, done: Callable[[str], None] | None = None):
    """Problem, data, schedule, model and optimizer (in the strategy's scope; the model as training
    starts from it, its data-dependent initialization done), and, given the
    `write_dir` they write to, the loggers and callbacks (model.unfreeze's last), as one `Components`. `schedule` replaces
    the configured one (lr_find's rising rate); `done(phase)` is told when "data" and
    "model_and_optimizer" are built (the run's start-up phases)."""
    from tftrain.schedules import Scaled

    done = done or (lambda phase: None)
    problem = build_problem(cfg)
    data = build_data(cfg, strategy, problem)
    done("data")
    with strategy.scope():
        if schedule is None:
            # The rate multiplier: the linear scaling rule, lowered by divergence recoveries.
            replicas = strategy.num_replicas_in_sync
            reference = cfg.trainer.get("lr_reference_batch")  # optimizer.lr is the rate of this batch
            schedule = Scaled(swa_schedule(cfg, build_schedule(cfg, data.steps_per_epoch), data.steps_per_epoch),
                              (float(replicas) if cfg.trainer.scale_lr else 1.0)
                              * (cfg.trainer.batch_size / reference if reference else 1.0))
        model = build_model(cfg, data.input_shape, data.num_outputs, data.normalization, data.target_normalization)
        _require_replica_shares(cfg, strategy, model, data)
        optimizer = build_optimizer(cfg, schedule, model)
        prepare_problem(problem, model, data)
        # Compiled (though trained by tftrain's loop) so model.keras carries the optimizer and loss,
        # and a reloaded model can evaluate() or keep training with fit().
        model.compile(optimizer=optimizer, **problem.compile_args())
    initialize_from_data(cfg, model, data, strategy)  # weight norm's data_init, LSUV: outside the scope, as strategy.run
    done("model_and_optimizer")
    unfreeze = build_unfreeze(cfg, model)  # model.trainable and model.unfreeze, or None
    variables = unfreeze.optimizer_variables(model) if unfreeze else None
    if write_dir is None:
        return Components(problem, data, schedule, model, optimizer, variables=variables)
    return Components(problem, data, schedule, model, optimizer, build_loggers(cfg),
                      build_callbacks(cfg, write_dir) + ([unfreeze] if unfreeze else []), variables)


def _require_replica_shares(cfg, strategy, model, data) -> None:
    """Refuse a last training batch that leaves a replica without examples when the model has
    BatchNormalization: tf.distribute fills the replicas in order (up to global batch / replicas
    each), and the statistics of no examples are NaN, which would reach the moving statistics."""
    import keras

    from tftrain.loop.unfreeze import named_layers

    replicas, batch = strategy.num_replicas_in_sync, data.global_batch_size
    rest = data.num_train % batch
    if replicas == 1 or rest == 0 or cfg.data.get("drop_remainder") or rest > batch // replicas * (replicas - 1):
        return
    if not any(isinstance(layer, keras.layers.BatchNormalization) for _, layer in named_layers(model)):
        return
    raise ConfigError("data.drop_remainder", False,
                      f"true for a model with BatchNormalization on {replicas} replicas when the last training batch "
                      f"leaves a replica without examples: {data.num_train} examples in batches of {batch} end with "
                      f"{rest}, all on the first replica (each takes up to {batch // replicas}), and BatchNormalization's "
                      "statistics of no examples are NaN",
                      "set data.drop_remainder=true (the last partial batch is left out of each epoch), or a "
                      "trainer.batch_size whose last batch reaches every replica")


def loop_options(cfg, verbose: int | None = None):
    """tftrain.loop.LoopOptions from `trainer.<same names>` (`verbose` replaces trainer.verbose)."""
    from tftrain.loop.controller import LoopOptions

    values = {f.name: cfg.trainer[f.name] for f in fields(LoopOptions)}
    return LoopOptions(**{**values, **({"verbose": verbose} if verbose is not None else {})})


def step_options(cfg, **logging):
    """tftrain.loop.StepOptions from the trainer group (jit_compile resolved for this machine);
    `logging`: the loggers' update_freq and record_steps."""
    from tftrain.loop.distribute import use_xla
    from tftrain.loop.trainer import StepOptions

    t = cfg.trainer
    return StepOptions(t.batch_size, t.accumulate_steps, use_xla(t.jit_compile, t.deterministic)[0], **logging)
