# python scripts/compare_initializers.py [--epochs 30] [--seeds 0 1 2] [--out DIR] [--docs docs]
"""Why initialization matters: the same deep ReLU MLP trained from five initializations.

On the bundled 8x8 digits, an MLP with 8 hidden ReLU layers of 64 units (plus the logits) is
trained with SGD + momentum from: all zeros, a small fixed-scale normal (stddev 0.01), Glorot
uniform, He normal and weight normalization with data-dependent init. Each run goes through
`tftrain.compose` / `tftrain.train` (outputs under --out, a temporary directory by default).
Before training, the script also measures at initialization, on the first 256 training
examples, the std of the last hidden layer's activations (does the signal reach the top?) and
the gradient norm of the loss over all trainable weights (what TensorBoard's grad_norm shows
at step 0).

Writes <docs>/initializers.md (the table) and <docs>/initializers.png (loss curves). About two
minutes on a 2-core CPU with the defaults.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tftrain  # noqa: E402
from tftrain.schema import validate  # noqa: E402

DEPTH, WIDTH = 8, 64
# label -> initializer overrides.
CANDIDATES = {
    "zeros": ["initializer=zeros"],
    "normal(0, 0.01)": ["initializer=random_normal", "initializer.stddev=0.01"],
    "Glorot uniform": ["initializer=glorot_uniform"],
    "He normal": ["initializer=he_normal"],
    "weight norm + data init": ["initializer=weight_norm", "initializer.direction=he_normal",
                                "initializer.data_init=true"],
}


def common_overrides(epochs: int, seed: int) -> list[str]:
    return ["data=digits", "model=mlp", f"model.hidden_units=[{','.join([str(WIDTH)] * DEPTH)}]",
            "optimizer=momentum", "optimizer.lr=0.01", "optimizer.momentum=0.9", f"trainer.epochs={epochs}",
            "trainer.batch_size=64", f"trainer.seed={seed}", "trainer.verbose=0",
            "logger=[]"]


def at_initialization(cfg) -> dict:
    """Last hidden layer's activation std and the global gradient norm, before any update."""
    import keras
    import numpy as np
    import tensorflow as tf

    from tftrain.data import load_data
    from tftrain.initializers import Initializers
    from tftrain.layers import data_dependent_init
    from tftrain.models import build_model

    data = load_data(cfg.data, cfg.trainer.seed)
    model = build_model(cfg.model, data.input_shape, data.num_classes, Initializers(cfg.initializer, cfg.trainer.seed))
    x, y = data.x_train[:256], data.y_train[:256]
    data_dependent_init(model, None, x)
    hidden = keras.Model(model.inputs[0], model.get_layer("logits").input)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, model(x, training=True),
                                                                           from_logits=True))
    grads = tape.gradient(loss, model.trainable_variables)
    return {"activation_std": float(np.std(hidden(x))), "grad_norm": float(tf.linalg.global_norm(grads)),
            "initial_loss": float(loss)}


def run_all(out: Path, epochs: int, seeds: list[int]) -> dict:
    results = {}
    for label, overrides in CANDIDATES.items():
        runs = []
        for seed in seeds:
            cfg = tftrain.compose([*common_overrides(epochs, seed), *overrides])
            init = at_initialization(validate(cfg))
            t0 = time.perf_counter()
            slug = overrides[0].split("=")[1]
            metrics = tftrain.train(cfg, output_dir=out / f"{slug}-seed{seed}")
            runs.append({**init, **metrics, "seconds": time.perf_counter() - t0})
            print(f"{label:24s} seed {seed}: train_loss {metrics['train_loss']:.4f} val_acc "
                  f"{metrics['val_accuracy']:.4f} test_acc {metrics['test_accuracy']:.4f} "
                  f"({runs[-1]['seconds']:.0f}s)", flush=True)
        results[label] = {"overrides": overrides, "runs": runs}
    return results


def _mean(runs, key):
    return sum(r[key] for r in runs) / len(runs)


def _first_epoch_at(runs, threshold: float) -> str:
    firsts = [next((i + 1 for i, acc in enumerate(r["history"]["val_accuracy"]) if acc >= threshold), None)
              for r in runs]
    return ", ".join("never" if e is None else str(e) for e in firsts)


