"""The one writer behind ``publish`` and ``publish_stream``: batches in, a Hub-layout folder out, atomically.

Both front doors hand it *splits*, each a source of batches (an in-memory ``Dataset`` is read as a
stream of Arrow batches, so a big dataset never has a second copy in memory), and it writes::

    <dir>/README.md                               the card (uetransforms.publishing.card)
    <dir>/data/<split>-00000-of-0000N.parquet     images as PNG bytes, every other column kept

What a crash can leave (a process killed at any point, an exception, a full disk):

* Everything is written into a temporary sibling ``.<name>.uetransforms-tmp`` and renamed into
  place only once every shard and the card are complete and flushed to disk. Before that, the
  target is untouched; a new publish that dies leaves no ``<dir>`` at all.
* An overwrite swaps the new copy in only once it is complete: on Linux with one atomic exchange
  of the two directories (``renameat2``), so ``<dir>`` is never missing; elsewhere by renaming
  the old copy aside (``.<name>.uetransforms-old``) and the new one in, the instant between the
  two renames being the one moment without ``<dir>``: the next run puts the old copy back.
  The old copy is deleted last.
* Files in ``<dir>`` that publish did not write are carried into the new copy (hard links).
* A lock file inside the temporary copy keeps two publishes from writing the same target; a dead
  run's leftovers are removed (or resumed) by the next one, which knows they are dead because
  their lock is free.
* In-memory datasets resume: shards completed by a killed run whose checksum and row count match
  its manifest are kept, and protection restarts after them (same input, bank and options only).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..core.codecs import MARKER, PNG_SIGNATURE, SCHEMA_KEY
from . import target as _target
from .sources import Split
from .target import Target, _fsync_file

if TYPE_CHECKING:  # pragma: no cover
    pass


_TMP, _OLD, _LOCK = ".uetransforms-tmp", ".uetransforms-old", ".uetransforms-lock"
_MANIFEST = ".uetransforms-manifest.json"
_CARD = "README.md"


@dataclass
class Written:
    """What the card and the caller read of a written split (features, size, rows), without the rows."""

    schema: pa.Schema
    num_rows: int = 0
    nbytes: int = 0
    shards: list[str] = field(default_factory=list)
    #: ``Split.arrow_copy`` when it holds every row of the split, in order (an Arrow stream file
    #: ``datasets.Dataset.from_file`` maps); None when it was not asked for or the split resumed
    #: after shards of a dead run, whose rows this run never saw.
    arrow_copy: str | None = None

    @property
    def features(self) -> Any:
        import datasets

        return datasets.Features.from_arrow_schema(self.schema)

    @property
    def data(self) -> Any:  # dataset_card reads ``ds.data.nbytes``
        return _NBytes(self.nbytes)

    def __len__(self) -> int:
        return self.num_rows


@dataclass
class _NBytes:
    nbytes: int


def with_marker(schema: pa.Schema, info: Mapping[str, Any]) -> pa.Schema:
    """``schema`` with the non-secret protection marker in its metadata (kept by Parquet)."""
    meta = dict(schema.metadata or {})
    meta[SCHEMA_KEY] = json.dumps({"marker": MARKER, **info}, sort_keys=True).encode()
    return schema.with_metadata(meta)


def require_png(table: pa.Table, column: str, *, protected: bool) -> None:
    """Every image of ``column`` must be PNG bytes; say which format it is otherwise."""
    import pyarrow.compute as pc

    raw = table.column(column).combine_chunks().field("bytes")
    if raw.null_count:
        raise ValueError(
            f"{raw.null_count} image(s) of column {column!r} are stored as file paths, not bytes; a published copy "
            "must carry its pixels. Protect the dataset in publish (protected=False), which writes PNG bytes."
        )
    heads = pc.binary_slice(raw, 0, len(PNG_SIGNATURE))
    bad = pc.invert(pc.equal(heads, pa.scalar(PNG_SIGNATURE, pa.binary())))
    n_bad = pc.sum(bad).as_py() or 0
    if n_bad:
        first = raw.filter(bad)[0].as_py()
        raise ValueError(
            f"{n_bad} image(s) of column {column!r} are stored as {sniff(first)}, not PNG. "
            + ("A dataset that was protected and then re-encoded lossily has lost much of its protection: "
               "protect the clean original again and publish that (protected=False)."
               if protected else "Protect writes PNG; was the image column changed after protection?")
        )


def marked_images(table: pa.Table, column: str, method: str | None) -> pa.Table:
    """``table`` with every PNG of ``column`` carrying the protection marker (marked ones untouched).

    What ``Protect`` wrote is marked already; images protected some other way (``set_transform``
    output that ``datasets`` encoded itself) get the marker here, so every published PNG says it
    is protected and nothing protects it twice unnoticed. Pixels are untouched.
    """
    from ..core.codecs import is_marked, mark

    images = table.column(column).combine_chunks()
    raw = images.field("bytes").to_pylist()
    if all(is_marked(b) for b in raw):
        return table
    marked = pa.array([b if is_marked(b) else mark(b, method=method) for b in raw], pa.binary())
    struct = pa.StructArray.from_arrays([marked, images.field("path")], fields=list(images.type))
    return table.set_column(table.schema.get_field_index(column), table.schema.field(column), struct)


def sniff(head: bytes) -> str:
    if head.startswith(b"\xff\xd8"):
        return "JPEG (lossy)"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head.startswith(b"GIF8"):
        return "GIF"
    if head.startswith(b"BM"):
        return "BMP"
    return "an unrecognised format"


def shard_count(nbytes: int, num_rows: int, max_shard_bytes: int) -> int:
    """Shards of at most ``max_shard_bytes`` (uncompressed) each, as ``push_to_hub`` counts them."""
    return max(1, min(num_rows, int(math.ceil(nbytes / max(1, max_shard_bytes)))))


# ---------------------------------------------------------------------------- writing
def write(
    splits: list[Split],
    out_dir: str | os.PathLike,
    *,
    image_column: str,
    card: Callable[[Mapping[str, Written]], str],
    overwrite: bool,
    protected: bool,
    marker_info: Mapping[str, Any],
    on_recover: Callable[[str], None] | None = None,
) -> dict[str, Written]:
    """Write ``splits`` and the card into ``out_dir`` atomically (see the module docstring)."""
    target = Target(out_dir)
    fingerprint = None
    if all(s.fingerprint for s in splits):
        fingerprint = hashlib.sha256(json.dumps(
            [[s.name, s.fingerprint, s.shard_rows, s.max_shard_bytes] for s in splits], sort_keys=True
        ).encode()).hexdigest()
    with target.locked():
        note = target.recover()
        if note and on_recover:
            on_recover(note)
        overwriting = target.check(overwrite)
        manifest = target.begin(fingerprint)
        try:
            written = {}
            for split in splits:
                written[split.name] = _write_split(split, target.tmp, manifest, image_column=image_column,
                                                   protected=protected, marker_info=marker_info)
            text = card(written)
            for name, w in written.items():
                _finish(name, w, manifest["splits"][name]["shards"])
            _save_manifest(target.tmp, manifest)  # the final names: a run killed from here on resumes with no work
            _write_text(os.path.join(target.tmp, _CARD), text)
            _target.checkpoint("card", path=target.path)
            os.remove(os.path.join(target.tmp, _MANIFEST))
            target.carry_foreign(overwriting)
            target.commit(overwriting)
        except BaseException as err:
            # A resumable run keeps its verified shards for the next try; anything else is dropped
            # now (a killed process cannot do this: the next run will).
            kept = sum(len(v.get("shards", ())) for v in manifest.get("splits", {}).values())
            if fingerprint is None or not kept or not os.path.exists(os.path.join(target.tmp, _MANIFEST)):
                target.discard()
            elif hasattr(err, "add_note"):
                err.add_note(f"uetransforms: {kept} complete shard(s) are kept in {target.tmp!r}; the same publish "
                             "run again resumes after them (any other publish to this directory removes them)")
            raise
    for w in written.values():
        w.shards = [os.path.join(target.path, "data", os.path.basename(p)) for p in w.shards]
    return written


def parquet_options(schema: pa.Schema, image_column: str) -> dict[str, Any]:
    """``ParquetWriter`` options: the image bytes stored plain, every other column as pyarrow's defaults.

    PNG bytes are already deflated: Snappy finds nothing to gain, dictionary encoding hashes
    every image before giving up, and min/max statistics of binary blobs help no reader. Leaving
    the three off made writing 1.5x and reading 5x faster on 384-px images
    (``benchmarks/RESULTS.md``); the files are the same size and any Parquet reader reads them.
    """
    leaves = _leaf_paths(schema)
    plain = f"{image_column}.bytes"
    if plain not in leaves:  # not an Image() struct: nothing to special-case
        return {}
    rest = [p for p in leaves if p != plain]
    return {"compression": {**{p: "snappy" for p in rest}, plain: "none"},
            "use_dictionary": rest, "write_statistics": rest}


def _leaf_paths(schema: pa.Schema) -> list[str]:
    """Parquet's own dotted paths of ``schema``'s leaf columns (``tags.list.element`` for a list).

    Read back from an empty file's metadata, so the names are exactly the ones the writer
    matches its per-column options against (a name that matches nothing would silently get no
    compression).
    """
    buf = pa.BufferOutputStream()
    pq.ParquetWriter(buf, schema).close()  # the footer alone: the schema, no row group
    meta = pq.read_metadata(pa.BufferReader(buf.getvalue()))
    return [meta.schema.column(i).path for i in range(meta.num_columns)]


def _write_split(split: Split, tmp: str, manifest: dict[str, Any], *, image_column: str, protected: bool,
                 marker_info: Mapping[str, Any]) -> Written:
    """Write one split's shards as hidden part files in ``tmp/data`` (renamed by :func:`_finish`)."""
    data_dir = os.path.join(tmp, "data")
    done = _verified_shards(manifest, split.name, data_dir)
    state = manifest["splits"].setdefault(split.name, {})
    state["shards"] = done
    schema: pa.Schema | None = None
    plan: list[int] | int | None = None
    if done:  # resuming: the dead run's schema and shard plan, so the shard cut is the same
        schema = pa.ipc.read_schema(pa.py_buffer(bytes.fromhex(state["schema"])))
        plan = state["plan"]
    result = Written(schema=schema if schema is not None else pa.schema([]),
                     num_rows=sum(s["rows"] for s in done), nbytes=sum(s["nbytes"] for s in done))
    writer: pq.ParquetWriter | None = None
    options: dict[str, Any] | None = None
    part = ""
    # The caller's own copy of the rows, written from the tables in hand: reading the Parquet
    # back (datasets.load_dataset) cost a second pass, 20% of a publish (benchmarks/RESULTS.md).
    copy: pa.ipc.RecordBatchStreamWriter | None = None
    want_copy = split.arrow_copy is not None and not done
    rows_in_shard = shard_nbytes = 0

    def shard_target() -> int:
        index = len(state["shards"])
        if isinstance(plan, list):
            return plan[index] if index < len(plan) else 0
        return int(plan)  # type: ignore[arg-type]

    def close_shard() -> None:
        nonlocal writer
        assert writer is not None
        writer.close()
        writer = None
        _fsync_file(part)
        state["shards"].append({"file": os.path.basename(part), "rows": rows_in_shard, "nbytes": shard_nbytes,
                                "checksum": _checksum(part)})
        _save_manifest(tmp, manifest)
        _target.checkpoint("shard", split=split.name, index=len(state["shards"]) - 1)

    try:
        for table in split.tables(result.num_rows):
            if table.num_rows == 0:
                continue
            require_png(table, image_column, protected=protected)
            if protected:
                table = marked_images(table, image_column, marker_info.get("method"))
            if schema is None:
                schema = result.schema = with_marker(table.schema, marker_info)
                plan = state["plan"] = _plan(split, table)
                state["schema"] = schema.serialize().to_pybytes().hex()
            table = table.replace_schema_metadata(schema.metadata)
            if want_copy:
                if copy is None:
                    copy = pa.ipc.new_stream(split.arrow_copy, schema)
                copy.write_table(table)
            pos = 0
            while pos < table.num_rows:
                if writer is None:
                    part = os.path.join(data_dir, f".{split.name}-{len(state['shards']):05d}.parquet.partial")
                    if options is None:  # once per split: the schema is fixed by then
                        options = parquet_options(schema, image_column)
                    writer = pq.ParquetWriter(part, schema, **options)
                    rows_in_shard = shard_nbytes = 0
                # A size plan estimated from the first batch can fall short: the rest goes in one more shard.
                want = shard_target() or rows_in_shard + table.num_rows - pos
                take = min(table.num_rows - pos, want - rows_in_shard)
                piece = table.slice(pos, take)
                writer.write_table(piece)
                pos += take
                rows_in_shard += take
                shard_nbytes += piece.nbytes
                if rows_in_shard == want:
                    close_shard()
            result.num_rows += table.num_rows
            result.nbytes += table.nbytes
        if writer is not None:
            close_shard()
        if want_copy:
            if copy is None and schema is None and split.empty_schema is not None:
                copy = pa.ipc.new_stream(split.arrow_copy, with_marker(split.empty_schema, marker_info))
            if copy is not None:
                copy.close()
                copy = None
                result.arrow_copy = split.arrow_copy
    except BaseException:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                os.remove(part)
        if copy is not None:
            copy.close()
        if want_copy:
            with contextlib.suppress(OSError):
                os.remove(split.arrow_copy)
        raise
    if schema is None:
        if split.empty_schema is None:
            raise ValueError(f"split {split.name!r} is empty: nothing to publish")
        schema = result.schema = with_marker(split.empty_schema, marker_info)
        part = os.path.join(data_dir, f".{split.name}-00000.parquet.partial")
        pq.write_table(schema.empty_table(), part, **parquet_options(schema, image_column))
        _fsync_file(part)
        state["shards"].append({"file": os.path.basename(part), "rows": 0, "nbytes": 0, "checksum": _checksum(part)})
        state["schema"] = schema.serialize().to_pybytes().hex()
    result.shards = [os.path.join(data_dir, s["file"]) for s in state["shards"]]
    return result


