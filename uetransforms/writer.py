"""The one writer behind ``publish`` and ``publish_stream``: batches in, a Hub-layout folder out, atomically.

Both front doors hand it *splits*, each a source of batches (an in-memory ``Dataset`` is read as a
stream of Arrow batches, so a big dataset never has a second copy in memory), and it writes::

    <dir>/README.md                               the card (uetransforms.card)
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
import errno
import hashlib
import json
import math
import os
import shutil
import sys
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import PublishConflict  # defined there; importable from here as before

if TYPE_CHECKING:  # pragma: no cover
    from .protect import Protect

#: Non-secret text that marks what uetransforms wrote as protected: the card's
#: ``dataset_info.description`` (which ``datasets.load_dataset`` keeps in ``ds.info.description``)
#: and the Parquet schema metadata under :data:`SCHEMA_KEY`. Publishing refuses marked input
#: unless told it is protected (``protected=True``) or that protecting twice is meant.
MARKER = "protected by uetransforms"
SCHEMA_KEY = b"uetransforms"

_TMP, _OLD, _LOCK = ".uetransforms-tmp", ".uetransforms-old", ".uetransforms-lock"
_MANIFEST = ".uetransforms-manifest.json"
_CARD = "README.md"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def checkpoint(event: str, **info: Any) -> None:
    """Called at each commit point of a publish; does nothing.

    Events: ``"shard"`` (a shard file is complete; ``split``, ``index``), ``"card"`` (the card is
    written, nothing is in place yet), ``"swapped"`` (the new copy is in place, the old one not
    yet deleted), ``"swap"`` (two-rename fallback only: the old copy is aside, the new one not
    yet in). The fault tests replace it to kill or fail the process at an exact point.
    """


# ---------------------------------------------------------------------------- splits
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


def output_features(features: Any, image_column: str) -> Any:
    """The written features: the input's, with the image column as a (PNG) ``datasets.Image()``."""
    import datasets

    feats = datasets.Features(features.copy())
    feats[image_column] = datasets.Image()
    return feats


# ---------------------------------------------------------------------------- sources
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
        for i in range(start, len(ds), batch_size):
            table = arrow[i:i + batch_size]
            if protect is not None:
                # Only the columns Protect reads become Python objects; the rest stay Arrow.
                wanted = {image_column, protect.label_column, protect.id_column} & set(table.column_names)
                batch = {name: _pylist(table.column(name), name == image_column) for name in wanted}
                # Protect's own PNG bytes (the codec module's encoder), the very bytes Dataset.map stores.
                png = protect.encoded(batch)
                images = pa.StructArray.from_arrays([pa.array(png, pa.binary()), pa.nulls(len(png), pa.string())],
                                                    fields=list(schema.field(image_column).type))
                table = table.set_column(table.schema.get_field_index(image_column), schema.field(image_column),
                                         images)
            yield pa.Table.from_arrays(table.columns, schema=schema)

    return tables


def _pylist(column: pa.ChunkedArray, is_image: bool) -> list[Any]:
    """A column as Python values; an Image() column whose rows all hold bytes as the bytes alone."""
    from .images import encoded_bytes

    raw = encoded_bytes(column) if is_image else None
    return column.to_pylist() if raw is None else raw


def stream_tables(stream: Any, protect: Protect | None, image_column: str,
                  batch_size: int) -> Callable[[int], Iterator[pa.Table]]:
    """A stream (``IterableDataset``, iterable of row dicts) as a stream of output tables.

    The written schema is the stream's features (or, untyped, those of the first protected
    batch) with the image column as ``Image()``: Protect's PNG bytes (the codec module's encoder),
    or for an already protected stream its records as they are and decoded images re-encoded
    by the same encoder.
    """
    from .streaming import iter_batches

    features = getattr(stream, "features", None)

    def tables(start: int) -> Iterator[pa.Table]:
        if start:  # pragma: no cover - streams carry no fingerprint, so the writer never resumes them
            raise ValueError("a stream cannot be resumed")
        out_features = schema = None
        for batch in iter_batches(stream, batch_size):
            if image_column not in batch:
                raise KeyError(f"image_column={image_column!r} is not in the stream (columns: {list(batch)}); "
                               "pass image_column=<name>")
            if protect is not None:
                out = {**batch, image_column: [{"bytes": b, "path": None} for b in protect.encoded(batch)]}
            else:
                # Already protected: decoded images are re-encoded by the codec module, which gives
                # the bytes they were written with (same pixels, same encoder); records are kept.
                out = {**batch, image_column: _png_records(batch[image_column])}
            if out_features is None:
                out_features = _stream_features(features, out, image_column)
                schema = out_features.arrow_schema
            encoded = out_features.encode_batch({k: out[k] for k in out_features})
            yield pa.Table.from_pydict(encoded, schema=schema)

    return tables


def _png_records(images: Any) -> list[Any]:
    from .codecs import decode, encode_png

    return [im if isinstance(im, dict) and im.get("bytes") is not None
            else {"bytes": encode_png(decode(im).transpose(1, 2, 0)), "path": None} for im in images]


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


