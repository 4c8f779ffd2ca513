"""AR: autoregressive perturbations (Sandoval-Segura et al., NeurIPS 2022).

Paper: P. Sandoval-Segura, V. Singla, J. Geiping, M. Goldblum, T. Goldstein, D. W. Jacobs,
"Autoregressive Perturbations for Data Poisoning", NeurIPS 2022 (arXiv:2206.03693); code:
github.com/psandovalsegura/autoregressive-poisoning.

Every class gets a 2-D autoregressive (AR) process per channel on a causal 3x3 window: each
pixel is a fixed linear combination of the 8 pixels above and to the left of it. Noise drawn
from a class's process is predicted perfectly by that process's 3x3 "matching filter" (the 8
coefficients with -1 on the current pixel) and badly by other classes' filters, so a network
finds the shortcut. The bank stores only the coefficients (``coef`` ``[K, C, 8]``, raster order
of the window without the current pixel, see :func:`uetransforms.core.kernels.synth_ar`); each image's
noise is synthesised at apply time from a per-sample seed derived from ``params["salt"]`` and
the sample id, so every image gets its own draw of its class's process.

Faithful to the authors' code (``autoregressive.py`` / ``autoregressive_param_finder.py``):

* candidate coefficients are standard normal and divided by their sum per channel (they sum
  to 1, so the matching filter sums to 0);
* a candidate is kept only if it does not diverge: 3 patterns generated from standard normal
  start signals on a 36x36 canvas (cropped by 4, as the code does for CIFAR) all have an
  unscaled L2 norm <= ``max_norm`` (50, the README's ``--gen_norm_upper_bound``);
* and only if it is far from the processes already kept: the matching filter of every kept
  process, applied to the candidate's last pattern (scaled to L2 = 1), has a response
  ``sum(relu(filter * pattern))`` of at least ``min_response`` (the README's
  ``--required_nm_response``: 10 for the released 10-class parameters, 3 for the 100-class
  ones). Our default is 3 for any number of classes: with 10 the search needs ~2e5 candidates
  for 10 classes (minutes on a CPU) against ~1e3 with 3 (a second); pass ``min_response=10``
  to match the CIFAR-10 release;
* the budget: L2, epsilon = 1 in [0, 1] pixel units (the paper's CIFAR setting).

Ours: the random stream (``numpy.random.default_rng(seed)``); classes are filled in order with
the first accepted candidates (the code searches a fixed number of samples and stops when it has
enough). For images larger than 32x32 a kept candidate must also not diverge on the image's own
canvas (``(H+4) x (W+4)`` cropped by 4, bound ``max_norm * sqrt(H*W) / 32``, i.e. the same energy
per pixel): many processes that are tame on 36x36 grow by orders of magnitude over 224 pixels,
which would pile the whole budget into one corner. The synthesis at apply time is the library's
:func:`~uetransforms.core.kernels.synth_ar`, which, like the authors' generator (``gaussian_noise=False``),
draws a fresh start signal per sample on a canvas 4 pixels larger, runs the recursion without
innovations and crops the first 4 rows/columns (36x36 -> 32x32 on CIFAR), so each image's noise is
predicted exactly by its class's filter; ours then centres it before scaling to the budget.
The noise shape is ``data.image_shape``; the bank keeps the default size policy (``"error"``):
pass ``size_mismatch="resize"`` when protecting other sizes.

Parameters (all stored in ``bank.params``, with ``synth="ar"``, the seed and ``salt``):

* ``epsilon`` (default 1.0 for L2, 8/255 for L-inf): budget in [0, 1] pixel units, > 0.
* ``norm`` (default ``"l2"``): ``"l2"`` or ``"linf"``.
* ``min_response`` (default 3): separation threshold, >= 0 (100 classes: ~3e4 candidates,
  ~20 s; many hundreds of classes may need a lower value).
* ``max_norm`` (default 50): divergence threshold, > 0.
* ``max_candidates`` (default ``max(10000, 1000 * K)``): candidates tried before giving up
  (a :class:`RuntimeError` then says to lower ``min_response``).

Example:
    >>> import numpy as np, torch, uetransforms as ue
    >>> ds = {"image": list(np.full((4, 8, 8, 3), 128, np.uint8)), "label": [0, 1, 0, 1]}
    >>> bank = ue.fit("ar", ds, seed=5)
    >>> bank.kind, bank.tensors["coef"].shape, bank.params["norm"], bank.params["epsilon"]
    ('synth', (2, 3, 8), 'l2', 1.0)
    >>> bool(np.allclose(bank.tensors["coef"].sum(-1), 1, atol=1e-5))
    True
    >>> x = torch.from_numpy(np.stack(ds["image"])).permute(0, 3, 1, 2).contiguous()
    >>> ue.apply(bank, x, ds["label"], sample_ids=["a", "b", "c", "d"]).shape
    torch.Size([4, 3, 8, 8])
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..core.bank import NoiseBank
from ..core.data import FitData
from ..core.kernels import ar_recursion
from . import Choice, Method, Number, Param, ParameterError


def _resolve(p: dict[str, Any], data: FitData | None) -> dict[str, Any]:
    """The budget's default and ceiling follow the norm; the search size follows the classes."""
    norm = p["norm"]
    if p["epsilon"] is None:
        p["epsilon"] = 1.0 if norm == "l2" else 8 / 255
    if norm == "linf" and p["epsilon"] > 1:
        raise ParameterError(f"epsilon={p['epsilon']!r} is not valid for method 'ar': with norm='linf' it must be "
                             f"in (0, 1] ([0, 1] pixel units)")
    if data is None:
        return p
    k = data.num_classes
    if p["max_candidates"] is None:
        p["max_candidates"] = max(10_000, 1000 * k)
    elif p["max_candidates"] < k:
        raise ParameterError(f"max_candidates={p['max_candidates']!r} is not valid for method 'ar': it must be an "
                             f"integer >= the number of classes ({k})")
    return p


