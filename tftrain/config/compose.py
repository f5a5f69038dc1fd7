"""Composing the packaged configs without the CLI (notebooks, tests)."""

from __future__ import annotations

from omegaconf import DictConfig

from tftrain.config.explain import explain
from tftrain.config.files import compose_raw


def compose(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """The config `python -m tftrain <overrides>` would run, as a DictConfig. Hydra's errors (an
    unknown key or option, a value of the wrong type) raise tftrain's ConfigError / ComposeError,
    as on the command line.

    >>> cfg = compose(["optimizer=sgd", "trainer.epochs=2"])
    >>> cfg.optimizer._target_, cfg.optimizer.lr
    ('keras.optimizers.SGD', 0.05)
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        return compose_raw(overrides, config_name)
    except (HydraException, OmegaConfBaseException) as e:
        raise explain(e, list(overrides or [])) from e
