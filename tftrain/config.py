"""Where the packaged configs are, and composing them without the CLI (notebooks, tests)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig


def config_dir() -> Path:
    """conf/ beside the package in a source checkout, tftrain/conf inside an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "conf", here / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"tftrain's configs are missing: no config.yaml in {here.parent / 'conf'} "
                            f"or {here / 'conf'}; reinstall tftrain")


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
        from tftrain.schema.explain import explain

        raise explain(e, list(overrides or [])) from e


def compose_raw(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """`compose` with Hydra's own exceptions."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import tftrain.schema  # noqa: F401 - registers the schemas the YAML files extend

    GlobalHydra.instance().clear()  # compose may be called many times in one notebook
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []))
