"""Protect and publish datasets that never fit in memory or on one disk, one batch at a time.

``datasets`` already streams: ``load_dataset(..., streaming=True).map(Protect(bank), batched=True)``
protects a hub dataset lazily, with memory bounded by one batch. :func:`publish_stream` is the
writing half: it pulls protected batches from any stream and appends them to Parquet shards in the
Hub layout (``data/<split>-00000-of-0000N.parquet`` + the same card :func:`~uetransforms.publish`
writes), so peak memory is one batch plus one Parquet row group, whatever the stream's length.

Images are encoded exactly as ``Dataset.map`` encodes them (``datasets``' own PNG encoder), so a
streamed copy holds the same bytes as an in-memory one for the same bank and input.

Example:
    >>> import datasets, numpy as np, os, tempfile, uetransforms as ue
    >>> from uetransforms.streaming import publish_stream
    >>> feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=2)})
    >>> ds = datasets.Dataset.from_dict({"image": list(np.zeros((6, 8, 8, 3), np.uint8)), "label": [0, 1] * 3},
    ...                                 features=feats)
    >>> bank = ue.fit("random", ds, seed=0)
    >>> out = tempfile.mkdtemp()
    >>> info = publish_stream(ds.to_iterable_dataset(), bank, out, shard_rows=4, batch_size=2)
    >>> info["num_rows"], sorted(os.listdir(os.path.join(out, "data")))
    (6, ['train-00000-of-00002.parquet', 'train-00001-of-00002.parquet'])
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .bank import NoiseBank


class _SplitSummary:
    """What the card writer reads of a split (features, byte size, row count), without the rows."""

    class _Data:
        def __init__(self, nbytes: int) -> None:
            self.nbytes = nbytes

    def __init__(self, features: Any, nbytes: int, num_rows: int) -> None:
        self.features = features
        self.data = self._Data(nbytes)
        self._num_rows = num_rows

    def __len__(self) -> int:
        return self._num_rows


def iter_batches(stream: Any, batch_size: int) -> Iterator[dict[str, list[Any]]]:
    """Column-oriented batches (``{column: [values]}``) from a ``datasets`` (Iterable)Dataset or rows.

    ``stream`` may be a ``datasets.IterableDataset``/``Dataset`` (read with ``.iter``) or any
    iterable of row dicts (a generator reading a tar, a database cursor...).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if hasattr(stream, "iter") and hasattr(stream, "features"):
        for batch in stream.iter(batch_size=batch_size):
            yield dict(batch)
        return
    if isinstance(stream, Mapping) or not isinstance(stream, Iterable):
        raise TypeError(
            f"expected a datasets.IterableDataset/Dataset or an iterable of row dicts, got {type(stream).__name__}"
        )
    rows: list[Mapping[str, Any]] = []
    for row in stream:
        if not isinstance(row, Mapping):
            raise TypeError(f"a stream of rows must yield dicts (column -> value), got {type(row).__name__}")
        rows.append(row)
        if len(rows) == batch_size:
            yield _columns(rows)
            rows = []
    if rows:
        yield _columns(rows)


def _columns(rows: list[Mapping[str, Any]]) -> dict[str, list[Any]]:
    names = list(rows[0].keys())
    for r in rows:
        if list(r.keys()) != names:
            raise ValueError(f"every row of the stream must have the same columns; got {list(r.keys())} after {names}")
    return {n: [r[n] for r in rows] for n in names}


def _output_features(features: Any, first: Mapping[str, list[Any]], image_column: str) -> Any:
    """The written schema: the stream's features with the image column as a (PNG) ``Image()``."""
    import datasets

    if features is None:
        # An untyped stream (a generator): infer once, from the first protected batch.
        features = datasets.Dataset.from_dict({k: list(v) for k, v in first.items()}).features
    feats = datasets.Features(features.copy())
    # The stream may add or drop columns in a map(); the batch decides which are written.
    missing = [k for k in first if k not in feats]
    if missing:
        extra = datasets.Dataset.from_dict({k: list(first[k]) for k in missing}).features
        feats.update(extra)
    feats = datasets.Features({k: feats[k] for k in first})
    feats[image_column] = datasets.Image()
    return feats


