# python scripts/plot_schedules.py --epochs 30 --steps-per-epoch 20 --lr 0.1 --out docs/schedules.png
"""Draw the learning rate of every `schedule` option, step by step, for one run length.

Each option is built from its packaged YAML exactly as training builds it (`tftrain.compose` and
`build_schedule`), with a few durations scaled to the run so every curve shows its shape. The
plateau schedule reacts to a made-up validation loss (drawn dotted) that stops improving.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def overrides(option: str, epochs: int) -> list[str]:
    """Durations proportional to the run, so that short and long runs both show full shapes."""
    e = epochs
    return {
        "step": [f"schedule.step_size={e / 3:g}"],
        "multistep": [f"schedule.milestones=[{e / 2:g},{3 * e / 4:g}]"],
        "cosine_restarts": [f"schedule.t0={e / 7:g}", "schedule.t_mult=2"],
        "cyclic": [f"schedule.step_size={e / 6:g}", "schedule.mode=triangular2"],
        "plateau": ["schedule.patience=3", "schedule.factor=0.5"],
        "warmup": [f"schedule.warmup_epochs={max(e / 10, 1):g}"],
    }.get(option, [])


def fake_val_loss(epochs: int) -> np.ndarray:
    """Improves for the first third of the run, then wobbles on a plateau."""
    e = np.arange(epochs)
    return np.maximum(1.0 - 2.0 * e / epochs, 1 / 3) + 0.01 * np.sin(1.7 * e)


def curve(schedule, epochs: int, steps_per_epoch: int, val_loss: np.ndarray) -> np.ndarray:
    """Rates at every step, with an epoch end (and the metric) after each epoch as in training."""
    rates = []
    for epoch in range(epochs):
        steps = np.arange(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch)
        rates.append(np.asarray(schedule(steps), dtype=np.float64))
        schedule.on_epoch_end(epoch, {"val_loss": float(val_loss[epoch])})
    return np.concatenate(rates)


def describe(cfg) -> str:
    keys = {k: v for k, v in cfg.schedule.items() if k != "name" and not (k.startswith("warmup") and not
                                                                          cfg.schedule.warmup_epochs)}
    text = ", ".join(f"{k}={'null' if v is None else f'{v:g}' if isinstance(v, float) else v}" for k, v in keys.items())
    return textwrap.fill(text, 70)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--steps-per-epoch", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.1, help="optimizer.lr")
    parser.add_argument("--out", default="docs/schedules.png")
    args = parser.parse_args(argv)

    import tftrain
    from tftrain import build_schedule
    from tftrain.schema import validate
    from tftrain.schema import SCHEMAS

    options = list(SCHEMAS["schedule"])
    val_loss = fake_val_loss(args.epochs)
    cols = 3
    rows = -(-len(options) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.3 * rows), squeeze=False)
    x = np.arange(args.epochs * args.steps_per_epoch) / args.steps_per_epoch
    for ax, option in zip(axes.flat, options):
        cfg = validate(tftrain.compose([f"schedule={option}", f"optimizer.lr={args.lr}",
                                        f"trainer.epochs={args.epochs}", *overrides(option, args.epochs)]))
        schedule = build_schedule(cfg, args.steps_per_epoch)
        ax.plot(x, curve(schedule, args.epochs, args.steps_per_epoch, val_loss), color="tab:blue", lw=1.6)
        ax.set_title(f"{option}\n{describe(cfg)}", fontsize=8.5)
        ax.set_xlim(0, args.epochs)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("learning rate", fontsize=8)
        ax.tick_params(labelsize=7)
        if option == "plateau":
            twin = ax.twinx()
            twin.plot(np.arange(1, args.epochs + 1), val_loss, ":", color="tab:gray", lw=1.2)
            twin.set_ylabel("val_loss (made up)", fontsize=8, color="tab:gray")
            twin.tick_params(labelsize=7, colors="tab:gray")
    for ax in list(axes.flat)[len(options):]:
        ax.axis("off")
    fig.suptitle(f"tftrain schedules: {args.epochs} epochs x {args.steps_per_epoch} steps, "
                 f"optimizer.lr={args.lr:g} (python -m tftrain schedule=<option>)", fontsize=11)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
