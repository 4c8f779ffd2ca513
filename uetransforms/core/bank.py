"""The noise bank: the cached, precomputed perturbation a method fits and the kernels apply.

A bank is one Arrow IPC file:

* one row per key (class id, cluster id or sample id) in a ``key`` column,
* one column per named payload tensor (``delta``, ``weight``, ``mask``/``value``, ``coef``,
  ``centroid``...), stored as Arrow fixed-shape tensors so plain ``pyarrow`` reads them,
* a JSON metadata block under the schema key ``uetransforms`` (method, params, kind, keying,
  image shape, library and format version, and the sha256 of everything else).

It is memory-mapped on load and never unpickled, so a 50k-sample bank costs no RAM until rows
are gathered, and a file from an untrusted source cannot run code.

Example:
    >>> import numpy as np, uetransforms as ue
    >>> bank = ue.NoiseBank(method="random", kind="additive", keying="class",
    ...                     keys=np.arange(2), tensors={"delta": np.zeros((2, 3, 4, 4), "float32")},
    ...                     params={"epsilon": 8 / 255, "norm": "linf"})
    >>> bank.num_keys, bank.image_shape
    (2, (3, 4, 4))
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from .errors import BankError

FORMAT_VERSION = 1
META_KEY = b"uetransforms"

#: What a row of the bank is keyed by.
KEYINGS = ("class", "cluster", "sample")

#: Bank files up to this size are read into memory on load; larger ones (sample-wise banks) are
#: memory-mapped. Equal to the apply layer's resident bound (``Applier.RESIDENT_BYTES`` reads it):
#: a bank that small is copied whole onto the device at its first batch anyway, so reading it at
#: load costs no more memory, and then no later change to the file (a bank copied over it, a
#: truncation, which kills a process that maps it with SIGBUS) can reach a running ``Protect``.
IN_MEMORY_BYTES = 64 * 2**20


class DefaultLabel(str):
    """``"label"``, marked as a default: a cluster-keyed bank knows the caller did not name a label
    column, so it assigns clusters itself instead of reading a dataset's classes as cluster ids."""


#: The default ``label_column`` of every adapter (Protect, publish, publish_stream, the CLI's protect).
DEFAULT_LABEL = DefaultLabel("label")


def _library_version() -> str:
    from .version import __version__

    return __version__


