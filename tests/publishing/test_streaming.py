"""Streaming paths give the in-memory bytes, publish_stream writes loadable shards, memory stays bounded."""

from __future__ import annotations

import gc
import io
import os

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from PIL import Image

import uetransforms as ue
from uetransforms.core.bank import NoiseBank
from uetransforms.publishing.sources import iter_batches
from uetransforms.publishing.streaming import publish_stream

FEATURES = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=3),
                              "idx": datasets.Value("int64")})


def make_ds(n: int = 13, hw: int = 8, seed: int = 0) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    return datasets.Dataset.from_dict(
        {"image": list(rng.integers(0, 256, (n, hw, hw, 3), dtype=np.uint8)),
         "label": [i % 3 for i in range(n)], "idx": list(range(n))}, features=FEATURES)


def additive_bank(hw: int = 8) -> NoiseBank:
    delta = np.random.default_rng(1).uniform(-8 / 255, 8 / 255, (3, 3, hw, hw)).astype("float32")
    return NoiseBank(method="random", kind="additive", keying="class", keys=[0, 1, 2], tensors={"delta": delta},
                     params={"epsilon": 8 / 255, "norm": "linf"})


def conv_bank() -> NoiseBank:
    weight = np.random.default_rng(2).uniform(0, 1, (3, 3, 3, 3)).astype("float32")
    return NoiseBank(method="cuda", kind="conv", keying="class", keys=[0, 1, 2], tensors={"weight": weight},
                     image_shape=(3, 8, 8), params={"kernel_size": 3})


BANKS = {"additive": additive_bank, "conv": conv_bank}


def png_bytes(ds) -> list[bytes]:
    """The stored PNG bytes of a (map-ed) Dataset, in row order."""
    return [r["bytes"] for r in ds.cast_column("image", datasets.Image(decode=False))["image"]]


def reference(ds: datasets.Dataset, bank: NoiseBank) -> list[bytes]:
    return png_bytes(ds.map(ue.Protect(bank), batched=True, batch_size=4))


def pixels(blobs: list[bytes]) -> list[bytes]:
    """Decoded pixels of PNGs: a streamed map yields PIL images, which datasets encodes with its own
    (PIL) encoder, while Dataset.map stores Protect's bytes (the codec module's fastest encoder)."""
    return [np.asarray(Image.open(io.BytesIO(b))).tobytes() for b in blobs]


def encode_stream(stream) -> list[bytes]:
    """PNG bytes datasets would store for the images of a protected stream."""
    img = datasets.Image()
    return [img.encode_example(row["image"])["bytes"] for row in stream]


@pytest.mark.parametrize("kind", sorted(BANKS))
def test_iterable_map_equals_in_memory_map(kind):
    ds, bank = make_ds(), BANKS[kind]()
    ref = reference(ds, bank)
    # Batch size deliberately different from the reference: bytes must not depend on batching.
    stream = ds.to_iterable_dataset(num_shards=2).map(ue.Protect(bank), batched=True, batch_size=5)
    assert pixels(encode_stream(stream)) == pixels(ref)


def test_streaming_parquet_equals_in_memory_map(tmp_path):
    ds, bank = make_ds(), additive_bank()
    path = str(tmp_path / "src.parquet")
    ds.to_parquet(path)
    stream = datasets.load_dataset("parquet", data_files=path, split="train", streaming=True)
    prot = stream.map(ue.Protect(bank), batched=True, batch_size=3)
    assert pixels(encode_stream(prot)) == pixels(reference(ds, bank))


def test_publish_stream_matches_in_memory_and_loads(tmp_path):
    ds, bank = make_ds(), additive_bank()
    out = tmp_path / "pub"
    info = publish_stream(ds.to_iterable_dataset(), bank, out, shard_rows=5, batch_size=3)
    assert info["num_rows"] == len(ds)
    names = sorted(os.listdir(out / "data"))
    assert names == [f"train-{i:05d}-of-00003.parquet" for i in range(3)]
    assert [pq.ParquetFile(out / "data" / n).metadata.num_rows for n in names] == [5, 5, 3]
    back = datasets.load_dataset(str(out), split="train")
    assert back.features == FEATURES  # Image and ClassLabel survive, not just bytes
    assert back["idx"] == ds["idx"] and back["label"] == ds["label"]
    assert png_bytes(back) == reference(ds, bank)
    card = (out / "README.md").read_text()
    assert "random" in card and bank.sha256 not in card


