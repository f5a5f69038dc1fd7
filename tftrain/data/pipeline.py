"""`build_datasets(source, pipeline, batch_size, seed, strategy) -> Datasets`: the tf.data pipelines
the loop eats, from any source (tftrain/data/sources.py, streams.py, or a user's dict).

Two paths, chosen by where the examples live:

* In memory (digits, synthetic, npz, mnist, fashion_mnist, cifar10, cifar100, and any file-backed
  source with `cache: memory`): the splits are held once as tensors on the host. A training batch
  is a `tf.gather` of rows of a seeded permutation of the whole split (an exact shuffle; no
  per-example tf.data work, no second copy in a shuffle buffer). The pipeline is built once;
  each epoch only writes its permutation and seed into two host variables.
* Streamed (csv, image_folder, tfrecord, tfds with `cache: null` or a cache file): raw records
  (lines, paths, serialized Examples) are split and sharded by masking whole batches of them,
  shuffled (file lists in full, other records in a `shuffle_buffer`), decoded (vectorized for CSV
  and TFRecord), optionally cached on disk, and batched. Nothing has to fit in memory.

File-backed splits are scanned once before training: the scan counts the examples, checks them
(NaN/Inf, labels, and whatever the decoder rejects: missing columns or features, wrong numbers of
values, text in numeric columns, unreadable images) and takes the training split's statistics.

Distribution: `strategy.distribute_datasets_from_function`; each input pipeline (one per worker)
builds per-replica batches and keeps its share (`InputContext.input_pipeline_id`). In-memory
training batches are slices of one global permutation, so 1 replica, N replicas and N workers see
the same global batches. Every training example is used every epoch: the last batch is partial
when the batch size does not divide the training examples (`steps_per_epoch = ceil(num_train /
global_batch)`; the trainer averages that batch's loss over its real examples, and a replica's
share of it may be empty), unless `Pipeline.drop_remainder` (then `num_train // global_batch`
full batches, a different remainder left out each epoch). A streamed split read by several
workers, or not counted exactly (`scan_limit`), drops it too (there the workers' shares of the
last batch are not known in advance). val/test keep their last partial batch.

Splits a source does not have are held out of its training examples first (`Pipeline.val_fraction`,
`test_fraction`, `split_seed`). Every epoch's order is a function of (seed, epoch) alone, and `train(epoch, skip)` leaves
out the first `skip` batches: a run resumed mid-epoch sees exactly the batches it had not trained on.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from tftrain.data.labels import ClassLabels, Labels, check_text_targets
from tftrain.data.ranges import input_range
from tftrain.data.sources import Splits, channel_stats, check_splits, from_arrays, hold_out
from tftrain.data.streams import DECODE_BATCH, Stream, StreamSource, from_datasets, split_assignment, tf_message
from tftrain.errors import ArgumentError, DataError

log = logging.getLogger("tftrain")

AUTOTUNE = tf.data.AUTOTUNE
SCAN_BATCH = 1024


def _lean(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Options for in-memory pipelines whose per-batch work is one gather: no autotuning thread and
    a one-thread pool, so tf.data takes as little CPU as possible from the training step (measured
    on 2 cores: docs/benchmark.md)."""
    options = tf.data.Options()
    options.autotune.enabled = False
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    return ds.with_options(options)


@dataclasses.dataclass(frozen=True)
class Augment:
    """Random image augmentation of training batches: `flip` (None | horizontal | vertical |
    horizontal_and_vertical) and `translate` (max shift, a fraction of height and width)."""

    flip: str | None = None
    translate: float = 0.0

    @property
    def active(self) -> bool:
        return self.flip is not None or self.translate > 0


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """What the pipeline does to any source: hold out the missing validation and test splits,
    normalize (None | standardize | scale, training-split statistics; and `normalize_target`: the
    targets' mean and std, for regression), augment, and for streamed sources cache (None | memory | a file prefix), shuffle within `shuffle_buffer` (None: the whole
    split) and check at most `scan_limit` examples per split (None: all). `name` labels messages."""

    val_fraction: float | None = None
    test_fraction: float | None = None
    split_seed: int = 0
    normalize: str | None = None
    augment: Augment = Augment()
    cache: str | None = None
    shuffle_buffer: int | None = None
    scan_limit: int | None = None
    normalize_target: bool = False
    drop_remainder: bool = False  # leave out the training split's last partial batch each epoch
    name: str = "data"


