# python scripts/compare_cnn.py [--epochs 15] [--reps 1] [--markdown docs/cnn.md]
"""tftrain's default `model=cnn` against Keras' "Simple MNIST convnet" example trained with
`model.fit`, on the same data and the same machine.

The Keras example (keras.io/examples/vision/mnist_convnet): Conv2D(32, 3, relu), MaxPooling2D(2),
Conv2D(64, 3, relu), MaxPooling2D(2), Flatten, Dropout(0.5), Dense(classes, softmax); Adam,
batch 128, 15 epochs. Data (no download here): scikit-learn's digits upsampled to 28x28 (like
MNIST; tftrain's `data=digits data.image_size=[28,28]`, the same split for both), and CIFAR-shaped
synthetic data (32x32x3, 10 classes, 4096 training images). Each variant runs in a fresh process,
alternating; reported: test accuracy, and training time per epoch (epochs 2..N, validation
excluded), medians over --reps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TAG = "CNN_JSON "
DATASETS = {
    "digits 28x28": ["data=digits", "data.image_size=[28,28]"],
    "cifar-shaped synthetic": ["data=synthetic", "data.input_shape=[32,32,3]", "data.num_train=4096",
                               "data.num_val=512", "data.num_test=1024", "data.noise=6.0"],
}


def _arrays(overrides):
    """The data tftrain trains on, as arrays (train, val, test), from its own pipeline."""
    import numpy as np

    import tftrain
    from tftrain.config.factory import build_data
    from tftrain.schema import validate

    data = build_data(validate(tftrain.compose([*overrides, "trainer.batch_size=128"])))

    def arrays(ds):
        pairs = list(ds)
        return np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs])

    return arrays(data.train(0)), arrays(data.val), arrays(data.test), data.num_outputs


def child_keras(name: str, epochs: int) -> dict:
    import time

    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    (x, y), (xv, yv), (xt, yt), classes = _arrays(DATASETS[name])
    model = keras.Sequential([
        keras.Input(shape=x.shape[1:]), keras.layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        keras.layers.MaxPooling2D(pool_size=(2, 2)), keras.layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
        keras.layers.MaxPooling2D(pool_size=(2, 2)), keras.layers.Flatten(), keras.layers.Dropout(0.5),
        keras.layers.Dense(classes, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])

    class TrainTime(keras.callbacks.Callback):  # the training part of each epoch (validation excluded)
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_test_begin(self, logs=None):
            self.seconds.append(time.perf_counter() - self.t0)

    timer = TrainTime()
    model.fit(x, y, batch_size=128, epochs=epochs, validation_data=(xv, yv), verbose=0, callbacks=[timer])
    return {"test_accuracy": float(model.evaluate(xt, yt, verbose=0)[1]),
            "epoch_s": statistics.median(timer.seconds[1:]), "params": model.count_params()}


def child_tftrain(name: str, epochs: int) -> dict:
    import tempfile

    import tftrain

    with tempfile.TemporaryDirectory() as d:
        cfg = tftrain.compose([*DATASETS[name], "model=cnn", "trainer.batch_size=128", f"trainer.epochs={epochs}",
                               "trainer.verbose=0", "logger=[]"])
        m = tftrain.train(cfg, output_dir=d)
        import keras

        params = keras.models.load_model(Path(d) / "model.keras").count_params()
    return {"test_accuracy": m["test_accuracy"], "epoch_s": statistics.median(m["history"]["seconds"][1:]),
            "params": params}


def run_child(variant: str, name: str, epochs: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", variant, "--data", name, "--epochs", str(epochs)],
                         capture_output=True, text=True, cwd=ROOT, timeout=1800,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"})
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith(TAG)]
    if not lines:
        raise RuntimeError(f"{variant} on {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len(TAG):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--child", choices=["keras", "tftrain"])
    parser.add_argument("--data", choices=list(DATASETS), help="only this data set (default: both)")
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, str(ROOT))
        fn = child_keras if args.child == "keras" else child_tftrain
        print(TAG + json.dumps(fn(args.data, args.epochs)), flush=True)
        return
    lines = ["| data | model | test accuracy | s / epoch (training) | parameters |", "|---|---|---|---|---|"]
    for name in [args.data] if args.data else DATASETS:
        results = {"keras": [], "tftrain": []}
        for rep in range(args.reps):
            order = ["keras", "tftrain"] if rep % 2 == 0 else ["tftrain", "keras"]
            for variant in order:
                results[variant].append(run_child(variant, name, args.epochs))
        for variant, label in (("keras", "Keras example, `model.fit`"), ("tftrain", "tftrain `model=cnn`")):
            rs = results[variant]
            lines.append(f"| {name} | {label} | {statistics.median(r['test_accuracy'] for r in rs):.4f} | "
                         f"{statistics.median(r['epoch_s'] for r in rs):.3f} | {rs[0]['params']:,} |")
        print(lines[-2] + "\n" + lines[-1], file=sys.stderr)
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    main()
