"""MLflow (`logger=mlflow`, the `mlflow` extra): one MLflow run per tftrain run.

- params: the config flattened to dotted keys (`optimizer.lr`, `trainer.batch_size`) and, on the
  command line, each group's option (`optimizer: adam`);
- metrics: every epoch's logs (`loss`, `val_accuracy`, ...; step = epoch index), batch_loss,
  learning_rate and grad_norm per step (every `update_freq` steps; step = the global step), and
  the final metrics (test_, best_val_, wall_time_s, ...) at the end;
- artifacts: model.keras (or model.weights.h5), history.csv, metrics.json, config.yaml,
  preprocessing.json.

A resumed run continues its MLflow run (its id is kept in `<run>/mlflow_run.json`) rather than
starting a new one; metrics are sent at each checkpoint (the commit point), so a run killed and
resumed sends no step twice. A sweep's jobs are children (`mlflow.parentRunId`) of one parent run
that the sweep opens (`open_parent`) and closes with its summaries as artifacts (`close_parent`).

MlflowClient is used rather than the fluent `mlflow.start_run`: no process-global active run, so
runs in one process (a sweep's in-process jobs, a notebook) cannot leak into each other.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import urllib.parse
from pathlib import Path

from tftrain.errors import TftrainError
from tftrain.loggers.base import Logger, RunInfo

log = logging.getLogger("tftrain")

RUN_FILE = "mlflow_run.json"
PARENT_FILE = "mlflow_parent_run.json"
FINAL_PREFIXES = ("train_", "best_val_", "test_")  # val_<metric> is logged per epoch already
FINAL_KEYS = ("wall_time_s", "train_time_s", "steps_per_s", "epochs", "steps")
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param's value
STATUS = {"completed": "FINISHED", "pruned": "FINISHED", "failed": "FAILED", "stopped": "KILLED"}


def masked(uri: str | None) -> str | None:
    """`uri` without the credentials of its user-info part (`https://user:token@host` ->
    `https://***@host`): what tftrain writes to files, MLflow and logs."""
    if not isinstance(uri, str):
        return uri
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return uri
    if "@" not in parts.netloc:
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def _scrub(text: str, uri: str | None) -> str:
    """`text` with every copy of `uri` in its masked form."""
    hidden = masked(uri)
    return text.replace(uri, hidden) if uri and hidden != uri else text


def scrub(text: str, uris) -> str:
    """`text` with every copy of each of `uris` in its masked form."""
    for uri in uris:
        text = _scrub(text, uri)
    return text


# Sweep directory -> the parent run's full tracking URI: the file holds only its masked form.
_PARENT_URIS: dict[str, str] = {}


def _client(tracking_uri: str | None):
    try:
        import mlflow
        from mlflow import MlflowClient
    except ImportError:
        raise TftrainError("logger=mlflow needs MLflow, which is not installed. Fix: pip install \"tftrain[mlflow]\" "
                           "(or choose other loggers, e.g. logger=tensorboard).") from None
    for noisy in ("alembic", "mlflow"):  # a new SQLite store logs its schema migrations at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    uri = tracking_uri or mlflow.get_tracking_uri()
    return MlflowClient(tracking_uri=uri), uri


def _experiment_id(client, name: str, artifact_location: str | None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except Exception:  # noqa: BLE001 - created meanwhile by a parallel job of the same sweep
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def _now() -> int:
    return int(time.time() * 1000)


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class MlflowLogger(Logger):
    def __init__(self, *, tracking_uri: str | None, experiment: str, artifact_location: str | None, run_name: str | None,
                 update_freq: int, log_artifacts: bool, tags: dict):
        self.tracking_uri, self.experiment, self.artifact_location = tracking_uri, experiment, artifact_location
        self.run_name, self.step_freq, self.log_artifacts = run_name, update_freq, log_artifacts
        self.tags = dict(tags or {})
        self.client = self.run_id = None
        self._metrics: list = []

    # ------------------------------------------------------------------ the run

    def start(self, run: RunInfo) -> None:
        try:
            self._start(run)
        except TftrainError:
            raise
        except Exception as e:  # noqa: BLE001 - MLflow's errors: an unreachable server, a bad URI, permissions
            detail = _scrub(str(e).splitlines()[0][:300] if str(e) else "", self.tracking_uri)
            raise TftrainError(
                f"MLflow could not record this run at {masked(self.tracking_uri) or 'its default tracking URI'}: "
                f"{type(e).__name__}: {detail}. Fix: check "
                "logger.mlflow.tracking_uri (or MLFLOW_TRACKING_URI), e.g. sqlite:///mlflow.db, or leave MLflow out "
                "(logger=tensorboard).") from None

    def _start(self, run: RunInfo) -> None:
        self.client, uri = _client(self.tracking_uri)
        path = Path(run.run_dir) / RUN_FILE
        previous = _read(path)
        if run.resumed_at and previous and previous.get("tracking_uri") == masked(uri):
            self.run_id = previous["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            log.info("MLflow: continuing run %s (experiment %r)", self.run_id, self.experiment)
            return  # its params are logged already; MLflow refuses to change a param's value
        experiment_id = _experiment_id(self.client, self.experiment, self.artifact_location)
        tags = {"tftrain.run_dir": str(Path(run.run_dir).resolve()), **self.tags}
        parent = _read(run.sweep_dir / PARENT_FILE) if run.sweep_dir else None
        if parent and parent.get("tracking_uri") == masked(uri):
            tags["mlflow.parentRunId"] = parent["run_id"]
        created = self.client.create_run(experiment_id, run_name=self.run_name or Path(run.run_dir).name, tags=tags)
        self.run_id = created.info.run_id
        path.write_text(json.dumps({"tracking_uri": masked(uri), "experiment_id": experiment_id,
                                    "run_id": self.run_id}) + "\n")
        self._log_params(run.params)
        log.info("MLflow: run %s in experiment %r at %s", self.run_id, self.experiment, masked(uri))

    def _log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, _scrub(str(v), self.tracking_uri)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    # ------------------------------------------------------------------ metrics

    def _add(self, key: str, value, step: int, timestamp: int) -> None:
        from mlflow.entities import Metric

        value = _number(value)
        if value is not None:
            self._metrics.append(Metric(key, value, timestamp, step))

    def log_steps(self, rows: list[dict]) -> None:
        first = rows[0]["step"]
        # Steps at or past these were rolled back (a NaN recovery restored an earlier checkpoint).
        self._metrics = [m for m in self._metrics if not (m.key in ("batch_loss", "learning_rate", "grad_norm")
                                                          and m.step >= first)]
        now = _now()
        for row in rows:
            for key in ("batch_loss", "learning_rate", "grad_norm"):
                self._add(key, row[key], row["step"], now)

    def log_epoch(self, epoch: int, logs: dict) -> None:
        now = _now()
        for key, value in logs.items():
            if key != "learning_rate":  # logged per step
                self._add("epoch_seconds" if key == "seconds" else key, value, epoch, now)
        self.flush()

    def flush(self) -> None:
        if self.client is None or not self._metrics:
            return
        for i in range(0, len(self._metrics), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=self._metrics[i:i + 1000])
        self._metrics = []

    def finish(self, metrics: dict, files: list[Path]) -> None:
        now, epochs = _now(), int(metrics.get("epochs") or 0)
        for key, value in metrics.items():
            if key.startswith(FINAL_PREFIXES) or key in FINAL_KEYS:
                self._add(key, value, epochs, now)
        self.flush()
        if self.log_artifacts:
            with tempfile.TemporaryDirectory() as scrubbed:
                for path in files:
                    if Path(path).is_file():
                        self.client.log_artifact(self.run_id, str(self._without_credentials(Path(path), scrubbed)))

    def _without_credentials(self, path: Path, folder: str) -> Path:
        """`path`, or a copy (in `folder`, same name) with the tracking URI's credentials masked:
        config.yaml holds logger.mlflow.tracking_uri as given."""
        if not self.tracking_uri or masked(self.tracking_uri) == self.tracking_uri or path.suffix not in (
                ".yaml", ".yml", ".json", ".csv", ".txt"):
            return path
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            return path
        if self.tracking_uri not in text:
            return path
        copy = Path(folder) / path.name
        copy.write_text(_scrub(text, self.tracking_uri))
        return copy

    def close(self, status: str) -> None:
        if self.client is None or self.run_id is None:
            return
        self.flush()
        if status == "pruned":
            self.client.set_tag(self.run_id, "tftrain.status", "pruned")
        self.client.set_terminated(self.run_id, status=STATUS.get(status, "FAILED"))


# ---------------------------------------------------------------- a sweep's parent run


def _read(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def open_parent(sweep_dir: Path, conf: dict) -> str:
    """The sweep's parent run (created, or reopened when the sweep is rerun): its id is kept in
    `<sweep dir>/mlflow_parent_run.json`, where the jobs' loggers find it."""
    client, uri = _client(conf.get("tracking_uri"))
    path = Path(sweep_dir) / PARENT_FILE
    previous = _read(path)
    _PARENT_URIS[str(Path(sweep_dir).resolve())] = uri
    if previous and previous.get("tracking_uri") == masked(uri):
        client.update_run(previous["run_id"], status="RUNNING")
        return previous["run_id"]
    experiment_id = _experiment_id(client, conf.get("experiment") or "tftrain", conf.get("artifact_location"))
    run = client.create_run(experiment_id, run_name=f"sweep {Path(sweep_dir).name}",
                            tags={"tftrain.sweep_dir": str(Path(sweep_dir).resolve()), "tftrain.kind": "sweep"})
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"tracking_uri": masked(uri), "experiment_id": experiment_id,
                                "run_id": run.info.run_id}) + "\n")
    return run.info.run_id


def close_parent(sweep_dir: Path, files: list[Path], best: dict | None, failed: int) -> None:
    """Log the sweep's summaries (and the best run's objective) to its parent run and end it."""
    info = _read(Path(sweep_dir) / PARENT_FILE)
    if info is None:
        return
    client, _ = _client(_PARENT_URIS.get(str(Path(sweep_dir).resolve()), info["tracking_uri"]))
    run_id = info["run_id"]
    for path in files:
        if Path(path).is_file():
            client.log_artifact(run_id, str(path))
    if best:
        from mlflow.entities import Metric

        client.log_batch(run_id, metrics=[Metric(k, float(v), _now(), 0) for k, v in best.items() if _number(v) is not None])
    client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")
