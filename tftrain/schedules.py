"""Placeholder until the schedules library lands: constant learning rate."""
import keras


@keras.saving.register_keras_serializable(package="tftrain")
class Constant(keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self, value):
        self.value = float(value)

    def __call__(self, step):
        return keras.ops.cast(self.value, "float32") + 0.0 * keras.ops.cast(step, "float32")

    def get_config(self):
        return {"value": self.value}


def build_schedule(cfg, steps_per_epoch):
    return Constant(cfg.optimizer.lr)
