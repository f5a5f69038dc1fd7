"""Schemas of the `optimizer` group: one per `keras.optimizers` class, with Keras' own defaults.

Every key but `lr` is passed to the class as is; `lr` is the base rate the schedule starts from
(Keras' `learning_rate`). A test checks each schema's keys and defaults against the class'
signature, so they cannot drift from Keras.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Dict, List, Optional

from omegaconf import MISSING

from tftrain.errors import require
from tftrain.schema.registry import schema

# Keys tftrain applies itself, never passed to the optimizer class: the base rate (the schedule's)
# and the parameter groups (tftrain.optim.param_groups).
OWN_KEYS = frozenset({"lr", "weight_decay_on", "lr_multipliers", "layer_decay"})
WEIGHT_DECAY_ON = ("all", "kernels")

# The smallest normal and the largest finite float32 (numpy.finfo("float32").tiny / .max).
FLOAT32_TINY, FLOAT32_MAX = 1.1754943508222875e-38, 3.4028234663852886e+38


def _unit_interval(conf, *keys: str) -> None:
    for key in keys:
        require(0 <= getattr(conf, key) < 1, key, getattr(conf, key), "a number in [0, 1)")


def _positive(conf, *keys: str) -> None:
    for key in keys:
        require(getattr(conf, key) > 0, key, getattr(conf, key), "a number > 0")


@dataclass(kw_only=True)
class OptimizerConf:
    """What every Keras optimizer takes."""

    _target_: str = MISSING
    lr: float = 0.001  # base learning rate: where the schedule starts (Keras' learning_rate)
    weight_decay: Optional[float] = None  # decoupled weight decay (see weight_decay_on)
    weight_decay_on: str = "all"  # all (Keras' rule) | kernels: 2+-D variables only, not biases nor norm scales/offsets
    lr_multipliers: Dict[str, float] = field(default_factory=dict)  # {glob on variable paths: rate factor}
    layer_decay: Optional[float] = None  # layer-wise rate decay: the output layer at lr, each earlier one times this
    clipnorm: Optional[float] = None  # clip each gradient tensor to this L2 norm
    global_clipnorm: Optional[float] = None  # clip all gradients together to this global L2 norm
    clipvalue: Optional[float] = None  # clip each gradient element to [-clipvalue, clipvalue]
    use_ema: bool = False  # keep an exponential moving average of the weights; evaluate and save it
    ema_momentum: float = 0.99  # the EMA's decay per step

    def __post_init__(self):
        # The optimizer computes in float32: a smaller rate is 0 (or a denormal), a larger one inf.
        require(FLOAT32_TINY <= self.lr <= FLOAT32_MAX, "lr", self.lr,
                f"a finite learning rate > 0 that float32 holds ({FLOAT32_TINY:.4g} to {FLOAT32_MAX:.4g}), e.g. 0.001")
        require(self.weight_decay is None or self.weight_decay >= 0, "weight_decay",
                self.weight_decay, "null or a number >= 0")
        clips = [k for k in ("clipnorm", "global_clipnorm", "clipvalue") if getattr(self, k) is not None]
        for key in clips:
            require(getattr(self, key) > 0, key, getattr(self, key), "null or a number > 0")
        require(len(clips) <= 1, clips[-1] if clips else "clipnorm", getattr(self, clips[-1]) if clips else None,
                "at most one of clipnorm, global_clipnorm, clipvalue (Keras applies only one)",
                f"set all but one of {clips} to null")
        _unit_interval(self, "ema_momentum")
        require(self.weight_decay_on in WEIGHT_DECAY_ON, "weight_decay_on", self.weight_decay_on,
                f"one of {list(WEIGHT_DECAY_ON)}")
        for pattern, factor in self.lr_multipliers.items():
            require(math.isfinite(factor) and factor >= 0, f"lr_multipliers.{pattern}", factor, "a finite number >= 0")
        require(self.layer_decay is None or 0 < self.layer_decay <= 1, "layer_decay", self.layer_decay,
                "null or a number in (0, 1], e.g. 0.75")


@schema("optimizer", "custom")
@dataclass(kw_only=True)
class CustomOptimizerConf(OptimizerConf):
    """Your own optimizer class: called with learning_rate (the schedule) and every other key."""

    OPEN: ClassVar[bool] = True


@schema("optimizer", "sgd")
@dataclass(kw_only=True)
class SgdConf(OptimizerConf):
    _target_: str = "keras.optimizers.SGD"
    lr: float = 0.01
    momentum: float = 0.0  # heavy-ball momentum (0: plain SGD)
    nesterov: bool = False  # Nesterov's accelerated variant of momentum

    def __post_init__(self):
        super().__post_init__()
        _unit_interval(self, "momentum")


@schema("optimizer", "rmsprop")
@dataclass(kw_only=True)
class RmspropConf(OptimizerConf):
    _target_: str = "keras.optimizers.RMSprop"
    rho: float = 0.9  # decay of the moving average of squared gradients
    momentum: float = 0.0
    epsilon: float = 1e-7  # added to the denominator for numerical stability
    centered: bool = False  # normalize by the gradient's estimated variance, not its second moment

    def __post_init__(self):
        super().__post_init__()
        _unit_interval(self, "rho", "momentum")
        _positive(self, "epsilon")


@schema("optimizer", "adagrad")
@dataclass(kw_only=True)
class AdagradConf(OptimizerConf):
    _target_: str = "keras.optimizers.Adagrad"
    initial_accumulator_value: float = 0.1  # starting value of the squared-gradient sums
    epsilon: float = 1e-7

    def __post_init__(self):
        super().__post_init__()
        require(self.initial_accumulator_value >= 0, "initial_accumulator_value",
                self.initial_accumulator_value, "a number >= 0")
        _positive(self, "epsilon")


@schema("optimizer", "adadelta")
@dataclass(kw_only=True)
class AdadeltaConf(OptimizerConf):
    _target_: str = "keras.optimizers.Adadelta"
    rho: float = 0.95  # decay rate of the accumulated gradients and updates
    epsilon: float = 1e-7

    def __post_init__(self):
        super().__post_init__()
        _unit_interval(self, "rho")
        _positive(self, "epsilon")


@dataclass(kw_only=True)
class _Betas(OptimizerConf):
    beta_1: float = 0.9  # decay of the first-moment (mean) estimate
    beta_2: float = 0.999  # decay of the second-moment (uncentered variance) estimate

    def __post_init__(self):
        super().__post_init__()
        _unit_interval(self, "beta_1", "beta_2")


@dataclass(kw_only=True)
class _BetasEpsilon(_Betas):
    epsilon: float = 1e-7  # added to the denominator for numerical stability

    def __post_init__(self):
        super().__post_init__()
        _positive(self, "epsilon")


@schema("optimizer", "nadam")
@dataclass(kw_only=True)
class NadamConf(_BetasEpsilon):
    _target_: str = "keras.optimizers.Nadam"


@schema("optimizer", "adamax")
@dataclass(kw_only=True)
class AdamaxConf(_BetasEpsilon):
    _target_: str = "keras.optimizers.Adamax"


@schema("optimizer", "lamb")
@dataclass(kw_only=True)
class LambConf(_BetasEpsilon):
    _target_: str = "keras.optimizers.Lamb"


@schema("optimizer", "adam")
@dataclass(kw_only=True)
class AdamConf(_BetasEpsilon):
    _target_: str = "keras.optimizers.Adam"
    amsgrad: bool = False  # use the maximum of past second moments (AMSGrad)


@schema("optimizer", "adamw")
@dataclass(kw_only=True)
class AdamwConf(AdamConf):
    _target_: str = "keras.optimizers.AdamW"
    weight_decay: Optional[float] = 0.004
    weight_decay_on: str = "kernels"  # AdamW's recipes (BERT, timm, Model Garden) spare biases and norms


@schema("optimizer", "lion")
@dataclass(kw_only=True)
class LionConf(_Betas):
    _target_: str = "keras.optimizers.Lion"
    beta_2: float = 0.99  # decay of the momentum that is carried to the next step


@schema("optimizer", "schedule_free_adamw")
@dataclass(kw_only=True)
class ScheduleFreeAdamwConf(_BetasEpsilon):
    _target_: str = "keras.optimizers.ScheduleFreeAdamW"
    lr: float = 0.0025
    epsilon: float = 1e-8
    warmup_steps: int = 0  # the optimizer's own linear warmup, in steps

    def __post_init__(self):
        super().__post_init__()
        require(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "an integer >= 0")


@schema("optimizer", "ftrl")
@dataclass(kw_only=True)
class FtrlConf(OptimizerConf):
    _target_: str = "keras.optimizers.Ftrl"
    learning_rate_power: float = -0.5  # how the rate shrinks as accumulated gradients grow (<= 0)
    initial_accumulator_value: float = 0.1
    l1_regularization_strength: float = 0.0
    l2_regularization_strength: float = 0.0
    l2_shrinkage_regularization_strength: float = 0.0
    beta: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        require(self.learning_rate_power <= 0, "learning_rate_power", self.learning_rate_power, "a number <= 0")
        # > 0: FTRL divides by the accumulator's square root, 0/0 for an input that is always 0.
        require(self.initial_accumulator_value > 0, "initial_accumulator_value", self.initial_accumulator_value,
                "a number > 0 (e.g. 1e-6)")
        for key in ("l1_regularization_strength", "l2_regularization_strength",
                    "l2_shrinkage_regularization_strength", "beta"):
            require(getattr(self, key) >= 0, key, getattr(self, key), "a number >= 0")


@schema("optimizer", "adafactor")
@dataclass(kw_only=True)
class AdafactorConf(OptimizerConf):
    _target_: str = "keras.optimizers.Adafactor"
    beta_2_decay: float = -0.8  # exponent of the second-moment decay schedule
    epsilon_1: float = 1e-30  # regularizes the squared gradient
    epsilon_2: float = 1e-3  # regularizes the relative step size
    clip_threshold: float = 1.0  # clips the update's RMS
    relative_step: bool = True  # scale the rate by 1 / sqrt(step) (capped by lr)

    def __post_init__(self):
        super().__post_init__()
        _positive(self, "epsilon_1", "epsilon_2", "clip_threshold")


@schema("optimizer", "muon")
@dataclass(kw_only=True)
class MuonConf(OptimizerConf):
    """Muon: orthogonalized momentum (Newton-Schulz) for 2-D+ kernels; AdamW for everything else."""

    _target_: str = "keras.optimizers.Muon"
    weight_decay: Optional[float] = 0.004
    weight_decay_on: str = "kernels"  # decays by default, as AdamW: spare biases and norms
    momentum: float = 0.95
    nesterov: bool = True
    ns_steps: int = 5  # Newton-Schulz iterations
    rms_rate: float = 0.2  # update RMS matched to AdamW's
    epsilon: float = 1e-7
    adam_beta_1: float = 0.9  # the AdamW used for biases, norms and embeddings
    adam_beta_2: float = 0.999
    adam_weight_decay: float = 0.004
    adam_lr_ratio: float = 1.0  # AdamW's rate / Muon's rate
    exclude_embeddings: bool = True  # embeddings use AdamW
    exclude_layers: Optional[List[str]] = None  # layer name patterns that use AdamW
    muon_a: float = 3.4445  # Newton-Schulz coefficients
    muon_b: float = -4.775
    muon_c: float = 2.0315

    def __post_init__(self):
        super().__post_init__()
        _unit_interval(self, "momentum", "adam_beta_1", "adam_beta_2")
        require(self.ns_steps >= 1, "ns_steps", self.ns_steps, "an integer >= 1")
        _positive(self, "epsilon", "adam_lr_ratio")


@dataclass(kw_only=True)
class _LearningRateFree(_BetasEpsilon):
    """The authors' defaults (prodigyopt, dadaptation): lr is a multiplier on the estimated step size d."""

    lr: float = 1.0  # a multiplier on the estimated step size d: leave it at 1 (a schedule still applies)
    weight_decay: Optional[float] = 0.0  # times d * lr per step when decoupled
    epsilon: float = 1e-8
    use_bias_correction: bool = False  # Adam's bias correction on the step size
    d0: float = 1e-6  # the initial estimate of d
    growth_rate: float = math.inf  # the most d may grow per step (e.g. 1.02: a warmup)

    def __post_init__(self):
        super().__post_init__()
        _positive(self, "d0")
        require(self.growth_rate >= 1, "growth_rate", self.growth_rate, "a number >= 1 (inf: unbounded)")


