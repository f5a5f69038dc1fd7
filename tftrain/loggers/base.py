"""What a logger is: the hooks tftrain's loop calls (on the chief only), and the list of them.

    start(run)                 once, before the first step (`RunInfo`: run directory, config, model,
                               its flat params, the step a resumed run starts from, its sweep)
    log_steps(rows)            after each compiled call: per-step rows {step, batch_loss,
                               learning_rate, grad_norm} whose step is a multiple of `step_freq`
    log_epoch(epoch, logs)     after the epoch's checkpoint is written (the commit point, so a run
                               killed and resumed never logs an epoch twice)
    flush()                    after each checkpoint, and before the process stops on a signal
    finish(metrics, files)     after the test evaluation: metrics.json's dict, the files written
    close(status)              always, last: "completed" | "pruned" | "failed" | "stopped"

A user's own logger subclasses `Logger` and is chosen with `+logger.mine._target_=mymodule.MyLogger`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path


log = logging.getLogger("tftrain")

STEP_KEYS = ("batch_loss", "learning_rate", "grad_norm")  # per-step values (after "step")


@dataclass
class RunInfo:
    run_dir: Path
    config: dict  # the validated config, as plain containers
    model: object  # the Keras model (weight histograms)
    params: dict  # the config as flat `group.key: value` params (tftrain.config.run_info.flat_params)
    resumed_at: int = 0  # the step a resumed run continues from; 0 for a new run
    sweep_dir: Path | None = None  # the sweep this run is a job of (Hydra multirun), if any


class Logger:
    """A no-op logger: override the hooks you need."""

    step_freq: int = 0  # per-step rows every N steps (0: none)

    def start(self, run: RunInfo) -> None: ...

    def log_steps(self, rows: list[dict]) -> None: ...

    def log_epoch(self, epoch: int, logs: dict) -> None: ...

    def flush(self) -> None: ...

    def finish(self, metrics: dict, files: list[Path]) -> None: ...

    def close(self, status: str) -> None: ...


class Loggers:
    """Calls each logger's hook in turn. A logger that fails while the run goes on is reported and
    dropped: metrics lost by a logging service must not end a training run (its checkpoints and
    metrics.json are the record)."""

    def __init__(self, loggers: list[Logger]):
        self.loggers = list(loggers)

    @property
    def record_steps(self) -> bool:
        return any(lg.step_freq for lg in self.loggers)

    def graph_freq(self) -> int:
        """How often the compiled step writes its scalars (the TensorBoard logger's update_freq)."""
        return next((lg.graph_freq for lg in self.loggers if hasattr(lg, "graph_freq")), 1)

    def graph_writer(self):
        """(summary writer, update_freq) for the scalars written inside the compiled step, or (None, 1)."""
        for lg in self.loggers:
            writer = getattr(lg, "graph_writer", None)
            if writer is not None:
                return writer, lg.graph_freq
        return None, 1

    def _call(self, lg: Logger, hook: str, *args, critical: bool = False) -> None:
        try:
            getattr(lg, hook)(*args)
        except Exception as e:  # noqa: BLE001 - see the class docstring
            if critical:
                raise
            log.warning("Logger %s failed in %s (%s: %s); the run goes on without it.", type(lg).__name__, hook,
                        type(e).__name__, str(e).splitlines()[0][:300] if str(e) else "")
            self.loggers.remove(lg)

    def _each(self, hook: str, *args, critical: bool = False) -> None:
        for lg in list(self.loggers):
            self._call(lg, hook, *args, critical=critical)

    def start(self, run: RunInfo) -> None:
        # A logger that cannot start (a wrong tracking URI, a missing package) is a config error: fail early.
        self._each("start", run, critical=True)

    def log_steps(self, step_log) -> None:
        """The trainer's step log ([n, 4]: step, batch_loss, learning_rate, grad_norm) to each logger
        that wants per-step rows, at its own frequency."""
        rows = None
        for lg in list(self.loggers):
            if not lg.step_freq:
                continue
            if rows is None:
                # float32 values: 8 significant digits hold them, without float64 noise (0.0010000000474974513)
                rows = [{"step": int(r[0]), **{k: float(f"{v:.8g}") for k, v in zip(STEP_KEYS, r[1:])}}
                        for r in step_log]
            chosen = [r for r in rows if r["step"] % lg.step_freq == 0]
            if chosen:
                self._call(lg, "log_steps", chosen)

    def log_epoch(self, epoch: int, logs: dict) -> None:
        self._each("log_epoch", epoch, logs)

    def flush(self) -> None:
        self._each("flush")

    def finish(self, metrics: dict, files: list[Path]) -> None:
        self._each("finish", metrics, files)

    def close(self, status: str) -> None:
        self._each("close", status)