def test_publish_stream_untyped_generator(tmp_path):
    """A plain generator of rows (no features) is typed from its first batch."""
    ds, bank = make_ds(), additive_bank()
    rows = ({"image": np.asarray(r["image"]), "label": r["label"], "idx": r["idx"]} for r in ds)
    publish_stream(rows, bank, tmp_path / "pub", batch_size=4)
    back = datasets.load_dataset(str(tmp_path / "pub"), split="train")
    assert isinstance(back.features["image"], datasets.Image)
    assert png_bytes(back) == reference(ds, bank)


def test_publish_stream_protected_input_not_protected_twice(tmp_path):
    ds, bank = make_ds(), additive_bank()
    stream = ds.to_iterable_dataset().map(ue.Protect(bank), batched=True, batch_size=4)
    publish_stream(stream, bank, tmp_path / "pub", protected=True)
    back = datasets.load_dataset(str(tmp_path / "pub"), split="train")
    assert pixels(png_bytes(back)) == pixels(reference(ds, bank))


def test_publish_stream_errors(tmp_path):
    ds, bank = make_ds(), additive_bank()
    with pytest.raises(KeyError, match="image_column='img'"):
        publish_stream(ds.to_iterable_dataset(), bank, tmp_path / "a", image_column="img")
    assert os.listdir(tmp_path) == []  # nothing half-written is left: no "a", no temporary sibling
    with pytest.raises(ValueError, match="empty"):
        publish_stream(iter([]), bank, tmp_path / "b")
    with pytest.raises(ValueError, match="shard_rows"):
        publish_stream(ds.to_iterable_dataset(), bank, tmp_path / "c", shard_rows=0)
    publish_stream(ds.to_iterable_dataset(), bank, tmp_path / "d")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        publish_stream(ds.to_iterable_dataset(), bank, tmp_path / "d")
    with pytest.raises(TypeError, match="must yield dicts"):
        list(iter_batches(iter([1, 2]), 2))


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def test_memory_bounded_on_long_stream(tmp_path):
    """3200 images of 64x64 streamed through map(Protect) and through publish_stream.

    RSS is sampled from inside the source generator, so it is read while the pipeline runs.
    Holding the stream, the protected images or the written rows would grow RSS linearly: by at
    least the decoded size of the images read after the first 10% (~35 MB). The bound is a
    quarter of that; the first 10% is warm-up (imports, allocator arenas, schema inference).
    The stream is long enough that one-off buffers (a shard writer, ~5 MB seen) stay well under
    the bound while keeping the stream would not.
    """
    n, hw = 3200, 64
    bank = additive_bank(hw)
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=3)})
    samples: list[int] = []

    def rows():
        rng = np.random.default_rng(0)
        for i in range(n):
            if i % 100 == 0:
                samples.append(_rss())
            yield {"image": rng.integers(0, 256, (hw, hw, 3), dtype=np.uint8), "label": i % 3}

    bound = int(0.9 * n * hw * hw * 3) // 4
    stream = datasets.IterableDataset.from_generator(rows, features=feats)
    # Arrow's default allocator (mimalloc) keeps freed pages and jitters RSS by several MB
    # whatever the caller holds (pa.total_allocated_bytes() stays flat); the system allocator
    # returns them, so RSS reflects what the pipeline really keeps.
    pool = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        _check_bounded(stream, bank, n, bound, samples, tmp_path)
    finally:
        pa.set_memory_pool(pool)