# ---------------------------------------------------------------------------- double protection
def refuse_double(data: Any, image_column: str, *, where: str) -> None:
    """Refuse to protect ``data`` when what it says of itself shows it is already protected."""
    info = getattr(data, "info", None)
    text = " ".join(str(getattr(info, k, "") or "") for k in ("description", "citation"))
    if MARKER in text:
        raise_double(f"{where}: its dataset info says {MARKER!r} (it was loaded from a uetransforms publish)")


def refuse_marked(ds: Any, image_column: str, *, where: str, batch_size: int = 4096) -> None:
    """Refuse an in-memory dataset any of whose images carries the protection marker (bytes only, no decode)."""
    arrow = ds.with_format("arrow")
    for i in range(0, len(ds), batch_size):
        _refuse_marked_bytes(arrow[i:i + batch_size].column(image_column).to_pylist(), f"{where}, rows from {i}")


def _refuse_marked_bytes(values: Any, where: str) -> None:
    """Refuse images that carry the codec's non-secret protection marker (PNG bytes, records, PIL)."""
    from .codecs import is_marked

    if any(is_marked(v) for v in values):
        raise_double(f"{where}: its images carry the uetransforms protection marker")


def raise_double(why: str) -> None:
    from .errors import DoubleProtectionError

    raise DoubleProtectionError(
        f"this data is already protected ({why}); protecting it again would add the noise a second time. "
        "If it was protected with this bank, publish it as it is with protected=True; if you really mean to "
        "protect it twice, pass allow_double=True."
    )


# ---------------------------------------------------------------------------- target
class Target:
    """The output directory and its clearly named siblings: the temporary copy and (fallback) the old one."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        path = os.path.abspath(os.fspath(out_dir))
        self.parent, self.name = os.path.split(path)
        if not self.name:
            raise ValueError(f"cannot publish into the root directory {out_dir!r}; name a folder")
        self.path = path
        self.tmp = os.path.join(self.parent, f".{self.name}{_TMP}")
        self.old = os.path.join(self.parent, f".{self.name}{_OLD}")
        self._lock_fd: int | None = None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Own the temporary copy: a lock file inside it, so a killed run leaves nothing else behind."""
        os.makedirs(self.parent, exist_ok=True)
        self._acquire()
        try:
            yield
        finally:
            self._release()

    def _acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory lock; one publish per target is on you
            os.makedirs(self.tmp, exist_ok=True)
            return
        lock = os.path.join(self.tmp, _LOCK)
        for _ in range(100):
            os.makedirs(self.tmp, exist_ok=True)
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
            except FileNotFoundError:  # the directory was just moved into place by the holder: try again
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise PublishConflict(
                    f"another publish is writing {self.path!r} right now (it holds {self.tmp!r}); "
                    "wait for it to finish, or choose another output directory"
                ) from None
            # The holder may have moved its copy into place after we opened the file: then our lock
            # is on a file that is no longer ``lock``. Retry until path and descriptor agree.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(lock))
            except FileNotFoundError:
                same = False
            if same:
                self._lock_fd = fd
                return
            os.close(fd)
        raise PublishConflict(f"could not lock {self.tmp!r}: other publishes keep replacing it")

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def recover(self) -> str | None:
        """Finish what a dead run left (lock held): put an old copy back, drop a swapped-out one.

        Only the two-rename fallback of :meth:`commit` can leave an old copy. Returns a sentence
        saying what was done, or ``None``.
        """
        if not os.path.lexists(self.old):
            return None
        if os.path.lexists(self.path):
            # The swap completed; only deleting the old copy was cut short.
            shutil.rmtree(self.old, ignore_errors=True)
            return f"removed {self.old!r}, the previous copy left by an overwrite that had completed"
        # Killed between the two renames: the previous copy is the state to restore.
        os.rename(self.old, self.path)
        _fsync_dir(self.parent)
        return f"restored {self.path!r} from {self.old!r}: an earlier overwrite was interrupted mid-swap"

    def check(self, overwrite: bool) -> bool:
        """Refuse what must not be replaced; return whether an existing copy will be replaced."""
        if os.path.lexists(self.path) and not os.path.isdir(self.path):
            raise FileExistsError(f"{self.path!r} is a file; publish writes a directory (README.md + data/)")
        if not (os.path.isdir(self.path) and os.listdir(self.path)):
            return False
        if not overwrite:
            raise FileExistsError(
                f"output directory {self.path!r} is not empty; choose a new directory or pass overwrite=True "
                "(--overwrite on the command line), which replaces its README.md and data/*-of-*.parquet shards"
            )
        banks = find_banks(self.path)
        if banks:
            raise ValueError(
                f"{banks[0]!r} looks like a noise bank (the secret key) inside the output directory {self.path!r}, "
                "which is meant to be published or uploaded whole; move the bank out of it first"
            )
        return True

    def begin(self, fingerprint: str | None) -> dict[str, Any]:
        """Prepare the temporary copy; returns the resumable manifest (empty unless resuming)."""
        manifest: dict[str, Any] = {}
        if fingerprint is not None:
            with contextlib.suppress(OSError, ValueError):
                with open(os.path.join(self.tmp, _MANIFEST), encoding="utf-8") as f:
                    old = json.load(f)
                if old.get("fingerprint") == fingerprint:
                    manifest = old
        if not manifest:
            self.clear()
            manifest = {"fingerprint": fingerprint, "splits": {}}
        os.makedirs(os.path.join(self.tmp, "data"), exist_ok=True)
        return manifest

    def clear(self) -> None:
        """Empty the temporary copy (a dead run's leftovers, or our own after a failure), keeping the lock."""
        for entry in os.listdir(self.tmp):
            path = os.path.join(self.tmp, entry)
            if entry == _LOCK:
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)

    def discard(self) -> None:
        """Remove the temporary copy altogether (lock file included: we are leaving)."""
        shutil.rmtree(self.tmp, ignore_errors=True)

    def carry_foreign(self, overwriting: bool) -> None:
        """Hard-link (or copy) into the temporary copy what ``<dir>`` holds that publish did not write."""
        if not overwriting:
            return
        for root, dirs, files in os.walk(self.path):
            rel = os.path.relpath(root, self.path)
            for d in dirs:
                os.makedirs(os.path.join(self.tmp, rel, d), exist_ok=True)
            for name in files:
                relpath = os.path.normpath(os.path.join(rel, name))
                if _is_ours(relpath):
                    continue
                src, dst = os.path.join(root, name), os.path.join(self.tmp, relpath)
                if os.path.islink(src):
                    os.symlink(os.readlink(src), dst)
                    continue
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copy2(src, dst)

    def commit(self, overwriting: bool) -> None:
        """Move the complete temporary copy into place.

        Where the OS can exchange two directories atomically (Linux ``renameat2``), ``<dir>`` is
        never missing: the old copy lands in the temporary name and is deleted. Elsewhere it is two
        renames with the old copy aside in between (see :meth:`recover`).
        """
        _fsync_tree(self.tmp)
        lock = os.path.join(self.path, _LOCK)
        if os.path.isdir(self.path) and _exchange(self.tmp, self.path):
            _fsync_dir(self.parent)
            with contextlib.suppress(FileNotFoundError):
                os.remove(lock)
            # The previous copy (or the empty directory that was there) now has the temporary name;
            # moved aside first so the name is free at once, then deleted (recover() drops it if killed).
            os.rename(self.tmp, self.old)
            checkpoint("swapped", path=self.path)
            shutil.rmtree(self.old)
            return
        if overwriting:
            os.rename(self.path, self.old)
            checkpoint("swap", path=self.path)
            os.rename(self.tmp, self.path)
            _fsync_dir(self.parent)
            with contextlib.suppress(FileNotFoundError):
                os.remove(lock)
            shutil.rmtree(self.old)
            return
        if os.path.isdir(self.path):
            os.rmdir(self.path)  # empty (checked)
        os.rename(self.tmp, self.path)
        _fsync_dir(self.parent)
        with contextlib.suppress(FileNotFoundError):
            os.remove(lock)


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two directories (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # glibc < 2.28, musl
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):  # kernel or file system says no
        return False
    raise OSError(err, os.strerror(err), b)


