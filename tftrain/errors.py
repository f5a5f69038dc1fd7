"""Errors tftrain reports to users as one paragraph, without a traceback.

Lower layers (schedules, layers, initializers, data) raise `ArgumentError` (a plain ValueError
naming their own argument) or `DataError`; the config layer (tftrain.schema, tftrain.config.factory)
maps them to config keys as `ConfigError`s.
"""

from __future__ import annotations

import os


class TftrainError(Exception):
    """Base class of errors the CLI prints as a message rather than a traceback (exit status 2)."""


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


class ComposeError(TftrainError, ValueError):
    """Hydra could not compose the config from the overrides (unknown key or option, bad syntax)."""


def require(ok: bool, key: str, value, allowed: str, fix: str | None = None) -> None:
    """Raise ConfigError(key, value, allowed) unless `ok`; used by schemas' range checks."""
    if not ok:
        raise ConfigError(key, value, allowed, fix)


class ArgumentError(ValueError):
    """A lower layer's argument is out of range. Carries the argument's name, so the config layer
    can report the config key it came from."""

    def __init__(self, arg: str, value, requirement: str):
        self.arg, self.value, self.requirement = arg, value, requirement
        super().__init__(f"Argument `{arg}` must be {requirement}. Received: {arg}={value!r}")


class DataError(TftrainError, ValueError):
    """The data cannot be used: missing file, malformed arrays, bad labels."""


class DivergenceError(TftrainError, ArithmeticError):
    """The loss became NaN or Inf."""


class Preempted(TftrainError):
    """The run stopped on a signal (SIGTERM, SIGINT) after checkpointing; `signum` is its number."""

    def __init__(self, message: str, signum: int):
        self.signum = signum
        super().__init__(message)


class RunDirBusy(TftrainError):
    """Another process trains in this run directory (a refused process changes nothing there)."""


class ResumeRefused(TftrainError):
    """The run directory cannot be resumed by this process as configured (changed config, other
    replicas, a step past the end): the message says what to change."""


class UserCodeError(TftrainError):
    """A user's component (a `_target_` of theirs) failed or returned something unusable.

    `detail`: the traceback of the user's own code when the error happened inside it (what they
    need to fix), printed after the paragraph."""

    def __init__(self, message: str, detail: str = ""):
        self.detail = detail
        super().__init__(message)


def show_tracebacks() -> bool:
    """Whether the user asked for full tracebacks (HYDRA_FULL_ERROR=1, as Hydra documents).

    The CLI sets HYDRA_FULL_ERROR=1 itself so that Hydra raises its errors to tftrain instead of
    printing them; it records the user's own setting in TFTRAIN_FULL_ERROR first."""
    return os.environ.get("TFTRAIN_FULL_ERROR", os.environ.get("HYDRA_FULL_ERROR", "")) == "1"
