"""The one apply entry: image + label / cluster / sample id -> bank row (+ seed) -> kernel.

:class:`Applier` owns the whole rule, batching by image size and device staging; ``Protect``,
``ProtectTransform``, ``publish``, the Ray adapter and :func:`apply` only call it. The kernel
each bank runs is its kind's (:mod:`uetransforms.core.kinds`); the maths is in
:mod:`uetransforms.core.kernels`.

A cluster-keyed bank used without cluster ids needs an *assigner* (images -> cluster ids),
which needs a surrogate network: the layers above pass one in (``assigner=``), so this layer
never imports a model.

Example:
    >>> import numpy as np, torch, uetransforms as ue
    >>> bank = ue.NoiseBank(method="random", kind="additive", keying="class", keys=[0, 1],
    ...                     tensors={"delta": np.full((2, 3, 2, 2), 4 / 255, "float32")},
    ...                     params={"epsilon": 4 / 255})
    >>> x = torch.full((1, 3, 2, 2), 100, dtype=torch.uint8)
    >>> ue.apply(bank, x, [1])[0, 0, 0, 0].item()
    104
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .bank import IN_MEMORY_BYTES, NoiseBank
from .errors import BankError, DoubleProtectionError, SizeMismatchError
from .kernels import carried, carry_threshold, sample_seed
from .kinds import bank_kind

SIZE_POLICIES = ("error", "resize")
#: The largest image (height x width) ``size_mismatch="resize"`` protects: 8192 x 8192. Memory is
#: bounded per image (only the bank rows a batch uses are resized, one image per CPU chunk at this
#: size), at roughly 45 bytes per pixel: about 3 GB for an image at the limit.
MAX_RESIZE_PIXELS = 8192 * 8192
#: Float32 pixel bytes of one chunk of :meth:`Applier.protect` on the CPU (see there).
_APPLY_CHUNK_BYTES = 4 << 20


# ---------------------------------------------------------------------------- the apply entry
class Applier:
    """A bank made ready for one device, and the one place images meet their bank rows.

    Args:
        bank: the noise bank.
        device: where the kernels run (default: CPU). Images on another device are moved.
        size_mismatch: ``"error"`` or ``"resize"`` (bilinear for noise, nearest for masks); default
            is the bank's own ``info["size_mismatch"]`` or ``"error"``. Never a silent crop.
        assigner: for a cluster-keyed bank used without cluster ids, a zero-argument factory
            returning ``chws -> cluster ids`` (e.g. ``functools.partial(ClusterAssigner, bank,
            device=...)`` from :mod:`uetransforms.models.assign`). It is built on first use. This
            layer never imports a network, so the layers above pass it in.
        refuse_carried: refuse images that already carry this bank's noise, tested from their
            pixels (the bank kind's ``carried`` test; additive banks only), so protection that
            lost its PNG marker (images downloaded and re-encoded losslessly) is not doubled.
            The adapters turn it on unless ``allow_double=True``.

    :meth:`protect` takes images with their labels / cluster ids / sample ids; calling the object
    takes bank rows (and seeds) directly. It pickles as (bank, device, options): the bank pickles
    as its path and sha256 when saved.
    """

    # Banks whose payload is at most this many bytes live on the device; bigger (sample-wise)
    # banks stay memory-mapped and only the rows a batch needs are copied.
    RESIDENT_BYTES = IN_MEMORY_BYTES  # the bank reads exactly these into memory on load
    # Resized copies of a resident bank, one per image size, kept up to this many bytes in all
    # (least recently used first out): hub photos come in many sizes.
    SIZE_CACHE_BYTES = 256 * 2**20

    def __init__(self, bank: NoiseBank, device: torch.device | str | None = None, size_mismatch: str | None = None,
                 assigner: Callable[[], Callable[[Sequence[np.ndarray]], np.ndarray]] | None = None,
                 refuse_carried: bool = False) -> None:
        if not isinstance(bank, NoiseBank):
            raise TypeError(f"expected a NoiseBank, got {type(bank).__name__}")
        self.bank = bank
        self.kind = bank_kind(bank.kind)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        policy = size_mismatch or bank.info.get("size_mismatch", "error")
        if policy not in SIZE_POLICIES:
            raise ValueError(f"size_mismatch={policy!r}; expected one of {SIZE_POLICIES}")
        self._size_mismatch_arg = size_mismatch
        self.size_mismatch = policy
        self._make_assigner = assigner
        self.refuse_carried = bool(refuse_carried)
        nbytes = sum(a.nbytes for a in bank.tensors.values())
        self._resident = nbytes <= self.RESIDENT_BYTES
        self._cache: dict[str, torch.Tensor] = {}
        self._sized: OrderedDict[tuple[str, tuple[int, int]], torch.Tensor] = OrderedDict()
        self._assigner: Any = None
        # Protect runs slices of a batch on threads through one Applier: the lazily filled caches
        # below are built under this lock (an LRU reordered by two threads at once can fail).
        self._lock = threading.RLock()

    def __reduce__(self):
        return (Applier, (self.bank, str(self.device), self._size_mismatch_arg, self._make_assigner,
                          self.refuse_carried))

    def __repr__(self) -> str:
        return f"Applier({self.bank!r}, device={str(self.device)!r}, size_mismatch={self.size_mismatch!r})"

    # ------------------------------------------------------------------ bank rows on the device
    def _full(self, name: str) -> torch.Tensor:
        full = self._cache.get(name)
        if full is not None:
            return full
        with self._lock:
            return self._cache.get(name) if name in self._cache else self._load_full(name)

    def _load_full(self, name: str) -> torch.Tensor:
        arr = self.bank.tensors[name]
        full = torch.from_numpy(np.array(arr, dtype=np.float32 if arr.dtype == np.float16 else arr.dtype))
        if name == "delta":
            full = full.to(torch.float32).mul_(255)  # pre-scaled once: the hot path is one add
        full = self._cache[name] = _cpu_layout(full.to(self.device))
        return full

    def rows_of(self, name: str, rows: np.ndarray) -> torch.Tensor:
        """One payload tensor's rows for the batch, on the device, as one gather."""
        if self._resident:
            return self._full(name)[torch.from_numpy(rows).to(self.device)]
        part = torch.from_numpy(self.bank.gather(name, rows))
        if part.dtype == torch.float16:
            part = part.to(torch.float32)
        if name == "delta":
            part = part.to(torch.float32).mul_(255)
        if self.device.type == "cuda":
            part = part.pin_memory()  # a pageable source would make non_blocking a synchronous copy
        return part.to(self.device, non_blocking=True)

    def sized_rows(self, name: str, rows: np.ndarray, hw: tuple[int, int], *, mode: str) -> torch.Tensor:
        """Rows of a per-key noise tensor at the images' size ``hw`` (the size policy applies).

        A resident bank is resized once per image size and the result cached, so a dataset of
        many sizes pays one interpolation per size, not per image or batch.
        """
        native = tuple(int(s) for s in self.bank.tensors[name].shape[-2:])
        if native == hw:
            return self.rows_of(name, rows)
        self._check_size(native, hw)
        if not self._resident:
            return self.fit_size(self.rows_of(name, rows), hw, mode=mode)
        shape = self.bank.tensors[name].shape
        if int(np.prod(shape[:-2])) * hw[0] * hw[1] * 4 > self.SIZE_CACHE_BYTES:
            # The whole bank at this size would not be cached anyway (a 12000x12000 photo: 17 GB for
            # 10 classes): resize only the rows this batch uses, each once.
            used, inverse = np.unique(rows, return_inverse=True)
            sized = self.fit_size(self._full(name)[torch.from_numpy(used).to(self.device)], hw, mode=mode)
            return sized[torch.from_numpy(inverse.reshape(-1)).to(self.device)]
        key = (name, hw)
        with self._lock:
            full = self._sized.get(key)
            if full is None:
                full = _cpu_layout(self.fit_size(self._full(name), hw, mode=mode))
                if full.element_size() * full.nelement() <= self.SIZE_CACHE_BYTES:
                    self._sized[key] = full
                    used = sum(t.element_size() * t.nelement() for t in self._sized.values())
                    while used > self.SIZE_CACHE_BYTES:
                        _, old = self._sized.popitem(last=False)
                        used -= old.element_size() * old.nelement()
            else:
                self._sized.move_to_end(key)
        return full[torch.from_numpy(rows).to(self.device)]

    def _check_size(self, native: tuple[int, ...], hw: tuple[int, int]) -> None:
        if self.size_mismatch == "error":
            raise SizeMismatchError(
                f"image is {hw[0]}x{hw[1]} but the bank's noise is {native[0]}x{native[1]}. "
                "Resize the images to the bank's size first, or pass size_mismatch='resize' to "
                "interpolate the noise to each image (the L-inf budget is kept)."
            )
        if hw[0] * hw[1] > MAX_RESIZE_PIXELS:
            raise SizeMismatchError(
                f"image is {hw[0]}x{hw[1]} ({hw[0] * hw[1] / 1e6:.0f} megapixels), above the "
                f"{MAX_RESIZE_PIXELS / 1e6:.0f}-megapixel limit of size_mismatch='resize' (the noise is made at the "
                "image's size in float32, several bytes per pixel per image). Downscale such images first "
                "(e.g. PIL's Image.thumbnail to 8192 px), or fit a bank at their size."
            )

    def fit_size(self, t: torch.Tensor, hw: tuple[int, int], *, mode: str) -> torch.Tensor:
        """``t`` (``[N, C, h, w]``) at size ``hw``: unchanged, refused, or interpolated per the policy."""
        if tuple(t.shape[-2:]) == hw:
            return t
        self._check_size(tuple(t.shape[-2:]), hw)
        dtype = t.dtype
        t = t.to(torch.float32)
        if mode == "nearest":
            out = F.interpolate(t, size=hw, mode="nearest")
        else:
            out = F.interpolate(t, size=hw, mode="bilinear", align_corners=False)
        return out.to(dtype)

    # ------------------------------------------------------------------ kernel on bank rows
    def __call__(
        self,
        images: torch.Tensor,
        rows: np.ndarray | Sequence[int],
        seeds: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Apply bank rows ``rows[b]`` to ``images[b]``; ``seeds`` (per sample) for synth banks."""
        _check_batch(images)
        bank = self.bank
        if images.shape[1] != bank.channels:
            raise BankError(
                f"images have {images.shape[1]} channels but the bank was made for {bank.channels}; "
                "convert the images (e.g. Image(mode='RGB')) or fit a bank for this channel count"
            )
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) != len(images):
            raise ValueError(f"{len(images)} images but {len(rows)} keys")
        x = images.to(self.device, non_blocking=True)
        return self.kind.kernel(self, x, rows, None if seeds is None else list(seeds))

    # ------------------------------------------------------------------ the front door
    def rows_and_seeds(
        self, images: torch.Tensor | Sequence[Any], labels: Sequence[Any] | np.ndarray | torch.Tensor | None = None,
        sample_ids: Sequence[Any] | None = None,
    ) -> tuple[np.ndarray, list[int] | None]:
        """Bank rows (and, for per-sample-seeded kinds, seeds) for a batch: the package's one key rule.

        * sample-keyed banks: the row of each sample id (``sample_ids``, else the pixels' content hash);
        * ``labels`` given: the row of each class id / cluster id;
        * cluster-keyed banks without labels: each image's nearest centroid in the bank's
          surrogate embedding (the ``assigner`` the caller passed in);
        * synth banks: a seed per image from the bank's salt and the sample id, so the same image
          (or id) always gets the same noise, whatever its position.
        """
        from .images import content_id

        bank = self.bank
        n = len(images)
        ids: list[str] | None = None
        if bank.keying == "sample" or self.kind.per_sample_seed:
            if sample_ids is not None:
                ids = [str(v) for v in sample_ids]
                if len(ids) != n:
                    raise ValueError(f"{n} images but {len(ids)} sample ids")
            else:
                ids = [content_id(_numpy_chw(im)) for im in images]
        if bank.keying == "sample":
            rows = bank.rows_for(ids)
        elif labels is not None:
            keys = _int_labels(labels)
            if len(keys) != n:
                raise ValueError(f"{n} images but {len(keys)} keys")
            rows = bank.rows_for(keys)
        elif bank.keying == "cluster":
            rows = bank.rows_for(self._assign(images))
        else:
            raise BankError(
                "this class-wise bank needs each image's label: pass label_column=<label column> "
                "(Protect) or make the sample carry its label (ProtectTransform)"
            )
        seeds = None
        if self.kind.per_sample_seed:
            salt = int(bank.params.get("salt", 0))
            seeds = [sample_seed(salt, s) for s in ids]  # type: ignore[union-attr]
        return rows, seeds

    def _assign(self, images: torch.Tensor | Sequence[Any]) -> np.ndarray:
        with self._lock:
            if self._assigner is None:
                if self._make_assigner is None:
                    raise BankError(
                        "this cluster-keyed bank needs each image's cluster id: pass label_column=<cluster column>, "
                        "or let Protect / ProtectTransform assign clusters (they bring the bank's surrogate)"
                    )
                self._assigner = self._make_assigner()
        if isinstance(images, torch.Tensor):
            return self._assigner(images.cpu().numpy())
        return self._assigner([_numpy_chw(im) for im in images])

    def protect(
        self, images: torch.Tensor | Sequence[np.ndarray | torch.Tensor],
        labels: Sequence[Any] | np.ndarray | torch.Tensor | None = None, sample_ids: Sequence[Any] | None = None,
    ) -> Any:
        """Protect images: look up each one's bank row (and seed), batch by size, run the kernel.

        Args:
            images: a uint8 ``[B, C, H, W]`` tensor (one size; returned as a tensor on the
                applier's device), or a sequence of uint8 ``[C, H, W]`` arrays/tensors of any
                sizes (returned as a list of uint8 ``[C, H, W]`` numpy arrays, in input order;
                images of one size go through the kernel as one batch).
            labels: class ids (class banks) or cluster ids (cluster banks); a cluster bank
                assigns clusters itself when this is ``None``. Ignored by sample-keyed banks.
            sample_ids: stable per-sample ids for sample-keyed and synth banks (default: a hash
                of each image's pixels).
        """
        if isinstance(images, torch.Tensor):
            _check_batch(images)
            rows, seeds = self.rows_and_seeds(images, labels, sample_ids)
            if self.refuse_carried:
                pick = _carry_sample(len(images))
                self._refuse_carried([(pick, images[pick].to(self.device))], rows, seeds)
            return self(images, rows, seeds)
        return chunk_views(self.protect_chunks(images, labels, sample_ids), len(images))

    def _refuse_carried(self, staged: list[tuple[list[int], torch.Tensor]], rows: np.ndarray,
                        seeds: Sequence[int] | None, first_row: int = 0) -> None:
        """Raise :class:`DoubleProtectionError` when the batch already carries this bank's noise.

        ``staged``: ``(positions, uint8 images)`` of the images to test (:data:`CARRY_SAMPLE` of a
        batch at most: the decision is on their mean, and a bounded sample keeps the test's cost
        per batch bounded).
        """
        test = self.kind.carried
        if test is None or not staged:
            return
        where: list[int] = []
        got: list[np.ndarray] = []
        for part, x in staged:
            where += part
            got.append(test(self, x, rows[part], None if seeds is None else [seeds[i] for i in part]).float().cpu().numpy())
        scores = np.concatenate(got)
        if not carried(scores):
            return
        order = np.argsort(-scores)[:5]
        raise DoubleProtectionError(
            f"these images already carry this bank's noise, though their PNGs carry no marker (content test: mean "
            f"score {scores.mean():.2f} over {len(scores)} image(s), above {carry_threshold(len(scores)):.2f}; most "
            f"clearly row(s) {sorted(first_row + where[i] for i in order)} of the batch): they were probably protected "
            "with this bank, then saved or re-encoded in a way that dropped the marker. Protecting them again would "
            "add the noise a second time. Publish them as they are (publish(..., protected=True)), or "
            "pass allow_double=True if you really mean to protect them twice."
        )

    def protect_chunks(
        self, images: Sequence[np.ndarray | torch.Tensor], labels: Sequence[Any] | np.ndarray | torch.Tensor | None = None,
        sample_ids: Sequence[Any] | None = None, first_row: int = 0,
    ) -> list[tuple[list[int], np.ndarray]]:
        """:meth:`protect` of a sequence of ``[C, H, W]`` images, as the kernel produced them.

        ``first_row``: the first image's row number in the caller's batch (error messages only).

        Returns ``(positions, pixels)`` pairs: ``pixels`` is a uint8 ``[n, H, W, C]`` numpy
        batch of same-size images, ``positions`` their indices in ``images``. Encoders take
        the batches whole (:func:`uetransforms.core.codecs.encode_png_batch`).
        """
        chws = list(images)
        rows, seeds = self.rows_and_seeds(chws, labels, sample_ids)
        chunks: list[tuple[list[int], np.ndarray]] = []
        staged: list[tuple[list[int], torch.Tensor]] = []
        test = set(_carry_sample(len(chws))) if self.refuse_carried and self.kind.carried is not None else set()
        buckets: dict[tuple[int, ...], list[int]] = {}
        for i, c in enumerate(chws):
            buckets.setdefault(tuple(c.shape), []).append(i)
        for idx in buckets.values():
            c, h, w = chws[idx[0]].shape
            # On the CPU a bucket goes through the kernel in chunks of about 4 MiB of float32
            # pixels, end to end: the kernel's passes and the noise rows then stay in cache
            # instead of streaming a whole batch of photos (hundreds of MB) through memory several
            # times. A GPU takes the bucket at once. Elementwise kernels give the same bytes
            # either way.
            per = len(idx) if self.device.type == "cuda" else max(1, _APPLY_CHUNK_BYTES // (c * h * w * 4))
            for s in range(0, len(idx), per):
                part = idx[s : s + per]
                batch = self._stage([chws[i] for i in part])
                res = self(batch, rows[part], None if seeds is None else [seeds[i] for i in part])
                tested = [j for j, i in enumerate(part) if i in test]
                if tested:
                    staged.append(([part[j] for j in tested], batch[tested].to(self.device)))
                # One batched copy to HWC (none when the kernel kept the channels-last layout).
                chunks.append((part, res.permute(0, 2, 3, 1).contiguous().cpu().numpy()))
        if staged:
            self._refuse_carried(staged, rows, seeds, first_row)
        return chunks

    def _stage(self, parts: list[np.ndarray | torch.Tensor]) -> torch.Tensor:
        """One uint8 ``[B, C, H, W]`` batch of same-size images, ready for the kernel's device."""
        if isinstance(parts[0], torch.Tensor):
            batch = torch.stack([p.cpu() for p in parts])
        else:
            # Decoded images are CHW views of HWC pixels: stacking them as HWC is one plain copy
            # (stacking the strided CHW views was 1.5 ms per 384-px image), and the batch is
            # then a channels-last view of it.
            batch = torch.from_numpy(np.stack([np.asarray(p).transpose(1, 2, 0) for p in parts])).permute(0, 3, 1, 2)
        _check_batch(batch)
        if self.device.type == "cuda":
            # Page-locked staging buffer: the non_blocking copy to the device is then a real DMA.
            batch = batch.pin_memory()
        return batch


#: Images of a batch the content test of double protection scores (evenly spaced): its decision is
#: on their mean, which at 16 images already separated clean from protected CIFAR batches completely.
CARRY_SAMPLE = 16


def _carry_sample(n: int) -> list[int]:
    """Evenly spaced positions of at most :data:`CARRY_SAMPLE` of ``n`` images (the same for the same ``n``)."""
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, min(n, CARRY_SAMPLE))}) if n else []


def in_row_order(chunks: Sequence[tuple[Sequence[int], Any]], n: int) -> list[Any]:
    """``(positions, items)`` chunks (:meth:`Applier.protect_chunks`' pixels, or their PNG bytes)
    as one list of ``n`` items in input order."""
    out: list[Any] = [None] * n
    for positions, items in chunks:
        for i, item in zip(positions, items):
            out[i] = item
    return out


def chunk_views(chunks: list[tuple[list[int], np.ndarray]], n: int) -> list[np.ndarray]:
    """:meth:`Applier.protect_chunks`' images as ``[C, H, W]`` views of their chunks, in input order.

    Each view's HWC transpose is contiguous, so encoding one needs no further copy.
    """
    return [hwc.transpose(2, 0, 1) for hwc in in_row_order(chunks, n)]


def _cpu_layout(t: torch.Tensor) -> torch.Tensor:
    """A per-key image-shaped tensor in the layout CPU batches come in: channels-last.

    :meth:`Applier.protect` stages decoded (HWC) pixels as a channels-last view, and an
    elementwise kernel over two tensors of different layouts ran at half speed. Gathering rows
    keeps the layout; values (and so bytes) are the same in any layout.
    """
    if t.device.type == "cpu" and t.ndim == 4 and t.shape[-1] * t.shape[-2] > 1:
        return t.contiguous(memory_format=torch.channels_last)
    return t


def _check_batch(images: Any) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        what = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise TypeError(f"kernels take uint8 [B, C, H, W] tensors, got {what}")
    if images.shape[-1] == 0 or images.shape[-2] == 0:
        raise ValueError(f"cannot protect empty images (shape {tuple(images.shape)}); drop them first")


def _numpy_chw(im: Any) -> np.ndarray:
    return im.detach().cpu().numpy() if isinstance(im, torch.Tensor) else np.asarray(im)


def as_label(v: Any) -> int:
    """One integer class / cluster id, or a :class:`BankError` saying what to pass instead."""
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise BankError(f"a label must be one integer, got a tensor of shape {tuple(v.shape)}")
        v = v.item()
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise BankError(
            f"labels must be integer class ids, got {type(v).__name__} {v!r}; "
            "use a ClassLabel column (dataset.class_encode_column) or map names to ids first"
        )
    return int(v)


def _int_labels(labels: Any) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    if isinstance(labels, np.ndarray) and labels.dtype.kind in "iu" and labels.ndim == 1:
        return labels.astype(np.int64)
    return np.asarray([as_label(v) for v in labels], dtype=np.int64)


def apply(
    bank: NoiseBank,
    images: torch.Tensor,
    keys: Sequence[Any] | np.ndarray,
    *,
    sample_ids: Sequence[str] | None = None,
    size_mismatch: str | None = None,
) -> torch.Tensor:
    """Protect a uint8 batch ``[B, C, H, W]`` on its own device.

    ``keys`` are what the bank is keyed by (labels, cluster ids or sample ids); ``sample_ids``
    seed synth banks (default: each image's content hash, as everywhere else).
    """
    _check_batch(images)
    app = Applier(bank, images.device, size_mismatch)
    if bank.keying == "sample":
        if sample_ids is not None:
            raise ValueError("a sample-keyed bank is keyed by sample ids: pass them as keys, not also as sample_ids")
        return app.protect(images, sample_ids=keys)
    return app.protect(images, labels=keys, sample_ids=sample_ids)