class NoiseBank:
    """Precomputed perturbations, one row per key, plus the metadata needed to apply them.

    Args:
        method: registry key of the method that produced it (``"cuda"``, ``"em"``...).
        kind: a registered kind (:func:`uetransforms.core.kinds.kinds`: additive, conv, pixel, synth, convadd); decides the kernel.
        keying: one of :data:`KEYINGS`.
        keys: ``[K]`` int64 for class/cluster keys, or strings for sample keys.
        tensors: name -> ``[K, ...]`` float16/float32/uint8/bool array, row-aligned with ``keys``.
        params: JSON-serialisable parameters (``epsilon``, ``norm``...). Secrets (seed, key)
            may live here: the bank itself is the secret and is never published.
        image_shape: ``(C, H, W)`` the noise was made for. Defaults to the payload's shape.
        info: extra JSON metadata (class names, surrogate identity, default size policy...).
        fit_seconds: how long fitting took (kept on the object only, never hashed or saved: the
            same seed and data must give the same bytes).

    A bank is immutable: it takes its arrays and makes them read-only (pass copies if you still
    need to write to yours); ``tensors``, ``params`` and ``info`` refuse changes, ``keys`` is a
    read-only array, its attributes cannot be set or deleted, and :meth:`replace` returns a new
    bank with some fields changed (its sha256 is computed once and cached: a bank changed
    afterwards would carry a stale digest into caches, pickles and files). It pickles as its path
    and sha256 once saved (the receiver maps the file), and as Arrow IPC bytes before.
    """

    def __init__(
        self,
        *,
        method: str,
        kind: str,
        keying: str,
        keys: Sequence[Any] | np.ndarray,
        tensors: Mapping[str, np.ndarray],
        params: Mapping[str, Any] | None = None,
        image_shape: Sequence[int] | None = None,
        info: Mapping[str, Any] | None = None,
        fit_seconds: float | None = None,
    ) -> None:
        from .kinds import bank_kind

        spec = bank_kind(kind)
        if keying not in KEYINGS:
            raise BankError(f"unknown keying {keying!r}; expected one of {KEYINGS}")
        keys = np.asarray(keys)
        # Checked before the dtype: an empty list is float64 to numpy, which would misreport it.
        if keys.ndim != 1 or len(keys) == 0:
            raise BankError("a bank needs a non-empty 1-D list of keys")
        if keying == "sample":
            keys = keys.astype(str).astype(object)
        else:
            if keys.dtype.kind not in "iu":
                raise BankError(f"{keying} keys must be integers, got dtype {keys.dtype}")
            keys = keys.astype(np.int64)
        if len(set(keys.tolist())) != len(keys):
            raise BankError("bank keys must be unique")
        missing = [t for t in spec.required_tensors if t not in tensors]
        if missing:
            raise BankError(f"a {kind!r} bank needs tensors {missing}")
        payload: dict[str, np.ndarray] = {}
        for name, arr in tensors.items():
            if name == "key":
                raise BankError("'key' is reserved for the key column")
            arr = np.asarray(arr)
            if arr.dtype == np.float64:
                arr = arr.astype(np.float32)
            elif arr.dtype == np.bool_:
                arr = arr.astype(np.uint8)  # Arrow tensors have no bool; masks are stored as 0/1
            if arr.shape[0] != len(keys):
                raise BankError(f"tensor {name!r} has {arr.shape[0]} rows but there are {len(keys)} keys")
            _refuse_non_finite(name, arr)
            # The bank takes the array, read-only: its digest must stay true for its lifetime, and
            # sample-wise payloads are too large to copy defensively.
            arr.flags.writeable = False
            payload[name] = arr
        keys.flags.writeable = False  # a copy made above (astype), so the caller's array stays writeable
        if image_shape is None:
            first = None if spec.shape_tensor is None else payload[spec.shape_tensor]
            if first is None or first.ndim != 4:
                raise BankError(f"image_shape is required for a {kind!r} bank")
            image_shape = first.shape[1:]
        shape = tuple(int(s) for s in image_shape)
        if len(shape) != 3:
            raise BankError(f"image_shape must be (C, H, W), got {shape}")
        # Attributes are set here and by the bank's own I/O only (_set): __setattr__ refuses everyone else.
        _set = object.__setattr__
        _set(self, "tensors", _FrozenDict(payload))
        _set(self, "method", method)
        _set(self, "kind", kind)
        _set(self, "keying", keying)
        _set(self, "keys", keys)
        # Normalised through JSON now, so numpy scalars from a method are stored as plain numbers,
        # an unserialisable value fails here (not at save time), and the object equals its reload.
        _set(self, "params", _frozen(_json_safe(params or {}, "params")))
        _set(self, "info", _frozen(_json_safe(info or {}, "info")))
        _set(self, "image_shape", shape)
        _set(self, "version", _library_version())
        _set(self, "path", None)  # set by save()/load() only: where the bank lives is not its content
        #: Seconds ``ue.fit`` took (not stored in the file: it would make refits differ).
        _set(self, "fit_seconds", None if fit_seconds is None else float(fit_seconds))
        # Caches of values derived from the immutable content, filled on first use.
        _set(self, "_sha256", None)
        _set(self, "_bytes", None)
        _set(self, "_row_index", None)
        _set(self, "_mapped", None)  # (path, stat signature) of the file the payload is mapped from
        _set(self, "_measured", None)

    # Slots, not a __dict__: ``bank.__dict__["method"] = ...`` would bypass __setattr__.
    __slots__ = ("tensors", "method", "kind", "keying", "keys", "params", "info", "image_shape", "version", "path",
                 "fit_seconds", "_sha256", "_bytes", "_row_index", "_mapped", "_measured", "__weakref__")
    tensors: Mapping[str, np.ndarray]
    method: str
    kind: str
    keying: str
    keys: np.ndarray
    params: dict[str, Any]
    info: dict[str, Any]
    image_shape: tuple[int, int, int]
    version: str
    path: str | None
    fit_seconds: float | None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(_immutable_message(name))

    def __delattr__(self, name: str) -> None:
        raise AttributeError(_immutable_message(name))

    def replace(self, **changes: Any) -> NoiseBank:
        """A new bank with some constructor fields changed (``info``, ``params``, ``fit_seconds``...).

        The payload arrays are shared, not copied. The new bank is unsaved (no path).

        Example:
            >>> import numpy as np
            >>> bank = NoiseBank(method="random", kind="additive", keying="class", keys=[0],
            ...                  tensors={"delta": np.zeros((1, 3, 2, 2), "float32")})
            >>> bank.replace(info={"class_names": ["cat"]}).info["class_names"]
            ['cat']
        """
        fields = {
            "method": self.method, "kind": self.kind, "keying": self.keying, "keys": self.keys,
            "tensors": self.tensors, "params": self.params, "image_shape": self.image_shape, "info": self.info,
            "fit_seconds": self.fit_seconds,
        }
        unknown = sorted(set(changes) - set(fields))
        if unknown:
            raise TypeError(f"NoiseBank.replace() got unknown field(s) {unknown}; fields: {sorted(fields)}")
        fields.update(changes)
        new = NoiseBank(**fields)
        if "tensors" not in changes:  # the same mapped arrays: the same file to watch
            object.__setattr__(new, "_mapped", self._mapped)
        return new

    # ------------------------------------------------------------------ properties
    @property
    def num_keys(self) -> int:
        return len(self.keys)

    @property
    def channels(self) -> int:
        return self.image_shape[0]

    @property
    def fitted_without_labels(self) -> bool:
        """Whether the protector used no label column: keyed by an encoder's clusters
        (``keying == "cluster"``), or sample noise made with cluster ids standing in for labels
        (``info["label_agnostic"]``, set by the label-free fit). The one test the card and the
        benchmarks use to keep a label-free bank's numbers apart from a labelled one's.

        Example:
            >>> import numpy as np
            >>> NoiseBank(method="m", kind="additive", keying="class", keys=[0],
            ...           tensors={"delta": np.zeros((1, 3, 2, 2), "float32")}).fitted_without_labels
            False
        """
        return self.keying == "cluster" or bool(self.info.get("label_agnostic"))

    @property
    def epsilon(self) -> float | None:
        eps = self.params.get("epsilon")
        return None if eps is None else float(eps)

    def measure(self) -> dict[str, float]:
        """What the payload does, read from the tensors (not from ``params``), by the bank's kind.

        Additive: ``linf`` (the largest change of any pixel, a fraction of 255) and ``l2`` (the
        largest per-image norm); pixel: ``l0`` (the most pixels one image has edited); conv:
        ``kernel_size``; ``{}`` where the kernel takes its budget from the parameters (synth).
        Computed once (the bank is immutable), a bounded chunk of rows at a time.

        Example:
            >>> import numpy as np
            >>> bank = NoiseBank(method="m", kind="additive", keying="class", keys=[0],
            ...                  tensors={"delta": np.full((1, 3, 2, 2), 8 / 255, "float32")})
            >>> round(bank.measure()["linf"] * 255, 3)
            8.0
        """
        if self._measured is None:
            from .kinds import bank_kind

            fn = bank_kind(self.kind).measure
            object.__setattr__(self, "_measured", _frozen(dict(fn(self)) if fn is not None else {}))
        return self._measured

    @property
    def sha256(self) -> str:
        """Digest of the keys, payload and metadata: identifies the bank in caches and pickles."""
        if self._sha256 is None:
            object.__setattr__(self, "_sha256", _digest(self._meta_core(), self.keys, self.tensors))
        return self._sha256

    def __repr__(self) -> str:
        where = f", path={self.path!r}" if self.path else ""
        return (
            f"NoiseBank(method={self.method!r}, kind={self.kind!r}, keying={self.keying!r}, "
            f"keys={self.num_keys}, image_shape={self.image_shape}{where})"
        )

    # ------------------------------------------------------------------ key lookup
    def rows_for(self, keys: Sequence[Any] | np.ndarray) -> np.ndarray:
        """Row indices for ``keys`` (labels, cluster ids or sample ids); clear error if one is missing."""
        keys = np.asarray(keys)
        if keys.size == 0:  # an empty batch (numpy makes [] float64, which would be refused below)
            return np.empty(0, dtype=np.int64)
        if self.keying == "sample":
            if self._row_index is None:
                object.__setattr__(self, "_row_index", {k: i for i, k in enumerate(self.keys.tolist())})
            rows = np.empty(len(keys), dtype=np.int64)
            for i, k in enumerate(keys.astype(str).tolist()):
                r = self._row_index.get(k)
                if r is None:
                    raise BankError(
                        f"sample id {k!r} is not in this sample-wise bank ({self.num_keys} samples). "
                        "Sample-wise noise exists only for the images it was fitted on: protect the same "
                        "images (same id_column, or unchanged pixels when ids are content hashes), or refit."
                    )
                rows[i] = r
            return rows
        if keys.dtype.kind not in "iub":
            raise BankError(
                f"{self.keying} keys must be integers, got {keys.dtype} values such as {keys.flat[0]!r}; "
                "pass the integer label column (a ClassLabel), not the class names"
            )
        keys = keys.astype(np.int64)
        if self._row_index is None:
            sk = self.keys
            if sk.min() >= 0 and sk.max() < 1_000_000:
                lut = np.full(int(sk.max()) + 1, -1, dtype=np.int64)
                lut[sk] = np.arange(len(sk))
                object.__setattr__(self, "_row_index", lut)
            else:
                object.__setattr__(self, "_row_index", {int(k): i for i, k in enumerate(sk.tolist())})
        idx = self._row_index
        if isinstance(idx, np.ndarray):
            ok = (keys >= 0) & (keys < len(idx))
            rows = np.where(ok, idx[np.clip(keys, 0, len(idx) - 1)], -1)
        else:
            rows = np.array([idx.get(int(k), -1) for k in keys], dtype=np.int64)
        if (rows < 0).any():
            bad = sorted(set(keys[rows < 0].tolist()))[:5]
            raise BankError(
                f"{self.keying} {bad} not in the bank, which holds keys {_describe_keys(self.keys)}. "
                "The bank was fitted on a dataset with other labels: check label_column, or refit the bank "
                "on this dataset."
            )
        return rows

    def gather(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Rows of one payload tensor (a copy; only those pages of a mapped file are read).

        For a memory-mapped bank the file is checked first (one ``stat``): rows of a file that
        was replaced or rewritten since it was loaded would be another bank's noise.
        """
        if self._mapped is not None:
            _check_unchanged(*self._mapped)
        return np.ascontiguousarray(self.tensors[name][np.asarray(rows, dtype=np.int64)])

    # ------------------------------------------------------------------ I/O
    def _meta_core(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "method": self.method,
            "kind": self.kind,
            "keying": self.keying,
            "image_shape": list(self.image_shape),
            "num_keys": self.num_keys,
            "params": self.params,
            "info": self.info,
            "tensors": {n: {"dtype": str(a.dtype), "shape": list(a.shape[1:])} for n, a in self.tensors.items()},
        }

    def metadata(self) -> dict[str, Any]:
        """The JSON block stored in the file (includes the library version and sha256)."""
        meta = self._meta_core()
        meta["library_version"] = self.version
        meta["sha256"] = self.sha256
        return meta

    def to_table(self) -> pa.Table:
        """The bank as an Arrow table (what :meth:`save` writes)."""
        cols: dict[str, pa.Array] = {}
        cols["key"] = pa.array(self.keys.tolist(), type=pa.string()) if self.keying == "sample" else pa.array(self.keys)
        for name, arr in self.tensors.items():
            cols[name] = _tensor_array(arr)
        table = pa.table(cols)
        meta = json.dumps(self.metadata(), sort_keys=True, default=_json_default).encode()
        return table.replace_schema_metadata({META_KEY: meta})

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> str:
        """Write the bank as one Arrow IPC file (atomically, mode 0600) and return its path.

        The file is the secret: whoever holds it can subtract additive noise again. So it is
        readable by its owner only, whatever the umask, and an existing file is not replaced
        unless ``overwrite=True`` (the CLI's ``--overwrite``). It is written to a temporary file
        of its own beside ``path`` (a unique name, so threads or processes saving one path do not
        share one) and moved into place complete; on any failure the temporary file is removed,
        so no stray copy of the secret is left behind.
        """
        path = os.fspath(path)
        if os.path.isdir(path):
            raise IsADirectoryError(
                f"{path!r} is a directory; a bank is saved as one file: pass a file path such as "
                f"{os.path.join(path, 'name.bank.arrow')!r}"
            )
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"cannot save the bank to {path!r}: the folder {folder!r} does not exist; create it first "
                "(os.makedirs(folder)) or save elsewhere"
            )
        if not overwrite and os.path.lexists(path):
            raise FileExistsError(_exists_message(path))
        table = self.to_table()
        # mkstemp: a fresh name (O_EXCL) and mode 0600 whatever the umask; chmod-ed again in case
        # the file system ignores the creation mode.
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
        try:
            try:
                if hasattr(os, "fchmod"):
                    os.fchmod(fd, 0o600)
                with open(fd, "wb", closefd=False) as f:
                    with pa.ipc.new_file(f, table.schema) as writer:
                        writer.write_table(table, max_chunksize=max(1, table.num_rows))
                    f.flush()
                    os.fsync(fd)
            finally:
                os.close(fd)
            if overwrite:
                os.replace(tmp, path)
            else:
                # link() refuses an existing name atomically: a bank saved meanwhile is not replaced either.
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise FileExistsError(_exists_message(path)) from None
                except OSError:  # no hard links here (some network/Windows file systems)
                    os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
            raise
        with contextlib.suppress(FileNotFoundError):  # linked: the temporary name goes
            os.remove(tmp)
        object.__setattr__(self, "path", os.path.abspath(path))
        return path

    def to_bytes(self) -> bytes:
        """The bank as Arrow IPC bytes (used to pickle an unsaved bank without pickling arrays)."""
        if self._bytes is None:  # the bank is immutable, so its bytes are made once
            table = self.to_table()
            sink = pa.BufferOutputStream()
            with pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table, max_chunksize=max(1, table.num_rows))
            object.__setattr__(self, "_bytes", sink.getvalue().to_pybytes())
        return self._bytes

    @classmethod
    def load(cls, path: str | os.PathLike, *, verify: bool = True, expect_sha256: str | None = None) -> NoiseBank:
        """Read a bank file and check format version, shapes, finite values and (``verify``) its sha256.

        A bank whose payload is at most :data:`IN_MEMORY_BYTES` is read into memory, so no later
        change to the file reaches it; a larger one (sample-wise) is memory-mapped, and every
        :meth:`gather` first checks that the file is still the one loaded (a bank copied over it,
        or a truncation, is refused with a :class:`BankError` instead of applied). A file that
        others may read is loaded with a warning: a bank is a secret key.

        Example:
            >>> bank = NoiseBank.load("cifar10-cuda.bank.arrow")  # doctest: +SKIP
        """
        path = os.fspath(path)
        bank = cls._load(path, verify=verify, expect_sha256=expect_sha256)
        _warn_if_shared(path)
        return bank

    @classmethod
    def _load(cls, path: str, *, verify: bool | None, expect_sha256: str | None) -> NoiseBank:
        """``verify=None``: the full digest for a bank read into memory, the stored one for a mapped one."""
        if not os.path.exists(path):
            raise FileNotFoundError(f"no bank file at {path!r}")
        if os.path.isdir(path):
            raise BankError(f"{path!r} is a directory, not a bank file: pass the .arrow file `fit` or "
                            "NoiseBank.save() wrote")
        try:
            mapped = pa.memory_map(path, "r")
            before = os.fstat(mapped.fileno())
            table = pa.ipc.open_file(mapped).read_all()
            payload = sum(col.nbytes for name, col in zip(table.column_names, table.columns) if name != "key")
            if payload <= IN_MEMORY_BYTES:
                # Small: one copy into memory, then the map is closed and nothing refers to the file.
                data = pa.py_buffer(mapped.read_at(before.st_size, 0))
                table = pa.ipc.open_file(pa.BufferReader(data)).read_all()
                mapped.close()
                signature = None
            else:
                signature = (os.path.abspath(path), _signature(before))
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as err:
            raise BankError(
                f"{path!r} is not a readable uetransforms bank (Arrow IPC file): {err}. "
                "It may be truncated or not a bank at all; re-save it with NoiseBank.save()."
            ) from err
        if verify is None:
            verify = signature is None
        bank = cls._from_table(table, verify=verify, where=path, expect_sha256=expect_sha256)
        object.__setattr__(bank, "path", os.path.abspath(path))
        object.__setattr__(bank, "_mapped", signature)
        return bank

    @classmethod
    def from_bytes(cls, data: bytes, *, verify: bool = True) -> NoiseBank:
        try:
            table = pa.ipc.open_file(pa.BufferReader(data)).read_all()
        except (pa.ArrowInvalid, OSError) as err:
            raise BankError(f"bytes are not a uetransforms bank: {err}") from err
        return cls._from_table(table, verify=verify, where="<bytes>")

    @classmethod
    def _from_table(cls, table: pa.Table, *, verify: bool, where: str, expect_sha256: str | None = None) -> NoiseBank:
        raw = (table.schema.metadata or {}).get(META_KEY)
        if raw is None:
            raise BankError(f"{where}: Arrow file without '{META_KEY.decode()}' metadata: not a uetransforms bank")
        try:
            meta = json.loads(raw)
        except json.JSONDecodeError as err:
            raise BankError(f"{where}: bank metadata is not valid JSON ({err}); the file was altered") from err
        version = meta.get("format_version")
        if not isinstance(version, int):
            raise BankError(f"{where}: bank metadata has no format_version")
        if version > FORMAT_VERSION:
            raise BankError(
                f"{where}: bank format version {version} is newer than this library reads ({FORMAT_VERSION}); "
                f"it was written by uetransforms {meta.get('library_version')}: upgrade with "
                "`pip install -U uetransforms`"
            )
        if table.num_rows != meta.get("num_keys"):
            raise BankError(f"{where}: {table.num_rows} rows but metadata says {meta.get('num_keys')}; file altered")
        if "key" not in table.column_names:
            raise BankError(f"{where}: no 'key' column")
        keys_col = table.column("key").combine_chunks()
        keys = np.array(keys_col.to_pylist(), dtype=object) if meta["keying"] == "sample" else keys_col.to_numpy()
        tensors: dict[str, np.ndarray] = {}
        for name, spec in meta.get("tensors", {}).items():
            if name not in table.column_names:
                raise BankError(f"{where}: tensor column {name!r} listed in metadata is missing")
            arr = _tensor_numpy(table.column(name))
            if list(arr.shape[1:]) != list(spec["shape"]) or str(arr.dtype) != spec["dtype"]:
                raise BankError(
                    f"{where}: tensor {name!r} is {arr.dtype}{list(arr.shape[1:])}, metadata says "
                    f"{spec['dtype']}{spec['shape']}; file altered"
                )
            tensors[name] = arr
        try:
            bank = cls(
                method=meta["method"],
                kind=meta["kind"],
                keying=meta["keying"],
                keys=keys,
                tensors=tensors,
                params=meta.get("params"),
                image_shape=meta["image_shape"],
                info=meta.get("info"),
            )
        except KeyError as err:
            raise BankError(f"{where}: bank metadata lacks {err}") from err
        object.__setattr__(bank, "version", meta.get("library_version", "?"))
        stored = meta.get("sha256")
        if expect_sha256 is not None and stored != expect_sha256:
            raise BankError(
                f"{where}: bank changed since this transform was made (sha256 {str(stored)[:12]}..., expected "
                f"{expect_sha256[:12]}...); rebuild Protect with the new bank"
            )
        if verify:
            actual = _digest(bank._meta_core(), bank.keys, bank.tensors)
            if actual != stored:
                raise BankError(
                    f"{where}: sha256 mismatch (stored {str(stored)[:12]}..., computed {actual[:12]}...): the bank "
                    "was tampered with or corrupted. Restore it from your backup or refit it."
                )
            object.__setattr__(bank, "_sha256", actual)
        else:
            object.__setattr__(bank, "_sha256", stored)
        return bank

    def __reduce__(self):  # cheap, pickle-free of arrays: a path + digest, or Arrow bytes
        if self._mapped is not None:
            # A mapped file rewritten since it was loaded must not reach workers under this digest.
            _check_unchanged(*self._mapped)
        if self.path is not None and os.path.exists(self.path):
            return (_load_expect, (self.path, self.sha256))
        # fit_seconds does not travel: it would make the pickle (and datasets' fingerprint of a
        # Protect holding the bank) differ between two fits of the same bank.
        return (_from_bytes, (self.to_bytes(),))


_IMMUTABLE = "a NoiseBank is immutable after it is made; build a changed copy with bank.replace(...)"


def _immutable_message(name: str) -> str:
    if name == "path":
        return f"cannot set NoiseBank.path: {_IMMUTABLE}, and give it a path with bank.save(path)"
    return f"cannot set or delete NoiseBank.{name}: {_IMMUTABLE}"


class _Frozen:
    """Refuses changes (a bank's ``tensors``/``params``/``info`` and what they contain)."""

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(_IMMUTABLE)

    def __reduce__(self):
        return (_frozen, (_thaw(self),))

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: dict) -> Any:
        return self


class _FrozenDict(_Frozen, dict):
    __setitem__ = __delitem__ = __ior__ = _Frozen._refuse  # type: ignore[assignment]
    clear = pop = popitem = setdefault = update = _Frozen._refuse  # type: ignore[assignment]


class _FrozenList(_Frozen, list):
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _Frozen._refuse  # type: ignore[assignment]
    append = extend = insert = pop = remove = clear = sort = reverse = _Frozen._refuse  # type: ignore[assignment]


def _frozen(value: Any) -> Any:
    if isinstance(value, dict):
        out = _FrozenDict()
        for k, v in value.items():
            dict.__setitem__(out, k, _frozen(v))
        return out
    if isinstance(value, list):
        return _FrozenList(_frozen(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    """A plain, mutable deep copy of frozen metadata (``dict(bank.params)`` is shallow)."""
    if isinstance(value, dict):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_thaw(v) for v in value]
    return value


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _json_safe(value: Mapping[str, Any], what: str) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(dict(value), default=_json_default))
    except (TypeError, ValueError) as err:
        raise BankError(f"bank {what} must be JSON-serialisable (numbers, strings, lists, dicts): {err}") from err


def _load_expect(path: str, sha256: str) -> NoiseBank:
    """Unpickle a saved bank: the file must still hold the bank that was pickled, checked in full.

    The full digest, not just the stored one: a bank copied over ``path`` (or edited in place)
    after the sender loaded it would otherwise give a ``num_proc`` worker other noise than the
    parent's ``bank.sha256`` names. A refusal here must not raise: an exception while unpickling
    kills a ``multiprocessing`` worker with no message ("One of the subprocesses has abruptly
    died"), so the worker gets a :class:`_RefusedBank` that raises the error at first use, inside
    the map function, where ``datasets`` reports it.
    """
    try:
        # In full for a bank read into memory (at most IN_MEMORY_BYTES: ~0.2 s, usually ms); a
        # large mapped one is checked against its stored digest here (hashing 117 MiB took 0.3 s
        # per worker), and every later gather checks the file is unchanged.
        return NoiseBank._load(path, verify=None, expect_sha256=sha256)
    except (BankError, OSError) as err:
        if isinstance(err, BankError) and "sha256 mismatch" in str(err):
            err = BankError(f"{path}: the bank file changed since this transform was made (its content no longer "
                            f"has sha256 {sha256[:12]}...); rebuild Protect with the new bank")
        return _RefusedBank(err)


class _RefusedBank(NoiseBank):
    """What an unpickled bank reference becomes when its file no longer holds that bank.

    A ``NoiseBank`` by type (so adapters unpickle), but any use raises the refusal.
    """

    __slots__ = ("_error",)

    def __init__(self, error: BaseException) -> None:  # noqa: D107 - no NoiseBank.__init__: nothing to build
        object.__setattr__(self, "_error", error)

    def __getattribute__(self, name: str) -> Any:
        if name in ("_error", "__class__") or (name.startswith("__") and name.endswith("__") and name != "__reduce__"):
            return object.__getattribute__(self, name)
        raise object.__getattribute__(self, "_error")

    def __repr__(self) -> str:
        return f"<refused NoiseBank: {object.__getattribute__(self, '_error')}>"


#: Unsigned view, all bits but the sign, and the exponent-all-ones threshold (NaN/inf) per float size.
_FLOAT_BITS = {2: (np.uint16, 0x7FFF, 0x7C00), 4: (np.uint32, 0x7FFFFFFF, 0x7F800000),
               8: (np.uint64, 0x7FFFFFFFFFFFFFFF, 0x7FF0000000000000)}


def _refuse_non_finite(name: str, arr: np.ndarray) -> None:
    """A NaN or infinity in a payload tensor would turn pixels into 0 (a cast of NaN): refuse it.

    Read as bits (the exponent all ones), chunk by chunk: ``np.isfinite`` on a 117 MiB float16
    sample-wise bank took 470 ms here, this about 55 ms, with memory bounded by the chunk.
    """
    if arr.dtype.kind != "f" or arr.size == 0:
        return
    uint, magnitude, limit = _FLOAT_BITS[arr.itemsize]
    bits = np.ascontiguousarray(arr).reshape(-1).view(uint)
    per_row = max(1, arr.size // len(arr))
    buf = np.empty(min(bits.size, 1 << 22), dtype=uint)
    for start in range(0, bits.size, buf.size):
        chunk = bits[start:start + buf.size]
        out = buf[:chunk.size]
        np.bitwise_and(chunk, magnitude, out=out)
        if out.max() >= limit:
            first = start + int(np.argmax(out >= limit))
            raise BankError(
                f"tensor {name!r} holds non-finite values (NaN or infinity), first in row {first // per_row}: "
                "applied, they would turn pixels into 0. Fix what made it (clip or np.nan_to_num its output) "
                "or refit the bank."
            )


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _check_unchanged(path: str, signature: tuple[int, int, int, int]) -> None:
    try:
        now = _signature(os.stat(path))
    except OSError as err:
        now = None
        reason = f"it can no longer be read ({err.strerror})"
    else:
        reason = "it was replaced or rewritten"
    if now != signature:
        raise BankError(
            f"{path}: the memory-mapped bank file changed while in use ({reason}): its rows would be another "
            "bank's noise. Keep a bank file unchanged while it is used; load it again (and rebuild Protect) "
            "to use the new one."
        )


def _warn_if_shared(path: str) -> None:
    """A bank file that other users may read is a leaked key waiting to happen: say so."""
    if os.name != "posix":
        return
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return
    if mode & 0o077:
        warnings.warn(
            f"bank file {path!r} has mode {mode:04o}: others may read it, and a bank is a secret key "
            f"(whoever holds it can remove additive noise). Restrict it with `chmod 600 {path}` "
            "(NoiseBank.save writes 0600).",
            UserWarning, stacklevel=3,
        )


def _from_bytes(data: bytes) -> NoiseBank:
    bank = NoiseBank.from_bytes(data, verify=False)  # made by to_bytes in this library: no re-hash
    object.__setattr__(bank, "_bytes", data)
    return bank


def _describe_keys(keys: np.ndarray) -> str:
    vals = keys.tolist()
    if len(vals) > 1 and vals == list(range(vals[0], vals[0] + len(vals))):
        return f"{vals[0]}..{vals[-1]}"
    return str(vals[:10]) + ("..." if len(vals) > 10 else "")


def _tensor_array(arr: np.ndarray) -> pa.Array:
    arr = np.ascontiguousarray(arr)
    value_type = pa.from_numpy_dtype(arr.dtype)
    shape = list(arr.shape[1:]) or [1]
    flat = pa.array(arr.reshape(-1))
    storage = pa.FixedSizeListArray.from_arrays(flat, int(np.prod(shape)))
    return pa.ExtensionArray.from_storage(pa.fixed_shape_tensor(value_type, shape), storage)


def _tensor_numpy(col: pa.ChunkedArray) -> np.ndarray:
    # One chunk (what save() writes) maps zero-copy; several chunks must be concatenated.
    chunk = col.chunks[0] if col.num_chunks == 1 else col.combine_chunks()
    if not isinstance(chunk.type, pa.FixedShapeTensorType):
        raise BankError(f"column of type {chunk.type} is not a fixed-shape tensor column")
    return chunk.to_numpy_ndarray()


def _digest(meta: dict[str, Any], keys: np.ndarray, tensors: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(meta, sort_keys=True, default=_json_default).encode())
    h.update("\x00".join(map(str, keys.tolist())).encode())
    for name in sorted(tensors):
        arr = tensors[name]
        h.update(name.encode())
        h.update(memoryview(np.ascontiguousarray(arr)).cast("B"))
    return h.hexdigest()


def _exists_message(path: str) -> str:
    return (f"{path!r} exists; a bank is a secret key, so it is not replaced unless you pass overwrite=True "
            "(--overwrite on the command line)")
