"""Weight-normalized Dense and Conv1D/2D/3D (Salimans & Kingma 2016), which Keras 3 lacks.

The kernel is reparameterized as `w = g * v / ||v||`: a trainable direction `v` (shaped like the
kernel, drawn by `kernel_initializer`) and a trainable scale `g` per output unit, the norm taken
over every kernel axis but the last. `g` starts at `||v||`, so without data-dependent
initialization the layer starts out computing exactly what Dense/Conv2D would with the same
initializer; only the training dynamics differ.

Data-dependent initialization (`data_init=True`) rescales `g` and sets the bias from one batch so
that each unit's pre-activations have mean 0 and standard deviation 1. It runs once, before
training, through `data_dependent_init(model, strategy, batch)`, rather than inside `call`: the
moments must be all-reduced across replicas, and under MirroredStrategy a synchronization point
inside `tf.cond` (the natural "first call only" switch) raises "merge_call called while defining
a new graph" (checked on TF 2.21). A non-trainable `initialized` flag, saved with the model and in
checkpoints, makes the function a no-op for layers already initialized.
"""

from __future__ import annotations

import keras
from keras import ops

_EPSILON = 1e-12  # keeps the norm of a (pathological) all-zero direction finite


def _positive_int(value, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"Received an invalid value for `{name}`, expected a positive integer. "
                         f"Received: {name}={value}")
    return value


def _int_tuple(value, name: str, rank: int) -> tuple[int, ...]:
    values = (value,) * rank if isinstance(value, int) else tuple(value)
    if len(values) != rank or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise ValueError(f"The `{name}` argument must be a positive integer or a tuple of {rank} positive "
                         f"integers. Received: {name}={value}")
    return values


class _WeightNorm(keras.layers.Layer):
    """What Dense and Conv2D share: the `g * v / ||v||` kernel and the data-dependent init."""

    def __init__(self, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, data_init=False,
                 **kwargs):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        if kernel_constraint is not None:
            # A constraint on `v` would be meaningless (its scale cancels) and one on `w` has no
            # variable to project: refuse rather than silently ignore it.
            raise ValueError("`kernel_constraint` is not supported by weight-normalized layers (the kernel is "
                             f"g * v / ||v||, not a variable). Received: kernel_constraint={kernel_constraint}")
        if not isinstance(data_init, bool):
            raise ValueError(f"Received an invalid value for `data_init`, expected True or False. "
                             f"Received: data_init={data_init}")
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.data_init = data_init
        self.v = self.g = self.bias = self.initialized = None
        # Set by data_dependent_init while it traces its one forward pass (read at trace time).
        self._init_pending = False

    # Subclasses: the kernel's shape, the linear map, and the axes that index output units.
    def _kernel_shape(self, input_shape) -> tuple[int, ...]:
        raise NotImplementedError

    def _linear(self, inputs, kernel):
        raise NotImplementedError

    def _channel_axis(self, ndim: int) -> int:
        return ndim - 1

    def build(self, input_shape):
        shape = self._kernel_shape(input_shape)
        units = shape[-1]
        self._reduction_axes = tuple(range(len(shape) - 1))
        # float32 master weights whatever the compute dtype: the norm of v must not be taken in
        # float16. aggregation="mean": data_dependent_init assigns g and the bias in replica
        # context, where Keras' default ("none") refuses to update a mirrored variable.
        self.v = self.add_weight(name="v", shape=shape, initializer=self.kernel_initializer, autocast=False)
        self.g = self.add_weight(
            name="g", shape=(units,), autocast=False, aggregation="mean",
            initializer=lambda shape, dtype=None: ops.cast(self._v_norm(), dtype or "float32"),
            # Penalize the effective kernel, not v, whose scale cancels out (for L2: l2 * sum(g**2)).
            regularizer=None if self.kernel_regularizer is None else (lambda _: self.kernel_regularizer(
                self._kernel_float32())))
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(units,), initializer=self.bias_initializer,
                                        regularizer=self.bias_regularizer, constraint=self.bias_constraint,
                                        aggregation="mean")
        if self.data_init:
            self.initialized = self.add_weight(name="initialized", shape=(), dtype="bool", initializer="zeros",
                                               trainable=False, autocast=False, aggregation="only_first_replica")

    def _v_norm(self):
        return ops.sqrt(ops.maximum(ops.sum(ops.square(self.v.value), axis=self._reduction_axes), _EPSILON))

    def _kernel_float32(self):
        return self.v.value * (self.g.value / self._v_norm())

    @property
    def kernel(self):
        """The effective kernel `g * v / ||v||` (in the compute dtype)."""
        return ops.cast(self._kernel_float32(), self.compute_dtype)

    def call(self, inputs):
        outputs = self._linear(inputs, self.kernel)
        if self._init_pending:
            outputs = self._initialize_from(outputs)
        elif self.use_bias:
            outputs = outputs + ops.cast(self._broadcast(self.bias.value, len(outputs.shape)), outputs.dtype)
        return outputs if self.activation is None else self.activation(outputs)

    def _broadcast(self, per_unit, ndim: int):
        shape = [1] * ndim
        shape[self._channel_axis(ndim)] = -1
        return ops.reshape(per_unit, shape)

    def _initialize_from(self, pre):
        """Set g and the bias so that `pre` (without bias) becomes mean 0, std 1 per unit over the
        global batch; return the pre-activations the initialized layer computes."""
        import tensorflow as tf

        ndim = len(pre.shape)
        axes = [a for a in range(ndim) if a != self._channel_axis(ndim)]
        pre32 = ops.cast(pre, "float32")
        ctx = tf.distribute.get_replica_context()
        count = ops.cast(ops.size(pre32), "float32") / pre32.shape[self._channel_axis(ndim)]
        # Two all-reduces (mean, then centered square) rather than one of sum(x**2): no
        # cancellation when |mean| >> std, and this runs once in a model's life.
        sums = ctx.all_reduce("sum", [ops.sum(pre32, axis=axes), count])
        mean = sums[0] / sums[1]
        var = ctx.all_reduce("sum", ops.sum(ops.square(pre32 - self._broadcast(mean, ndim)), axis=axes)) / sums[1]
        scale = ops.rsqrt(var + 1e-6)  # a dead unit (all-zero input) keeps a finite g
        self.g.assign(self.g.value * scale)
        shift = -mean * scale if self.use_bias else ops.zeros_like(mean)
        if self.use_bias:
            self.bias.assign(shift)
        self.initialized.assign(True)
        out = pre32 * self._broadcast(scale, ndim) + self._broadcast(shift, ndim)
        return ops.cast(out, pre.dtype)

    def get_config(self):
        config = super().get_config()
        config.update({
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "activity_regularizer": keras.regularizers.serialize(self.activity_regularizer),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            "data_init": self.data_init,
        })
        return config