def _check_bounded(stream, bank, n, bound, samples, tmp_path):

    seen = sum(len(b["image"]) for b in iter_batches(stream.map(ue.Protect(bank), batched=True, batch_size=32), 32))
    assert seen == n and len(samples) == n // 100
    grown = max(samples[2:]) - samples[2]
    assert grown < bound, f"map(Protect) grew RSS by {grown / 2**20:.1f} MiB over a {n}-image stream"

    # Warm-up: the writer's first shards allocate one-off buffers (Parquet writer, codec pool)
    # that the allocator keeps; seen as a ~10 MB step once per process, flat on every later run.
    publish_stream(stream.take(330), bank, tmp_path / "warm", batch_size=32, shard_rows=110)
    samples.clear()
    info = publish_stream(stream, bank, tmp_path / "pub", batch_size=32, shard_rows=1100)
    assert info["num_rows"] == n and len(info["shards"]) == 3
    grown = max(samples[2:]) - samples[2]
    assert grown < bound, f"publish_stream grew RSS by {grown / 2**20:.1f} MiB over a {n}-image stream"


def test_publish_stream_of_an_in_memory_dataset_equals_publish(tmp_path):
    """One writer: a Dataset through publish_stream gives the bytes ue.publish gives."""
    ds, bank = make_ds(), additive_bank()
    publish_stream(ds, bank, tmp_path / "s", shard_rows=len(ds))
    ue.publish(ds, bank, tmp_path / "p")
    name = "train-00000-of-00001.parquet"
    a, b = pq.read_table(tmp_path / "s" / "data" / name), pq.read_table(tmp_path / "p" / "data" / name)
    assert a.equals(b) and a.schema.metadata == b.schema.metadata
    assert png_bytes(datasets.load_dataset(str(tmp_path / "s"), split="train")) == reference(ds, bank)


def test_publish_stream_reads_image_bytes_without_datasets_decoding(tmp_path, monkeypatch):
    """A typed stream's Image() column reaches Protect as encoded bytes: the package's decoders,
    not datasets' PIL decode per image, and the bytes publish writes."""
    ds, bank = make_ds(), additive_bank()
    calls = []
    real = datasets.Image.decode_example
    monkeypatch.setattr(datasets.Image, "decode_example", lambda self, *a, **kw: calls.append(1) or real(self, *a, **kw))
    publish_stream(ds.to_iterable_dataset(), bank, tmp_path / "s", shard_rows=len(ds), batch_size=3)
    assert len(calls) <= 1  # at most a first-row look, never once per image
    monkeypatch.setattr(datasets.Image, "decode_example", real)
    ue.publish(ds, bank, tmp_path / "p")
    name = "train-00000-of-00001.parquet"
    assert pq.read_table(tmp_path / "s" / "data" / name).equals(pq.read_table(tmp_path / "p" / "data" / name))


# ------------------------------------------------------------------ issue 23: one marker that survives
def test_publish_stream_of_a_streamed_published_shard_is_refused(tmp_path):
    bank = additive_bank()
    publish_stream(make_ds(), bank, tmp_path / "pub", batch_size=4)
    streamed = datasets.load_dataset("parquet", data_dir=str(tmp_path / "pub" / "data"), streaming=True)["train"]
    with pytest.raises(ue.DoubleProtectionError, match="protected=True"):
        publish_stream(streamed, bank, tmp_path / "twice", batch_size=4)
    assert not (tmp_path / "twice").exists()
    publish_stream(streamed, bank, tmp_path / "as-is", protected=True, batch_size=4)  # the override still works


def test_publish_and_publish_stream_keep_source_file_names(tmp_path):
    """One rule for every writer (issue 24, point 9): the stored path is the source file's name."""
    ds = make_ds(n=5)
    raw = png_bytes(ds)
    named = datasets.Dataset.from_dict(
        {"image": [{"bytes": b, "path": f"/home/me/photos/c{i % 2}/IMG_{i}.jpg"} for i, b in enumerate(raw)],
         "label": ds["label"], "idx": ds["idx"]}, features=FEATURES)
    bank = additive_bank()
    want = [f"IMG_{i}.jpg" for i in range(5)]
    ue.publish(named, bank, tmp_path / "mem", progress=False)
    publish_stream(named.to_iterable_dataset(), bank, tmp_path / "stream")
    mapped = named.map(ue.Protect(bank), batched=True, batch_size=2)
    for out in ("mem", "stream"):
        table = pq.read_table(tmp_path / out / "data" / "train-00000-of-00001.parquet")
        assert table.column("image").combine_chunks().field("path").to_pylist() == want, out
    assert [r["path"] for r in mapped.cast_column("image", datasets.Image(decode=False))["image"]] == want