def _is_ours(relpath: str) -> bool:
    """The files a publish writes (and an overwrite replaces): the card, the shard sets."""
    parts = relpath.split(os.sep)
    if parts in ([_CARD], [_LOCK]):
        return True
    return len(parts) == 2 and parts[0] == "data" and parts[1].endswith(".parquet") and "-of-" in parts[1]


def find_banks(root: str) -> list[str]:
    """Files under ``root`` that are (or are named like) uetransforms noise banks."""
    from .bank import META_KEY

    found = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in files:
            path = os.path.join(dirpath, name)
            if name.endswith(".bank.arrow"):
                found.append(path)
                continue
            try:
                with open(path, "rb") as f:
                    if f.read(6) != b"ARROW1":
                        continue
                schema = pa.ipc.open_file(pa.memory_map(path, "r")).schema
            except (OSError, pa.ArrowInvalid):
                continue
            if META_KEY in (schema.metadata or {}):
                found.append(path)
    return sorted(found)


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
            checkpoint("card", path=target.path)
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
        checkpoint("shard", split=split.name, index=len(state["shards"]) - 1)

    try:
        for table in split.tables(result.num_rows):
            if table.num_rows == 0:
                continue
            require_png(table, image_column, protected=protected)
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
    from .codecs import _optional

    isal = _optional("isal.isal_zlib")
    crc32 = isal.crc32 if isal is not None else zlib.crc32
    value = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(4 << 20), b""):
            value = crc32(chunk, value)
    return f"crc32:{value:08x}:{os.path.getsize(path)}"


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    # Makes the renames durable; not every platform lets a directory be opened (Windows).
    with contextlib.suppress(OSError):
        _fsync_file(path)


def _fsync_tree(root: str) -> None:
    for dirpath, _, _ in os.walk(root):
        _fsync_dir(dirpath)