@schema("optimizer", "prodigy")
@dataclass(kw_only=True)
class ProdigyConf(_LearningRateFree):
    """Prodigy (Mishchenko & Defazio 2023): Adam with a learning-rate-free step size."""

    _target_: str = "tftrain.optim.prodigy.Prodigy"
    beta_3: Optional[float] = None  # decay of the sums d is estimated from (null: sqrt(beta_2))
    decouple: bool = True  # AdamW-style decoupled weight decay (false: added to the gradient)
    safeguard_warmup: bool = False  # leave lr out of d's denominator (use with a warmup)
    d_coef: float = 1.0  # factor on the estimate of d: the knob to turn (0.5 to 2)

    def __post_init__(self):
        super().__post_init__()
        require(self.beta_3 is None or 0 <= self.beta_3 < 1, "beta_3", self.beta_3, "null or a number in [0, 1)")
        _positive(self, "d_coef")


@schema("optimizer", "dadapt_adam")
@dataclass(kw_only=True)
class DadaptAdamConf(_LearningRateFree):
    """D-Adapted Adam (Defazio & Mishchenko 2023): Adam with a learning-rate-free step size."""

    _target_: str = "tftrain.optim.dadapt_adam.DAdaptAdam"
    decouple: bool = False  # AdamW-style decoupled weight decay (false: added to the gradient)
