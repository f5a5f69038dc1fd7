"""tftrain's Prodigy and DAdaptAdam against the authors' PyTorch code, step by step.

    python scripts/lr_free_vs_pytorch.py                  # needs torch, prodigyopt, dadaptation
    python scripts/lr_free_vs_pytorch.py --record tests/data/lr_free_reference.npz

The same 2-layer MLP (64 -> 32 tanh -> 10, weights drawn with numpy and copied to both), the same
200 batches of the bundled digits, each optimizer in a few settings (its defaults, and the weight
decay, bias correction, warmup, growth and no-momentum options). Prints, per setting, the largest
relative difference over the 200 steps (for each step kept and weight tensor, max |keras - torch| /
max |torch|; for d, at every step), in float64 (the check: <= 1e-5, exit status 1 otherwise) and in
float32, beside PyTorch's own float32 run against its float64 one: at the step sizes these
optimizers reach (d ~ 0.03-0.06 for Adam) training amplifies rounding chaotically, so in float32 two
correct implementations part as far as one implementation does from itself in float64.
`--record PATH` writes the PyTorch float64 trajectory (the weights at STEPS, d at every step, the
initial weights and batch indices) that tests/test_lr_free.py checks where torch is missing.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np

STEPS = (10, 200)  # the weights kept; d and the weights' norms at every step
NUM_STEPS, BATCH, HIDDEN = 200, 32, 32

# name -> (tftrain class, the authors' class, keyword arguments: Keras' names -> the authors')
SETTINGS = {
    "prodigy": ("Prodigy", "prodigyopt.Prodigy", {}),
    "prodigy_options": ("Prodigy", "prodigyopt.Prodigy",
                        {"weight_decay": 0.01, "use_bias_correction": True, "safeguard_warmup": True,
                         "d_coef": 0.5, "growth_rate": 1.05, "beta_3": 0.99}),
    "prodigy_coupled_no_momentum": ("Prodigy", "prodigyopt.Prodigy",
                                    {"beta_1": 0.0, "weight_decay": 0.01, "decouple": False}),
    "dadapt_adam": ("DAdaptAdam", "dadaptation.DAdaptAdam", {}),
    "dadapt_adam_options": ("DAdaptAdam", "dadaptation.DAdaptAdam",
                            {"weight_decay": 0.01, "decouple": True, "use_bias_correction": True,
                             "growth_rate": 1.05}),
}


def digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16).astype(np.float32), y.astype(np.int64)


def problem(seed: int = 0):
    """Initial weights [W1, b1, W2, b2] (float32) and the NUM_STEPS batches' indices into digits."""
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0, 1 / 8, (64, HIDDEN)), np.zeros(HIDDEN), rng.normal(0, 1 / 4, (HIDDEN, 10)), np.zeros(10)]
    index = np.stack([rng.choice(len(digits()[1]), BATCH, replace=False) for _ in range(NUM_STEPS)])
    return [w.astype(np.float32) for w in weights], index


def _torch_kwargs(kwargs: dict) -> dict:
    out = dict(kwargs)
    if "beta_1" in out or "beta_2" in out:
        out["betas"] = (out.pop("beta_1", 0.9), out.pop("beta_2", 0.999))
    if "beta_3" in out:
        out["beta3"] = out.pop("beta_3")
    return out


def run_keras(setting: str, weights, xs, ys, dtype="float64"):
    """{step: [weights]} at STEPS, and after each step d and the weights' L2 norms ([NUM_STEPS, 5]),
    with tftrain's optimizer."""
    import tensorflow as tf

    import tftrain.optim.dadapt_adam
    import tftrain.optim.prodigy

    cls_name, _, kwargs = SETTINGS[setting]
    module = tftrain.optim.prodigy if cls_name == "Prodigy" else tftrain.optim.dadapt_adam
    optimizer = getattr(module, cls_name)(**kwargs)
    variables = [tf.Variable(w.astype(dtype)) for w in weights]
    xs = xs.astype(dtype)
    optimizer.build(variables)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = tf.tanh(x @ variables[0] + variables[1]) @ variables[2] + variables[3]
            loss = tf.reduce_mean(tf.reduce_logsumexp(logits, axis=1) - tf.gather(logits, y, batch_dims=1))
        optimizer.apply(tape.gradient(loss, variables), variables)

    kept, ds = {}, []
    for i in range(NUM_STEPS):
        step(xs[i], ys[i])
        ws = [v.numpy() for v in variables]
        ds.append([float(optimizer.d.numpy())] + [float(np.linalg.norm(w)) for w in ws])
        if i + 1 in STEPS:
            kept[i + 1] = ws
    return kept, np.array(ds)


