"""How visible a protection is: L-inf, L2, PSNR and SSIM between clean and protected uint8 batches.

All functions take uint8 ``[B, C, H, W]`` tensors (or arrays) of the same shape, work per image
in one batched pass, and return float64 ``[B]`` tensors:

* :func:`linf` -- largest absolute pixel change, in 0..255 levels (8 means 8/255),
* :func:`l2` -- Euclidean norm of the change in [0, 1] units (the unit of L2 budgets in papers),
* :func:`psnr` -- ``10 log10(255^2 / MSE)`` in dB (``inf`` for identical images),
* :func:`ssim` -- structural similarity (Wang et al. 2004): Gaussian window 11, sigma 1.5,
  K1 0.01, K2 0.03, averaged over channels and valid positions; the window shrinks (odd, at
  least 3) for images smaller than 11 px.

:func:`summary` gives their means (and the L-inf maximum) for a report.

Example:
    >>> import torch
    >>> x = torch.full((1, 3, 16, 16), 100, dtype=torch.uint8)
    >>> y = x + 8
    >>> linf(x, y).item(), round(psnr(x, y).item(), 2)
    (8.0, 30.07)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


def _pair(clean: Any, protected: Any) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = (torch.as_tensor(np.asarray(v)) if not isinstance(v, torch.Tensor) else v for v in (clean, protected))
    for name, t in (("clean", a), ("protected", b)):
        if t.dtype != torch.uint8 or t.ndim != 4:
            raise ValueError(f"{name} images must be a uint8 [B, C, H, W] batch, got {t.dtype} {tuple(t.shape)}")
    if a.shape != b.shape:
        raise ValueError(f"clean and protected batches differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    return a.to(torch.float64), b.to(a.device, torch.float64)


def linf(clean: Any, protected: Any) -> torch.Tensor:
    """Per-image max ``|protected - clean|`` in pixel levels (0..255)."""
    a, b = _pair(clean, protected)
    return (b - a).abs().flatten(1).amax(1)


def l2(clean: Any, protected: Any) -> torch.Tensor:
    """Per-image ``||protected - clean||_2`` with pixels in [0, 1]."""
    a, b = _pair(clean, protected)
    return ((b - a) / 255).flatten(1).norm(dim=1)


def psnr(clean: Any, protected: Any) -> torch.Tensor:
    """Per-image PSNR in dB for 8-bit images; ``inf`` where nothing changed."""
    a, b = _pair(clean, protected)
    mse = (b - a).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(255.0**2 / mse)  # mse 0 -> inf, as it should be


def _gaussian(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    r = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def _band(n: int, g: torch.Tensor) -> torch.Tensor:
    """``[n - len(g) + 1, n]`` matrix whose row i holds ``g`` at columns i..i+len(g)-1 (a valid 1-D correlation)."""
    m = torch.zeros(n - len(g) + 1, n, dtype=g.dtype, device=g.device)
    r = torch.arange(n - len(g) + 1, device=g.device)[:, None]
    m[r, r + torch.arange(len(g), device=g.device)] = g
    return m


def ssim(clean: Any, protected: Any, *, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image mean SSIM (Gaussian window, valid positions only), channels averaged."""
    a, b = _pair(clean, protected)
    h, w = a.shape[-2:]
    size = min(window, h, w)
    size -= 1 - size % 2  # odd
    if size < 3:
        raise ValueError(f"SSIM needs images of at least 3x3 pixels, got {h}x{w}")
    sig = sigma * size / window
    g = _gaussian(size, sig, a.dtype, a.device)
    # The Gaussian window is separable, so the valid-position blur is rows @ image @ cols.T with banded
    # matrices: the same sums as a 2-D grouped convolution (to 1e-15), but float64 grouped convolution
    # takes torch's slow path on CPU (0.4 s per 96-px image on one thread), matrix products ~20x less.
    rows, cols = _band(h, g), _band(w, g)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return rows @ t @ cols.T

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)


def summary(clean: Any, protected: Any, *, batch_size: int = 1024,
            device: str | torch.device | None = None) -> dict[str, float]:
    """Means over the set (and the worst L-inf) of all four metrics, computed in batches.

    ``clean`` and ``protected`` are uint8 ``[N, C, H, W]`` batches, or equally long lists of
    uint8 ``[C, H, W]`` images whose sizes may differ from image to image (a folder of photos):
    images of one size are measured together, each pair must match in size.

    Keys: ``linf_max``, ``linf_mean`` (pixel levels), ``l2_mean`` ([0, 1] units), ``psnr_mean`` (dB,
    over images that changed; ``inf`` if none did), ``ssim_mean``, ``changed_fraction``, ``n``,
    and for images of several sizes ``sizes`` (``"HxW"`` of the smallest and largest).

    ``device``: where the batches are measured (``None``: where they are). ``ue.evaluate`` passes its
    own, so SSIM over a photo-sized set runs on the GPU it trains on rather than on the CPU.
    """
    if len(clean) != len(protected):
        raise ValueError(f"{len(clean)} clean images but {len(protected)} protected ones")
    if len(clean) == 0:
        raise ValueError("no images to compare")
    parts: dict[str, list[torch.Tensor]] = {"linf": [], "l2": [], "psnr": [], "ssim": []}
    shapes = set()
    for a, b in _same_size_batches(clean, protected, batch_size):
        shapes.add(tuple(a.shape[-2:]))
        if device is not None:
            a, b = a.to(device), b.to(device)
        for name, fn in (("linf", linf), ("l2", l2), ("psnr", psnr), ("ssim", ssim)):
            parts[name].append(fn(a, b))
    m = {k: torch.cat(v) for k, v in parts.items()}
    finite = m["psnr"][torch.isfinite(m["psnr"])]
    out: dict[str, Any] = {
        "n": len(clean),
        "linf_max": float(m["linf"].max()),
        "linf_mean": float(m["linf"].mean()),
        "l2_mean": float(m["l2"].mean()),
        "psnr_mean": float(finite.mean()) if len(finite) else math.inf,
        "ssim_mean": float(m["ssim"].mean()),
        "changed_fraction": float((m["linf"] > 0).to(torch.float64).mean()),
    }
    if len(shapes) > 1:
        by_area = sorted(shapes, key=lambda hw: (hw[0] * hw[1], hw))
        out["sizes"] = [f"{h}x{w}" for h, w in (by_area[0], by_area[-1])]
    return out