@keras.saving.register_keras_serializable(package="tftrain")
class WeightNormDense(_WeightNorm):
    """`keras.layers.Dense` with a weight-normalized kernel `g * v / ||v||`.

    Takes Dense's arguments (`kernel_initializer` draws `v`; `kernel_regularizer` applies to the
    effective kernel; no `kernel_constraint`), plus `data_init`: rescale from the first batch
    (see `data_dependent_init`).
    """

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, data_init=False, **kwargs):
        self.units = _positive_int(units, "units")
        super().__init__(activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                         bias_regularizer, activity_regularizer, kernel_constraint, bias_constraint, data_init,
                         **kwargs)
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    def _kernel_shape(self, input_shape):
        if input_shape[-1] is None:
            raise ValueError(f"The last dimension of the inputs to `WeightNormDense` must be defined. "
                             f"Received: input_shape={input_shape}")
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_shape[-1]})
        return (input_shape[-1], self.units)

    def _linear(self, inputs, kernel):
        return ops.matmul(inputs, kernel)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class _WeightNormConv(_WeightNorm):
    """`keras.layers.Conv{rank}D` with a weight-normalized kernel `g * v / ||v||` (norm over the
    kernel's spatial axes and input channels; one `g` per filter)."""

    rank = 2

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None, dilation_rate=1,
                 activation=None, use_bias=True, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
                 bias_constraint=None, data_init=False, **kwargs):
        self.filters = _positive_int(filters, "filters")
        self.kernel_size = _int_tuple(kernel_size, "kernel_size", self.rank)
        self.strides = _int_tuple(strides, "strides", self.rank)
        self.dilation_rate = _int_tuple(dilation_rate, "dilation_rate", self.rank)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(f"`strides > 1` not supported in conjunction with `dilation_rate > 1`. "
                             f"Received: strides={self.strides} and dilation_rate={self.dilation_rate}")
        padding = str(padding).lower()
        if padding not in ("valid", "same"):
            raise ValueError(f"The `padding` argument must be one of 'valid', 'same'. Received: padding={padding}")
        self.padding = padding
        data_format = keras.config.image_data_format() if data_format is None else str(data_format).lower()
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError("The `data_format` argument must be one of 'channels_first', 'channels_last'. "
                             f"Received: data_format={data_format}")
        self.data_format = data_format
        super().__init__(activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                         bias_regularizer, activity_regularizer, kernel_constraint, bias_constraint, data_init,
                         **kwargs)
        self.input_spec = keras.layers.InputSpec(ndim=self.rank + 2)

    def _channel_axis(self, ndim: int) -> int:
        return ndim - 1 if self.data_format == "channels_last" else 1

    def _kernel_shape(self, input_shape):
        ndim = self.rank + 2
        channels = input_shape[self._channel_axis(ndim)]
        if channels is None:
            raise ValueError(f"The channel dimension of the inputs to `{type(self).__name__}` must be defined. "
                             f"Received: input_shape={input_shape}")
        self.input_spec = keras.layers.InputSpec(ndim=ndim, axes={self._channel_axis(ndim): channels})
        return (*self.kernel_size, channels, self.filters)

    def _linear(self, inputs, kernel):
        return ops.conv(inputs, kernel, strides=self.strides, padding=self.padding,
                        dilation_rate=self.dilation_rate, data_format=self.data_format)

    def compute_output_shape(self, input_shape):
        def size(n, k, s, d):
            if n is None:
                return None
            return -(-n // s) if self.padding == "same" else (n - d * (k - 1) - 1) // s + 1

        first = 1 if self.data_format == "channels_last" else 2
        spatial = [size(input_shape[first + i], self.kernel_size[i], self.strides[i], self.dilation_rate[i])
                   for i in range(self.rank)]
        if self.data_format == "channels_last":
            return (input_shape[0], *spatial, self.filters)
        return (input_shape[0], self.filters, *spatial)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding, "data_format": self.data_format,
                "dilation_rate": self.dilation_rate}


