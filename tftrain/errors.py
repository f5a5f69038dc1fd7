"""Errors tftrain reports to users as one paragraph, without a traceback."""

from __future__ import annotations


class TftrainError(Exception):
    """Base class of errors the CLI prints as a message rather than a traceback."""


class ConfigError(TftrainError, ValueError):
    """A config value is wrong. Names the key, the value received, what is allowed and the fix."""

    def __init__(self, key: str, value, allowed: str, fix: str | None = None):
        self.key, self.value, self.allowed, self.fix = key, value, allowed, fix
        fix = fix or f"set `{key}` to an allowed value on the command line (e.g. `{key}=...`) or in its YAML file"
        super().__init__(
            f"Invalid config `{key}`: received {value!r} ({type(value).__name__}); "
            f"allowed: {allowed}. Fix: {fix}."
        )


    def under(self, prefix: str) -> "ConfigError":
        """The same error with its key placed under `prefix` (a schema knows only its own keys)."""
        return ConfigError(f"{prefix}.{self.key}", self.value, self.allowed, self.fix)


def require(ok: bool, key: str, value, allowed: str, fix: str | None = None) -> None:
    """Raise ConfigError(key, value, allowed) unless `ok`; used by schemas' range checks."""
    if not ok:
        raise ConfigError(key, value, allowed, fix)


class DataError(TftrainError, ValueError):
    """The data cannot be used: missing file, malformed arrays, bad labels."""


class DivergenceError(TftrainError, ArithmeticError):
    """The loss became NaN or Inf."""