@dataclasses.dataclass
class Datasets:
    """What the training loop needs.

    `train(epoch, skip=0)` returns epoch `epoch`'s training batches with the first `skip` left out
    (call it once per epoch and iterate the result before the next call: in-memory sources reuse
    one pipeline). `val` and `test` are iterated whole each time. With a strategy all three are
    distributed datasets (elements (x, y) per replica: x float32, y int64); without one, plain
    tf.data datasets of global batches. Inputs are raw (cast to float32): their normalization is a
    preprocessing layer of the model (`normalization` gives its statistics)."""

    train: Callable[..., Any]
    val: Any
    test: Any
    steps_per_epoch: int
    num_train: int
    num_val: int
    num_test: int
    input_shape: tuple[int, ...]
    num_outputs: int  # the model's outputs the targets need (classes, labels or values)
    global_batch_size: int
    normalization: dict | None = None  # {"mode", "offset", "scale"} per channel, from the training split
    target_normalization: dict | None = None  # {"mean", "std"} per target, from the training split
    labels: dict | None = None  # tftrain.data.labels.Labels per split
    target_names: list[str] | None = None  # the classes' (or targets') names, when the source knows them
    feature_names: list[str] | None = None  # the input features' names (tabular sources)
    # The training inputs' range, per channel (last axis) and overall: {"min", "max", "mean",
    # "std", "global_min", "global_max"} (tftrain.data.ranges warns when new inputs lie far outside it).
    input_range: dict | None = None
    description: str = ""
    # In-memory sources only (else None): batch_at(step) computes, inside a compiled function, the
    # global training batch `step` of the epoch last passed to train() (normalized and augmented
    # exactly as train() yields it). A single-replica step can call it instead of next(iterator)
    # and skip tf.data's per-batch overhead (docs/benchmark.md).
    batch_at: Callable[[Any], tuple] | None = None