def _finish(name: str, written: Written, entries: list[dict[str, Any]]) -> None:
    """Give a split's part files their Hub names, ``<split>-XXXXX-of-YYYYY.parquet``."""
    n = len(written.shards)
    finals = []
    for i, (part, entry) in enumerate(zip(written.shards, entries)):
        final = os.path.join(os.path.dirname(part), f"{name}-{i:05d}-of-{n:05d}.parquet")
        os.replace(part, final)
        entry["file"] = os.path.basename(final)
        finals.append(final)
    written.shards = finals


def _plan(split: Split, first: pa.Table) -> list[int] | int:
    """Rows per shard: fixed, or balanced from a size target like ``push_to_hub``'s."""
    if split.shard_rows is not None:
        return split.shard_rows
    max_bytes = max(1, split.max_shard_bytes or 500 << 20)
    per_row = first.nbytes / max(1, first.num_rows)
    if split.num_rows is None:
        return max(1, int(max_bytes // max(per_row, 1)))
    total = split.nbytes_hint if split.nbytes_hint is not None else per_row * split.num_rows
    n = max(1, min(split.num_rows, int(math.ceil(total / max_bytes))))
    return [split.num_rows // n + (i < split.num_rows % n) for i in range(n)]


def _verified_shards(manifest: dict[str, Any], name: str, data_dir: str) -> list[dict[str, Any]]:
    """The longest prefix of a dead run's shards whose files still match their manifest entry."""
    entries = manifest["splits"].get(name, {}).get("shards", [])
    good = []
    for e in entries:
        path = os.path.join(data_dir, e["file"])
        try:
            ok = _checksum(path) == e.get("checksum") and pq.ParquetFile(path).metadata.num_rows == e["rows"]
        except (OSError, pa.ArrowInvalid):
            ok = False
        if not ok:
            break
        good.append(e)
    for e in entries[len(good):]:
        with contextlib.suppress(OSError):
            os.remove(os.path.join(data_dir, e["file"]))
    return good


def _save_manifest(tmp: str, manifest: dict[str, Any]) -> None:
    path = os.path.join(tmp, _MANIFEST)
    _write_text(path + ".new", json.dumps(manifest))
    os.replace(path + ".new", path)


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _checksum(path: str) -> str:
    """``crc32:<hex>:<size>`` of a shard: what tells a complete shard of a dead run from a torn one.

    Not a content hash against tampering (the shard is our own file in our own temporary folder)
    but a check of truncated or half-flushed writes, so a CRC is enough: ISA-L's runs at ~35 GB/s,
    where sha256 took 2% of a 384-px publish. zlib's CRC-32 gives the same value where ISA-L is
    not installed.
    """
    from ..core.codecs import _optional

    isal = _optional("isal.isal_zlib")
    crc32 = isal.crc32 if isal is not None else zlib.crc32
    value = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(4 << 20), b""):
            value = crc32(chunk, value)
    return f"crc32:{value:08x}:{os.path.getsize(path)}"
