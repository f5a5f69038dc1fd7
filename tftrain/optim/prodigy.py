"""Prodigy (Mishchenko & Defazio 2023): Adam whose step size d is estimated from the distance the
weights have travelled, so `learning_rate` is only a multiplier on it (1.0 by default).

It follows the authors' PyTorch code (`prodigyopt.Prodigy`, version 1.1.2) step for step, defaults
included; tests/test_lr_free.py checks a recorded trajectory of it to 1e-5. The step runs in two
passes over the variables (tftrain.optim.two_pass).
"""

from __future__ import annotations

import math

import keras
from keras import ops

from tftrain.optim.two_pass import TwoPassOptimizer, _as, _check


@keras.saving.register_keras_serializable(package="tftrain")
class Prodigy(TwoPassOptimizer):
    """Prodigy: Adam with a learning-rate-free step size d (Mishchenko & Defazio 2023, "Prodigy: An
    Expeditiously Adaptive Parameter-Free Learner"). Leave `learning_rate` at 1.0 (a multiplier on
    d, as in the authors' code; a schedule on it works as usual).

    Args:
        learning_rate: multiplier on the estimated step size d (float or schedule). Defaults to 1.0.
        beta_1, beta_2: Adam's moment decays. Default 0.9 and 0.999.
        beta_3: decay of the running sums d is estimated from; None: sqrt(beta_2).
        epsilon: added to the denominator (times d). Defaults to 1e-8.
        weight_decay: decay per step, times d * learning_rate. Defaults to 0.
        decouple: AdamW-style decoupled weight decay (else added to the gradient). Defaults to True.
        use_bias_correction: Adam's bias correction on the step size. Defaults to False.
        safeguard_warmup: leave the rate out of the estimate's denominator (for warmup). Defaults to False.
        d0: initial estimate of d. Defaults to 1e-6.
        d_coef: factor on the estimate of d (the preferred knob: 0.5 to 2 typically). Defaults to 1.0.
        growth_rate: the most d may grow per step (inf: unbounded). Defaults to inf.
    """

    def __init__(
        self,
        learning_rate=1.0,
        beta_1=0.9,
        beta_2=0.999,
        beta_3=None,
        epsilon=1e-8,
        weight_decay=0.0,
        decouple=True,
        use_bias_correction=False,
        safeguard_warmup=False,
        d0=1e-6,
        d_coef=1.0,
        growth_rate=math.inf,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        name="prodigy",
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            name=name,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps,
            **kwargs,
        )
        self._set_adam_args(beta_1, beta_2, epsilon, weight_decay, decouple, use_bias_correction, d0, growth_rate)
        _check("beta_3", beta_3, beta_3 is None or 0 <= beta_3 < 1, "None or in [0, 1)")
        _check("d_coef", d_coef, d_coef > 0, "> 0")
        self.beta_3, self.safeguard_warmup, self.d_coef = beta_3, safeguard_warmup, d_coef

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        # Prodigy's state: d, its running maximum, and the running numerator; this step's sums.
        self._d, self._d_max = self._scalar("d", self.d0), self._scalar("d_max", self.d0)
        self._d_numerator = self._scalar("d_numerator")
        self._delta_numerator, self._d_denom = self._scalar("delta_numerator"), self._scalar("d_denom")
        self._dlr = self._scalar("dlr")  # this step's d * learning_rate * bias correction
        self._k = self._scalar("k", 0, "int64")  # steps taken (skipped ones, with nothing to learn, not)
        if self.beta_1 > 0:
            self._exp_avgs = self.add_optimizer_variables(var_list, "exp_avg")
        self._exp_avg_sqs, self._s = self.add_optimizer_variables(var_list, ["exp_avg_sq", "s"])
        # The starting point the distance travelled is measured from.
        self._p0 = [self.add_variable_from_reference(v, "p0", initializer=_copy_of(v)) for v in var_list]

    def set_rate_factors(self, factors) -> None:
        """Factor 0 freezes a variable (no statistics, no step, no decay); the authors' code allows no
        other per-group rate ("only supported for values of 0"): d is one step size for all."""
        bad = {k: v for k, v in factors.items() if float(v) not in (0.0, 1.0)}
        if bad:
            raise ValueError("Prodigy takes rate factors of 0 (frozen) or 1 only, as the authors' code: "
                             f"its step size d is shared by every variable. Received: {sorted(bad.values())}")
        super().set_rate_factors(factors)

    def _beta_3(self):
        return math.sqrt(self.beta_2) if self.beta_3 is None else self.beta_3

    def _begin(self, learning_rate):
        self._begin_step(learning_rate)
        self.assign(self._delta_numerator, ops.zeros((), "float64"))
        self.assign(self._d_denom, ops.zeros((), "float64"))

    def _first_pass(self, variable, gradient):
        if self._factor(variable) == 0:
            return
        i = self._get_variable_index(variable)
        dtype = variable.dtype
        grad = self._grad(variable, gradient)
        d, dlr = ops.convert_to_tensor(self._d), ops.convert_to_tensor(self._dlr)
        active = ops.greater(dlr, 0.0)  # at a rate of 0 the authors skip the statistics (and the step)
        c = lambda x: _as(x, dtype)  # noqa: E731
        self.assign_add(self._delta_numerator,
                        ops.where(active, (d / self.d0) * dlr * self._dot(grad, self._p0[i] - variable), 0.0))
        if self.beta_1 > 0:
            m = self._exp_avgs[i]
            self.assign(m, self._where(active, m * c(self.beta_1) + grad * c(d * (1 - self.beta_1)), m))
        v = self._exp_avg_sqs[i]
        self.assign(v, self._where(active, v * c(self.beta_2) + c(d * d * (1 - self.beta_2)) * grad * grad, v))
        s = self._s[i]
        rate = (d / self.d0) * (d if self.safeguard_warmup else dlr)
        new_s = self._where(active, s * c(self._beta_3()) + grad * c(rate), s)
        self.assign(s, new_s)
        self.assign_add(self._d_denom, ops.where(active, ops.cast(ops.sum(ops.abs(new_s)), "float64"), 0.0))

    def _estimate(self):
        d, d_max, d_denom = (ops.convert_to_tensor(x) for x in (self._d, self._d_max, self._d_denom))
        numerator = self._d_numerator * self._beta_3() + self._delta_numerator
        progress = ops.greater(d_denom, 0.0)  # with no gradient at all yet, the authors skip the step
        d_hat = self.d_coef * numerator / ops.where(progress, d_denom, 1.0)
        new_d = ops.where(ops.equal(d, self.d0), ops.maximum(d, d_hat), d)
        new_d_max = ops.maximum(d_max, d_hat)
        new_d = ops.minimum(new_d_max, new_d * self.growth_rate)
        self.assign(self._d_numerator, ops.where(progress, numerator, self._d_numerator))
        self.assign(self._d_max, ops.where(progress, new_d_max, d_max))
        self.assign(self._d, ops.where(progress, new_d, d))
        self.assign_add(self._k, ops.cast(progress, "int64"))

    def _second_pass(self, variable, gradient):
        if self._factor(variable) == 0:
            return
        i = self._get_variable_index(variable)
        dtype = variable.dtype
        c = lambda x: _as(x, dtype)  # noqa: E731
        progress = ops.greater(ops.convert_to_tensor(self._d_denom), 0.0)
        d, dlr = ops.convert_to_tensor(self._d), ops.convert_to_tensor(self._dlr)
        grad = self._grad(variable, gradient)
        denom = ops.sqrt(self._exp_avg_sqs[i]) + c(d * self.epsilon)
        new = ops.convert_to_tensor(variable)
        if self._decays(variable) and self.decouple:
            new = new + new * c(-self.weight_decay * dlr)
        if self.beta_1 > 0:
            new = new + c(-dlr) * (self._exp_avgs[i] / denom)
        else:
            new = new + c(-dlr * d) * (grad / denom)
        self.assign(variable, self._where(progress, new, variable))

    def get_config(self):
        config = super().get_config()
        config.update({
            "beta_1": self.beta_1, "beta_2": self.beta_2, "beta_3": self.beta_3, "epsilon": self.epsilon,
            "decouple": self.decouple, "use_bias_correction": self.use_bias_correction,
            "safeguard_warmup": self.safeguard_warmup, "d0": self.d0, "d_coef": self.d_coef,
            "growth_rate": self.growth_rate,
        })
        return config


def _copy_of(variable):
    """An initializer giving `variable`'s value when the slot is made (Prodigy's p0)."""
    def initializer(shape, dtype=None):
        return ops.cast(ops.convert_to_tensor(variable), dtype or variable.dtype)
    return initializer
