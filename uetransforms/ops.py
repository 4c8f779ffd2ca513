"""Batched kernels that apply a :class:`~uetransforms.bank.NoiseBank` to uint8 images, and the one
apply entry every adapter calls.

uint8 ``[B, C, H, W]`` in, uint8 out, on whatever device the images are on. Bank rows are
gathered with one indexing op and each kind is one batched launch:

* ``additive`` -- ``clip(round(x + 255 * delta[key]))``
* ``conv``     -- per-key ``k x k`` depthwise filters, all images of the batch at once,
  then each image divided by its own maximum (the CUDA paper's normalisation)
* ``pixel``    -- sparse pixel edits: ``where(mask[key], value[key], x)``
* ``synth``    -- noise synthesised from per-key coefficients with a per-sample seed, then added

Each kind is registered once (:func:`register_kind`: the tensors it needs, its kernel, its
card-safe parameters); the bank's validation, the dispatch and ``publish``'s parameter table all
read that registry. :meth:`Applier.protect` owns the whole rule "image + label / cluster /
sample id -> bank row (+ per-sample seed) -> kernel", batching by image size and device staging;
``Protect``, ``ProtectTransform``, the Ray adapter and :func:`apply` only call it.

Rounding is half-to-even (``torch.round``) everywhere, so CPU and GPU give the same bytes for
additive, pixel and conv banks (conv filters sit on a grid where float32 convolution is exact,
see :func:`conv_grid_bits`; off-grid filters take fixed-order float32 multiplies and adds).

Example:
    >>> import numpy as np, torch, uetransforms as ue
    >>> bank = ue.NoiseBank(method="random", kind="additive", keying="class", keys=[0, 1],
    ...                     tensors={"delta": np.full((2, 3, 2, 2), 4 / 255, "float32")},
    ...                     params={"epsilon": 4 / 255})
    >>> x = torch.full((1, 3, 2, 2), 100, dtype=torch.uint8)
    >>> ue.ops.apply(bank, x, [1])[0, 0, 0, 0].item()
    104
    >>> out = ue.ops.Applier(bank).protect([np.zeros((3, 2, 2), np.uint8), np.zeros((3, 5, 4), np.uint8)],
    ...                                   labels=[0, 1])  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .bank import BankError, NoiseBank
from .errors import SizeMismatchError  # defined there; importable from here as before

SIZE_POLICIES = ("error", "resize")


# ---------------------------------------------------------------------------- primitive kernels
def add_delta(images: torch.Tensor, delta255: torch.Tensor) -> torch.Tensor:
    """``clip(round(x + delta255), 0, 255)`` for uint8 ``x`` and a float32 delta already in 0..255 units."""
    out = images.to(torch.float32).add_(delta255)
    res = torch.empty_like(out, dtype=torch.uint8)
    _cast_into(res, out.round_().clamp_(0, 255))
    return res


def _cast_into(dst: torch.Tensor, src: torch.Tensor) -> None:
    """``dst[...] = src`` for float pixels already rounded and clipped to whole values in 0..255.

    Any cast of such values is exact, so on the CPU numpy's does it: 4x faster than torch's
    float -> uint8 copy (0.03 vs 0.13 ms per 384-px image), which was a sixth of the conv kernel.
    """
    if dst.device.type != "cpu" or src.device.type != "cpu":
        dst.copy_(src)
    else:
        np.copyto(dst.numpy(), src.numpy(), casting="unsafe")


#: Working-set size of one :func:`convolve` chunk on the CPU (fits a core's L2/L3 cache).
_CONV_CHUNK_BYTES = 2 << 20
#: Images from this many pixels on go through the library convolution (grid filters only); below
#: it the shifted adds are faster (library speed per image, CPU time: 0.22x at 32 px, 0.66x at 64,
#: 1.08x at 96, 1.40x at 128, 1.83x at 384 px; ``benchmarks/bench_publish.py --conv``).
_LIBRARY_CONV_MIN_PIXELS = 96 * 96
#: Float32 pixel bytes of one chunk of :meth:`Applier.protect` on the CPU (see there).
_APPLY_CHUNK_BYTES = 4 << 20


def conv_grid_bits(l1: float) -> int:
    """Fractional bits ``f`` of the weight grid on which a float32 convolution of uint8 images is exact.

    With pixels in 0..255 and every weight a multiple of ``2**-f``, each product and each partial
    sum of a filter whose absolute weights sum to at most ``l1`` is a multiple of ``2**-f`` below
    ``2**(24 - f)``: an exact float32. The filtered image is then the same in every summation
    order, so any convolution routine (blocked, vectorised, fused multiply-add) returns the
    bits that the fixed-order shifted adds return. ``methods/cuda.py`` rounds its filters to
    this grid when it draws them.
    """
    if not l1 > 0:
        return 23
    return min(23, int(np.floor(np.log2((2**24 - 1) / (255.0 * float(l1))))))


def _on_exact_grid(kern: torch.Tensor) -> bool:
    """Whether every filter of ``kern`` (``[B, C, k, k]``) lies on its :func:`conv_grid_bits` grid."""
    # In numpy: it runs on every kernel call, and a few hundred weights cost 9 us there, 32 in torch.
    w = kern.detach().cpu().numpy().astype(np.float64)
    if w.size == 0:
        return True
    scaled = w * 2.0 ** conv_grid_bits(float(np.abs(w).sum(axis=(-2, -1)).max()))
    return bool(np.isfinite(scaled).all() and (scaled == np.round(scaled)).all())


def _conv_precision() -> tuple:
    """The switches that let oneDNN convolve float32 in bf16/tf32; exactness is checked per setting."""
    mk = torch.backends.mkldnn
    return tuple(str(getattr(obj, "fp32_precision", None)) for obj in (torch.backends, mk, getattr(mk, "conv", None)))


_LIBRARY_CONV_EXACT: dict[tuple, bool] = {}


def _library_conv_exact() -> bool:
    """Does this torch build's CPU convolution give the shifted adds' bits on grid weights? Checked once.

    Exactness is arithmetic (:func:`conv_grid_bits`), but a build or a precision switch could
    still route float32 through bf16/tf32 or a Winograd/FFT transform, which round. A small
    comparison per setting costs a few milliseconds once and keeps the bytes machine-independent
    whatever the build does: on a mismatch every call takes the shifted adds.
    """
    key = _conv_precision()
    if key not in _LIBRARY_CONV_EXACT:
        gen = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (3, 3, 19, 23), dtype=torch.uint8, generator=gen)
        ok = True
        for k in (3, 5):
            f = conv_grid_bits(k * k)
            w = torch.floor(torch.rand((3, 3, k, k), generator=gen, dtype=torch.float64) * 2.0**f) / 2.0**f
            w = w.to(torch.float32)
            for mode in ("max", "none"):
                ref = _convolve_shifted(x, w, mode)
                ok = ok and torch.equal(ref, _convolve_library(x, w, mode))
                ok = ok and torch.equal(ref, _convolve_shifted(x, w, mode, fused=True))
        _LIBRARY_CONV_EXACT[key] = ok
    return _LIBRARY_CONV_EXACT[key]


def convolve(images: torch.Tensor, weight: torch.Tensor, *, normalise: str = "max") -> torch.Tensor:
    """Filter image ``b``, channel ``c`` with ``weight[b, c]`` (``[B, C, k, k]``), the whole batch at once.

    ``normalise="max"`` divides each filtered image by its maximum over all channels and pixels,
    as the CUDA paper does, so the output spans the full range again; ``"none"`` only clips.
    Same bytes on every CPU and GPU: filters on the :func:`conv_grid_bits` grid (every bank
    ``cuda`` fits) go through the library convolution, which is exact for them; other filters
    (banks from before the grid) take fixed-order shifted adds.
    """
    kh, kw = weight.shape[-2:]
    if kh % 2 == 0 or kw % 2 == 0:
        # Symmetric zero padding keeps the size (and alignment) only for odd kernels.
        raise BankError(f"conv kernels must have odd sizes to keep the image size, got {kh}x{kw}; refit with an odd kernel_size")
    if normalise not in ("max", "none"):
        raise BankError(f"unknown conv normalisation {normalise!r}; expected 'max' or 'none'")
    kern = weight.to(device=images.device, dtype=torch.float32)
    exact = images.dtype == torch.uint8 and not images.is_cuda and _on_exact_grid(kern) and _library_conv_exact()
    # The GPU keeps the shifted adds: they are memory-bound there and cuDNN's tf32/algorithm
    # choices are not worth auditing for a kernel that costs microseconds.
    if exact and images.shape[-2] * images.shape[-1] >= _LIBRARY_CONV_MIN_PIXELS:
        return _convolve_library(images, kern, normalise)
    return _convolve_shifted(images, kern, normalise, fused=exact)


def _normalise_(y: torch.Tensor, peak_dims: tuple[int, ...], normalise: str) -> torch.Tensor:
    """Max-normalise (or not), round half-to-even and clip, in place: the one rule both paths share."""
    if normalise == "max":
        # An all-black image has max 0: leave it black instead of dividing by zero.
        peak = y.amax(dim=peak_dims, keepdim=True).clamp_min_(1e-12)
        y.div_(peak).mul_(255)
    return y.round_().clamp_(0, 255)


def _convolve_library(images: torch.Tensor, kern: torch.Tensor, normalise: str) -> torch.Tensor:
    """``F.conv2d`` one image at a time, channels-last; only for uint8 images and grid filters.

    Exact in any summation order (see :func:`conv_grid_bits`). One image per call: oneDNN's
    depthwise convolution is fast on a channels-last image with its own C planes (1.9x the
    shifted adds at 384 px) and slow when a chunk's images are folded into one image of
    ``n * C`` planes (0.3x), and each image has its own filter.
    """
    b, c, h, w = images.shape
    kh, kw = kern.shape[-2:]
    out = torch.empty((b, c, h, w), dtype=torch.uint8, memory_format=torch.channels_last)
    x = torch.empty((1, c, h, w), dtype=torch.float32, memory_format=torch.channels_last)
    for i in range(b):
        x.copy_(images[i : i + 1])
        y = F.conv2d(x, kern[i].reshape(c, 1, kh, kw), padding=(kh // 2, kw // 2), groups=c)
        _cast_into(out[i : i + 1], _normalise_(y, (1, 2, 3), normalise))
    return out


def _convolve_shifted(images: torch.Tensor, kern: torch.Tensor, normalise: str, *, fused: bool = False) -> torch.Tensor:
    """The reference: ``k * k`` shifted multiplies and adds in a fixed order.

    Separate elementwise IEEE ops give the same bits on every CPU and GPU for any filter, which
    a library convolution (its own blocking, FMA, cuDNN algorithms) promises only on the grid.
    Pixels stay in 0..255 units: the paper filters x/255, but the max-normalisation cancels that
    scale, and "none" would multiply it back by 255.

    ``fused=True`` (grid filters only, where every product and sum is exact) multiplies and adds
    in one ``addcmul_`` pass per tap instead of two: 0.8x the time at 32 px, same bits.
    """
    b, c, h, w = images.shape
    kh, kw = kern.shape[-2:]
    # Channels-last on the CPU: the adapters encode HWC pixels, and a channels-last result is
    # already HWC (the cast writes it in that order for free; a separate permute copy cost 3 us
    # per 32-px image). Values do not depend on the layout.
    layout = torch.contiguous_format if images.is_cuda else torch.channels_last
    out = torch.empty(images.shape, dtype=torch.uint8, device=images.device, memory_format=layout)
    # In chunks of about 2 MiB of float32 pixels: the k*k passes then run over data that stays in
    # the CPU's cache instead of streaming a whole batch (hundreds of MB at photo size) through
    # memory k*k times -- 9x faster at 384 px. Every element still sees the same operations in
    # the same order, so the bytes do not depend on the chunking.
    per = len(images) if images.is_cuda else max(1, _CONV_CHUNK_BYTES // max(1, c * h * w * 4))
    for s in range(0, b, per):
        # Contiguous: decoded batches arrive channels-last, and shifted multiplies over that
        # layout ran 2x slower than over planes.
        x = images[s : s + per].to(torch.float32, memory_format=torch.contiguous_format)
        k = kern[s : s + per]
        # Zero padding keeps the size for odd kernels, as the paper's Conv2d(padding=k//2) does.
        xp = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2))
        if fused:
            y = torch.mul(xp[:, :, :h, :w], k[:, :, 0, 0, None, None])
            for t in range(1, kh * kw):
                u, v = divmod(t, kw)
                y.addcmul_(xp[:, :, u : u + h, v : v + w], k[:, :, u, v, None, None])
        else:
            y = torch.zeros_like(x)
            term = torch.empty_like(x)
            for u in range(kh):
                for v in range(kw):
                    torch.mul(xp[:, :, u : u + h, v : v + w], k[:, :, u, v, None, None], out=term)
                    y.add_(term)
        _cast_into(out[s : s + per], _normalise_(y, (1, 2, 3), normalise))
    return out


def blend_pixels(images: torch.Tensor, mask: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Sparse pixel edits: ``value`` where ``mask`` is set (``[B, 1|C, H, W]``), ``x`` elsewhere."""
    return torch.where(mask.to(torch.bool), value.to(torch.uint8), images)



