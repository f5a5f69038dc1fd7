"""The base of the learning-rate-free optimizers (tftrain.optim.prodigy, tftrain.optim.dadapt_adam).

Their step size d needs sums over *every* variable before *any* variable moves, which Keras'
one-variable-at-a-time `update_step` cannot express: `TwoPassOptimizer` runs each step as a first
pass over the variables (moments and the sums), the estimate (d from the sums), then a second pass
(the weights, with the new d). d and the sums it comes from are optimizer variables: saved and
restored with the optimizer, exactly. Under tf.distribute Keras all-reduces the gradients before
the update, and the passes run in the cross-replica update (`extended.update`, where Keras' own
slots are updated), each replica computing the same d from the same reduced gradients onto its own
copy of the variables.
"""

from __future__ import annotations

import keras
from keras import ops


class TwoPassOptimizer(keras.optimizers.Optimizer):
    """A step in passes over all variables with a scalar estimate between them. Subclasses define
    `_begin(lr)`, `_first_pass(variable, gradient)`, `_estimate()` and `_second_pass(variable,
    gradient)`; scalar state is float64 (the authors keep it in Python floats)."""

    def _set_adam_args(self, beta_1, beta_2, epsilon, weight_decay, decouple, use_bias_correction, d0,
                       growth_rate) -> None:
        """The arguments both authors' Adam variants share, checked Keras-style and kept."""
        for key, value in (("beta_1", beta_1), ("beta_2", beta_2)):
            _check(key, value, 0 <= value < 1, "in [0, 1)")
        _check("epsilon", epsilon, epsilon > 0, "> 0")
        _check("weight_decay", weight_decay, weight_decay is None or weight_decay >= 0, "None or >= 0")
        _check("d0", d0, d0 > 0, "> 0")
        _check("growth_rate", growth_rate, growth_rate >= 1, ">= 1 (math.inf: unbounded)")
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.decouple, self.use_bias_correction = decouple, use_bias_correction
        self.d0, self.growth_rate = d0, growth_rate

    @property
    def d(self):
        """The current estimate of the step size (a float64 variable)."""
        return self._d

    def _begin_step(self, learning_rate) -> None:
        """This step's d * learning_rate (times Adam's bias correction, counted in steps taken) into
        `_dlr`; subclasses then reset their per-step sums."""
        lr = _as(learning_rate, "float64")
        if self.use_bias_correction:
            k = ops.cast(self._k, "float64") + 1
            bias_correction = ops.sqrt(1 - self.beta_2 ** k) / (1 - self.beta_1 ** k)
        else:
            bias_correction = 1.0
        self.assign(self._dlr, self._d * lr * bias_correction)

    def _grad(self, variable, gradient):
        """The gradient, with coupled (L2) weight decay added when the variable decays."""
        grad = self._dense(gradient, variable)
        if self._decays(variable) and not self.decouple:
            grad = grad + _as(self.weight_decay, variable.dtype) * variable
        return grad

    def _scalar(self, name, value=0.0, dtype="float64"):
        # Not keras.initializers.Constant: it rounds through float32 (d0 must stay exactly d0).
        return self.add_variable(shape=(), initializer=lambda shape, dtype=None: ops.full(shape, value, dtype),
                                 dtype=dtype, name=name)

    def _apply_weight_decay(self, variables):
        # Weight decay is the algorithm's own (scaled by d, coupled or decoupled): in the passes.
        return

    def set_rate_factors(self, factors) -> None:
        """Per-variable rate factors ({Keras variable key (`_var_key`): factor}, the others at 1):
        how parameter groups (optimizer.lr_multipliers, layer_decay) reach these optimizers, whose
        step is not Keras' per-variable `update_step`. Each class says what a factor means."""
        self._rate_factors = {k: float(v) for k, v in factors.items() if float(v) != 1.0}

    def _factor(self, variable) -> float:
        return getattr(self, "_rate_factors", {}).get(self._var_key(variable), 1.0)

    def _decays(self, variable) -> bool:
        """Whether `variable` (a model variable, or one replica's copy of it) is decayed: Keras'
        `exclude_from_weight_decay` applies."""
        return bool(self.weight_decay) and self._use_weight_decay(
            self._trainable_variables[self._get_variable_index(variable)])

    def _run_passes(self, update, grads_and_vars, learning_rate):
        """`update(variable, fn, *args)` runs `fn(variable, *args)` (on each replica's copy)."""
        grads_and_vars = [(g, v) for g, v in grads_and_vars if g is not None]
        anchor = self._d.value if keras.backend.backend() == "tensorflow" else self._d
        update(anchor, lambda _, lr: self._begin(lr), learning_rate)
        for grad, var in grads_and_vars:
            update(var, self._first_pass, grad)
        update(anchor, lambda _: self._estimate())
        for grad, var in grads_and_vars:
            update(var, self._second_pass, grad)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if keras.backend.backend() == "tensorflow":
            # All-reduces the gradients, then `_distributed_tf_update_step` in cross-replica context.
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        self._run_passes(lambda var, fn, *args: fn(var, *args), zip(grads, trainable_variables), learning_rate)

    def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
        def update(var, fn, *args):
            return distribution.extended.update(var, fn, args=args, group=False)

        self._run_passes(update, grads_and_vars, learning_rate)

    @staticmethod
    def _dense(gradient, variable):
        return ops.cast(ops.convert_to_tensor(gradient), variable.dtype)

    @staticmethod
    def _dot(a, b):
        return ops.cast(ops.sum(ops.multiply(a, b)), "float64")

    def _where(self, condition, new, old):
        return ops.where(condition, new, ops.cast(old, new.dtype))


def _as(x, dtype):
    """`x` in `dtype`; a Python number directly (ops.cast would round it through float32 first)."""
    return ops.convert_to_tensor(x, dtype) if isinstance(x, (int, float)) else ops.cast(x, dtype)


def _check(name, value, ok: bool, requirement: str):
    if not ok:
        raise ValueError(f"Argument `{name}` must be {requirement}. Received: {name}={value}")
