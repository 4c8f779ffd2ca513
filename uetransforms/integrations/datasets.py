"""``Protect``: the callable for ``datasets.Dataset.map`` (and ``set_transform``, ``IterableDataset.map``,
Ray Data ``map_batches``).

It decodes the batch's images and hands them, with their labels or ids, to the one apply entry
(:meth:`uetransforms.core.apply.Applier.protect`), which looks up each image's bank row, batches the
images by size and runs the kernel. What ``Protect`` keeps is ``datasets``' conventions: in
``Dataset.map`` an ``Image()`` column gets PNG records (``{"bytes": png, "path": "IMG_1.jpg"}``:
the column keeps its type, ``datasets`` never re-encodes, and the path keeps the source file's
name without its folder, see :func:`png_records`), ``set_transform`` and streamed maps get PIL
images (nothing re-decodes them), array-formatted batches get arrays. Every other column, the
row count and the row order are left to ``datasets``, which keeps them.

It pickles as (bank path, sha256, options, library version) -- the bank pickles itself so --
so ``datasets`` fingerprints it in microseconds, caches the second identical ``map``, and
``num_proc`` workers map the bank file themselves instead of receiving a copy.

Example:
    >>> import datasets, numpy as np, uetransforms as ue
    >>> ds = datasets.Dataset.from_dict({"image": list(np.zeros((4, 8, 8, 3), np.uint8)), "label": [0, 1, 0, 1]},
    ...                                  features=datasets.Features({"image": datasets.Image(),
    ...                                                              "label": datasets.ClassLabel(num_classes=2)}))
    >>> bank = ue.fit("random", ds, seed=0)
    >>> prot = ds.map(ue.Protect(bank), batched=True, batch_size=2)
    >>> prot.column_names, len(prot), prot.features["image"]
    (['image', 'label'], 4, Image(mode=None, decode=True))
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..core.bank import DEFAULT_LABEL, BankError, DefaultLabel, NoiseBank
from ..core.codecs import (check_png_options, encode_png, encode_png_batch, is_marked, map_slices, map_threads,
                           mark_pil, source_name)
from ..core.errors import DoubleProtectionError
from ..core.errors import ImageModeError
from ..core.images import encoded_bytes, from_chw, to_chw
from ..core.apply import Applier, chunk_views, in_row_order
from ..models.assign import ClusterAssigner

# The pid that imported this module. A worker forked by `datasets` (num_proc) inherits it; there,
# torch's OpenMP pool from the parent is unusable (a forked child has its state, not its threads).
_IMPORT_PID = os.getpid()


def _default_threads() -> int:
    """Threads when the caller names none: torch's intra-op setting, so one knob covers both.

    ``torch.set_num_threads(1)`` (and every forked ``num_proc`` worker, see ``__setstate__``)
    keeps everything serial; by default the slices use the cores torch would use for kernels.
    """
    return torch.get_num_threads()


_TORCH_LOCK = threading.Lock()
_torch_holders = 0  # batches whose slices are running now
_torch_before = 1   # torch's setting when the first of them started


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Torch at one intra-op thread while a batch's slices run on their own threads; restored after.

    Each slice already has a core, and torch's threads inside the slices only contended for
    them: a 32-px ``map(Protect)`` on 2 cores took 0.49x the identity map's time with torch's 2
    threads in 2 slices and 0.26x with 1 (``benchmarks/RESULTS.md``). Nested or concurrent
    holders share one save/restore.
    """
    global _torch_holders, _torch_before
    with _TORCH_LOCK:
        if _torch_holders == 0:
            _torch_before = torch.get_num_threads()
            if _torch_before != 1:
                torch.set_num_threads(1)
        _torch_holders += 1
    try:
        yield
    finally:
        with _TORCH_LOCK:
            _torch_holders -= 1
            if _torch_holders == 0 and _torch_before != 1:
                torch.set_num_threads(_torch_before)


def _bank_ref(bank: NoiseBank | str | os.PathLike) -> NoiseBank:
    if isinstance(bank, NoiseBank):
        return bank
    if isinstance(bank, (str, os.PathLike)):
        return NoiseBank.load(bank)
    raise TypeError(f"expected a NoiseBank or a bank file path, got {type(bank).__name__}")


