"""The primitive kernels: pure tensor maths on uint8 ``[B, C, H, W]`` batches, nothing else.

* :func:`add_delta` -- ``clip(round(x + delta))``, the additive kernel;
* :func:`convolve` -- per-image ``k x k`` depthwise filters (the CUDA paper's normalisation), zero
  or reflect padding, contiguous or dilated taps;
* :func:`blend_pixels` -- sparse pixel edits ``where(mask, value, x)``;
* :func:`ar_recursion` / :func:`synth_ar` -- autoregressive noise from per-key coefficients and
  a per-sample seed (:func:`sample_seed`).

Rounding is half-to-even (``torch.round``) everywhere, so CPU and GPU give the same bytes for
additive, pixel and conv banks (conv filters sit on a grid where float32 convolution is exact,
see :func:`conv_grid_bits`; off-grid filters take fixed-order float32 multiplies and adds).
Which kernel a bank uses is its kind's business (:mod:`uetransforms.core.kinds`); which rows a
batch needs is the apply entry's (:mod:`uetransforms.core.apply`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import BankError

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
                for pad in CONV_PADDINGS:
                    for d in (1, 2):  # a dilated library convolution takes other code paths
                        ref = _convolve_shifted(x, w, mode, pad, dilation=d)
                        ok = ok and torch.equal(ref, _convolve_library(x, w, mode, pad, dilation=d))
                        ok = ok and torch.equal(ref, _convolve_shifted(x, w, mode, pad, fused=True, dilation=d))
        _LIBRARY_CONV_EXACT[key] = ok
    return _LIBRARY_CONV_EXACT[key]


#: How :func:`convolve` fills the ``k // 2`` pixels beyond the border. ``"zeros"`` is the CUDA paper's
#: ``Conv2d(padding=k // 2)``: border pixels average in black, a dark frame ``k // 2`` pixels wide
#: that the edge-pixel detector of COIN (Li et al., AAAI 2025) keys on. ``"reflect"`` mirrors the
#: image (without repeating the edge pixel), so the border is filtered like the interior.
CONV_PADDINGS = ("zeros", "reflect")


def convolve(images: torch.Tensor, weight: torch.Tensor, *, normalise: str = "max", padding: str = "zeros",
             dilation: int = 1) -> torch.Tensor:
    """Filter image ``b``, channel ``c`` with ``weight[b, c]`` (``[B, C, k, k]``), the whole batch at once.

    ``normalise="max"`` divides each filtered image by its maximum over all channels and pixels,
    as the CUDA paper does, so the output spans the full range again; ``"none"`` only clips.
    ``padding`` is one of :data:`CONV_PADDINGS`; ``"reflect"`` needs images more than
    ``dilation * (k // 2)`` pixels on each side. ``dilation`` spaces the taps ``dilation`` pixels
    apart (``F.conv2d``'s dilation), so a ``k x k`` filter spans ``dilation * (k - 1) + 1`` pixels.
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
    if padding not in CONV_PADDINGS:
        raise BankError(f"unknown conv padding {padding!r}; expected one of {CONV_PADDINGS}")
    if isinstance(dilation, bool) or not isinstance(dilation, (int, np.integer)) or dilation < 1:
        raise BankError(f"conv dilation must be an integer >= 1, got {dilation!r}; refit with dilation=1 (contiguous filters)")
    dilation = int(dilation)
    rh, rw = dilation * (kh // 2), dilation * (kw // 2)
    if padding == "reflect" and (images.shape[-2] <= rh or images.shape[-1] <= rw):
        raise BankError(
            f"reflect padding of a {kh}x{kw} filter with dilation {dilation} needs images larger than {rh}x{rw} "
            f"pixels, got {images.shape[-2]}x{images.shape[-1]}; refit with padding='zeros', a smaller kernel_size "
            "or a smaller dilation")
    kern = weight.to(device=images.device, dtype=torch.float32)
    exact = images.dtype == torch.uint8 and not images.is_cuda and _on_exact_grid(kern) and _library_conv_exact()
    # The GPU keeps the shifted adds: they are memory-bound there and cuDNN's tf32/algorithm
    # choices are not worth auditing for a kernel that costs microseconds.
    if exact and images.shape[-2] * images.shape[-1] >= _LIBRARY_CONV_MIN_PIXELS:
        return _convolve_library(images, kern, normalise, padding, dilation=dilation)
    return _convolve_shifted(images, kern, normalise, padding, fused=exact, dilation=dilation)


def _normalise_(y: torch.Tensor, peak_dims: tuple[int, ...], normalise: str) -> torch.Tensor:
    """Max-normalise (or not), round half-to-even and clip, in place: the one rule both paths share."""
    if normalise == "max":
        # An all-black image has max 0: leave it black instead of dividing by zero.
        peak = y.amax(dim=peak_dims, keepdim=True).clamp_min_(1e-12)
        y.div_(peak).mul_(255)
    return y.round_().clamp_(0, 255)


def _pad(x: torch.Tensor, kh: int, kw: int, padding: str, dilation: int = 1) -> torch.Tensor:
    """``x`` (float ``[B, C, H, W]``) padded by ``dilation * (k // 2)`` on each side: the one padding rule
    of both paths.

    Reflected pixels are copies of pixel values, so the grid's exactness (:func:`conv_grid_bits`)
    holds for either padding.
    """
    pads = (dilation * (kw // 2),) * 2 + (dilation * (kh // 2),) * 2
    return F.pad(x, pads, mode="reflect") if padding == "reflect" else F.pad(x, pads)


def _convolve_library(images: torch.Tensor, kern: torch.Tensor, normalise: str, padding: str = "zeros", *,
                      dilation: int = 1) -> torch.Tensor:
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
        y = F.conv2d(_pad(x, kh, kw, padding, dilation), kern[i].reshape(c, 1, kh, kw), groups=c, dilation=dilation)
        _cast_into(out[i : i + 1], _normalise_(y, (1, 2, 3), normalise))
    return out


def _convolve_shifted(images: torch.Tensor, kern: torch.Tensor, normalise: str, padding: str = "zeros", *,
                      fused: bool = False, dilation: int = 1) -> torch.Tensor:
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
        # Padding by k // 2 keeps the size for odd kernels, as the paper's Conv2d(padding=k//2) does.
        xp = _pad(x, kh, kw, padding, dilation)
        d = dilation  # tap (u, v) reads the pixel d*u, d*v away from the window's corner
        if fused:
            y = torch.mul(xp[:, :, :h, :w], k[:, :, 0, 0, None, None])
            for t in range(1, kh * kw):
                u, v = divmod(t, kw)
                y.addcmul_(xp[:, :, d * u : d * u + h, d * v : d * v + w], k[:, :, u, v, None, None])
        else:
            y = torch.zeros_like(x)
            term = torch.empty_like(x)
            for u in range(kh):
                for v in range(kw):
                    torch.mul(xp[:, :, d * u : d * u + h, d * v : d * v + w], k[:, :, u, v, None, None], out=term)
                    y.add_(term)
        _cast_into(out[s : s + per], _normalise_(y, (1, 2, 3), normalise))
    return out


# ---------------------------------------------------------------------------- "already carries this noise"
#: Side of the central crop :func:`carried_score` looks at: the cost per image is bounded whatever its size.
CARRY_CROP = 64


def carried_score(images: torch.Tensor, delta255: torch.Tensor) -> torch.Tensor:
    """How much each uint8 image already carries the additive noise ``delta255`` (same shape, grey levels).

    ``(TV(x + d) - TV(x - d)) / (2 TV(d))`` on the central :data:`CARRY_CROP` pixels square: about
    0 for an image that does not carry ``d`` (adding or removing unrelated noise roughens a natural
    image alike), about 0.4-0.5 for one that does (removing it smooths the image back). Total
    variation rather than a correlation because natural images' edges are heavy-tailed: an L2
    correlation with a smooth (patch-wise) noise gave clean images scores as high as protected ones.
    Measured on CIFAR-10 in ``benchmarks/RESULTS.md`` ("double protection: the content test").
    """
    h, w = images.shape[-2:]
    top, left = max(0, (h - CARRY_CROP) // 2), max(0, (w - CARRY_CROP) // 2)
    x = images[..., top:top + CARRY_CROP, left:left + CARRY_CROP].float()
    d = delta255[..., top:top + CARRY_CROP, left:left + CARRY_CROP].float()
    num = torch.zeros(len(x), dtype=torch.float32, device=x.device)
    den = torch.zeros_like(num)
    for dim in (-2, -1):  # TV(x + d) - TV(x - d) term by term: |dx + dd| - |dx - dd| of each pixel difference
        dx, dd = x.diff(dim=dim), d.diff(dim=dim)
        num += ((dx + dd).abs_() - (dx - dd).abs_()).flatten(1).sum(1)
        den += dd.abs_().flatten(1).sum(1)
    return num / (2 * den).clamp_min(1e-6)


def carried(scores: torch.Tensor | np.ndarray) -> bool:
    """Whether a batch's :func:`carried_score` values say it already carries the noise.

    The mean over ``n`` images must exceed ``0.15 + 0.3 / sqrt(n)``: 0.45 for one image (above
    every clean CIFAR image measured), about 0.23 for 16 and 0.17 for 256, where a clean batch's
    mean is within a few hundredths of 0 and a protected one's about 0.5.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    s = s[np.isfinite(s)]
    return bool(len(s)) and float(s.mean()) > carry_threshold(len(s))


def carry_threshold(n: int) -> float:
    """The threshold :func:`carried` applies to the mean score of ``n`` images."""
    return 0.15 + 0.3 / math.sqrt(max(1, n))


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


# ---------------------------------------------------------------------------- convolution, then additive noise
def convolve_add(images: torch.Tensor, weight: torch.Tensor, delta255: torch.Tensor, *,
                 normalise: str = "max", padding: str = "zeros", dilation: int = 1) -> torch.Tensor:
    """:func:`convolve`, then :func:`add_delta` on its uint8 result: the two kernels in sequence, no copy of either.

    The noise is added to the *filtered* pixels (what a ``convadd`` method crafts it on), so the
    filtered image is rounded to uint8 first, exactly as a conv bank leaves it.
    """
    return add_delta(convolve(images, weight, normalise=normalise, padding=padding, dilation=dilation), delta255)
