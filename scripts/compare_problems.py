# python scripts/compare_problems.py [--seeds 3] [--markdown docs/problems.md] [--only digits] [--epochs N]
"""tftrain on each bundled problem against a well-known scikit-learn baseline on the same split.

For each data option (diabetes: regression, breast_cancer: binary, digits: classification,
digits_multilabel: multi-label) the held-out test split is tftrain's own (the source's arrays,
`tftrain.data.sources.hold_out` with the option's fractions and split_seed), and both models
train on the same training split:

  diabetes           RidgeCV (alphas 1e-3..1e3) on standardized features     vs tftrain regression
  breast_cancer      LogisticRegression (C=1) on standardized features       vs tftrain binary
  digits             LogisticRegression (C=1, max_iter 2000) on the pixels   vs tftrain classification
  digits_multilabel  one LogisticRegression per label                        vs tftrain multilabel

tftrain runs with the configs below over `--seeds` seeds (mean and standard deviation of the
test metrics); the baselines are deterministic. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONFIGS = {  # data option -> (tftrain overrides, the metrics reported)
    # A linear model (no hidden layer): the data are close to linear (an MLP of 64 units: MAE ~44.5).
    "diabetes": (["model.hidden_units=[]", "trainer.epochs=100", "trainer.batch_size=32", "optimizer.lr=0.01"],
                 ["mae", "rmse"]),
    "breast_cancer": (["model.hidden_units=[32]", "model.dropout=0.2", "trainer.epochs=40", "trainer.batch_size=32"],
                      ["accuracy", "auc"]),
    "digits": (["trainer.epochs=30"], ["accuracy"]),
    "digits_multilabel": (["trainer.epochs=30"], ["accuracy", "auc"]),
}


def split_of(option: str):
    """The option's train and test arrays, exactly as tftrain splits them."""
    import tftrain
    from tftrain.config.factory import build_problem
    from tftrain.config.targets import call_target
    from tftrain.data.sources import hold_out
    from tftrain.schema import validate
    from tftrain.schema.data import PIPELINE_KEYS

    cfg = validate(tftrain.compose([f"data={option}"]))
    source = call_target("data", cfg.data, skip=PIPELINE_KEYS)
    s = hold_out(source, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.split_seed,
                 build_problem(cfg).stratify)
    flat = (lambda a: a.reshape(len(a), -1))
    return flat(s.x_train), s.y_train, flat(s.x_test), s.y_test


def baseline(option: str) -> dict:
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.metrics import mean_absolute_error, mean_squared_error, roc_auc_score
    from sklearn.multioutput import MultiOutputClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, xt, yt = split_of(option)
    if option == "diabetes":
        p = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13))).fit(x, y).predict(xt)
        return {"name": "RidgeCV", "mae": mean_absolute_error(yt, p), "rmse": mean_squared_error(yt, p) ** 0.5}
    if option == "breast_cancer":
        m = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x, y)
        return {"name": "LogisticRegression", "accuracy": m.score(xt, yt), "auc": roc_auc_score(yt, m.predict_proba(xt)[:, 1])}
    if option == "digits":
        m = LogisticRegression(max_iter=2000).fit(x, y)
        return {"name": "LogisticRegression", "accuracy": m.score(xt, yt)}
    m = MultiOutputClassifier(LogisticRegression(max_iter=2000)).fit(x, y)
    proba = np.stack([p[:, 1] for p in m.predict_proba(xt)], axis=1)
    return {"name": "LogisticRegression per label", "accuracy": float(np.mean(m.predict(xt) == yt)),
            "auc": roc_auc_score(yt, proba, average="macro")}


def ours(option: str, seeds: int) -> dict:
    import tftrain

    overrides, names = CONFIGS[option]
    runs, t0 = [], time.perf_counter()
    for seed in range(seeds):
        with tempfile.TemporaryDirectory() as d:
            cfg = tftrain.compose([f"data={option}", f"trainer.seed={seed}", "trainer.verbose=0",
                                   "logger=[]", *overrides])
            runs.append(tftrain.train(cfg, output_dir=d))
    out = {"name": " ".join(overrides), "seconds": (time.perf_counter() - t0) / seeds}
    for n in names:
        values = [r[f"test_{n}"] for r in runs]
        out[n] = statistics.mean(values)
        out[f"{n}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--only", nargs="*", default=list(CONFIGS))
    parser.add_argument("--epochs", type=int, help="train every configuration this many epochs instead of its own "
                        "(a quick check that the script works; the table's numbers need the configured epochs)")
    args = parser.parse_args()
    if args.epochs:
        for option, (overrides, names) in CONFIGS.items():
            CONFIGS[option] = ([o for o in overrides if not o.startswith("trainer.epochs=")]
                               + [f"trainer.epochs={args.epochs}"], names)
    lines = ["| data (problem) | test examples | metric | tftrain (mean ± std, seeds) | baseline | baseline model | "
             "tftrain overrides |", "|---|---|---|---|---|---|---|"]
    problems = {"diabetes": "regression", "breast_cancer": "binary", "digits": "classification",
                "digits_multilabel": "multilabel"}
    for option in args.only:
        base, mine = baseline(option), ours(option, args.seeds)
        n_test = len(split_of(option)[3])
        for n in CONFIGS[option][1]:
            lines.append(f"| `{option}` ({problems[option]}) | {n_test} | {n} | {mine[n]:.4g} ± {mine[n + '_std']:.2g} "
                         f"({args.seeds}) | {base[n]:.4g} | {base['name']} | `{mine['name']}` |")
        print(f"{option}: tftrain ({mine['seconds']:.1f} s a run) {mine['name']}", file=sys.stderr)
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    main()
