"""`python -m tftrain task=init_check [initializer=...]`: does the signal survive the depth?

One training batch through the model as it starts training (the configured initializer, weight
norm's and LSUV's data-dependent steps included), under the configured strategy. Per kernel layer
(Dense, Conv, ...; depth 1 = the first): the mean and standard deviation of its activations (after
its nonlinearity: its own activation, or the activation layer that follows it before the next
kernel layer), the std before the nonlinearity, the fraction of dead units (0 on every example of
the batch), the norm of the loss's gradient for its kernel, and the ratio of one optimizer step's
change of the kernel (at the configured rate, the schedule's first) to the kernel's norm. Each
layer gets a verdict in words and the depth a summary (tftrain.diagnose.verdicts).

Outputs in the run directory: init_check.json, init_check.md (the table), init_check.png (the
std by depth, log scale). Nothing is trained beyond the one step, and nothing is saved.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from tftrain.config.targets import label
from tftrain.tasks.run import open_run

log = logging.getLogger("tftrain")

JSON, MARKDOWN, PLOT = "init_check.json", "init_check.md", "init_check.png"


def init_check(cfg: DictConfig, output_dir: str | Path | None = None) -> dict:
    """Check the initialization of `cfg`'s model (composed with `task=init_check`) on one batch;
    write init_check.json, init_check.md and init_check.png in the run directory; return the
    init_check.json dict ("rows": one per kernel layer, "summary": the verdict lines).

    >>> import tftrain
    >>> from tftrain.tasks.init_check import init_check
    >>> result = init_check(tftrain.compose(["task=init_check", "initializer=glorot_uniform"]))  # doctest: +SKIP
    >>> result["summary"][0]  # doctest: +SKIP
    """
    with open_run(cfg, output_dir, resumes=False) as run:
        return check(run.cfg, run.write_dir, run.strategy)


def _activation_name(fn) -> str:
    return getattr(fn, "__name__", type(fn).__name__).lower()


def _blocks(model):
    """(kernel layers, probed layers, kernel index -> (probed index of its activations, the
    nonlinearity's name or None)) in the model's order."""
    import keras

    from tftrain.diagnose.probe import has_own_activation
    from tftrain.initializers import KERNEL_LAYERS, layers_in_order

    activations = (keras.layers.Activation, keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU,
                   keras.layers.PReLU, keras.layers.Softmax)
    ordered = [layer for layer in layers_in_order(model) if isinstance(layer, KERNEL_LAYERS + activations)]
    kernels = [i for i, layer in enumerate(ordered) if isinstance(layer, KERNEL_LAYERS)]
    blocks = {}
    for k, i in enumerate(kernels):
        layer = ordered[i]
        if has_own_activation(layer):
            blocks[k] = (i, _activation_name(layer.activation))
            continue
        end = kernels[k + 1] if k + 1 < len(kernels) else len(ordered)
        after = next((j for j in range(i + 1, end) if isinstance(ordered[j], activations)), None)
        if after is None:
            blocks[k] = (i, None)
        else:
            act = ordered[after]
            name = _activation_name(act.activation) if isinstance(act, keras.layers.Activation) \
                else type(act).__name__.lower()
            blocks[k] = (after, None if name == "linear" else name)
    return [ordered[i] for i in kernels], ordered, {k: (j, name) for k, (j, name) in blocks.items()}, kernels


def _effective_kernel(layer):
    from tftrain.layers import _WeightNorm
    from tftrain.initializers import kernel_of

    return np.asarray(layer.kernel if isinstance(layer, _WeightNorm) else kernel_of(layer), dtype=np.float64)


def check(cfg: DictConfig, run_dir: Path, strategy) -> dict:
    """The check of a validated task=init_check config under `strategy`, written to `run_dir`."""
    from tftrain.config.factory import build_components, step_options
    from tftrain.diagnose.probe import Probe, has_own_activation, statistics_fn
    from tftrain.diagnose.verdicts import row_verdict, summary
    from tftrain.initializers import kernel_of
    from tftrain.loop.trainer import Trainer, batch_loss

    started = time.perf_counter()
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    built = build_components(cfg, strategy)
    model, problem, data = built.model, built.problem, built.data
    kernels, ordered, blocks, kernel_at = _blocks(model)
    batch = next(iter(data.train(0, 0)))
    count = cfg.trainer.batch_size // int(cfg.trainer.accumulate_steps)  # one (micro-)batch's global size

    def loss(y, outputs):  # the training step's own, without loss scaling
        return batch_loss(problem, model, y, outputs, count)[0]

    variables = [kernel_of(layer) for layer in kernels]
    probe = Probe(ordered)
    with probe.open():
        outs, pres, grads = statistics_fn(model, probe, strategy, training=bool(cfg.task.training), loss=loss,
                                          variables=variables)(batch)
    before = [_effective_kernel(layer) for layer in kernels]
    trainer = Trainer(strategy, model, built.optimizer, problem, step_options(cfg), variables=built.variables)
    lr = float(trainer.learning_rate().numpy())
    trainer.train(iter(data.train(0, 0)), 1)
    after = [_effective_kernel(layer) for layer in kernels]

    rows = []
    for k, layer in enumerate(kernels):
        block, nonlinearity = blocks[k]
        stats = outs.get(block)
        if stats is None:  # the layer did not run on this batch (a branch the model skipped)
            continue
        own = outs[kernel_at[k]]
        pre = pres.get(kernel_at[k], own) if has_own_activation(layer) else own
        weight_norm = float(np.linalg.norm(before[k]))
        rows.append({
            "depth": len(rows) + 1, "layer": layer.name, "type": type(layer).__name__, "units": own["units"],
            "activation": nonlinearity or "linear", "mean": stats["mean"], "std": stats["std"],
            "pre_activation_std": pre["std"],
            "dead_fraction": stats["dead_fraction"] if nonlinearity else None,
            "grad_norm": float(np.linalg.norm(grads[k])), "weight_norm": weight_norm,
            "update_ratio": float(np.linalg.norm(after[k] - before[k]) / weight_norm) if weight_norm > 0 else None,
            "trainable": bool(layer.trainable)})
    first = rows[0]["std"] if rows else 0.0
    for row in rows:
        row["verdict"] = row_verdict(row, first)
    result = {
        "task": "init_check", "initializer": label(cfg.initializer, "initializer"), "model": label(cfg.model, "model"),
        "data": label(cfg.data, "data"), "optimizer": label(cfg.optimizer, "optimizer"),
        "batch_size": int(cfg.trainer.batch_size), "training": bool(cfg.task.training), "learning_rate": lr,
        "replicas": int(strategy.num_replicas_in_sync), "summary": summary(rows), "rows": rows,
        "wall_time_s": time.perf_counter() - started, "run_dir": str(Path(run_dir).resolve())}
    (run_dir / JSON).write_text(json.dumps(result, indent=2) + "\n")
    table = markdown_table(rows)
    (run_dir / MARKDOWN).write_text(markdown(result, table))
    plot(result, run_dir / PLOT)
    log.info("init_check: %s, %s on %s, one batch of %d (%s mode), one step of %s at lr %.3g",
             result["initializer"], result["model"], result["data"], result["batch_size"],
             "training" if result["training"] else "inference", result["optimizer"], lr)
    for line in table.splitlines():
        log.info("%s", line)
    for line in result["summary"]:
        log.info("init_check: %s", line)
    log.info("Outputs in %s: %s, %s, %s", Path(run_dir).resolve(), JSON, MARKDOWN, PLOT)
    return result


def _num(v, fmt: str = ".3g") -> str:
    return "-" if v is None else format(v, fmt)


def markdown_table(rows: list[dict]) -> str:
    lines = ["| depth | layer | activation | mean | std | std before activation | dead | grad norm | "
             "update / weight | verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        dead = "-" if r["dead_fraction"] is None else f"{r['dead_fraction']:.0%}"
        lines.append(f"| {r['depth']} | {r['layer']} | {r['activation']} | {_num(r['mean'])} | {_num(r['std'])} | "
                     f"{_num(r['pre_activation_std'])} | {dead} | {_num(r['grad_norm'])} | "
                     f"{_num(r['update_ratio'], '.2e')} | {r['verdict']} |")
    return "\n".join(lines)


def markdown(result: dict, table: str) -> str:
    head = (f"# init_check: {result['initializer']}, {result['model']} on {result['data']}\n\n"
            f"One batch of {result['batch_size']} ({'training' if result['training'] else 'inference'} mode, "
            f"{result['replicas']} replica(s)); one step of {result['optimizer']} at lr {result['learning_rate']:.3g}.\n\n")
    return head + "\n".join(f"- {line}" for line in result["summary"]) + "\n\n" + table + "\n"


def plot(result: dict, path: Path) -> None:
    """The activations' std (and the gradient's norm) by depth, log scale."""
    from matplotlib.figure import Figure

    rows = result["rows"]
    depth = [r["depth"] for r in rows]
    fig = Figure(figsize=(7.5, 6), layout="constrained")
    ax, gx = fig.subplots(2, 1, sharex=True)
    floor = 1e-30  # a zero std or gradient drawn at the bottom of the log axis
    ax.plot(depth, [max(r["std"], floor) for r in rows], "o-", label="activations' std")
    ax.plot(depth, [max(r["pre_activation_std"], floor) for r in rows], ".--", color="0.5",
            label="std before the activation")
    ax.set_yscale("log")
    ax.set(ylabel="std (log scale)", title=f"init_check: {result['initializer']}, {result['model']} on {result['data']}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    gx.plot(depth, [max(r["grad_norm"], floor) for r in rows], "s-", color="C3", label="gradient norm of the kernel")
    gx.set_yscale("log")
    gx.set(xlabel="depth (kernel layer)", ylabel="norm (log scale)")
    gx.grid(alpha=0.3, which="both")
    gx.legend(fontsize="small")
    fig.savefig(path, dpi=110)