def publish_stream(
    stream: Any,
    bank: NoiseBank | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    split: str = "train",
    image_column: str = "image",
    label_column: str | None = "label",
    id_column: str | None = None,
    device: str | None = None,
    batch_size: int = 256,
    shard_rows: int = 50_000,
    protected: bool = False,
    card_extra: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    **protect_options: Any,
) -> dict[str, Any]:
    """Protect a stream with ``bank`` and write it as Parquet shards plus a card, in bounded memory.

    Args:
        stream: ``load_dataset(..., streaming=True)`` (a ``datasets.IterableDataset``), a
            ``Dataset``, or any iterable of row dicts.
        bank: the :class:`NoiseBank` or its file. A cluster-keyed bank with ``label_column=None``
            assigns each streamed image its cluster on the fly.
        out_dir: local directory to create (``README.md`` + ``data/<split>-*-of-*.parquet``).
            Upload it with ``huggingface_hub.HfApi().upload_folder(..., repo_type="dataset")``.
        split: split name used in the shard names and the card.
        image_column / label_column / id_column / device / **protect_options: as for
            :class:`~uetransforms.Protect`.
        batch_size: rows protected together (one kernel launch each).
        shard_rows: rows per Parquet shard; each protected batch is one row group.
        protected: the stream is already protected (``.map(Protect(bank), ...)`` upstream):
            write it as it is; its images must encode to PNG.
        card_extra: extra YAML fields for the card (``license``, ``pretty_name``...).
        overwrite: allow a non-empty ``out_dir`` (its shards and card are replaced).

    Returns:
        ``{"path", "split", "num_rows", "num_bytes", "shards"}``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .protect import Protect, _bank_ref
    from .card import _guard_secrets, dataset_card
    from .publish import _check_target

    if shard_rows < 1:
        raise ValueError(f"shard_rows must be at least 1, got {shard_rows}")
    if not split or any(not (ch.isalnum() or ch in "_.-") for ch in split):
        raise ValueError(f"split={split!r}: use letters, digits, '_', '.' or '-' (it names the shard files)")
    bank = _bank_ref(bank)
    out_dir = os.fspath(out_dir)
    _check_target(out_dir, overwrite)
    data_dir = os.path.join(out_dir, "data")
    os.makedirs(data_dir, exist_ok=True)
    fn = None if protected else Protect(bank, image_column=image_column, label_column=label_column,
                                        id_column=id_column, device=device, **protect_options)

    features = getattr(stream, "features", None)
    out_features = schema = None
    writer: Any = None
    parts: list[str] = []
    rows_in_shard = num_rows = num_bytes = 0
    try:
        for batch in iter_batches(stream, batch_size):
            if image_column not in batch:
                raise KeyError(f"image_column={image_column!r} is not in the stream (columns: {list(batch)}); "
                               "pass image_column=<name>")
            out = fn(batch) if fn is not None else batch
            if out_features is None:
                out_features = _output_features(features, out, image_column)
                schema = out_features.arrow_schema
            # datasets' own encoder: PIL -> PNG bytes, the same bytes Dataset.map stores.
            encoded = out_features.encode_batch({k: out[k] for k in out_features})
            table = pa.Table.from_pydict(encoded, schema=schema)
            _require_png_batch(table, image_column)
            start = 0
            while start < table.num_rows:
                if writer is None:
                    parts.append(os.path.join(data_dir, f".{split}-{len(parts):05d}.parquet.partial"))
                    writer = pq.ParquetWriter(parts[-1], schema)
                    rows_in_shard = 0
                take = min(table.num_rows - start, shard_rows - rows_in_shard)
                writer.write_table(table.slice(start, take))
                start += take
                rows_in_shard += take
                if rows_in_shard == shard_rows:
                    writer.close()
                    writer = None
            num_rows += table.num_rows
            num_bytes += table.nbytes
        if writer is not None:
            writer.close()
            writer = None
    except BaseException:
        if writer is not None:
            writer.close()
        for p in parts:  # never leave a half-written shard set behind
            if os.path.exists(p):
                os.remove(p)
        raise
    if num_rows == 0:
        raise ValueError("the stream is empty: nothing to publish")

    n = len(parts)
    shards = []
    for i, p in enumerate(parts):
        final = os.path.join(data_dir, f"{split}-{i:05d}-of-{n:05d}.parquet")
        os.replace(p, final)
        shards.append(final)
    card = dataset_card({split: _SplitSummary(out_features, num_bytes, num_rows)}, bank,
                        image_column=image_column, card_extra=card_extra)
    _guard_secrets(card, bank)
    with open(os.path.join(out_dir, "README.md"), "w", encoding="utf-8") as f:
        f.write(card)
    return {"path": out_dir, "split": split, "num_rows": num_rows, "num_bytes": num_bytes, "shards": shards}


def _require_png_batch(table: Any, column: str) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    from .publish import PNG_SIGNATURE, _sniff

    raw = table.column(column).combine_chunks().field("bytes")
    if raw.null_count:
        raise ValueError(f"{raw.null_count} image(s) of column {column!r} are file paths, not bytes; "
                         "a published copy must carry its pixels (protect it with protected=False)")
    heads = pc.binary_slice(raw, 0, len(PNG_SIGNATURE))
    bad = pc.invert(pc.equal(heads, pa.scalar(PNG_SIGNATURE, pa.binary())))
    if pc.any(bad).as_py():
        first = raw.filter(bad)[0].as_py()
        raise ValueError(f"column {column!r} holds {_sniff(first)} images, not PNG; lossy re-encoding removes "
                         "protection: protect the clean source (protected=False) instead")
