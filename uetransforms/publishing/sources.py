"""Where a publish's rows come from: splits as sources of Arrow tables, in memory or streamed.

An in-memory ``Dataset`` is read as a stream of Arrow batches (a big dataset never has a second
copy in memory); an ``IterableDataset`` or any iterable of row dicts is read batch by batch.
Either way each batch is protected (when asked) and comes out with its images as PNG records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:  # pragma: no cover
    from ..integrations.datasets import Protect


@dataclass
class Split:
    """One split to write: a source of encoded Arrow tables plus how to cut it into shards.

    ``tables(start)`` yields tables (output schema, images already PNG) from row ``start``
    (``start > 0`` only when ``fingerprint`` is set: a source that can be resumed).
    """

    name: str
    tables: Callable[[int], Iterator[pa.Table]]
    num_rows: int | None = None            # known for in-memory data
    shard_rows: int | None = None          # fixed rows per shard, or
    max_shard_bytes: int | None = None     # a size target (balanced like Dataset.shard when num_rows is known)
    nbytes_hint: int | None = None         # exact uncompressed size when known in advance
    empty_schema: pa.Schema | None = None  # for a known-empty split: one empty shard
    fingerprint: str | None = None         # identifies the input for resume
    arrow_copy: str | None = None          # also write the rows here as an Arrow stream file (see Written)


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


def dataset_tables(ds: Any, protect: Protect | None, image_column: str,
                   batch_size: int) -> Callable[[int], Iterator[pa.Table]]:
    """An in-memory ``Dataset`` as a stream of output tables, from any row (for resume).

    Batches are read as Arrow, so the other columns pass through untouched (no decode, no
    re-encode, no float widening) and ``protected`` images keep their exact bytes. ``protect``
    refuses already-marked images itself (unless it was made with ``allow_double=True``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    schema = output_features(ds.features, image_column).arrow_schema
    arrow = ds.with_format("arrow")

    def tables(start: int) -> Iterator[pa.Table]:
        # What an output record keeps of its source (its file name) has one owner, next to Protect.
        from ..integrations.datasets import png_records, source_paths

        for i in range(start, len(ds), batch_size):
            table = arrow[i:i + batch_size]
            if protect is not None:
                # Only the columns Protect reads become Python objects; the rest stay Arrow.
                wanted = {image_column, protect.label_column, protect.id_column} & set(table.column_names)
                batch = {name: _pylist(table.column(name), name == image_column) for name in wanted}
                # Protect's own PNG bytes (the codec module's encoder), the very bytes Dataset.map stores.
                png = protect.encoded(batch, first_row=i)
                images = pa.array(png_records(png, source_paths(table.column(image_column))),
                                  type=schema.field(image_column).type)
                table = table.set_column(table.schema.get_field_index(image_column), schema.field(image_column),
                                         images)
            yield pa.Table.from_arrays(table.columns, schema=schema)

    return tables


def _pylist(column: pa.ChunkedArray, is_image: bool) -> list[Any]:
    """A column as Python values; an Image() column whose rows all hold bytes as the bytes alone."""
    from ..core.images import encoded_bytes

    raw = encoded_bytes(column) if is_image else None
    return column.to_pylist() if raw is None else raw


def stream_tables(stream: Any, protect: Protect | None, image_column: str,
                  batch_size: int, method: str | None = None) -> Callable[[int], Iterator[pa.Table]]:
    """A stream (``IterableDataset``, iterable of row dicts) as a stream of output tables.

    The written schema is the stream's features (or, untyped, those of the first protected
    batch) with the image column as ``Image()``: Protect's PNG bytes (the codec module's encoder),
    or for an already protected stream its records as they are and decoded images re-encoded
    by the same encoder.
    """

    features = getattr(stream, "features", None)

    def tables(start: int) -> Iterator[pa.Table]:
        if start:  # pragma: no cover - streams carry no fingerprint, so the writer never resumes them
            raise ValueError("a stream cannot be resumed")
        # What an output record keeps of its source (its file name) has one owner, next to Protect.
        from ..integrations.datasets import png_records, source_paths

        out_features = schema = None
        seen = 0
        for batch in iter_batches(stream, batch_size):
            if image_column not in batch:
                raise KeyError(f"image_column={image_column!r} is not in the stream (columns: {list(batch)}); "
                               "pass image_column=<name>")
            if protect is not None:
                out = {**batch, image_column: png_records(protect.encoded(batch, first_row=seen),
                                                          source_paths(batch[image_column]))}
            else:
                # Already protected: decoded images are re-encoded by the codec module, which gives
                # the bytes they were written with (same pixels, same encoder); records are kept.
                out = {**batch, image_column: _png_records(batch[image_column], method)}
            if out_features is None:
                out_features = _stream_features(features, out, image_column)
                schema = out_features.arrow_schema
            seen += len(batch[image_column])
            encoded = out_features.encode_batch({k: out[k] for k in out_features})
            yield pa.Table.from_pydict(encoded, schema=schema)

    return tables


def _png_records(images: Any, method: str | None) -> list[Any]:
    from ..core.codecs import decode, encode_png
    from ..integrations.datasets import png_records, source_paths

    # Decoded protected images get the encoder and the marker Protect writes (records are marked by the writer).
    return [im if isinstance(im, dict) and im.get("bytes") is not None
            else png_records([encode_png(decode(im).transpose(1, 2, 0), marked=True, method=method)],
                             source_paths([im]))[0]
            for im in images]


def _stream_features(features: Any, first: Mapping[str, list[Any]], image_column: str) -> Any:
    import datasets

    if features is None:
        # An untyped stream (a generator): infer once, from the first protected batch.
        features = datasets.Dataset.from_dict({k: list(v) for k, v in first.items()}).features
    feats = datasets.Features(features.copy())
    # The stream may add or drop columns in a map(); the batch decides which are written.
    missing = [k for k in first if k not in feats]
    if missing:
        feats.update(datasets.Dataset.from_dict({k: list(first[k]) for k in missing}).features)
    return output_features(datasets.Features({k: feats[k] for k in first}), image_column)


def output_features(features: Any, image_column: str) -> Any:
    """The written features: the input's, with the image column as a (PNG) ``datasets.Image()``."""
    import datasets

    feats = datasets.Features(features.copy())
    feats[image_column] = datasets.Image()
    return feats
