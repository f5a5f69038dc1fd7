"""`train(cfg) -> metrics`: the run opened (tftrain.tasks.run), its components built in the
strategy's scope (tftrain.config.factory), the loop (tftrain.loop), the test evaluation, and the
outputs in the run directory (tftrain.tasks.outputs)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig

from tftrain.errors import ConfigError, Preempted
from tftrain.tasks.run import describe_training, open_run

log = logging.getLogger("tftrain")


def train(cfg: DictConfig, output_dir: str | Path | None = None) -> dict:
    """Train the configured model; write outputs to `output_dir`; return the metrics.json dict.
    Rerun with the same directory to resume (see trainer.resume).

    >>> import tftrain
    >>> metrics = tftrain.train(tftrain.compose(["trainer.epochs=2"]))  # doctest: +SKIP
    """
    with open_run(cfg, output_dir, before_resume=find_lr) as run:
        return _train(run)


def find_lr(cfg: DictConfig, run_dir: Path, strategy) -> DictConfig:
    """task.find_lr: the config at the range test's suggested rate (tftrain.tasks.range_test)."""
    if not cfg.task.get("find_lr"):
        return cfg
    if strategy.extended._in_multi_worker_mode():
        raise ConfigError("task.find_lr", True, "false under trainer.strategy=multi_worker",
                          "run the range test once on one machine (task=lr_find), then train with its optimizer.lr")
    from tftrain.tasks.range_test import with_found_lr

    return with_found_lr(cfg, run_dir, strategy)


def _train(run) -> dict:
    return Training(run).run()


class Training:
    """A run's training, in two parts: `Training(run)` builds everything up to the loop (in the
    thread that opened the run: the seed, the strategy's scope), `run()` trains, evaluates and
    writes the outputs, returning the metrics.json dict. A seed group (tftrain.sweep.seed_groups)
    builds its members one after another, then runs them side by side."""

    def __init__(self, run):
        from tftrain.config.factory import build_components, build_schedule, loop_options, step_options, swa_schedule
        from tftrain.config.run_info import flat_params, sweep_dir_of_job
        from tftrain.loggers import Loggers, RunInfo
        from tftrain.loop import Controller, RunIO, Trainer
        from tftrain.schema import validate
        from tftrain.sweep.pruning import pruning_callback
        from tftrain.tasks import outputs

        self.run_ = run
        cfg, strategy, t = run.cfg, run.strategy, run.cfg.trainer
        # wall_time_s: from here, not counting the process' start-up and TensorFlow's import.
        self.started = time.perf_counter()
        self.built = built = build_components(cfg, strategy, run.write_dir, done=run.phases.mark)
        outputs.write_preprocessing(built.data, run.write_dir)
        describe_training(run, built.data.steps_per_epoch)
        self.loggers = loggers = Loggers(built.loggers if run.chief else [])  # only the chief logs
        self.trainer = trainer = Trainer(
            strategy, built.model, built.optimizer, built.problem,
            step_options(cfg, update_freq=loggers.graph_freq(), record_steps=loggers.record_steps),
            variables=built.variables)
        self.pruning = pruning = pruning_callback(cfg, strategy)  # an Optuna trial with a pruner (hparams_search=optuna)
        spe, sweep_dir = built.data.steps_per_epoch, sweep_dir_of_job()

        def rates(step):  # the rate at the resumed step under the previous config and under this one
            previous = validate(run.resume.previous)
            before = swa_schedule(previous, build_schedule(previous, spe), spe)
            return float(before(step)), float(built.schedule.schedule(step))

        io = RunIO(run.run_dir, run.write_dir, run.chief, run.stop, loggers,
                   RunInfo(run.write_dir, cfg, built.model, flat_params(cfg), sweep_dir=sweep_dir),
                   run.resume.on_restore(run.run_dir, t.epochs, spe, strategy.num_replicas_in_sync, rates))
        # A sweep's jobs print plain lines: live lines of parallel jobs would overwrite each other.
        options = loop_options(cfg, verbose=2 if t.verbose == 1 and sweep_dir is not None else None)
        self.controller = Controller(trainer, built.data, options, io, schedule=built.schedule,
                                     callbacks=built.callbacks + ([pruning] if pruning is not None else []))

    def run(self) -> dict:
        from tftrain.loop.swa import StochasticWeightAveraging
        from tftrain.tasks import outputs

        run, built, trainer, controller, loggers = self.run_, self.built, self.trainer, self.controller, self.loggers
        cfg, strategy, t, pruning = run.cfg, run.strategy, run.cfg.trainer, self.pruning
        status = "failed"
        try:
            run.phases.mark("loop_setup")
            try:
                group = trainer.group
                try:
                    history = controller.fit()
                finally:
                    if group is not None and trainer.group is not None:  # the others stop waiting for this one
                        group[0].leave(group[1])
            finally:
                trainer.restore_clipping()  # model.keras keeps the optimizer's settings as configured
            if controller.first_call_done is not None:  # restore, loggers, tracing, the first call
                run.phases.mark("first_step", at=controller.first_call_done)
            if cfg.optimizer.use_ema:
                built.optimizer.finalize_variable_values(built.model.trainable_variables)  # evaluate and save the EMA weights
            # callbacks.swa: the averaged weights, BatchNorm statistics over the training data (next epoch's order)
            averaged = [cb.finalize(strategy, built.data.train(t.epochs, 0)) for cb in built.callbacks
                        if isinstance(cb, StochasticWeightAveraging)]
            # Weights other than the last epoch's are evaluated on val too, so val_ and test_ score one model.
            final_val = trainer.evaluate(built.data.val) if cfg.optimizer.use_ema or any(averaged) else {}
            test = trainer.evaluate(built.data.test)
            saved = outputs.save_model(built.model, run.write_dir)
            final = "pruned" if pruning is not None and pruning.pruned else "completed"
            metrics = outputs.metrics_of(run, built, history, test, final, self.started)
            metrics.update({f"val_{k}": v for k, v in final_val.items()})
            outputs.write_metrics(run, metrics)
            loggers.finish(metrics, [run.write_dir / name for name in (saved, outputs.HISTORY, outputs.METRICS,
                                                                       outputs.CONFIG, outputs.PREPROCESSING)])
            status = final
            return metrics
        except Preempted:
            status = "stopped"
            raise
        finally:
            loggers.close(status)