def sample_seed(salt: int, sample_id: str) -> int:
    """A 63-bit seed for one sample: stable across runs, machines and row order."""
    digest = hashlib.sha256(f"{int(salt)}:{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# ---------------------------------------------------------------------------- autoregressive noise
#: The causal 3x3 window without its current pixel, as (row, col) offsets in raster order.
AR_OFFSETS = ((-2, -2), (-2, -1), (-2, 0), (-1, -2), (-1, -1), (-1, 0), (0, -2), (0, -1))


def ar_recursion(
    x: np.ndarray, coef: np.ndarray, *, innovation: float = 0.0,
    prune: Callable[[np.ndarray], np.ndarray | None] | None = None, crop: int = 0, prune_every: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """The package's one causal 2-D AR recursion, on ``V`` independent processes at once.

    ``x`` is a float64 canvas ``[H, W, V]`` of start values; every pixel from row 2 and column 2 on
    becomes ``innovation * x[i, j] + sum_n coef[n] * x[(i, j) + AR_OFFSETS[n]]`` (``coef`` is
    ``[8, V]``), in raster-order semantics: each window sees already-updated pixels.

    Pixels on one anti-diagonal ``i + j = t`` only read pixels of earlier anti-diagonals, so each
    diagonal is one vector step over all its pixels and all ``V`` processes, ``H + W`` Python
    steps instead of ``H * W``. In the flat ``[H * W, V]`` view a diagonal is a slice with
    stride ``W - 1``, and so is each of its window offsets, so no step copies the canvas. Every
    pixel gets the same float64 operations in the same order as a raster loop, so the values are
    bit-identical to it.

    ``prune`` (optional) is called every ``prune_every`` diagonals and after the last with the
    running sum of squares ``[V']`` of the finished pixels at rows and columns ``>= crop`` (it
    only grows); it returns a boolean mask of the processes to keep, or ``None`` to keep all.
    Dropped processes stop costing work (the AR coefficient search discards diverging ones).

    Returns the canvas (a compacted copy if anything was pruned) and the indices of the
    processes it still holds.
    """
    h, w, v = x.shape
    if coef.shape != (8, v):
        raise ValueError(f"coef must be [8, {v}] for a canvas of {v} processes, got {coef.shape}")
    alive = np.arange(v)
    if h < 3 or w < 3:
        return x, alive
    a = coef
    sq = np.zeros(v) if prune is not None else None
    flat = x.reshape(h * w, v)
    step = w - 1  # flat distance between neighbours on an anti-diagonal
    last = h + w - 2
    with np.errstate(all="ignore"):  # unstable processes overflow; callers check for that
        for t in range(4, last + 1):
            i0, i1 = max(2, t - (w - 1)), min(h - 1, t - 2)
            if i0 <= i1:
                n = i1 - i0 + 1
                base = i0 * w + (t - i0)
                span = (n - 1) * step + 1
                acc = flat[base : base + span : step] * innovation
                for k, (di, dj) in enumerate(AR_OFFSETS):
                    s = base + di * w + dj
                    acc += a[k] * flat[s : s + span : step]
                flat[base : base + span : step] = acc
                if sq is not None:
                    c0, c1 = max(i0, crop), min(i1, t - crop)
                    if c0 <= c1:
                        s = c0 * w + (t - c0)
                        sq += (flat[s : s + (c1 - c0) * step + 1 : step] ** 2).sum(axis=0)
            if prune is not None and ((t - 3) % prune_every == 0 or t == last):
                keep = prune(sq)
                if keep is not None and not keep.all():
                    x = np.ascontiguousarray(x[:, :, keep])
                    a, sq, alive = np.ascontiguousarray(a[:, keep]), sq[keep], alive[keep]
                    if len(alive) == 0:
                        break
                    flat = x.reshape(h * w, -1)
    return x, alive


def synth_ar(
    coef: np.ndarray, seeds: Sequence[int], shape: Sequence[int], *, epsilon: float, norm: str,
    innovation: float = 0.0, warmup: int = 4,
) -> np.ndarray:
    """Autoregressive noise: each channel follows a causal 2-D AR process on a 3x3 window.

    ``coef`` is ``[B, C, 8]`` (the window without its current pixel, raster order), ``seeds`` one
    per sample. As in the AR paper's generator, a standard normal start signal fills a canvas
    ``warmup`` pixels larger than the image, the recursion (:func:`ar_recursion`) overwrites it
    from the third row/column on, and the first ``warmup`` rows/columns are cropped;
    ``innovation`` > 0 adds that much of the start signal at every step (the authors use none).
    The same sample id always gives the same noise. Returns float32 ``[B, C, H, W]`` in [0, 1]
    units, centred and scaled to ``epsilon`` in the given norm. Runs on CPU in float64 so every
    device gets identical noise.
    """
    c, h, w = (int(s) for s in shape)
    b = len(seeds)
    pad = max(int(warmup), 2)  # the 3x3 window needs two rows/columns of start values
    hp, wp = h + pad, w + pad
    canvas = np.empty((b, c, hp, wp), dtype=np.float64)
    for i, s in enumerate(seeds):
        canvas[i] = np.random.default_rng(int(s)).standard_normal((c, hp, wp))
    # Pixel-major layout for the recursion: each pixel's B*C values are one contiguous vector.
    x = np.ascontiguousarray(canvas.transpose(2, 3, 0, 1)).reshape(hp, wp, b * c)
    a = np.ascontiguousarray(coef.astype(np.float64).reshape(b * c, 8).T)
    x, _ = ar_recursion(x, a, innovation=float(innovation))
    # Back into the [B, C, H+pad, W+pad] canvas: the crop below is then the same strided view,
    # reduced in the same order, as the raster-loop implementation's (same bytes).
    canvas[...] = x.reshape(hp, wp, b, c).transpose(2, 3, 0, 1)
    delta = canvas[:, :, pad:, pad:]
    if not np.isfinite(delta).all():
        # Coefficients whose recursion is unstable overflow float64 on large images; NaNs would
        # become arbitrary bytes after the uint8 cast, so refuse them loudly instead.
        raise BankError(
            f"autoregressive coefficients are unstable: the noise overflows on a {h}x{w} image. "
            "Refit the bank with stable coefficients (e.g. absolute values summing to less than 1)"
        )
    delta = delta - delta.mean(axis=(1, 2, 3), keepdims=True)
    return _scale_to_norm(delta, epsilon, norm).astype(np.float32)


def _scale_to_norm(delta: np.ndarray, epsilon: float, norm: str) -> np.ndarray:
    flat = delta.reshape(len(delta), -1)
    if norm == "l2":
        size = np.linalg.norm(flat, axis=1)
    elif norm == "linf":
        size = np.abs(flat).max(axis=1)
    else:
        raise BankError(f"unknown norm {norm!r}; expected 'l2' or 'linf'")
    size = np.maximum(size, 1e-12)
    return delta * (epsilon / size).reshape(-1, *([1] * (delta.ndim - 1)))



# ---------------------------------------------------------------------------- registries
#: A synthesiser: ``(coef [B, ...], seeds, (C, H, W), *, epsilon, norm, innovation) -> float32 [B, C, H, W]``.
Synthesiser = Callable[..., np.ndarray]
_SYNTHS: dict[str, Synthesiser] = {}


def register_synth(name: str, fn: Synthesiser) -> Synthesiser:
    """Make ``fn`` the synthesiser of banks with ``params["synth"] == name`` (names are unique)."""
    if name in _SYNTHS and _SYNTHS[name] is not fn:
        raise ValueError(f"a synthesiser named {name!r} is already registered")
    _SYNTHS[name] = fn
    return fn


def synthesiser(name: Any) -> Synthesiser:
    fn = _SYNTHS.get(name)
    if fn is None:
        raise BankError(f"unknown synthesiser {name!r}; this library knows {sorted(_SYNTHS)}. "
                        "The bank was made by a newer or extended uetransforms: upgrade it or import the plugin")
    return fn


register_synth("ar", synth_ar)

#: A kernel: ``(applier, images uint8 [B, C, H, W] on the device, rows [B], seeds or None) -> uint8``.
Kernel = Callable[["Applier", torch.Tensor, np.ndarray, "list[int] | None"], torch.Tensor]


@dataclass(frozen=True)
class BankKind:
    """What one kind of bank is: the tensors it must hold, its kernel, its card-safe parameters.

    ``shape_tensor`` names the payload tensor whose per-row shape is the image shape when a bank
    is built without ``image_shape`` (``None``: the caller must give it); ``per_sample_seed``
    says the kernel draws per-image noise from a seed derived from each sample id.
    """

    name: str
    required_tensors: tuple[str, ...]
    kernel: Kernel
    public_params: tuple[str, ...] = ()
    shape_tensor: str | None = None
    per_sample_seed: bool = False


_KINDS: dict[str, BankKind] = {}


def register_kind(
    name: str, *, required_tensors: Sequence[str], kernel: Kernel, public_params: Sequence[str] = (),
    shape_tensor: str | None = None, per_sample_seed: bool = False,
) -> BankKind:
    """Register a bank kind once; ``NoiseBank`` validation, :class:`Applier` and ``publish`` read it.

    Example:
        >>> from uetransforms import ops
        >>> ops.bank_kind("conv").required_tensors
        ('weight',)
    """
    if name in _KINDS:
        raise ValueError(f"bank kind {name!r} is already registered")
    kind = BankKind(name, tuple(required_tensors), kernel, tuple(public_params), shape_tensor, per_sample_seed)
    _KINDS[name] = kind
    return kind


def bank_kind(name: str) -> BankKind:
    """The registered :class:`BankKind` called ``name`` (a clear :class:`BankError` otherwise)."""
    kind = _KINDS.get(name)
    if kind is None:
        raise BankError(f"unknown bank kind {name!r}; expected one of {tuple(_KINDS)}")
    return kind


def kinds() -> tuple[str, ...]:
    """Names of the registered bank kinds, in registration order."""
    return tuple(_KINDS)


def _additive(app: Applier, x: torch.Tensor, rows: np.ndarray, seeds: list[int] | None) -> torch.Tensor:
    return add_delta(x, app.sized_rows("delta", rows, _hw(x), mode="bilinear"))


def _conv(app: Applier, x: torch.Tensor, rows: np.ndarray, seeds: list[int] | None) -> torch.Tensor:
    return convolve(x, app.rows_of("weight", rows), normalise=app.bank.params.get("normalise", "max"))


def _pixel(app: Applier, x: torch.Tensor, rows: np.ndarray, seeds: list[int] | None) -> torch.Tensor:
    mask = app.sized_rows("mask", rows, _hw(x), mode="nearest")
    value = app.sized_rows("value", rows, _hw(x), mode="nearest")
    return blend_pixels(x, mask, value)


def _synth(app: Applier, x: torch.Tensor, rows: np.ndarray, seeds: list[int] | None) -> torch.Tensor:
    if seeds is None:
        raise ValueError("a synth bank needs one seed per sample (see ops.sample_seed)")
    bank = app.bank
    synth = synthesiser(bank.params.get("synth"))
    delta = synth(bank.gather("coef", rows), list(seeds), bank.image_shape, epsilon=float(bank.params["epsilon"]),
                  norm=bank.params.get("norm", "l2"), innovation=float(bank.params.get("innovation", 0.0)))
    # The noise is per image (its own seed), so it is resized per batch: there is nothing to cache.
    d = torch.from_numpy(delta).mul_(255).to(app.device)
    return add_delta(x, app.fit_size(d, _hw(x), mode="bilinear"))


def _hw(x: torch.Tensor) -> tuple[int, int]:
    return int(x.shape[-2]), int(x.shape[-1])


register_kind("additive", required_tensors=("delta",), kernel=_additive, shape_tensor="delta",
              public_params=("epsilon", "norm", "patch_size", "pattern", "sparsity", "fraction", "num_clusters",
                             "steps", "step_size"))
register_kind("conv", required_tensors=("weight",), kernel=_conv,
              public_params=("kernel_size", "blur_parameter", "center_parameter", "normalise"))
# A pixel bank's mask may be [K, 1, H, W] (broadcast over channels): the values carry C.
register_kind("pixel", required_tensors=("mask", "value"), kernel=_pixel, shape_tensor="value",
              public_params=("epsilon", "norm", "num_pixels", "objective"))
# AR's coefficients and salt are the key; its search settings and budget are not.
register_kind("synth", required_tensors=("coef",), kernel=_synth, per_sample_seed=True,
              public_params=("epsilon", "norm", "synth", "min_response", "max_norm", "max_candidates"))


# ---------------------------------------------------------------------------- the apply entry
class Applier:
    """A bank made ready for one device, and the one place images meet their bank rows.

    Args:
        bank: the noise bank.
        device: where the kernels run (default: CPU). Images on another device are moved.
        size_mismatch: ``"error"`` or ``"resize"`` (bilinear for noise, nearest for masks); default
            is the bank's own ``info["size_mismatch"]`` or ``"error"``. Never a silent crop.
        encoder: the surrogate ``nn.Module`` that assigns clusters to unlabelled images for a
            cluster-keyed bank, when the bank cannot rebuild it (fitted with a custom module).

    :meth:`protect` takes images with their labels / cluster ids / sample ids; calling the object
    takes bank rows (and seeds) directly. It pickles as (bank, device, options): the bank pickles
    as its path and sha256 when saved.
    """

    # Banks whose payload is at most this many bytes live on the device; bigger (sample-wise)
    # banks stay memory-mapped and only the rows a batch needs are copied.
    RESIDENT_BYTES = 64 * 2**20
    # Resized copies of a resident bank, one per image size, kept up to this many bytes in all
    # (least recently used first out): hub photos come in many sizes.
    SIZE_CACHE_BYTES = 256 * 2**20

    def __init__(self, bank: NoiseBank, device: torch.device | str | None = None, size_mismatch: str | None = None,
                 encoder: torch.nn.Module | None = None) -> None:
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
        self.encoder = encoder
        nbytes = sum(a.nbytes for a in bank.tensors.values())
        self._resident = nbytes <= self.RESIDENT_BYTES
        self._cache: dict[str, torch.Tensor] = {}
        self._sized: OrderedDict[tuple[str, tuple[int, int]], torch.Tensor] = OrderedDict()
        self._assigner: Any = None
        # Protect runs slices of a batch on threads through one Applier: the lazily filled caches
        # below are built under this lock (an LRU reordered by two threads at once can fail).
        self._lock = threading.RLock()

    def __reduce__(self):
        return (Applier, (self.bank, str(self.device), self._size_mismatch_arg, self.encoder))

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
          surrogate embedding (:class:`~uetransforms.assign.ClusterAssigner`);
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
                from .assign import ClusterAssigner

                self._assigner = ClusterAssigner(self.bank, device=self.device, encoder=self.encoder)
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
            return self(images, rows, seeds)
        return chunk_views(self.protect_chunks(images, labels, sample_ids), len(images))

    def protect_chunks(
        self, images: Sequence[np.ndarray | torch.Tensor], labels: Sequence[Any] | np.ndarray | torch.Tensor | None = None,
        sample_ids: Sequence[Any] | None = None,
    ) -> list[tuple[list[int], np.ndarray]]:
        """:meth:`protect` of a sequence of ``[C, H, W]`` images, as the kernel produced them.

        Returns ``(positions, pixels)`` pairs: ``pixels`` is a uint8 ``[n, H, W, C]`` numpy
        batch of same-size images, ``positions`` their indices in ``images``. Encoders take
        the batches whole (:func:`uetransforms.codecs.encode_png_batch`).
        """
        chws = list(images)
        rows, seeds = self.rows_and_seeds(chws, labels, sample_ids)
        chunks: list[tuple[list[int], np.ndarray]] = []
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
                res = self(self._stage([chws[i] for i in part]), rows[part],
                           None if seeds is None else [seeds[i] for i in part])
                # One batched copy to HWC (none when the kernel kept the channels-last layout).
                chunks.append((part, res.permute(0, 2, 3, 1).contiguous().cpu().numpy()))
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