def png_bytes(chw: np.ndarray, method: str | None = None) -> bytes:
    """PNG bytes of protected ``[C, H, W]`` pixels as the adapters store them: the codec module's
    encoder, with the "protected by uetransforms" marker (:func:`uetransforms.core.codecs.mark`).

    ``Dataset.map``, Ray, ``publish`` and ``publish_stream`` all write marked PNGs, so they store
    the same bytes, and protecting any of them again is refused wherever the images go.
    """
    return encode_png(chw.transpose(1, 2, 0), marked=True, method=method)


def png_records(png: Sequence[bytes], sources: Sequence[Any]) -> list[dict[str, Any]]:
    """``Image()`` records of protected PNG bytes, each keeping its source's file name.

    The one rule of what an output record says of its source, for every writer (``Dataset.map``,
    ``publish``, ``publish_stream``): the source file's base name, never its folder
    (:func:`uetransforms.core.codecs.source_name`), so a protected image can be traced back to its
    file; ``None`` where the source had no path. ``sources`` are the source paths (or None), one per image.
    """
    return [{"bytes": b, "path": source_name(p)} for b, p in zip(png, sources)]


def source_paths(images: Any) -> list[Any]:
    """The source path of each image of a column: the ``path`` of ``{"bytes", "path"}`` records or of an
    Arrow ``Image()`` column, the file a PIL image was opened from (``datasets`` opens path-only
    records by name); ``None`` where there is none (arrays, tensors, images made in memory)."""
    import pyarrow as pa

    if isinstance(images, (pa.Array, pa.ChunkedArray)):
        data = images.combine_chunks() if isinstance(images, pa.ChunkedArray) else images
        if pa.types.is_struct(data.type) and data.type.get_field_index("path") >= 0:
            return data.field("path").to_pylist()
        return [None] * len(data)
    if isinstance(images, (np.ndarray, torch.Tensor)) and getattr(images, "dtype", None) != object:
        return [None] * len(images)
    return [im.get("path") if isinstance(im, Mapping) else getattr(im, "filename", None) or None
            for im in images]


class _BankUser:
    """Shared plumbing of the adapters: the bank, per-device appliers, options. No maths, no key rule."""

    def __init__(self, bank: NoiseBank | str | os.PathLike, *, device: str | torch.device | None,
                 size_mismatch: str | None, convert: bool, encoder: torch.nn.Module | None = None,
                 allow_double: bool = False) -> None:
        self.bank = _bank_ref(bank)
        if device is not None:
            from ..core.device import resolve_device

            resolve_device(device)  # "foo", or "cuda" without a GPU: said now, not at the first batch
        self.device = None if device is None else str(device)
        self.size_mismatch = size_mismatch
        self.convert = convert
        self.encoder = encoder
        self.allow_double = bool(allow_double)
        self._appliers: dict[str, Applier] = {}
        self._applier("cpu")  # validate the policy and the bank now, not in a worker

    def _device_for(self, rank: int | None) -> str:
        dev = self.device or "cpu"
        if rank is not None and dev == "cuda" and torch.cuda.is_available():
            # with_rank=True: one worker per GPU; ranks beyond the GPU count wrap around.
            dev = f"cuda:{rank % torch.cuda.device_count()}"
        return dev

    def _applier(self, device: str) -> Applier:
        app = self._appliers.get(device)
        if app is None:
            assigner = None
            if self.bank.keying == "cluster":
                # Label-free use of a cluster bank: nearest centroid in the bank's surrogate embedding.
                assigner = functools.partial(ClusterAssigner, self.bank, device=device, encoder=self.encoder)
            # Unless told otherwise, images that already carry this bank's noise (tested from the
            # pixels, for protection whose marker was lost) are refused like marked ones.
            app = self._appliers[device] = Applier(self.bank, device, self.size_mismatch, assigner=assigner,
                                                   refuse_carried=not getattr(self, "allow_double", False))
        return app

    def _refuse_protected(self, images: Sequence[Any], column: str, where: Any = None) -> None:
        """Images that carry the protection marker are not protected again unless asked to be."""
        if self.allow_double:
            return
        marked = [j for j, im in enumerate(images) if is_marked(im)]
        if marked:
            first = where(marked[0]) if where is not None else f"row {marked[0]} of the batch"
            raise DoubleProtectionError(
                f"{len(marked)} of {len(images)} image(s) in column {column!r} are already protected by uetransforms "
                f"(their PNG carries the marker; the first is {first}): protecting them again adds a second noise "
                "on top of the first. "
                "Publish them as they are (publish(..., protected=True)), or pass allow_double=True if you "
                "really mean to protect them twice."
            )

    def _protect_chws(self, chws: list[np.ndarray], labels: Sequence[Any] | None, ids: Sequence[Any] | None,
                      rank: int | None = None) -> list[np.ndarray]:
        """Protected uint8 ``[C, H, W]`` arrays, in input order (the one apply entry does the work)."""
        return self._applier(self._device_for(rank)).protect(chws, labels=labels, sample_ids=ids)

    def _protect_chunks(self, chws: list[np.ndarray], labels: Sequence[Any] | None, ids: Sequence[Any] | None,
                        rank: int | None = None, first_row: int = 0) -> list[tuple[list[int], np.ndarray]]:
        """The same, as the kernel's HWC batches with their input positions (for batch encoding)."""
        return self._applier(self._device_for(rank)).protect_chunks(chws, labels=labels, sample_ids=ids,
                                                                    first_row=first_row)

    def _state(self) -> dict[str, Any]:
        from ..core.version import __version__

        # The bank pickles itself: (path, sha256) once saved, Arrow IPC bytes before, never arrays.
        state = {k: v for k, v in self.__dict__.items() if k != "_appliers"}
        state["_version"] = __version__
        return state

    def __getstate__(self) -> dict[str, Any]:
        return self._state()

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        state.pop("_version", None)
        self.__dict__.update(state)
        self._appliers = {}
        if os.getpid() != _IMPORT_PID:
            # Forked worker: one intra-op thread never enters an OpenMP region (which can deadlock
            # after fork), and N workers fill N cores anyway. The pid is not part of the pickled
            # state, so datasets' fingerprint of Protect stays the same across sessions.
            torch.set_num_threads(1)


