"""D-Adapted Adam (Defazio & Mishchenko 2023): Adam whose step size d is estimated from a lower bound
on the distance to the solution, so `learning_rate` is only a multiplier on it (1.0 by default).

It follows the authors' PyTorch code (`dadaptation.DAdaptAdam`, version 3.2) step for step,
defaults included (layer_scale 1, one parameter group); tests/test_lr_free.py checks a recorded
trajectory of it to 1e-5. The two-pass step, and why d lives in optimizer variables: tftrain.optim.prodigy.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from tftrain.optim.two_pass import TwoPassOptimizer, _as


@keras.saving.register_keras_serializable(package="tftrain")
class DAdaptAdam(TwoPassOptimizer):
    """Adam with D-Adaptation (Defazio & Mishchenko 2023, "Learning-Rate-Free Learning by
    D-Adaptation"). Leave `learning_rate` at 1.0 (a multiplier on d, as in the authors' code).

    Args:
        learning_rate: multiplier on the estimated step size d (float or schedule). Defaults to 1.0.
        beta_1, beta_2: Adam's moment decays. Default 0.9 and 0.999.
        epsilon: added to the denominator. Defaults to 1e-8.
        weight_decay: decay per step (times d * learning_rate when decoupled). Defaults to 0.
        decouple: AdamW-style decoupled weight decay (else added to the gradient). Defaults to False.
        use_bias_correction: Adam's bias correction on the step size. Defaults to False.
        d0: initial estimate of d. Defaults to 1e-6.
        growth_rate: the most d may grow per step (inf: unbounded). Defaults to inf.
    """

    def __init__(
        self,
        learning_rate=1.0,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        weight_decay=0.0,
        decouple=False,
        use_bias_correction=False,
        d0=1e-6,
        growth_rate=math.inf,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        name="dadapt_adam",
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

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        # D-Adaptation's state: d and the weighted numerator; this step's sums.
        self._d = self._scalar("d", self.d0)
        self._numerator_weighted = self._scalar("numerator_weighted")
        self._numerator_acum, self._sk_l1 = self._scalar("numerator_acum"), self._scalar("sk_l1")
        self._dlr = self._scalar("dlr")  # this step's d * learning_rate * bias correction
        self._k = self._scalar("k", 0, "int64")  # steps taken (skipped ones, with nothing to learn, not)
        self._exp_avgs, self._exp_avg_sqs, self._s = self.add_optimizer_variables(
            var_list, ["exp_avg", "exp_avg_sq", "s"])

    def set_rate_factors(self, factors) -> None:
        """A factor is the authors' `layer_scale` of the variable (their per-group rate): it scales
        the variable's step (d * lr * factor) and its weight in d's estimate; decoupled decay
        follows it too (tftrain's parameter groups: 0 freezes a variable)."""
        super().set_rate_factors(factors)

    def _begin(self, learning_rate):
        self._begin_step(learning_rate)
        self.assign(self._numerator_acum, ops.zeros((), "float64"))
        self.assign(self._sk_l1, ops.zeros((), "float64"))

    def _first_pass(self, variable, gradient):
        i = self._get_variable_index(variable)
        dtype = variable.dtype
        c = lambda x: _as(x, dtype)  # noqa: E731
        grad = self._grad(variable, gradient)
        dlr = ops.convert_to_tensor(self._dlr)
        active = ops.greater(dlr, 0.0)  # at a rate of 0 the authors skip the statistics (and the step)
        sqrt_beta_2 = math.sqrt(self.beta_2)
        m, v, s = self._exp_avgs[i], self._exp_avg_sqs[i], self._s[i]
        denom = ops.sqrt(v) + c(self.epsilon)
        r = self._factor(variable)
        self.assign_add(self._numerator_acum, ops.where(active, r * dlr * self._dot(grad, s / denom), 0.0))
        self.assign(m, self._where(active, m * c(self.beta_1) + grad * c(r * dlr * (1 - self.beta_1)), m))
        self.assign(v, self._where(active, v * c(self.beta_2) + c(1 - self.beta_2) * grad * grad, v))
        new_s = self._where(active, s * c(sqrt_beta_2) + grad * c(dlr * (1 - sqrt_beta_2)), s)
        self.assign(s, new_s)
        self.assign_add(self._sk_l1, ops.where(active, r * ops.cast(ops.sum(ops.abs(new_s)), "float64"), 0.0))

    def _estimate(self):
        sqrt_beta_2 = math.sqrt(self.beta_2)
        d, sk_l1 = ops.convert_to_tensor(self._d), ops.convert_to_tensor(self._sk_l1)
        numerator = sqrt_beta_2 * self._numerator_weighted + (1 - sqrt_beta_2) * self._numerator_acum
        progress = ops.greater(sk_l1, 0.0)  # with no gradient at all yet, the authors skip the step
        d_hat = numerator / ((1 - sqrt_beta_2) * ops.where(progress, sk_l1, 1.0))
        new_d = ops.maximum(d, ops.minimum(d_hat, d * self.growth_rate))
        self.assign(self._numerator_weighted, ops.where(progress, numerator, self._numerator_weighted))
        self.assign(self._d, ops.where(progress, new_d, d))
        self.assign_add(self._k, ops.cast(progress, "int64"))

    def _second_pass(self, variable, gradient):
        i = self._get_variable_index(variable)
        dtype = variable.dtype
        c = lambda x: _as(x, dtype)  # noqa: E731
        progress = ops.greater(ops.convert_to_tensor(self._sk_l1), 0.0)
        dlr = ops.convert_to_tensor(self._dlr)
        denom = ops.sqrt(self._exp_avg_sqs[i]) + c(self.epsilon)
        new = ops.convert_to_tensor(variable)
        if self._decays(variable) and self.decouple:
            new = new + new * c(-self.weight_decay * self._factor(variable) * dlr)
        new = new - self._exp_avgs[i] / denom
        self.assign(variable, self._where(progress, new, variable))

    def get_config(self):
        config = super().get_config()
        config.update({
            "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon, "decouple": self.decouple,
            "use_bias_correction": self.use_bias_correction, "d0": self.d0, "growth_rate": self.growth_rate,
        })
        return config