def run_torch(setting: str, weights, xs, ys, dtype="float64"):
    import importlib

    import torch

    torch.set_num_threads(1)
    _, target, kwargs = SETTINGS[setting]
    module, _, name = target.rpartition(".")
    params = [torch.tensor(w.astype(dtype), requires_grad=True) for w in weights]
    xs = xs.astype(dtype)
    optimizer = getattr(importlib.import_module(module), name)(params, **_torch_kwargs(kwargs))
    kept, ds = {}, []
    for i in range(NUM_STEPS):
        optimizer.zero_grad()
        x, y = torch.from_numpy(xs[i]), torch.from_numpy(ys[i])
        logits = torch.tanh(x @ params[0] + params[1]) @ params[2] + params[3]
        loss = (torch.logsumexp(logits, dim=1) - logits.gather(1, y[:, None])[:, 0]).mean()
        loss.backward()
        optimizer.step()
        ws = [p.detach().numpy().copy() for p in params]
        ds.append([float(optimizer.param_groups[0]["d"])] + [float(np.linalg.norm(w)) for w in ws])
        if i + 1 in STEPS:
            kept[i + 1] = ws
    return kept, np.array(ds)


def largest_difference(kept, trace, ref_kept, ref_trace) -> tuple[float, float]:
    """(weights, d): the largest relative difference of the weights (over the steps kept, per
    tensor relative to its largest magnitude; and of their norms at every step) and of d."""
    weights = max(float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))
                  for step in ref_kept for a, b in zip(kept[step], ref_kept[step]))
    relative = np.abs(trace - ref_trace) / np.maximum(np.abs(ref_trace), 1e-30)
    return max(weights, float(np.max(relative[:, 1:]))), float(np.max(relative[:, 0]))


def record(path: str, trajectories: dict, weights, index) -> None:
    """The weights in float32 (their rounding, 6e-8, is far below the 1e-5 checked), the trace
    (d and the weights' norms per step) too: stored in float32, compared at 1e-5."""
    arrays = {f"init_{j}": w for j, w in enumerate(weights)}
    arrays["index"] = index.astype(np.uint16)
    for setting, (kept, ds) in trajectories.items():
        arrays[f"{setting}/trace"] = ds.astype(np.float32)
        for step, ws in kept.items():
            for j, w in enumerate(ws):
                arrays[f"{setting}/step{step}_{j}"] = w.astype(np.float32)
    np.savez_compressed(path, **arrays)


def load(path: str):
    """(weights, index, {setting: (kept, ds)}) from a recorded file."""
    data = np.load(path)
    weights = [data[f"init_{j}"] for j in range(4)]
    out = {s: ({step: [data[f"{s}/step{step}_{j}"] for j in range(4)] for step in STEPS}, data[f"{s}/trace"])
           for s in SETTINGS}
    return weights, data["index"].astype(np.int64), out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", metavar="PATH", help="write the PyTorch trajectory to PATH (.npz)")
    parser.add_argument("--dtype", choices=("float64", "float32", "both"), default="both",
                        help="compare in float64 (the check), float32, or both (default)")
    args = parser.parse_args(argv)
    dtypes = ("float64", "float32") if args.dtype == "both" else (args.dtype,)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    weights, index = problem()
    x, y = digits()
    xs, ys = x[index], y[index]
    # PyTorch first: importing it after TensorFlow has run crashes the process (two OpenMP runtimes).
    reference = {(s, dt): run_torch(s, weights, xs, ys, dt) for s in SETTINGS for dt in {*dtypes, "float64"}}
    print(f"largest relative difference over {NUM_STEPS} steps (weights: per tensor and step, max|a - b| / max|b|)")
    print(f"{'setting':<28} {'float64 weights':>15} {'d':>9} {'float32 weights':>15} {'d':>9} "
          f"{'torch f32 vs f64':>16}")
    worst = 0.0
    for s in SETTINGS:
        w64, d64, w32, d32, chaos = (math.nan,) * 5
        if "float64" in dtypes:
            w64, d64 = largest_difference(*run_keras(s, weights, xs, ys, "float64"), *reference[s, "float64"])
            worst = max(worst, w64, d64)
        if "float32" in dtypes:
            w32, d32 = largest_difference(*run_keras(s, weights, xs, ys, "float32"), *reference[s, "float32"])
            chaos, _ = largest_difference(*reference[s, "float32"], *reference[s, "float64"])
        print(f"{s:<28} {w64:>15.1e} {d64:>9.1e} {w32:>15.1e} {d32:>9.1e} {chaos:>16.1e}"
              f"   final d {reference[s, 'float64'][1][-1, 0]:.4g}")
    if args.record:
        record(args.record, {s: reference[s, "float64"] for s in SETTINGS}, weights, index)
        print(f"recorded {args.record} ({os.path.getsize(args.record) / 1024:.0f} kB)")
    return 0 if worst <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