METHOD = Method(
    key="ar",
    paper="Autoregressive Perturbations for Data Poisoning (Sandoval-Segura et al., NeurIPS 2022)",
    citation="P. Sandoval-Segura, V. Singla, J. Geiping, M. Goldblum, T. Goldstein, D. W. Jacobs, Autoregressive "
             "Perturbations for Data Poisoning, NeurIPS 2022, arXiv:2206.03693",
    keyed_by="class",
    needs="nothing",
    kind="synth",
    summary="per-class autoregressive noise processes, synthesised per image from a seed",
    order=70,
    params=(
        Param("epsilon", None, Number(0, lo_open=True, none=True), paper=1.0, public=True, budget="l2",
              help="budget in [0, 1] pixel units (None: 1.0 for norm='l2', 8/255 for 'linf')"),
        Param("norm", "l2", Choice(("l2", "linf")), paper="l2", public=True, help="budget norm"),
        Param("min_response", 3.0, Number(0), paper="10 (10 classes), 3 (100 classes)", public=True,
              help="least response of a new process to every kept one's filter (higher: more distinct)"),
        Param("max_norm", 50.0, Number(0, lo_open=True), paper=50.0, public=True,
              help="a candidate whose L2 norm on the search canvas exceeds this diverges and is dropped"),
        Param("max_candidates", None, Number(1, integer=True, none=True), public=True,
              help="candidates tried before giving up (None: max(10000, 1000 * classes))"),
    ),
    public_extra=("synth",),  # the synthesiser's name, recorded by the fit
    resolve=_resolve,
)

# The search canvas of the authors' code: 36x36, cropped by 4 (CIFAR), 3 trial patterns.
_CANVAS, _CROP, _TRIALS = 36, 4, 3