def _tensor(v: Any) -> torch.Tensor:
    # np.require copies a read-only array (a decoded image's buffer): torch warns on those.
    return v if isinstance(v, torch.Tensor) else torch.from_numpy(np.require(np.asarray(v), requirements="W"))


#: Pixels (per channel) in one batch of :func:`summary`: ``batch_size`` images at 32 px, fewer of larger
#: ones. SSIM holds several float copies of a batch, so 1024 images at 224 px would need tens of GB.
_BATCH_PIXELS = 1024 * 32 * 32


def _per_batch(batch_size: int, shape: tuple[int, ...]) -> int:
    return max(1, min(batch_size, _BATCH_PIXELS // max(1, int(shape[-1]) * int(shape[-2]))))


def _same_size_batches(clean: Any, protected: Any, batch_size: int):
    """``(clean, protected)`` batches of at most ``batch_size`` images of one size each (fewer of images
    larger than 32 px: at most :data:`_BATCH_PIXELS` pixels per channel)."""
    if not isinstance(clean, (list, tuple)) and not isinstance(protected, (list, tuple)):
        ca, pa = _tensor(clean), _tensor(protected)
        step = _per_batch(batch_size, tuple(ca.shape))
        for s in range(0, len(ca), step):
            yield ca[s : s + step], pa[s : s + step]
        return
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (a, b) in enumerate(zip(clean, protected)):
        shape = tuple(np.shape(a))
        if shape != tuple(np.shape(b)):
            raise ValueError(f"image {i}: clean {shape} and protected {tuple(np.shape(b))} differ in size")
        groups.setdefault(shape, []).append(i)
    for shape, idx in groups.items():
        step = _per_batch(batch_size, shape)
        for s in range(0, len(idx), step):
            chunk = idx[s : s + step]
            yield (torch.stack([_tensor(clean[i]) for i in chunk]), torch.stack([_tensor(protected[i]) for i in chunk]))


def probe(bank: Any, dataset: Any, *, image_column: str = "image", label_column: str | None = "label",
          id_column: str | None = None, n: int = 64) -> dict[str, float]:
    """:func:`summary` of what ``bank`` does to ``n`` rows of a ``datasets.Dataset``, spread evenly
    over it (an image folder is sorted by class, and often by size with it).

    The rows go through :class:`~uetransforms.Protect` exactly as a user's ``map`` would (so
    class, cluster and sample keying all work), then both sides are decoded and compared; photos
    of several sizes are compared size by size. It is how ``uetransforms fit`` prints a quality
    line: a number to read before publishing.
    """
    from ..core.images import to_chw
    from ..integrations.datasets import Protect

    total = len(dataset)
    k = max(1, min(int(n), total))
    rows = sorted({int(i) for i in np.linspace(0, total - 1, k)})
    picked = dataset.select(rows) if hasattr(dataset, "select") else dataset
    batch = picked[:]  # a plain batch dict, as datasets.map(batched=True) passes it
    clean = list(batch[image_column])
    prot = Protect(bank, image_column=image_column, label_column=label_column, id_column=id_column)(dict(batch))
    c = bank.channels

    def chw(values: Any) -> list[np.ndarray]:
        return [to_chw(v, channels=c, convert=True, column=image_column) for v in values]

    return summary(chw(clean), chw(prot[image_column]))


def describe(q: dict[str, float]) -> str:
    """One line for a person: ``PSNR 19.5 dB, SSIM 0.81, L-inf 219/255 (mean 150/255) on 64 images``."""
    psnr_txt = "inf" if math.isinf(q["psnr_mean"]) else f"{q['psnr_mean']:.1f}"
    sizes = f" of {q['sizes'][0]} to {q['sizes'][1]} px" if q.get("sizes") else ""
    return (f"PSNR {psnr_txt} dB, SSIM {q['ssim_mean']:.3f}, L-inf {q['linf_max']:.0f}/255 "
            f"(mean {q['linf_mean']:.1f}/255) on {q['n']} images{sizes}")


#: Below either bound a change is usually visible side by side (a rule of thumb, not a guarantee).
VISIBLE_PSNR_DB = 30.0
VISIBLE_SSIM = 0.9


def visible(q: dict[str, float]) -> bool:
    """Whether a :func:`summary` is past the rule-of-thumb visibility bounds above."""
    return q["psnr_mean"] < VISIBLE_PSNR_DB or q["ssim_mean"] < VISIBLE_SSIM


__all__ = ["describe", "l2", "linf", "probe", "psnr", "ssim", "summary", "visible"]