def accumulated(data: Datasets, n: int) -> Datasets:
    """`data` (batches of global_batch / n) seen as updates of `n` consecutive batches each: its
    steps per epoch count updates (the epoch's leftover batches unused, as a batch of the whole
    size would drop them), and resuming after `skip` updates skips `skip * n` batches."""
    if n == 1:
        return data
    # Only full batches stack into an update: a partial last batch (always the epoch's last) is
    # left out, with the other leftover batches.
    full = min(data.steps_per_epoch, data.num_train // data.global_batch_size)
    if full < n:
        raise ArgumentError("accumulate_steps", n, f"at most the {full} batches of "
                            f"{data.global_batch_size} in an epoch (the training split is too small)")
    return dataclasses.replace(data, train=lambda epoch, skip=0: data.train(epoch, skip * n),
                               steps_per_epoch=full // n, global_batch_size=data.global_batch_size * n,
                               batch_at=None)


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle seed of one epoch: a function of (seed, epoch) alone, so a resumed run replays
    exactly the order an uninterrupted one would have seen."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] & 0x7FFFFFFF)


# ---------------------------------------------------------------- normalization, augmentation


def normalization_params(mode: str | None, stats: dict | None) -> dict | None:
    if mode is None:
        return None
    if mode == "standardize":
        offset, spread = stats["mean"], stats["std"]
    else:  # scale: per-channel min-max
        offset, spread = stats["min"], stats["max"] - stats["min"]
    spread = np.where(spread > 1e-7, spread, 1.0)  # constant channels: shifted, not divided by 0
    return {"mode": mode, "offset": np.asarray(offset, "float32"), "scale": np.asarray(1.0 / spread, "float32")}


def _transform(aug, seed, num_pipelines: int, pipeline: int, label_dtype: str = "int64"):
    """Batch-level fn (x, y[, i]) -> (x, y): x to float32, y to `label_dtype`, then (training only,
    with a seed: an int or a host variable holding the epoch's seed) augment with stateless random
    ops seeded by (epoch seed, batch index, pipeline): reproducible and exactly resumable.
    Normalization is not done here: it is part of the model (a preprocessing layer), so the saved
    model takes raw inputs."""
    flip = getattr(aug, "flip", None) if aug is not None else None
    translate = float(getattr(aug, "translate", 0.0)) if aug is not None else 0.0
    dtype = tf.as_dtype(label_dtype)

    def cast(x, y):
        return tf.cast(x, tf.float32), tf.cast(y, dtype)

    if seed is None or (flip is None and translate == 0):
        return lambda x, y, *_: cast(x, y)

    def augment(x, y, i):
        x, y = cast(x, y)
        s = tf.stack([tf.cast(tf.convert_to_tensor(seed), tf.int64), tf.cast(i, tf.int64) * num_pipelines + pipeline])
        n, h, w = tf.shape(x)[0], x.shape[1], x.shape[2]
        if flip in ("horizontal", "horizontal_and_vertical"):
            coin = tf.random.stateless_uniform([n], seed=s + [0, 1 << 40]) < 0.5
            x = tf.where(coin[:, None, None, None], tf.reverse(x, [2]), x)
        if flip in ("vertical", "horizontal_and_vertical"):
            coin = tf.random.stateless_uniform([n], seed=s + [0, 2 << 40]) < 0.5
            x = tf.where(coin[:, None, None, None], tf.reverse(x, [1]), x)
        if translate > 0:
            ph, pw = max(1, int(round(translate * h))), max(1, int(round(translate * w)))
            dy = tf.random.stateless_uniform([n], seed=s + [0, 3 << 40], minval=-ph, maxval=ph + 1, dtype=tf.int32)
            dx = tf.random.stateless_uniform([n], seed=s + [0, 4 << 40], minval=-pw, maxval=pw + 1, dtype=tf.int32)
            padded = tf.pad(x, [[0, 0], [ph, ph], [pw, pw], [0, 0]])  # zeros (raw values: before normalization)
            rows = tf.range(h)[None, :] + ph - dy[:, None]
            cols = tf.range(w)[None, :] + pw - dx[:, None]
            x = tf.gather(tf.gather(padded, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)
        return x, y

    return augment


# ---------------------------------------------------------------- file-backed records


def _keep(stream: Stream, num_pipelines: int, pipeline: int) -> np.ndarray | None:
    """Which records of stream.records() this split and pipeline keep (None: all)."""
    keep = None if stream.mask is None else stream.mask[0] == stream.mask[1]
    if num_pipelines > 1:
        if keep is None:
            keep = np.ones(stream.count, bool)
        mine = np.zeros_like(keep)
        mine[np.flatnonzero(keep)[pipeline::num_pipelines]] = True
        keep = mine
    return keep


def _split_records(stream: Stream, num_pipelines: int = 1, pipeline: int = 0) -> tf.data.Dataset:
    """This split's (and pipeline's) raw records, one by one, in the source's fixed order.

    Masking happens on whole batches of records (tf.boolean_mask): no per-record tf.data function."""
    if stream.arrays is not None:  # records in memory (image paths): select them in NumPy
        sel = np.arange(len(stream.arrays[0]))
        if stream.mask is not None:
            sel = np.flatnonzero(stream.mask[0] == stream.mask[1])
        sel = sel[pipeline::num_pipelines]
        return tf.data.Dataset.from_tensor_slices(tuple(a[sel] for a in stream.arrays))
    keep = _keep(stream, num_pipelines, pipeline)
    records = stream.records()
    if keep is None:
        return records
    flags = tf.data.Dataset.from_tensor_slices(keep)
    if stream.batched_decode:  # scalar string records: mask batches of them
        pairs = tf.data.Dataset.zip(records.batch(DECODE_BATCH), flags.batch(DECODE_BATCH))
        return pairs.map(lambda r, k: tf.boolean_mask(r, k), num_parallel_calls=AUTOTUNE).unbatch()
    pairs = tf.data.Dataset.zip(records, flags)  # structured records (TFDS examples): one by one
    return pairs.filter(lambda r, k: k).map(lambda r, k: r)


def _decoded(stream: Stream, records: tf.data.Dataset) -> tf.data.Dataset:
    """Examples (x, y) one by one, in the records' order."""
    if stream.batched_decode:
        return records.batch(DECODE_BATCH).map(stream.decode, num_parallel_calls=AUTOTUNE).unbatch()
    return records.map(stream.decode, num_parallel_calls=AUTOTUNE)


def _first_unreadable_file(stream: Stream) -> str | None:
    """For a source of files read one by one (images), the first file its decoder fails on."""
    if stream.arrays is None or stream.batched_decode:
        return None
    for record in zip(*stream.arrays):
        try:
            stream.decode(*(tf.constant(v) for v in record))
        except (tf.errors.OpError, ValueError):
            return str(record[0].decode() if isinstance(record[0], bytes) else record[0])
    return None


@dataclasses.dataclass
class ScanResult:
    count: int
    labels: Labels
    stats: dict | None
    tensors: tuple | None = None  # (x, y) of the whole split when kept in memory


def _scan(name: str, stream: Stream, dataset: tf.data.Dataset, limit: int | None, want_stats: bool,
          keep: bool = False) -> ScanResult:
    """One pass over a split's decoded examples: count, NaN/Inf, labels, per-channel statistics;
    with `keep`, the examples themselves (as tensors, for cache: memory)."""
    if limit is not None and not keep:
        dataset = dataset.take(limit)
    n, bad, acc, labels = 0, 0, None, None
    xs, ys = [], []
    try:
        for x, y in dataset.batch(SCAN_BATCH).prefetch(2):
            k = int(tf.shape(x)[0])
            n += k
            bad += k * int(np.prod(x.shape[1:])) - int(tf.math.count_nonzero(tf.math.is_finite(x)))
            labels = Labels(stream.split, tuple(y.shape[1:])) if labels is None else labels
            labels.add(y.numpy())
            if want_stats:
                flat = tf.reshape(tf.cast(x, tf.float64), (-1, x.shape[-1]))
                part = [tf.reduce_sum(flat, 0).numpy(), tf.reduce_sum(tf.square(flat), 0).numpy(),
                        tf.reduce_min(flat, 0).numpy(), tf.reduce_max(flat, 0).numpy(), flat.shape[0]]
                acc = part if acc is None else [acc[0] + part[0], acc[1] + part[1], np.minimum(acc[2], part[2]),
                                                np.maximum(acc[3], part[3]), acc[4] + part[4]]
            if keep:
                xs.append(x)
                ys.append(y)
    except tf.errors.OpError as e:
        start = f"data={name}: reading the {stream.split} split ({stream.describe}) failed"
        row = stream.locate() if stream.locate is not None else None
        if row:
            raise DataError(f"{start}: {row}. Fix: correct or remove that row (and any like it).") from None
        bad_file = _first_unreadable_file(stream)
        if bad_file:
            raise DataError(f"{start} ({tf_message(e).rstrip('.')}). The first unreadable file: {bad_file}. Fix: "
                            "remove or replace that file (and any like it).") from None
        raise DataError(f"{start} after {n} examples: {tf_message(e).rstrip('.')}. Fix: correct or remove the "
                        "offending records (a missing column or feature, a wrong number of values, text where "
                        "numbers belong, an unreadable file).") from None
    if n == 0:
        raise DataError(f"data={name}: the {stream.split} split ({stream.describe}) is empty. Fix: give it "
                        "examples (or a smaller val/test fraction).")
    if bad:
        raise DataError(f"x_{stream.split} ({stream.describe}) holds {bad} NaN or Inf values"
                        f"{' (empty CSV fields read as NaN)' if name == 'csv' else ''}. Fix: clean or impute "
                        "them first.")
    stats = None
    if acc is not None:
        mean = acc[0] / acc[4]
        stats = {"mean": mean, "std": np.sqrt(np.maximum(acc[1] / acc[4] - mean ** 2, 0.0)), "min": acc[2],
                 "max": acc[3]}
    tensors = None
    if keep:
        with tf.device("/cpu:0"):
            tensors = (tf.concat(xs, 0), tf.concat(ys, 0))
    return ScanResult(n, labels, stats, tensors)


# ---------------------------------------------------------------- the builder


class _Builder:
    def __init__(self, cfg: Pipeline, batch_size: int, seed: int, strategy):
        self.cfg, self.strategy = cfg, strategy
        self.batch = int(batch_size)
        self.seed = int(seed)
        self.aug = cfg.augment
        self.label_dtype = "int64"
        self._bases: dict[tuple, tf.data.Dataset] = {}  # (split, pipelines, pipeline) -> cached examples
        self._filled: set[tuple] = set()
        self.batch_at = None

    def distribute(self, make: Callable[[tf.distribute.InputContext], tf.data.Dataset]):
        if self.strategy is None:
            return make(tf.distribute.InputContext())
        return self.strategy.distribute_datasets_from_function(make)

    @staticmethod
    def layout(ctx: tf.distribute.InputContext, global_batch: int):
        """(pipelines, this pipeline, replicas per pipeline, per-replica batch)."""
        per_pipeline = ctx.num_replicas_in_sync // ctx.num_input_pipelines
        return ctx.num_input_pipelines, ctx.input_pipeline_id, per_pipeline, ctx.get_per_replica_batch_size(global_batch)

    # ---- in memory

    def arrays(self, splits: dict[str, tuple], steps: int, partial: bool = False):
        """Pipelines over (x, y) arrays or tensors per split; `partial`: the epoch's last batch
        holds the remaining examples (fewer than a batch), else only full batches."""
        n_train, B = int(splits["train"][0].shape[0]), self.batch
        used = n_train if partial else steps * B  # examples of the permutation an epoch trains on
        with tf.device("/cpu:0"):
            tensors = {k: (tf.convert_to_tensor(x), tf.convert_to_tensor(y)) for k, (x, y) in splits.items()}
            # This epoch's permutation and seed: the training pipeline reads them, so it is built
            # (and its functions traced) once, not every epoch.
            order = tf.Variable(tf.zeros([used], tf.int64), trainable=False, name="tftrain_data_order")
            seed_var = tf.Variable(tf.constant(0, tf.int64), trainable=False, name="tftrain_data_seed")
        x_train, y_train = tensors["train"]
        built: dict[int, Any] = {}
        augmenting = self.aug.active

        def make_train(ctx, skip):
            P, p, r, b = self.layout(ctx, B)
            transform = _transform(self.aug, seed_var, P, p, self.label_dtype)

            def batch(i):  # per-replica batch i of this pipeline: global step i // r, replica i % r
                start = (i // r) * B + (p * r + i % r) * b
                # The last batch may be partial: a replica gets what is left of its share (maybe nothing).
                idx = order.sparse_read(tf.range(start, tf.maximum(start, tf.minimum(start + b, used))))
                return transform(tf.gather(x_train, idx), tf.gather(y_train, idx), i)

            ds = tf.data.Dataset.range(skip * r, steps * r)
            if augmenting:  # per-batch image ops: worth parallel calls and autotuning
                return ds.map(batch, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
            return _lean(ds.map(batch).prefetch(2))

        def train(epoch: int, skip: int = 0):
            seed = epoch_seed(self.seed, epoch)
            order.assign(np.random.default_rng(seed).permutation(n_train)[:used])
            seed_var.assign(seed)
            if skip:  # a resumed epoch: a pipeline of its own (once per resume)
                return self.distribute(lambda ctx: make_train(ctx, skip))
            if 0 not in built:
                built[0] = self.distribute(lambda ctx: make_train(ctx, 0))
            return built[0]

        global_transform = _transform(self.aug, seed_var, 1, 0, self.label_dtype)

        def batch_at(step):
            step = tf.cast(step, tf.int64)
            idx = order.sparse_read(tf.range(step * B, step * B + B))
            return global_transform(tf.gather(x_train, idx), tf.gather(y_train, idx), step)

        self.batch_at = None if partial else batch_at  # fixed-size batches only

        def evaluation(split):
            x, y = tensors[split]
            n = int(x.shape[0])

            def make(ctx):
                P, p, _, b = self.layout(ctx, B)
                transform = _transform(None, None, P, p, self.label_dtype)
                ds = tf.data.Dataset.range(n).batch(b).shard(P, p)
                return _lean(ds.map(lambda idx: transform(tf.gather(x, idx), tf.gather(y, idx))).prefetch(2))
            return self.distribute(make)

        return train, evaluation("val"), evaluation("test")

    # ---- streams

    def cached(self, stream: Stream, P: int = 1, p: int = 0) -> tf.data.Dataset:
        """The decoded examples of a split's shard, in fixed order, behind a tf.data cache file (one
        object per shard, so every epoch reads the same cache)."""
        key = (stream.split, P, p)
        if key not in self._bases:
            ds = _decoded(stream, _split_records(stream, P, p))
            self._bases[key] = ds.cache(f"{self.cfg.cache}.{stream.split}.{p}-of-{P}")
        return self._bases[key]

    def base(self, stream: Stream, P: int = 1, p: int = 0) -> tf.data.Dataset:
        """`cached`, filled now if not yet: tf.data throws away a cache that was only partly read."""
        ds, key = self.cached(stream, P, p), (stream.split, P, p)
        if key not in self._filled:
            t0 = time.perf_counter()
            for _ in ds.batch(SCAN_BATCH):
                pass
            self._filled.add(key)
            log.info("data=%s: cached the %s split in %s (pipeline %d of %d) in %.1fs", self.cfg.name,
                     stream.split, self.cfg.cache, p + 1, P, time.perf_counter() - t0)
        return ds

    def scan_source(self, src: StreamSource) -> dict[str, ScanResult]:
        cfg = self.cfg
        keep = cfg.cache == "memory"
        on_disk = cfg.cache is not None and not keep
        out = {}
        t0 = time.perf_counter()
        for stream in src.streams():
            want_stats = stream.split == "train"  # normalization's statistics and the inputs' range
            if on_disk and cfg.scan_limit is None:
                data = self.cached(stream)  # the scan fills the single-pipeline cache: no extra pass
            else:
                data = _decoded(stream, _split_records(stream))
            out[stream.split] = _scan(cfg.name, stream, data, cfg.scan_limit, want_stats, keep)
            if on_disk and cfg.scan_limit is None:
                self._filled.add((stream.split, 1, 0))
            if cfg.scan_limit is None or keep:
                stream.count = out[stream.split].count  # what tf.data read is the truth
        log.info("data=%s: scanned %s examples (train/val/test) in %.1fs: counts, NaN/Inf, labels%s%s", cfg.name,
                 "/".join(str(out[k].count) for k in ("train", "val", "test")), time.perf_counter() - t0,
                 ", normalization statistics of train" if cfg.normalize else "",
                 "; kept in memory (cache: memory)" if keep else "")
        return out

    def streams(self, src: StreamSource, steps: int, partial: bool = False):
        cfg, B = self.cfg, self.batch
        buffer = cfg.shuffle_buffer

        def train(epoch: int, skip: int = 0):
            seed = epoch_seed(self.seed, epoch)
            stream = src.train

            def make(ctx):
                P, p, r, b = self.layout(ctx, B)
                if partial:  # one pipeline: the epoch's examples once, the last global batch partial
                    ds = _one_epoch(self, stream, seed, buffer, r, b)
                elif cfg.cache is not None:  # a cache file
                    ds = self.base(stream, P, p).shuffle(buffer or stream.count, seed=seed,
                                                         reshuffle_each_iteration=False)
                    ds = ds.repeat().batch(b, drop_remainder=True)
                else:
                    recs = _split_records(stream, P, p)
                    size = stream.count if stream.cheap_records or buffer is None else buffer
                    recs = recs.shuffle(size, seed=seed, reshuffle_each_iteration=False).repeat()
                    if stream.batched_decode:
                        ds = recs.batch(b, drop_remainder=True).map(stream.decode, num_parallel_calls=AUTOTUNE)
                    else:
                        ds = recs.map(stream.decode, num_parallel_calls=AUTOTUNE).batch(b, drop_remainder=True)
                # Exactly steps_per_epoch global batches per epoch on every pipeline, whatever its share.
                ds = ds.take(steps * r).enumerate().skip(skip * r)
                transform = _transform(self.aug, seed, P, p, self.label_dtype)
                ds = ds.map(lambda i, xy: transform(xy[0], xy[1], i), num_parallel_calls=AUTOTUNE)
                return ds.prefetch(AUTOTUNE)
            return self.distribute(make)

        def evaluation(stream: Stream):
            def make(ctx):
                P, p, _, b = self.layout(ctx, B)
                if cfg.cache is not None:
                    ds = self.base(stream, P, p).batch(b)
                elif stream.batched_decode:
                    ds = _split_records(stream, P, p).batch(b).map(stream.decode, num_parallel_calls=AUTOTUNE)
                else:
                    ds = _split_records(stream, P, p).map(stream.decode, num_parallel_calls=AUTOTUNE).batch(b)
                return ds.map(_transform(None, None, P, p, self.label_dtype), num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
            return self.distribute(make)

        return train, evaluation(src.val), evaluation(src.test)


def _one_epoch(b: "_Builder", stream: Stream, seed: int, buffer: int | None, r: int, per_replica: int):
    """A streamed split's examples of one epoch (a single pipeline), shuffled, in per-replica
    batches: each global batch of r * per_replica examples cut into its r replicas' shares, the
    last one partial (its shares short or empty)."""
    cfg = b.cfg
    if cfg.cache is not None:
        ds = b.base(stream).shuffle(buffer or stream.count, seed=seed, reshuffle_each_iteration=False)
        ds = ds.batch(r * per_replica)
    else:
        recs = _split_records(stream)
        size = stream.count if stream.cheap_records or buffer is None else buffer
        recs = recs.shuffle(size, seed=seed, reshuffle_each_iteration=False)
        if stream.batched_decode:
            ds = recs.batch(r * per_replica).map(stream.decode, num_parallel_calls=AUTOTUNE)
        else:
            ds = recs.map(stream.decode, num_parallel_calls=AUTOTUNE).batch(r * per_replica)
    if r == 1:
        return ds

    def shares(x, y):
        return tf.data.Dataset.range(r).map(
            lambda j: (x[j * per_replica:(j + 1) * per_replica], y[j * per_replica:(j + 1) * per_replica]))
    return ds.flat_map(shares)


def _check_batch(batch: int, num_train: int, strategy, partial: bool = False) -> int:
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    steps = -(-num_train // batch) if partial else num_train // batch
    if num_train // batch == 0:
        raise ArgumentError("batch_size", batch, f"at most the {num_train} training examples, "
                            f"e.g. {min(64, num_train)}")
    if batch % replicas:
        raise ArgumentError("batch_size", batch, f"a multiple of the {replicas} replicas, e.g. "
                            f"{batch // replicas * replicas or replicas}")
    return steps


def _keeps_remainder(cfg: Pipeline, num_train: int, batch: int, in_memory: bool, strategy) -> bool:
    """Whether the epoch ends with a partial batch (say so when examples are left out instead)."""
    left = num_train % batch
    if not left:
        return False
    several_workers = strategy is not None and strategy.extended._in_multi_worker_mode()
    if cfg.drop_remainder:
        why = "data.drop_remainder=true"
    elif not in_memory and several_workers:
        why = "a streamed split read by several workers drops it; cache: memory keeps it"
    elif not in_memory and cfg.scan_limit is not None:
        why = "data.scan_limit leaves the count inexact; scan_limit: null keeps it"
    else:
        return True
    log.info("data=%s: %d of the %d training examples (the last partial batch of %d) are left out each epoch, "
             "different ones each epoch (%s)", cfg.name, left, num_train, batch, why)
    return False


def hold_out_streams(src: StreamSource, cfg: Pipeline) -> StreamSource:
    """`src` with its missing validation and test streams held out of the training records
    (seeded, `cfg.val_fraction` / `cfg.test_fraction` of the training examples)."""
    if src.val is not None and src.test is not None:
        return src
    for split, fraction in (("val", cfg.val_fraction), ("test", cfg.test_fraction)):
        if getattr(src, split) is None and not fraction:
            raise DataError(f"data={cfg.name}: there are no {split} files and no {split}_fraction to hold a {split} "
                            f"split out of the training files. Fix: set data.{split}_fraction or data.{split}_path.")
    main = src.train
    base = main.mask[0] == main.mask[1] if main.mask is not None else np.ones(main.count, bool)
    positions = np.flatnonzero(base)
    codes = split_assignment(len(positions), None if src.val is not None else cfg.val_fraction,
                             None if src.test is not None else cfg.test_fraction, cfg.split_seed)
    full = np.full(len(base), -1, np.int8)
    full[positions] = codes
    counts = np.bincount(codes, minlength=3)

    def part(split, code):
        return dataclasses.replace(main, split=split, mask=(full, code), count=int(counts[code]))

    return dataclasses.replace(src, train=part("train", 0), val=src.val or part("val", 1),
                               test=src.test or part("test", 2))


def _as_source(source, name: str):
    """Splits or a StreamSource from what a source returned (a user's dict included)."""
    if isinstance(source, (Splits, StreamSource)):
        return source
    what = f"data={name}"
    if isinstance(source, Mapping):
        if source and all(isinstance(v, tf.data.Dataset) for v in source.values()):
            unknown = sorted(set(source) - {"train", "val", "test"})
            if unknown or "train" not in source:
                raise DataError(f"{what} returned tf.data.Datasets under the keys {sorted(source)}. Fix: return "
                                "{'train': ds, 'val': ds, 'test': ds} (val and test optional) of single (x, y) examples.")
            return from_datasets(dict(source), what)
        unknown = sorted(set(source) - {"x_train", "y_train", "x_val", "y_val", "x_test", "y_test"})
        if unknown:
            raise DataError(f"{what} returned the keys {sorted(source)}; {unknown} are none of x_train, y_train, "
                            "x_val, y_val, x_test, y_test. Fix: return a dict of those arrays (val and test optional), "
                            "or {'train': ds, 'val': ds, 'test': ds} of tf.data.Datasets of single (x, y) examples.")
        return from_arrays(dict(source), what)
    raise DataError(f"{what} returned a {type(source).__name__}, not a dict. Fix: return a dict of NumPy arrays "
                    "x_train, y_train [, x_val, y_val] [, x_test, y_test], or {'train': ds, 'val': ds, 'test': ds} of "
                    "tf.data.Datasets of single (x, y) examples.")


def build_datasets(source, cfg: Pipeline, *, batch_size: int, seed: int,
                   strategy: tf.distribute.Strategy | None = None, targets=None) -> Datasets:
    """Check, split and describe `source` (Splits, a StreamSource, or a dict of arrays or of
    tf.data.Datasets); return its pipelines for `strategy` (None: not distributed), with global
    batches of `batch_size` shuffled by `seed`. `targets` (tftrain.data.labels.Targets, default
    integer class labels) checks the targets and sizes the model's outputs.

    Call it outside `strategy.scope()`. Raises DataError on unusable data (missing file or column,
    NaN/Inf, targets the problem cannot use, mismatched lengths or shapes, an empty split) and
    ArgumentError when batch_size does not fit (more than the training examples, not a multiple of
    the replicas) or augmentation is asked for non-image inputs.
    """
    targets = targets or ClassLabels()
    b = _Builder(cfg, batch_size, seed, strategy)
    b.label_dtype = targets.label_dtype
    t0 = time.perf_counter()
    source = _as_source(source, cfg.name)
    in_memory = None
    stratify = getattr(targets, "stratify", None)
    if getattr(source, "text_labels", False):
        check_text_targets(targets, source.target_names, f"data={cfg.name}'s label")
    if isinstance(source, Splits):
        s, outputs, labels = check_splits(hold_out(source, cfg.val_fraction, cfg.test_fraction, cfg.split_seed,
                                                   stratify), targets)
        in_memory = {k: (getattr(s, f"x_{k}"), getattr(s, f"y_{k}")) for k in ("train", "val", "test")}
        counts = (len(s.x_train), len(s.x_val), len(s.x_test))
        input_shape = s.input_shape
        stats = channel_stats(s.x_train)
    else:
        source = hold_out_streams(source, cfg)
        scans = b.scan_source(source)
        counts = tuple(stream.count for stream in source.streams())
        input_shape = tuple(source.input_shape)
        labels = {split: r.labels for split, r in scans.items()}
        outputs = targets.check(labels, source.num_classes)
        stats = scans["train"].stats
        if cfg.cache == "memory":
            in_memory = {k: r.tensors for k, r in scans.items()}
    if b.aug.active and len(input_shape) != 3:
        raise ArgumentError("augment", {"flip": b.aug.flip, "translate": b.aug.translate},
                            f"off for inputs that are not images (height, width, channels): these inputs have shape "
                            f"{tuple(input_shape)}; set data.augment.flip=null data.augment.translate=0")
    target_norm = None
    if cfg.normalize_target:
        train = labels["train"]
        target_norm = {"mean": train.mean.astype("float32"),
                       "std": np.where(train.std > 1e-7, train.std, 1.0).astype("float32")}
    partial = _keeps_remainder(cfg, counts[0], b.batch, in_memory is not None, strategy)
    steps = _check_batch(b.batch, counts[0], strategy, partial)
    train, val, test = b.arrays(in_memory, steps, partial) if in_memory is not None else \
        b.streams(source, steps, partial)
    desc = (f"data={cfg.name}: {counts[0]} train / {counts[1]} val / {counts[2]} test, input {tuple(input_shape)}, "
            f"{outputs} output(s), normalize {cfg.normalize}, {'in memory' if in_memory is not None else 'streamed'}")
    log.info("%s (ready in %.1fs)", desc, time.perf_counter() - t0)
    return Datasets(train=train, val=val, test=test, steps_per_epoch=steps, num_train=counts[0], num_val=counts[1],
                    num_test=counts[2], input_shape=tuple(int(d) for d in input_shape), num_outputs=int(outputs),
                    global_batch_size=b.batch, normalization=normalization_params(cfg.normalize, stats),
                    target_normalization=target_norm, labels=labels, target_names=source.target_names,
                    feature_names=source.feature_names, input_range=input_range(stats),
                    description=desc, batch_at=b.batch_at)