def _generate(coef: np.ndarray, start: np.ndarray, max_norm: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The authors' recursion without innovations, on ``[T, N, C, SH, SW]`` start signals.

    Runs the kernel's own recursion (:func:`uetransforms.core.kernels.ar_recursion`, the one the bank's
    noise is synthesised with at apply time): pixels from row 2 and column 2 on are replaced by
    the window's linear combination of ``coef`` (``[N, C, 8]``, shared by the ``T`` trials); the
    first two rows and columns keep the start values. Returns the crop ``[T, N, C, SH-4, SW-4]``
    and a mask ``[N]`` of the candidates whose every trial has an L2 norm <= ``max_norm`` (all if
    ``None``). A candidate is dropped as soon as a trial's norm over the finished pixels passes
    the bound (the norm only grows), so diverging processes cost a few steps; kept ones are
    computed exactly.
    """
    trials, n, c, sh, sw = start.shape
    # Layout [SH, SW, T*N*C]: each pixel's values over all trials/candidates/channels are one
    # contiguous vector, the layout ar_recursion steps over.
    x = np.ascontiguousarray(start.transpose(3, 4, 0, 1, 2).reshape(sh, sw, -1))
    a = np.ascontiguousarray(np.broadcast_to(coef.transpose(2, 0, 1)[:, None], (8, trials, n, c)).reshape(8, -1))

    def prune(sq: np.ndarray) -> np.ndarray | None:
        per_trial = sq.reshape(trials, -1, c).sum(axis=2)  # [T, alive candidates]
        ok = (np.isfinite(per_trial) & (per_trial <= max_norm**2)).all(axis=0)
        if ok.all():
            return None
        return np.broadcast_to(ok[None, :, None], (trials, len(ok), c)).reshape(-1)

    x, cols = ar_recursion(x, a, prune=None if max_norm is None else prune, crop=_CROP)
    alive = np.unique(cols // c % n)  # columns are (trial, candidate, channel) in C order
    mask = np.zeros(n, dtype=bool)
    mask[alive] = True
    full = np.zeros((trials, n, c, sh - _CROP, sw - _CROP))
    if len(alive):
        crop = x[_CROP:, _CROP:].reshape(sh - _CROP, sw - _CROP, trials, len(alive), c)
        full[:, alive] = crop.transpose(2, 3, 4, 0, 1)
    return full, mask


def _filters(coef: np.ndarray) -> np.ndarray:
    """Matching filters ``[N, C, 9]``: the coefficients with -1 on the current pixel."""
    return np.concatenate([coef, -np.ones((*coef.shape[:2], 1))], axis=-1)


def _responses(filters: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """``sum(relu(conv2d(pattern, filter)))`` (valid, summed over channels) for each filter."""
    c, h, w = pattern.shape
    windows = np.stack(
        [pattern[:, di : h - 2 + di, dj : w - 2 + dj] for di in range(3) for dj in range(3)], axis=1
    )  # [C, 9, h-2, w-2], raster order of the window
    out = np.einsum("ncs,csij->nij", filters, windows)
    return np.maximum(out, 0).sum(axis=(1, 2))


def find_coefficients(
    rng: np.random.Generator, num_classes: int, channels: int, *, min_response: float, max_norm: float,
    max_candidates: int, size: tuple[int, int] = (32, 32), batch: int = 256,
) -> np.ndarray:
    """Greedy search of ``num_classes`` AR processes ``[K, C, 8]``, as in the authors' finder.

    Candidates are drawn in batches; each must (1) not diverge on the authors' 36x36 canvas,
    (2) for images larger than 32 pixels, not diverge on the image's own canvas either (bound
    scaled to the same energy per pixel, ``max_norm * sqrt(H*W / 32**2)``), and (3) be far from
    every process kept so far. Classes take the accepted candidates in order.
    """
    h, w = size
    kept: list[np.ndarray] = []
    tried = 0
    while len(kept) < num_classes:
        if tried >= max_candidates:
            raise RuntimeError(
                f"found only {len(kept)} of {num_classes} AR processes in {max_candidates} candidates with "
                f"min_response={min_response:g}; lower min_response or raise max_candidates"
            )
        n = min(batch, max_candidates - tried)
        tried += n
        raw = rng.standard_normal((n, channels, 8))
        start = rng.standard_normal((_TRIALS, n, channels, _CANVAS, _CANVAS))
        with np.errstate(all="ignore"):
            coef = raw / raw.sum(axis=-1, keepdims=True)
        finite = np.isfinite(coef).all(axis=(1, 2))
        coef = np.where(finite[:, None, None], coef, 0.0)
        # Trial 0 first: most candidates diverge and never need the other two trials.
        gen0, stable = _generate(coef, start[:1], max_norm)
        stable &= finite
        gen = np.zeros((_TRIALS, *gen0.shape[1:]))
        if stable.any():
            rest, ok = _generate(coef[stable], start[1:, stable], max_norm)
            stable[stable] = ok
            gen[1:, stable] = rest[:, ok]
        if stable.any() and (h > _CANVAS - _CROP or w > _CANVAS - _CROP):
            bound = max_norm * math.sqrt(h * w / (_CANVAS - _CROP) ** 2)
            chunk = max(1, 2**23 // (_TRIALS * channels * (h + _CROP) * (w + _CROP)))  # <= 64 MiB canvases
            idx = np.flatnonzero(stable)
            for s in range(0, len(idx), chunk):
                part = idx[s : s + chunk]
                big = rng.standard_normal((_TRIALS, len(part), channels, h + _CROP, w + _CROP))
                stable[part] = _generate(coef[part], big, bound)[1]
        last = gen[-1]
        norms = np.sqrt((last**2).sum(axis=(1, 2, 3)))
        stable &= norms > 0
        for m in np.flatnonzero(stable):
            if kept:
                pattern = last[m] / norms[m]  # scaled to L2 = 1, as the code's generate(eps=1, p=2)
                if _responses(_filters(np.stack(kept)), pattern).min() < min_response:
                    continue
            kept.append(coef[m])
            if len(kept) == num_classes:
                break
    return np.stack(kept)


@METHOD.fitter
def fit(data: FitData, *, seed: int, device: torch.device, **p: Any) -> NoiseBank:
    """Search one AR process per class; reads only the label column."""
    num_classes = data.num_classes
    rng = np.random.default_rng(seed)
    salt = int(rng.integers(0, 2**53))  # JSON-safe; seeds each sample's noise with the sample id
    c, h, w = data.image_shape
    coef = find_coefficients(rng, num_classes, c, min_response=p["min_response"], max_norm=p["max_norm"],
                             max_candidates=p["max_candidates"], size=(h, w))
    return NoiseBank(
        method="ar",
        kind="synth",
        keying="class",
        keys=np.arange(num_classes),
        tensors={"coef": coef.astype(np.float32)},
        params={"synth": "ar", **p, "salt": salt, "seed": int(seed)},
        image_shape=data.image_shape,
    )