@keras.saving.register_keras_serializable(package="tftrain")
class WeightNormConv1D(_WeightNormConv):
    """`keras.layers.Conv1D` with a weight-normalized kernel (see WeightNormConv2D)."""

    rank = 1


@keras.saving.register_keras_serializable(package="tftrain")
class WeightNormConv2D(_WeightNormConv):
    """`keras.layers.Conv2D` with a weight-normalized kernel `g * v / ||v||` (norm over the
    kernel's height, width and input channels; one `g` per filter).

    Takes Conv2D's arguments except `groups` (`kernel_initializer` draws `v`;
    `kernel_regularizer` applies to the effective kernel; no `kernel_constraint`), plus
    `data_init` (see `data_dependent_init`).
    """

    rank = 2


@keras.saving.register_keras_serializable(package="tftrain")
class WeightNormConv3D(_WeightNormConv):
    """`keras.layers.Conv3D` with a weight-normalized kernel (see WeightNormConv2D)."""

    rank = 3


def _weight_norm_layers(layer):
    if isinstance(layer, _WeightNorm):
        yield layer
    for sub in getattr(layer, "layers", ()):
        yield from _weight_norm_layers(sub)


def needs_data_init(model) -> bool:
    """Whether `model` has weight-normalized layers waiting for data_dependent_init."""
    return any(layer.data_init and layer.built and not bool(layer.initialized.numpy())
               for layer in _weight_norm_layers(model))


def data_dependent_init(model, strategy, dist_batch) -> int:
    """Initialize every `data_init` weight-normalized layer of `model` not yet initialized from
    one batch, so that its pre-activations start with mean 0 and std 1 per unit; returns how
    many layers it initialized (0: nothing to do, nothing run).

    Layers are initialized in one forward pass (training=True), in order, each seeing the
    outputs of the already-initialized layers before it, as in Salimans & Kingma (2016).
    `dist_batch` is a batch of `strategy`'s distributed dataset, `(x, y)` or `x`; moments are
    all-reduced over its replicas. With `strategy=None` (no distribution) pass a plain batch.
    Every worker of a multi-worker run must call it (the all-reduce is collective).
    """
    import tensorflow as tf

    pending = [layer for layer in _weight_norm_layers(model)
               if layer.data_init and layer.built and not bool(layer.initialized.numpy())]
    if not pending:
        return 0
    strategy = strategy or tf.distribute.get_strategy()
    x = dist_batch[0] if isinstance(dist_batch, (tuple, list)) else dist_batch

    @tf.function
    def forward(batch):
        strategy.run(lambda inputs: model(inputs, training=True), args=(batch,))

    for layer in pending:
        layer._init_pending = True
    try:
        forward(x)
    finally:
        for layer in pending:
            layer._init_pending = False
    return len(pending)
