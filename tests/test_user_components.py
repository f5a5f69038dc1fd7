"""A user's own model, data, optimizer and callbacks through `_target_`, with the tuning practices
applied to them, every Keras optimizer training and resuming, and the contract for user code
that goes wrong (one paragraph, exit 2; the user's own traceback when the error is inside it).

User modules are written by the tests into a temporary directory and found there because the
command runs in it (no PYTHONPATH for them)."""

from __future__ import annotations

import json
import math
import re
import textwrap

import numpy as np
import pytest

import tftrain
from conftest import ROOT, SMALL, compose_small, crash_at, option_schema, options, run_cli, small
from tftrain.errors import TftrainError, ConfigError
from tftrain.schema import is_open

USER_MODULE = textwrap.dedent('''
    import keras
    import numpy as np
    import tensorflow as tf


    def deep_mlp(input_shape, num_outputs, width=32, depth=6):
        inputs = keras.Input(shape=input_shape)
        x = keras.layers.Flatten()(inputs)
        for _ in range(depth):
            x = keras.layers.Dense(width, activation="relu")(x)
        return keras.Model(inputs, keras.layers.Dense(num_outputs)(x))


    def conv_and_embedding(input_shape, num_outputs):
        inputs = keras.Input(shape=input_shape)
        x = keras.layers.Reshape((input_shape[0], 1))(inputs)
        x = keras.layers.Conv1D(4, 3, activation="relu")(x)
        x = keras.layers.Flatten()(x)
        tokens = keras.layers.Embedding(10, 3)(keras.ops.cast(keras.ops.abs(inputs[:, :2]), "int32") % 10)
        x = keras.layers.Concatenate()([x, keras.layers.Flatten()(tokens)])
        return keras.Model(inputs, keras.layers.Dense(num_outputs)(x))


    class Subclassed(keras.Model):
        def __init__(self, num_outputs):
            super().__init__()
            self.hidden = keras.layers.Dense(16, activation="relu")
            self.out = keras.layers.Dense(num_outputs)

        def call(self, x):
            return self.out(self.hidden(keras.ops.reshape(x, (keras.ops.shape(x)[0], -1))))


    def subclassed(input_shape, num_outputs):
        return Subclassed(num_outputs)


    def blobs(n=600, features=10, classes=3, seed=0):
        rng = np.random.default_rng(seed)
        centers = rng.normal(size=(classes, features)) * 2
        y = rng.integers(0, classes, size=n)
        x = (centers[y] + rng.normal(size=(n, features))).astype("float32")
        k = n * 2 // 3
        return {"x_train": x[:k], "y_train": y[:k], "x_test": x[k:], "y_test": y[k:]}


    def blobs_as_datasets(n=600):
        d = blobs(n)
        return {"train": tf.data.Dataset.from_tensor_slices((d["x_train"], d["y_train"])),
                "test": tf.data.Dataset.from_tensor_slices((d["x_test"], d["y_test"]))}


    class EpochRecorder(keras.callbacks.Callback):
        def __init__(self, path):
            super().__init__()
            self.path = path

        def on_epoch_end(self, epoch, logs=None):
            with open(self.path, "a") as f:
                f.write(f"{epoch} {logs['val_loss']:.6f}\\n")


    def wrong_size(input_shape, num_outputs):
        return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(num_outputs + 1)])


    def not_a_model(input_shape, num_outputs):
        return "a model"


    def broken(input_shape, num_outputs):
        return keras.layers.Dense(num_outputs)(undefined_name)


    def bad_data():
        return {"features": np.zeros((10, 2))}
''')

DATA = ["data=custom", "data._target_=usermod.blobs", "trainer.batch_size=32", "trainer.verbose=2"]


@pytest.fixture
def user_dir(tmp_path):
    (tmp_path / "usermod.py").write_text(USER_MODULE)
    return tmp_path


def _metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_user_model_and_data_train_from_the_cli_run_in_their_directory(user_dir):
    run = user_dir / "run"
    result = run_cli("model=custom", "model._target_=usermod.deep_mlp", "++model.width=16", *DATA,
                     "trainer.epochs=3", f"hydra.run.dir={run}", cwd=user_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    m = _metrics(run)
    assert m["epochs"] == 3 and m["test_accuracy"] > 0.6
    # The held-out split: 400 training arrays, val_fraction 0.1 of them; the test set is the user's.
    assert "360 train / 40 val / 200 test" in result.stdout + result.stderr
    import keras

    model = keras.models.load_model(run / "model.keras")
    assert [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)][:2] == [16, 16]


