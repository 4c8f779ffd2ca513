"""Helpers shared by the fitted (surrogate-based) methods: grey-level quantisation, work arrays,
and the parameter declarations several methods share (so each is written once).

Private: methods import from here; users read the parameters through ``uetransforms methods KEY``.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np

from . import Choice, Flag, Free, Number, Param, Rule

#: Work arrays above this size are memory-mapped from a temporary file instead of held in RAM.
RAM_LIMIT_BYTES = 256 * 2**20


# ---------------------------------------------------------------------------- numerics
def level_limit(epsilon: float) -> int:
    """The largest whole number of grey levels within ``epsilon``: ``floor(255 * eps)``."""
    return int(math.floor(255 * epsilon + 1e-6))


def quantise(delta: np.ndarray, epsilon: float, dtype: Any = np.float16, out: np.ndarray | None = None) -> np.ndarray:
    """Whole grey levels ``q / 255`` (``|q| <= floor(255 eps)``), rounded towards zero in ``dtype``.

    ``255 * result`` rounds back to ``q`` exactly and ``|result| <= epsilon`` holds in float64,
    which a plain cast of ``q / 255`` to float16/float32 does not guarantee (it may round up).
    ``out`` may be ``delta`` itself (chunked, in place, for memory-mapped arrays).
    """
    dtype = np.dtype(dtype)
    out = np.empty(delta.shape, dtype) if out is None else out
    lim = level_limit(epsilon)
    step = max(1, (1 << 24) // max(1, int(np.prod(delta.shape[1:]))))  # ~16M values per chunk
    for s in range(0, len(delta), step):
        q = np.clip(np.rint(np.asarray(delta[s : s + step], np.float64) * 255), -lim, lim) / 255
        d = q.astype(dtype)
        outward = np.abs(d.astype(np.float64)) > np.abs(q)
        d[outward] = np.nextafter(d[outward], dtype.type(0))
        out[s : s + step] = d
    return out


def workspace(shape: tuple[int, ...], dtype: Any, *, limit: int | None = None) -> np.ndarray:
    """A zeroed array, memory-mapped from an anonymous temporary file when bigger than ``limit``."""
    limit = RAM_LIMIT_BYTES if limit is None else limit
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if nbytes <= limit:
        return np.zeros(shape, dtype)
    # TemporaryFile is already unlinked: the pages vanish when the last mapping (the bank) goes.
    return np.memmap(tempfile.TemporaryFile(prefix="uetransforms-"), dtype=dtype, mode="w+", shape=shape)


# ---------------------------------------------------------------------------- shared parameters
def _grey_level_budget(value: Any) -> float:
    eps = Number(0, 1, lo_open=True)(value)
    if eps * 255 < 1 - 1e-6:
        raise ValueError("below one grey level (1/255): uint8 images could not change at all")
    return eps


def epsilon_linf(default: float = 8 / 255, paper: float | None = 8 / 255) -> Param:
    """The L-inf budget of noise that is quantised to whole grey levels (at least 1/255)."""
    return Param("epsilon", default, Rule(_grey_level_budget, "a number in [1/255, 1]"), paper=paper, public=True,
                 budget="linf", help="L-inf budget in [0, 1] pixel units (8/255 = 8 grey levels)")


NORM_LINF = Param("norm", "linf", Choice(("linf",)), paper="linf", public=True,
                  help="perturbation norm (only 'linf' is supported)")



SURROGATE_CHECK = Free("a name of uetransforms.models.surrogates.build or an nn.Module")


def surrogate(default: str = "cnn-small") -> Param:
    return Param("surrogate", default, SURROGATE_CHECK,
                 help="the classifier trained on the fly (see uetransforms.models.surrogates.build)")


def count(name: str, default: int, help: str, *, lo: int = 1, paper: Any = None, public: bool = False) -> Param:
    """A whole-number setting (steps, batch size...), stored as given."""
    return Param(name, default, Number(lo, integer=True, cast=False), paper=paper, public=public, help=help)


def positive(name: str, default: Any, help: str, *, paper: Any = None, none: bool = False,
             public: bool = False) -> Param:
    """A positive real (learning rate, step size...), stored as given."""
    return Param(name, default, Number(0, lo_open=True, none=none, cast=False), paper=paper, public=public, help=help)


#: The budget of the grey-level-quantised L-inf methods (em, salm, bayes)...
LINF_BUDGET = (epsilon_linf(), NORM_LINF)
#: ... and, with a fixed default surrogate, what em and salm start with.
SURROGATE_LINF = (*LINF_BUDGET, surrogate())

BATCH_SIZE = count("batch_size", 128, "images per surrogate / noise batch")
LR = positive("lr", 0.1, "the surrogate's SGD learning rate")
MAX_STEPS = Param("max_steps", None, Number(0, integer=True, none=True, cast=False),
                  help="stop after this many surrogate + noise steps (None: no limit)")
MAX_SECONDS = Param("max_seconds", None, Number(0, none=True, cast=False),
                    help="stop after this many seconds (None: no limit); every sample still gets noise")
PROGRESS = Param("progress", None, Flag(none=True), help="progress bar (None: only on a terminal)")


def step_size_from_epsilon(fraction: float) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """A ``Method.resolve``: ``step_size=None`` means ``epsilon * fraction`` (em: 1/10, bayes: 1/4)."""

    def resolve(p: dict[str, Any], data: Any) -> dict[str, Any]:
        if p["step_size"] is None:
            p["step_size"] = p["epsilon"] * fraction
        return p

    return resolve


# ---------------------------------------------------------------------------- the attacker's views
# The from-scratch attacker (uetransforms.evaluation) trains on random crops (zero pad 1/8 of the
# side) and horizontal flips. Methods that fit noise *through* those views (tap's "flip+crop",
# salm's ``augment``) use these, written as indexing ops so gradients reach the noise. torch is
# imported inside: this module is read by methods' parameter declarations too.
def flip_some(x: Any, gen: Any) -> Any:
    """Each image of ``x`` ``[b, c, H, W]`` flipped left-right with probability 1/2 (``gen``: a torch.Generator)."""
    import torch

    flip = (torch.rand(len(x), generator=gen) < 0.5).to(x.device).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)


def shift_some(x: Any, gen: Any) -> Any:
    """Each image moved by its own random offset of up to 1/8 of the side, zeros shifted in: the
    attacker's random crop (zero pad, crop back), as an indexing op so gradients reach the noise."""
    import torch
    import torch.nn.functional as F

    b, _, h, w = x.shape
    pad = max(1, h // 8)
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    return xp[torch.arange(b, device=x.device)[:, None, None, None],
              torch.arange(x.shape[1], device=x.device)[None, :, None, None], rows, cols]


def coin_some(x: Any, gen: Any, alpha: float = 2.0) -> Any:
    """Every pixel of every image re-read at its own random offset in (-alpha, alpha) px: the COIN defence
    (Li, Wang et al., AAAI 2025) as a PGD augmentation, so the noise is crafted against it (measured: it does
    not make cudatap survive COIN, benchmarks/RESULTS.md, "Under defences: COIN ...")."""
    dy, dx = coin_displacements(x, alpha, gen)
    return coin_resample(x, dy, dx)


def coin_displacements(x: Any, alpha: float, generator: Any) -> tuple[Any, Any]:
    """Per-image, per-pixel ``(dy, dx)`` in ``U(-alpha, alpha)``, each ``[B, H, W]`` (drawn on the CPU):
    COIN's displacement field (``evaluation.defences.coin``)."""
    import torch

    b, _, h, w = x.shape
    dy = (torch.rand((b, h, w), generator=generator) * 2 - 1) * alpha
    dx = (torch.rand((b, h, w), generator=generator) * 2 - 1) * alpha
    return dy.to(x.device, x.dtype), dx.to(x.device, x.dtype)


def coin_resample(x: Any, dy: Any, dx: Any) -> Any:
    """Float ``[B, C, H, W]`` read at ``(i + dy, j + dx)`` by bilinear interpolation, wrapping at the border
    (differentiable in ``x``: PGD's gradient reaches the noise through it)."""
    import torch

    b, c, h, w = x.shape
    ys = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1) + dy
    xs = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w) + dx
    y0, x0 = ys.floor(), xs.floor()
    fy, fx = (ys - y0).unsqueeze(1), (xs - x0).unsqueeze(1)  # [B, 1, H, W]: shared by the channels
    y0, x0 = y0.long() % h, x0.long() % w
    y1, x1 = (y0 + 1) % h, (x0 + 1) % w
    flat = x.reshape(b, c, h * w)

    def at(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        idx = (yy * w + xx).reshape(b, 1, h * w).expand(b, c, h * w)
        return flat.gather(2, idx).reshape(b, c, h, w)

    top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx
    bottom = at(y1, x0) * (1 - fx) + at(y1, x1) * fx
    return (top * (1 - fy) + bottom * fy).clamp_(0, 1)
