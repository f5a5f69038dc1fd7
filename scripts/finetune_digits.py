# python scripts/finetune_digits.py [--seeds 5] [--out DIR]
"""Fine-tuning on a small transfer task: the README's table under *Fine-tuning*.

An MLP 256-128 is trained 20 epochs on digits 0-4, then fine-tuned 15 epochs (batch 16) on 150
examples of digits 5-9 relabelled 0-4, and tested on 300 held-out ones, five ways: from scratch
(`model=mlp`), every layer (`model=saved`), the head only (`model.trainable=logits`, at Adam's
default rate and at 0.01), and gradual unfreezing (`logits`, `+dense_1` at epoch 4, `+dense` at
epoch 8). The data is fixed; seeds change the fine-tuning's order and initial draws. Prints a
markdown table (test accuracy: mean ± standard deviation, range).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # data._target_=finetune_digits.load


def load(first: int = 0, n_train: int = 0) -> dict:
    """Digits of classes first..first+4, relabelled 0-4: 300 test examples, `n_train` (0: all the
    rest) training ones; the same split in every call."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = d.images.astype("float32")[..., None], d.target
    keep = (y >= first) & (y < first + 5)
    x, y = x[keep], y[keep] - first
    idx = np.random.default_rng(0).permutation(len(y))
    test, rest = idx[:300], idx[300:]
    train = rest[:n_train] if n_train else rest
    return {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--out", help="where the runs go (default: a temporary directory)")
    args = p.parse_args()

    import tftrain

    out = Path(args.out or tempfile.mkdtemp(prefix="finetune_digits_"))
    base = ["data=custom", "data._target_=finetune_digits.load", "trainer.verbose=0", "logger=[]"]
    pre = tftrain.train(tftrain.compose(base + ["++data.first=0", "trainer.epochs=20"]), out / "pretrained")
    print(f"pretrained on digits 0-4: test_accuracy {pre['test_accuracy']:.3f}", flush=True)
    saved = ["model=saved", f"model.path={out / 'pretrained' / 'model.keras'}"]
    arms = {
        "from scratch (`model=mlp`)": ["model=mlp"],
        "every layer (`model=saved`)": saved,
        "the head only (`model.trainable=logits`)": saved + ["model.trainable=logits"],
        "the head only, `optimizer.lr=0.01`": saved + ["model.trainable=logits", "optimizer.lr=0.01"],
        "gradual: `logits`, `+dense_1` at epoch 4, `+dense` at epoch 8": saved + [
            "model.trainable=logits", "model.unfreeze=[{epoch: 4, pattern: dense_1}, {epoch: 8, pattern: dense}]"],
    }
    print("\n| fine-tuning | test accuracy, mean ± sd | range |\n|---|---|---|")
    for i, (name, arm) in enumerate(arms.items()):
        accs = [tftrain.train(tftrain.compose(base + arm + ["++data.first=5", "++data.n_train=150", "trainer.epochs=15",
                                                            "trainer.batch_size=16", f"trainer.seed={seed}"]),
                              out / f"{i}_seed{seed}")["test_accuracy"] for seed in range(args.seeds)]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"| {name} | {statistics.mean(accs):.3f} ± {sd:.3f} | {min(accs):.3f}–{max(accs):.3f} |", flush=True)


if __name__ == "__main__":
    main()