def write_table(results: dict, path: Path, epochs: int, seeds: list[int]) -> None:
    seeds_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"mean of seeds {', '.join(map(str, seeds))}"
    lines = [
        "# Initializers compared",
        "",
        f"`python scripts/compare_initializers.py --epochs {epochs} --seeds {' '.join(map(str, seeds))}`: "
        f"the bundled 8x8 digits (1167 train / 270 val / 360 test), an MLP with {DEPTH} hidden ReLU layers "
        f"of {WIDTH} units plus the logits, SGD with momentum 0.9 at lr 0.01, batch 64, {epochs} epochs, "
        f"{seeds_text}; only the `initializer` group changes. \"At init\" columns are measured before any "
        "update on 256 training examples: the std of the last hidden layer's activations and the global "
        "gradient norm over all trainable weights. The last column lists each seed's epoch. The plot shows "
        f"seed {seeds[0]}.",
        "",
        "| initializer | overrides | activation std at init | grad norm at init | final train loss | "
        "final val acc | test acc | first epoch with val acc >= 0.9 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, r in results.items():
        runs = r["runs"]
        lines.append(
            f"| {label} | `{' '.join(r['overrides'])}` | {_mean(runs, 'activation_std'):.3g} | "
            f"{_mean(runs, 'grad_norm'):.3g} | {_mean(runs, 'train_loss'):.4f} | {_mean(runs, 'val_accuracy'):.4f} | "
            f"{_mean(runs, 'test_accuracy'):.4f} | {_first_epoch_at(runs, 0.9)} |")
    lines += [
        "",
        "![Training and validation loss per epoch](initializers.png)",
        "",
        "What each initialization does to the signal of this net at step 0 (64-unit layers, ReLU):",
        "",
        "- **zeros**: every hidden unit outputs ReLU(0) = 0, so every kernel gets a zero gradient (the",
        "  logits' multiplies zero activations, the others sit behind ReLU's zero slope at 0) and so do the",
        "  hidden biases: only the logits' bias learns, i.e. the class frequencies. The grad norm at init is",
        "  that bias's gradient alone. Constant kernels are as symmetric: units of a layer stay identical.",
        "- **normal(0, 0.01)**: a fixed scale ignores the fan-in; each layer multiplies the signal's std by",
        "  about 0.01 x sqrt(64 / 2) = 0.057, so after 8 layers almost nothing reaches the top, and the",
        "  gradients of the lower layers vanish the same way.",
        "- **Glorot**: variance 2 / (fan_in + fan_out) = 1 / 64 keeps the signal of *linear* (or tanh)",
        "  layers; ReLU zeroes half of it, so the second moment halves at each layer (2^-8 after 8).",
        "- **He**: variance 2 / fan_in makes up for ReLU's halving: the signal keeps its scale with depth.",
        "- **weight norm + data init**: each unit's pre-activations are set to mean 0, std 1 on a real batch,",
        "  whatever the depth; training then adjusts each unit's scale `g` separately from its direction `v`.",
        "",
    ]
    path.write_text("\n".join(lines))


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, ((label, r), color) in enumerate(zip(results.items(), colors)):
        history = r["runs"][0]["history"]
        epochs = range(1, len(history["loss"]) + 1)
        width = 4 if i == 0 else 1.6  # zeros and normal(0, 0.01) overlap: keep the first visible beneath
        ax_loss.plot(epochs, history["loss"], color=color, linewidth=width, label=f"{label} (train)")
        ax_loss.plot(epochs, history["val_loss"], color=color, linewidth=width, linestyle="--", alpha=0.7)
        ax_acc.plot(epochs, history["val_accuracy"], color=color, linewidth=width, label=label)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy (solid: train, dashed: validation)", yscale="log",
                title=f"{DEPTH} hidden ReLU layers x {WIDTH}, SGD momentum, digits")
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy", ylim=(0, 1), title="validation accuracy")
    ax_loss.legend(fontsize=8)
    ax_acc.legend(fontsize=8, loc="center right")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=None, help="run directories (default: a temporary one)")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="where initializers.md/.png go")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)  # tftrain's per-run INFO lines would drown the table
    args.docs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="compare-initializers-") as tmp:
        out = args.out or Path(tmp)
        results = run_all(out, args.epochs, args.seeds)
        (out / "results.json").write_text(json.dumps(results, indent=2))
    write_table(results, args.docs / "initializers.md", args.epochs, args.seeds)
    plot(results, args.docs / "initializers.png")
    print(f"wrote {args.docs / 'initializers.md'} and {args.docs / 'initializers.png'}")


if __name__ == "__main__":
    main()