@pytest.mark.slow
def test_tuning_practices_apply_to_a_users_model(user_dir, monkeypatch):
    """A user's deep ReLU MLP stays at chance from all-zero kernels and learns from He init; its
    kernels (Conv1D and Embedding too) are redrawn per layer; weight norm and l2 reach them."""
    monkeypatch.chdir(user_dir)
    monkeypatch.syspath_prepend(str(user_dir))
    common = ("model=custom", "model._target_=usermod.deep_mlp", "++model.depth=8", *DATA, "trainer.epochs=5",
              "optimizer=momentum", "optimizer.lr=0.02", "logger=[]")
    zeros = tftrain.train(tftrain.compose([*common, "initializer=zeros"]), output_dir=user_dir / "zeros")
    he = tftrain.train(tftrain.compose([*common, "initializer=he_normal"]), output_dir=user_dir / "he")
    assert zeros["val_accuracy"] < 0.5 and zeros["train_loss"] > 0.9 * math.log(3)
    assert he["val_accuracy"] > 0.8 and he["train_loss"] < 0.5 * zeros["train_loss"]

    from tftrain.config.factory import build_model
    from tftrain.layers import WeightNormConv1D, WeightNormDense
    from tftrain.schema import validate

    def build(*overrides):
        cfg = validate(tftrain.compose(["model=custom", "model._target_=usermod.conv_and_embedding", *overrides]))
        return build_model(cfg, (10,), 3)

    kept, redrawn = build(), build("initializer=constant", "initializer.value=0.25")
    for layer in redrawn.layers:
        for name in ("kernel", "embeddings"):
            if hasattr(layer, name) and not isinstance(getattr(layer, name), property):
                assert np.all(np.asarray(getattr(layer, name)) == 0.25), layer.name
    assert any(not np.all(np.asarray(w) == 0.25) for w in kept.get_weights() if w.ndim > 1)
    normed = build("initializer=weight_norm", "initializer.data_init=false")
    kinds = {type(layer) for layer in normed.layers}
    assert {WeightNormConv1D, WeightNormDense} <= kinds
    assert len(build("model.l2=0.01").losses) == 3  # the Conv1D and Dense kernels and the embeddings


def _small_saved(path, *overrides):
    return compose_small("model=saved", f"model.path={path}", *overrides)


def test_saved_model_fine_tunes_from_an_earlier_run(tmp_path):
    first = tftrain.train(compose_small("trainer.epochs=2"), output_dir=tmp_path / "first")
    path = tmp_path / "first" / "model.keras"
    tuned = tftrain.train(_small_saved(path, "trainer.epochs=1", "optimizer.lr=1e-4"), output_dir=tmp_path / "tuned")
    import keras

    # It starts from the trained weights (not a fresh initialization): at a small rate it ends near them.
    before = keras.models.load_model(path).get_weights()
    after = keras.models.load_model(tmp_path / "tuned" / "model.keras").get_weights()
    assert max(float(np.abs(a - b).max()) for a, b in zip(before, after)) < 0.01
    assert tuned["history"]["loss"][0] < first["history"]["loss"][0]
    assert tuned["history"]["val_loss"][0] <= first["val_loss"] * 1.02


def test_saved_model_with_a_lambda_layer_is_refused(tmp_path):
    import keras

    path = tmp_path / "lambda.keras"
    keras.Sequential([keras.Input((16,)), keras.layers.Lambda(lambda x: x * 2), keras.layers.Dense(10)]).save(path)
    with pytest.raises(TftrainError, match="model.path.*Lambda"):
        tftrain.train(_small_saved(path), output_dir=tmp_path / "run")


# Every optimizer option but those that run the user's own class (an open schema: optimizer=custom,
# which test_users_own_optimizer_class covers).
OPTIMIZERS = [o for o in options("optimizer") if not is_open(option_schema("optimizer", o))]


@pytest.mark.slow
@pytest.mark.parametrize("option", OPTIMIZERS)
def test_every_optimizer_trains_with_a_schedule_clipping_and_ema_and_resumes_exactly(option, tmp_path):
    args = ("trainer.epochs=2", f"optimizer={option}", "schedule=cosine", "optimizer.global_clipnorm=1.0",
            "optimizer.use_ema=true", "trainer.deterministic=true", "logger=[]")
    whole = tftrain.train(compose_small(*args), output_dir=tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):  # after epoch 2's steps, before its checkpoint
        tftrain.train(compose_small(*args, crash_at(1)), output_dir=tmp_path / "resumed")
    resumed = tftrain.train(compose_small(*args), output_dir=tmp_path / "resumed")  # continues from epoch 1
    assert resumed["steps"] == whole["steps"] == 16
    assert np.all(np.isfinite(whole["history"]["loss"]))
    np.testing.assert_allclose(resumed["history"]["loss"], whole["history"]["loss"], rtol=1e-6)
    assert resumed["weights_fingerprint"] == pytest.approx(whole["weights_fingerprint"], rel=1e-6)


def test_users_own_optimizer_class(user_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(user_dir))
    (user_dir / "myopt.py").write_text(textwrap.dedent('''
        import keras

        class HalfSGD(keras.optimizers.SGD):
            """SGD at half the rate, with an argument of its own."""
            def __init__(self, learning_rate, factor=0.5, **kwargs):
                super().__init__(learning_rate=learning_rate, **kwargs)
                self.factor = factor

            def update_step(self, gradient, variable, learning_rate):
                super().update_step(gradient, variable, learning_rate * self.factor)
    '''))
    metrics = tftrain.train(compose_small("optimizer=custom", "optimizer._target_=myopt.HalfSGD", "optimizer.lr=0.1",
                                          "++optimizer.factor=0.5"), output_dir=user_dir / "run")
    assert metrics["steps"] == 16 and np.isfinite(metrics["test_loss"])


