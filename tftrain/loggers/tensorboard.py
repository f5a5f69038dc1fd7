"""TensorBoard (`logger=tensorboard`, the default): `<run>/tensorboard/{train,validation}`.

- per step, every `update_freq` steps: batch_loss, learning_rate, grad_norm (train/), written from
  inside the compiled training loop (the trainer writes to `graph_writer`), which costs less than
  passing them to the host;
- per epoch: `epoch_<metric>` in train/ and validation/ (one chart, two curves), and weight
  histograms every `histogram_freq` epochs (`histograms`, off by default);
- an HParams session (`hparams`): the run's flat config when it starts, so a run that later fails
  still shows with the epochs it completed, and its final metrics (train_, val_, best_val_, test_,
  wall_time_s) at the end, so `tensorboard --logdir <sweep dir>` compares a sweep's runs.
"""

from __future__ import annotations

from pathlib import Path

from tftrain.loggers.base import Logger, RunInfo

FINAL_PREFIXES = ("train_", "val_", "best_val_", "test_")


class TensorBoardLogger(Logger):
    def __init__(self, *, update_freq: int, histograms: bool, histogram_freq: int, hparams: bool):
        self.graph_freq, self.histograms, self.histogram_freq, self.hparams = update_freq, histograms, histogram_freq, hparams
        self.graph_writer = self.val_writer = None
        self.model = self.logdir = None

    def start(self, run: RunInfo) -> None:
        import tensorflow as tf

        self.logdir, self.model = Path(run.run_dir) / "tensorboard", run.model
        # A deep queue: per-step scalars reach the disk in large writes (flushed at each checkpoint).
        self.graph_writer = tf.summary.create_file_writer(str(self.logdir / "train"), max_queue=1000)
        self.val_writer = tf.summary.create_file_writer(str(self.logdir / "validation"), max_queue=1000)
        if self.hparams:
            _write_session(self.logdir, run.params)

    def log_epoch(self, epoch: int, logs: dict) -> None:
        import tensorflow as tf

        step = epoch + 1
        with self.graph_writer.as_default():
            for k, v in logs.items():
                if not k.startswith("val_") and k != "seconds":
                    tf.summary.scalar(f"epoch_{k}", v, step=step)
            if self.histograms and step % self.histogram_freq == 0:
                for w in self.model.weights:  # tagged by path, e.g. mlp/dense/kernel
                    tf.summary.histogram(w.path, tf.convert_to_tensor(w), step=step)
        with self.val_writer.as_default():
            for k, v in logs.items():
                if k.startswith("val_"):
                    tf.summary.scalar(f"epoch_{k[4:]}", v, step=step)
        self.flush()

    def flush(self) -> None:
        for writer in (self.graph_writer, self.val_writer):
            if writer is not None:
                writer.flush()

    def finish(self, metrics: dict, files: list[Path]) -> None:
        """The final metrics as scalars at step = epochs, in the HParams session's directory."""
        if not self.hparams:
            return
        import tensorflow as tf

        writer = tf.summary.create_file_writer(str(self.logdir))
        with writer.as_default():
            for key, value in metrics.items():
                if (key.startswith(FINAL_PREFIXES) or key == "wall_time_s") and isinstance(value, (int, float)) \
                        and not isinstance(value, bool):
                    tf.summary.scalar(key, float(value), step=int(metrics.get("epochs") or 0))
        writer.close()

    def close(self, status: str) -> None:
        for writer in (self.graph_writer, self.val_writer):
            if writer is not None:
                writer.close()
        self.graph_writer = self.val_writer = None


def _write_session(logdir: Path, hparams: dict) -> None:
    # No trial_id: TensorBoard then groups sessions by their hyper-parameters, so runs with the
    # same config (e.g. repeated in two sweeps) form one group, and different ones never do.
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    writer = tf.summary.create_file_writer(str(logdir))
    with writer.as_default():
        hp.hparams(hparams)
    writer.close()