class _RowNames:
    """Names row ``j`` of a batch in the caller's terms: the dataset row number (``map(with_indices=True)``
    indices, or the batch's first row as a writer knows it), else the position in the batch; with
    its id and file path when there are any."""

    def __init__(self, indices: Sequence[int] | None, first_row: int | None, ids: Sequence[Any] | None,
                 images: Sequence[Any], *, hint: bool = False) -> None:
        self.indices, self.first_row, self.ids, self.images = indices, first_row, ids, images
        self.hint = hint  # a datasets map: say how to get dataset row numbers

    def number(self, j: int) -> int:
        if self.indices is not None and j < len(self.indices):
            return int(self.indices[j])
        return (self.first_row or 0) + j

    def __call__(self, j: int) -> str:
        known = self.indices is not None or self.first_row is not None
        text = f"row {self.number(j)}" if known else f"row {j} of this batch"
        if self.ids is not None:
            text += f" (id {self.ids[j]!r})"
        im = self.images[j] if j < len(self.images) else None
        if isinstance(im, dict) and im.get("path"):
            text += f" (file {im['path']!r})"
        if not known and self.hint:
            text += " (map(..., with_indices=True) names dataset rows)"
        return text


class Protect(_BankUser):
    """Apply a noise bank to the image column of ``datasets`` batches.

    Args:
        bank: a :class:`NoiseBank` or the path of a saved one. Save it first for cheap
            pickling with ``num_proc``; an unsaved bank is shipped as Arrow bytes.
        image_column: column holding the images.
        label_column: the class labels (class banks) or cluster ids (cluster banks). A cluster
            bank assigns clusters itself (surrogate embedding + nearest centroid) when this is
            ``None`` or left at its default; name a column to use precomputed cluster ids.
            Ignored by sample-wise banks.
        id_column: stable sample ids for sample-wise/synth banks (default: pixel content hash).
        device: ``"cpu"`` (default), ``"cuda"`` or ``"cuda:N"``; with ``map(..., with_rank=True,
            num_proc=N)`` and ``device="cuda"`` each worker uses GPU ``rank % n_gpus``
            (``multiprocess.set_start_method("spawn")`` is then required by CUDA).
        size_mismatch: ``"error"`` or ``"resize"`` (interpolate the noise); default: the bank's.
        convert: convert RGBA/P/LA/CMYK... images to the bank's mode instead of refusing them.
        encoder: the surrogate ``nn.Module`` a cluster-keyed bank was fitted with, when the bank
            cannot rebuild it itself (a custom module): clusters are then assigned with it.
        allow_double: protect images that are already protected (refused by default: the noise
            would be added a second time). Protected means: the PNG marker every protected image
            the library writes carries, or, for additive banks, this bank's own noise found in the
            pixels (a batch's mean :func:`~uetransforms.core.kernels.carried_score`, for images that
            lost the marker on the way). Convolution, pixel-edit and synthesised (AR) banks have no
            reliable test from the pixels: for them only the marker is seen.
        png_encoder / png_level: the lossless encoder of the PNG bytes this writes (``"isal"``,
            ``"fpng"`` or ``"pil"``; None: the fastest installed) and its level
            (see :func:`uetransforms.core.codecs.encode_png`). Checked here, before any image.
        threads: on the CPU a batch is cut into this many slices that go through decode, kernel
            and encode in parallel (the codecs and torch release the GIL); on a GPU the codecs
            use them around one kernel call. Default: ``torch.get_num_threads()``. The bytes do
            not depend on it. While the slices run, torch is held at one intra-op thread (each
            slice has its core; torch's own threads only contended) and restored after the batch.

    Works batched (``batched=True``, the fast path) and per example; returns only the image
    column for ``map`` (PNG records for an ``Image()`` column) and the whole batch for
    ``set_transform``/``with_transform`` (PIL images). Images that carry the codec module's
    non-secret "protected" marker (:func:`uetransforms.core.codecs.mark`, added by the writers) are
    refused unless ``allow_double=True``.
    """

    def __init__(
        self,
        bank: NoiseBank | str | os.PathLike,
        *,
        image_column: str = "image",
        label_column: str | None = DEFAULT_LABEL,
        id_column: str | None = None,
        device: str | torch.device | None = None,
        size_mismatch: str | None = None,
        convert: bool = False,
        encoder: torch.nn.Module | None = None,
        allow_double: bool = False,
        png_encoder: str | None = None,
        png_level: int | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__(bank, device=device, size_mismatch=size_mismatch, convert=convert, encoder=encoder,
                         allow_double=allow_double)
        check_png_options(png_encoder, png_level, channels=self.bank.channels)
        self.png_encoder = png_encoder
        self.png_level = png_level
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, (int, np.integer))
                                    or threads < 1):
            raise ValueError(f"threads must be a positive integer (or None for torch.get_num_threads()), got {threads!r}")
        self.threads = None if threads is None else int(threads)
        self.image_column = image_column
        if self.bank.keying == "cluster" and isinstance(label_column, DefaultLabel):
            # A dataset's "label" is its class, not the protector's cluster id: unless the caller
            # names a cluster column, a cluster bank assigns clusters itself.
            label_column = None
        self.label_column = None if label_column is None else str(label_column)
        self.id_column = id_column

    def __repr__(self) -> str:
        return (f"Protect({self.bank.method!r} bank, image_column={self.image_column!r}, "
                f"label_column={self.label_column!r}, device={self.device or 'cpu'!r})")

    def __call__(self, batch: Mapping[str, Any], *args: Any, rank: int | None = None) -> dict[str, Any]:
        # map(with_indices=True) passes indices (a list), map(with_rank=True) passes the rank (an int).
        indices = None
        for a in args:
            if isinstance(a, (int, np.integer)) and not isinstance(a, bool):
                rank = int(a)
            elif isinstance(a, (list, tuple, np.ndarray)):
                indices = [int(i) for i in a]
        images = self._images_of(batch) if isinstance(batch, Mapping) and self.image_column in batch else None
        as_bytes = images is not None and self._hands_bytes(batch, images)
        images, single, done = self._protect_batch(batch, rank, encode=as_bytes, images=images, indices=indices)
        n = 1 if single else len(images)
        new: Any
        if as_bytes:
            # Dataset.map on an Image() column: encoded PNG records keep the column's type, and
            # datasets stores them as they are instead of encoding PIL images itself.
            new = png_records(done, self._source_paths(batch, images, single))
        elif not single and isinstance(images, np.ndarray) and images.dtype != object and images.ndim == 4:
            # A numpy [B, H, W, C] batch (formatted map, Ray Data) stays numpy.
            new = np.stack([o.transpose(1, 2, 0) for o in chunk_views(done, n)]) if n else images[:0]
        else:
            # set_transform / streamed maps / tensors: new PIL images, which nothing re-decodes and
            # datasets can encode as PNG in their own mode (it cannot encode tensors, and it widens
            # returned arrays to int64, so a grayscale [B, H, W] batch would become a 32-bit TIFF).
            new = [mark_pil(from_chw(o), self.bank.method) for o in chunk_views(done, n)]
        if single:
            new = new[0]
        result = dict(batch) if self._return_all(batch, images) else {}
        result[self.image_column] = new
        return result

    def _source_paths(self, batch: Mapping[str, Any], images: Any, single: bool) -> list[Any]:
        """Each row's source path: from the batch's Arrow table where ``datasets`` has one (its
        records, before any decode: ``images`` may be bytes only), else from the images."""
        table = getattr(batch, "pa_table", None)
        if table is not None and self.image_column in table.column_names:
            return source_paths(table.column(self.image_column))
        return source_paths([images] if single else images)

    def encoded(self, batch: Mapping[str, Any], rank: int | None = None, *, first_row: int | None = None) -> list[bytes]:
        """Protect a batch and return its images as PNG bytes, in row order (for writers and Ray).

        ``first_row``: the batch's first row number in the whole dataset, so errors name the row.
        """
        return self._protect_batch(batch, rank, encode=True, first_row=first_row)[2]

    def png(self, images: np.ndarray | Sequence[np.ndarray], threads: int | None = None) -> list[bytes]:
        """PNG bytes of uint8 HWC images (a ``[B, H, W, C]`` batch or a list), with this Protect's encoder."""
        # getattr: a Protect pickled before the PNG options existed encodes with the defaults.
        opts = {"encoder": getattr(self, "png_encoder", None), "level": getattr(self, "png_level", None),
                "marked": True, "method": self.bank.method}
        threads = self._threads() if threads is None else threads
        if isinstance(images, np.ndarray) and images.ndim == 4:
            return encode_png_batch(images, threads=threads, **opts)
        return map_threads(lambda a: encode_png(a, **opts), list(images), threads)

    def _images_of(self, batch: Mapping[str, Any]) -> Any:
        """The image column; from a ``Dataset.map`` batch not yet decoded, its encoded bytes.

        ``datasets`` would decode an ``Image()`` column with PIL when the column is read
        (two thirds of a 32-px ``map(Protect)``); the bytes go to :mod:`uetransforms.core.codecs`
        instead, whose decoders return the pixels ``datasets`` returns (same EXIF and mode rules).
        Only for the plain Python format and an ``Image()`` feature without a ``mode`` to
        convert to, and only when every row holds its bytes; otherwise ``datasets`` decodes.
        """
        from datasets.formatting.formatting import LazyDict, LazyRow, PythonFormatter

        col = self.image_column
        if (isinstance(batch, LazyDict) and type(batch.formatter) is PythonFormatter and col in batch.keys_to_format
                and col in batch.pa_table.column_names):
            import datasets

            feature = (batch.formatter.features or {}).get(col)
            if isinstance(feature, datasets.Image) and feature.decode and feature.mode is None:
                raw = encoded_bytes(batch.pa_table.column(col))
                if raw is not None:
                    return raw[0] if isinstance(batch, LazyRow) else raw
        return batch[col]

    def _threads(self) -> int:
        # getattr: a Protect pickled before the option existed uses the default.
        return getattr(self, "threads", None) or _default_threads()

    def _protect_batch(self, batch: Mapping[str, Any], rank: int | None, *, encode: bool = False,
                       images: Any = None, indices: Sequence[int] | None = None,
                       first_row: int | None = None) -> tuple[Any, bool, Any]:
        """The column's images, whether the call is for one example, and the protected images:
        the kernel's chunks (``[(positions, [n, H, W, C] pixels)]``), or with ``encode`` their PNG
        bytes in row order."""
        col = self.image_column
        if col not in batch:
            raise KeyError(
                f"image_column={col!r} is not in the batch (columns: {list(batch.keys())}); "
                "pass Protect(bank, image_column=<name>)"
            )
        if images is None:
            images = self._images_of(batch)
        single = self._is_single(batch, images)
        imgs = [images] if single else list(images)
        labels = self._column(batch, self.label_column, single, needed=self._needs_labels())
        ids = self._column(batch, self.id_column, single, needed=self.id_column is not None)
        where = _RowNames(indices, first_row, ids, imgs, hint=_is_datasets_batch(batch))
        self._refuse_protected(imgs, col, where)
        n, threads = len(imgs), self._threads()
        if threads > 1 and n > 1 and self._device_for(rank) == "cpu":
            # CPU: each thread takes a contiguous slice through decode, kernel and encode. The
            # kernels release the GIL too, so no stage waits on a serial one (codecs on threads
            # around one kernel call reached 0.28x the identity map at 32 px; see RESULTS.md).
            with _one_torch_thread():
                parts = map_slices(lambda a, b: self._slice(imgs, labels, ids, a, b, rank, encode, 1, where), n, threads)
        else:  # one kernel call for the batch (a GPU wants it whole); the codecs still use the threads
            parts = self._slice(imgs, labels, ids, 0, n, rank, encode, threads, where)
        return images, single, in_row_order(parts, n) if encode else parts

    def _slice(self, imgs: list[Any], labels: Any, ids: Any, a: int, b: int, rank: int | None, encode: bool,
               threads: int, where: _RowNames | None = None) -> list[tuple[list[int], Any]]:
        """Rows ``a:b`` decoded, protected and (``encode``) encoded: ``[(positions, pixels or PNG bytes)]``."""
        col = self.image_column
        where = where or _RowNames(None, None, ids, imgs)

        def decode(j: int) -> np.ndarray:
            try:
                return to_chw(imgs[j], channels=self.bank.channels, convert=self.convert, column=col)
            except ImageModeError as err:  # which row, in the caller's numbering, and then the fix
                raise ImageModeError(f"{where(j)}: {err}") from None

        chws = map_threads(decode, list(range(a, b)), threads)
        chunks = self._protect_chunks(chws, None if labels is None else labels[a:b],
                                      None if ids is None else ids[a:b], rank, first_row=where.number(a))
        return [([a + i for i in part], self.png(hwc, threads) if encode else hwc) for part, hwc in chunks]

    def _hands_bytes(self, batch: Mapping[str, Any], images: Any) -> bool:
        if not _is_datasets_batch(batch) or isinstance(images, (np.ndarray, torch.Tensor)):
            return False
        import datasets

        features = getattr(getattr(batch, "formatter", None), "features", None) or {}
        return isinstance(features.get(self.image_column), datasets.Image)

    def _is_single(self, batch: Mapping[str, Any], images: Any) -> bool:
        """One example (non-batched map) or a batch? datasets says so by the batch's class."""
        from datasets.formatting.formatting import LazyBatch, LazyRow

        if isinstance(batch, LazyBatch):
            return False
        if isinstance(batch, LazyRow):
            return True
        # Plain dicts (set_transform, IterableDataset, Ray Data, direct calls): judge by the column.
        if isinstance(images, (list, tuple)):
            return False
        if isinstance(images, (np.ndarray, torch.Tensor)):
            if isinstance(images, np.ndarray) and images.dtype == object:
                return False
            if images.ndim == 4:  # numpy [B, H, W, C] or torch [B, C, H, W]
                return False
            # numpy grayscale batches are [B, H, W]; a single image would be [H, W] or [H, W, 1]
            if isinstance(images, np.ndarray) and images.ndim == 3 and self.bank.channels == 1 and images.shape[-1] != 1:
                return False
        return True

    def _needs_labels(self) -> bool:
        return self.bank.keying == "class" or (self.bank.keying == "cluster" and self.label_column is not None)

    def _column(self, batch: Mapping[str, Any], name: str | None, single: bool, *, needed: bool) -> list[Any] | None:
        if not needed or name is None:
            if needed:
                raise BankError("this bank needs labels: pass label_column=<name>")
            return None
        if name not in batch:
            raise KeyError(
                f"column {name!r} is not in the batch (columns: {list(batch.keys())}); pass the right "
                "label_column/id_column" + (" or label_column=None to assign clusters" if self.bank.keying == "cluster" else "")
            )
        values = batch[name]
        return [values] if single else list(values)

    @staticmethod
    def _return_all(batch: Mapping[str, Any], images: Any) -> bool:
        # map() hands a LazyBatch/LazyRow and merges what we return into the other columns;
        # set_transform/with_transform replace the batch with our return value, so give it all back.
        # Array images mean a formatted map (numpy/torch) or a Ray batch: there the other columns
        # were converted (float64 -> float32) and writing them back would lose precision, so only
        # the image column is returned and the caller merges (datasets does; the Ray adapter too).
        if isinstance(images, (np.ndarray, torch.Tensor)) and not (isinstance(images, np.ndarray) and images.dtype == object):
            return False
        return not _is_datasets_batch(batch)

    def __reduce__(self):
        return (_restore_protect, (self._state(),))


def _is_datasets_batch(batch: Mapping[str, Any]) -> bool:
    from datasets.formatting.formatting import LazyDict

    return isinstance(batch, LazyDict)


def _restore_protect(state: dict[str, Any]) -> Protect:
    obj = Protect.__new__(Protect)
    obj.__setstate__(state)
    return obj