@pytest.mark.slow
def test_a_user_callback_sees_every_epoch(user_dir):
    run, log = user_dir / "run", user_dir / "epochs.txt"
    result = run_cli(*SMALL, "trainer.epochs=3", f"callbacks.extra=[{{_target_: usermod.EpochRecorder, path: {log}}}]",
                     f"hydra.run.dir={run}", cwd=user_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = log.read_text().split()
    assert lines[::2] == ["0", "1", "2"]
    assert [float(v) for v in lines[1::2]] == pytest.approx(_metrics(run)["history"]["val_loss"], rel=1e-5)


@pytest.mark.slow
def test_user_datasets_go_through_the_same_pipeline(user_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(user_dir))
    cfg = compose_small("data=custom", "data._target_=usermod.blobs_as_datasets", "data.val_fraction=0.25",
                        "data.normalize=standardize")
    from tftrain.config.factory import build_data
    from tftrain.schema import validate

    data = build_data(validate(cfg))
    assert (data.num_train, data.num_val, data.num_test, data.input_shape) == (300, 100, 200, (10,))
    epoch = [y.numpy() for _, y in data.train(1)]
    resumed = [y.numpy() for _, y in data.train(1, 3)]  # a resumed epoch leaves out exactly its first batches
    assert all(np.array_equal(a, b) for a, b in zip(resumed, epoch[3:])) and len(resumed) == len(epoch) - 3
    metrics = tftrain.train(cfg, output_dir=user_dir / "run")
    assert metrics["test_accuracy"] > 0.6


@pytest.mark.parametrize("args, says, traceback_of_user_code", [
    (["model=custom", "model._target_=nomodule.build"],
     r"model._target_.*No module named 'nomodule'.*searched the directory the command runs in", False),
    (["model=custom", "model._target_=usermod.nothing"], r"usermod has no attribute 'nothing'", False),
    (["model=custom", "model._target_=usermod.deep_mlp", "++model.colour=red"],
     r"deep_mlp\(input_shape, num_outputs, width=32, depth=6\) does not: .*colour", False),
    (["model=custom", "model._target_=usermod.not_a_model"], r"returned a str, not a keras.Model", False),
    (["model=custom", "model._target_=usermod.wrong_size"], r"built a model with 11 outputs, but the data has 10", False),
    (["model=custom", "model._target_=usermod.broken"], r"raised NameError: name 'undefined_name'", True),
    (["data=custom", "data._target_=usermod.bad_data"], r"returned the keys \['features'\]", False),
    (["initializer=weight_norm", "model=custom", "model._target_=usermod.subclassed"],
     r"`initializer`.*functional or Sequential model", False),
])
@pytest.mark.slow
def test_user_code_that_goes_wrong_gets_one_paragraph_and_exit_2(user_dir, args, says, traceback_of_user_code):
    result = run_cli(*small(*args), f"hydra.run.dir={user_dir / 'run'}", cwd=user_dir)
    assert result.returncode == 2, result.stderr[-3000:]
    first = result.stderr.split("tftrain: error: ", 1)[1].splitlines()[0]
    assert re.search(says, first), first
    assert "Fix:" in first
    if traceback_of_user_code:  # the user's own frames, not tftrain's or Hydra's
        assert 'usermod.py", line' in result.stderr and "tftrain/build.py" not in result.stderr
    else:
        assert "Traceback" not in result.stderr
    assert not list((user_dir / "run").glob("checkpoints/*.index"))


def test_user_model_subclassed_trains_and_keeps_its_weights(user_dir, monkeypatch, caplog):
    monkeypatch.syspath_prepend(str(user_dir))
    with caplog.at_level("WARNING", logger="tftrain"):
        metrics = tftrain.train(compose_small("model=custom", "model._target_=usermod.subclassed",
                                              "initializer=he_normal"), output_dir=user_dir / "run")
    assert metrics["steps"] == 16 and np.isfinite(metrics["test_loss"])
    # Keras cannot serialize it (no get_config): its weights are saved instead, and the log says why.
    assert (user_dir / "run" / "model.weights.h5").stat().st_size > 0 and not (user_dir / "run" / "model.keras").exists()
    assert "get_config" in caplog.text


def _readme_example():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Your own model and data", 1)[1].split("\n## ", 1)[0]
    module = re.search(r"```python\n# mymodel\.py\n(.*?)```", section, re.S).group(1)
    command = re.search(r"```bash\n(python -m tftrain model=custom[^\n]*)\n", section).group(1)
    return module, command.split()[3:]


@pytest.mark.slow
def test_the_readme_example_runs(tmp_path):
    module, args = _readme_example()
    (tmp_path / "mymodel.py").write_text(module)
    result = run_cli(*args, "trainer.epochs=3", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _metrics(tmp_path / "run")["test_accuracy"] > 0.7
