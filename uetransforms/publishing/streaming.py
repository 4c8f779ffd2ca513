"""Protect and publish datasets that never fit in memory or on one disk, one batch at a time.

``datasets`` already streams: ``load_dataset(..., streaming=True).map(Protect(bank), batched=True)``
protects a hub dataset lazily, with memory bounded by one batch. :func:`publish_stream` is the
writing half: it pulls protected batches from any stream and appends them to Parquet shards in the
Hub layout (``data/<split>-00000-of-0000N.parquet`` + the same card :func:`~uetransforms.publishing.pipeline`
writes), so peak memory is one batch plus one Parquet row group, whatever the stream's length.

Images are encoded by the codec module's PNG encoder, the one ``Dataset.map(Protect(bank))`` and
:func:`~uetransforms.publishing.pipeline` use, so a streamed copy holds the same bytes as an in-memory one for
the same bank and input. (A streamed ``IterableDataset.map(Protect(bank))`` yields PIL images,
which ``datasets`` itself encodes if you write them: same pixels, its own PNG bytes.)

Example:
    >>> import datasets, numpy as np, os, tempfile, uetransforms as ue
    >>> from uetransforms.publishing.streaming import publish_stream
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
from collections.abc import Mapping
from typing import Any

from ..core.bank import DEFAULT_LABEL, NoiseBank


def publish_stream(
    stream: Any,
    bank: NoiseBank | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    split: str = "train",
    image_column: str = "image",
    label_column: str | None = DEFAULT_LABEL,
    id_column: str | None = None,
    device: str | None = None,
    batch_size: int = 256,
    shard_rows: int = 50_000,
    protected: bool = False,
    card_extra: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    allow_double: bool = False,
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
        overwrite: allow a non-empty ``out_dir`` (its shards and card are replaced; the old copy is
            swapped out only once the new one is complete).
        allow_double: protect a stream that already carries the uetransforms marker anyway.

    Like :func:`~uetransforms.publishing.pipeline`, it writes into a temporary sibling directory and moves it
    into place only when complete (:mod:`uetransforms.publishing.writer`).

    Returns:
        ``{"path", "split", "num_rows", "num_bytes", "shards"}``.
    """
    from ..core.version import __version__
    from .card import _guard_secrets, dataset_card
    from ..integrations.datasets import Protect, _bank_ref
    from .guard import refuse_double
    from .sources import Split, dataset_tables, stream_tables
    from .writer import write

    if shard_rows < 1:
        raise ValueError(f"shard_rows must be at least 1, got {shard_rows}")
    if not split or any(not (ch.isalnum() or ch in "_.-") for ch in split):
        raise ValueError(f"split={split!r}: use letters, digits, '_', '.' or '-' (it names the shard files)")
    bank = _bank_ref(bank)
    if not protected and not allow_double:
        refuse_double(stream, image_column, where="the stream")
    fn = None if protected else Protect(bank, image_column=image_column, label_column=label_column,
                                        id_column=id_column, device=device, allow_double=allow_double,
                                        **protect_options)

    def card(written: Mapping[str, Any]) -> str:
        text = dataset_card(written, bank, image_column=image_column, card_extra=card_extra)
        _guard_secrets(text, bank)
        return text

    import datasets

    if fn is not None and isinstance(stream, datasets.IterableDataset):
        feature = (stream.features or {}).get(image_column)
        if isinstance(feature, datasets.Image) and feature.decode and feature.mode is None:
            # Let Protect read the encoded bytes: the package's decoders return datasets' pixels,
            # and datasets no longer decodes every image with PIL first.
            stream = stream.cast_column(image_column, datasets.Image(decode=False))

    if isinstance(stream, datasets.Dataset):
        # An in-memory dataset is a stream too: read as Arrow batches, other columns untouched.
        if image_column not in stream.column_names:
            raise KeyError(f"image_column={image_column!r} is not in the stream (columns: {stream.column_names}); "
                           "pass image_column=<name>")
        tables = dataset_tables(stream, fn, image_column, batch_size)
    else:
        tables = stream_tables(stream, fn, image_column, batch_size, method=bank.method)
    part = Split(name=split, tables=tables, shard_rows=shard_rows)
    written = write([part], out_dir, image_column=image_column, card=card, overwrite=overwrite, protected=protected,
                    marker_info={"method": bank.method, "library_version": __version__})[split]
    return {"path": os.path.abspath(os.fspath(out_dir)), "split": split, "num_rows": written.num_rows,
            "num_bytes": written.nbytes, "shards": written.shards}
