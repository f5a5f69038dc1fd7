"""Where the packaged configs are, and Hydra composing them (Hydra's own exceptions)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig


def config_dir() -> Path:
    """conf/ beside the package in a source checkout, tftrain/conf inside an installed wheel."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package.parent / "conf", package / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"tftrain's configs are missing: no config.yaml in {package.parent / 'conf'} "
                            f"or {package / 'conf'}; reinstall tftrain")


def compose_raw(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """The composed config, with Hydra's own exceptions (tftrain.config.compose explains them)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import tftrain.schema  # noqa: F401 - registers the schemas the YAML files extend

    GlobalHydra.instance().clear()  # compose may be called many times in one notebook
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []))
