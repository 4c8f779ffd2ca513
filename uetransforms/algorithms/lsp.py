"""LSP: Linear-separable Synthetic Perturbations (Yu et al., KDD 2022).

Paper: D. Yu, H. Zhang, W. Chen, J. Yin, T.-Y. Liu, "Availability Attacks Create Shortcuts",
KDD 2022 (arXiv:2111.00898); code: github.com/dayu11/Availability-Attacks-Create-Shortcuts.

The paper shows that availability attacks work because their perturbations are linearly
separable, and builds such perturbations with no model at all: initial points are drawn per
class in a low-dimensional space, each coordinate is repeated over a ``patch_size x patch_size``
patch (one value per patch and channel; the grid covers the image and the last patches are
cropped), and the result is scaled into a small ball.

Faithful to the authors' code:

* the patch grid (``ceil(H / patch_size) x ceil(W / patch_size)`` values per channel, repeated by
  nearest-neighbour up-sampling, cropped to ``H x W``); ``patch_size`` 8 on 32x32 images (the
  code's default, a 4x4 grid), generalised here to ``min(H, W) // 4``;
* the class centres: the code draws points with ``sklearn.datasets.make_classification``, whose
  class centres are distinct random vertices of a hypercube (``class_sep`` times a +-1 vector);
  ``pattern="vertex"`` (default) uses exactly such a vertex per class;
* the budget: the code scales every perturbation to the L2 radius ``eps * sqrt(C*H*W)`` with
  ``eps = 6/255`` (its default). A +-1 vertex pattern scaled that way has every entry equal to
  +-eps, so the default bank is *both* L-inf = 6/255 and L2 = 6/255 * sqrt(C*H*W), exactly.

Our reconstruction: the bank is **class-wise** (one pattern per class, the class centre), while
the code perturbs each image with its own sample from the class's Gaussian cluster (centre plus
randomly transformed unit noise); a class-keyed bank cannot hold per-sample noise. ``pattern=
"gaussian"`` draws a standard normal value per patch instead of a vertex (any class-wise pattern
is linearly separable), scaled to the L-inf (or L2) budget.

Parameters (all stored in ``bank.params``, with the seed):

* ``epsilon`` (default 6/255): budget in [0, 1] pixel units, in ``norm``; 0 < epsilon <= 1 for
  L-inf. For ``norm="l2"`` it is the L2 radius (e.g. ``6/255 * sqrt(3*32*32)`` ~ 1.30).
* ``norm`` (default ``"linf"``): ``"linf"`` or ``"l2"``.
* ``patch_size`` (default ``max(1, min(H, W) // 4)``, i.e. 8 for CIFAR): integer >= 1.
* ``pattern`` (default ``"vertex"``): ``"vertex"`` or ``"gaussian"``.

Example:
    >>> import numpy as np, torch, uetransforms as ue
    >>> ds = {"image": list(np.full((4, 32, 32, 3), 128, np.uint8)), "label": [0, 1, 0, 1]}
    >>> bank = ue.fit("lsp", ds, seed=3)
    >>> bank.params["patch_size"], bank.tensors["delta"].shape
    (8, (2, 3, 32, 32))
    >>> bool(np.allclose(np.abs(bank.tensors["delta"]), 6 / 255))
    True
    >>> x = torch.from_numpy(np.stack(ds["image"])).permute(0, 3, 1, 2).contiguous()
    >>> sorted(set((ue.apply(bank, x, ds["label"]).int() - x.int()).flatten().tolist()))
    [-6, 6]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..core.bank import NoiseBank
from ..core.data import FitData
from . import Choice, Method, Number, Param, ParameterError


def _resolve(p: dict[str, Any], data: FitData | None) -> dict[str, Any]:
    """The budget's ceiling depends on the norm (and, for L2, on the image size); so does the patch size."""
    if p["norm"] == "linf" and p["epsilon"] > 1:
        raise ParameterError(f"epsilon={p['epsilon']!r} is not valid for method 'lsp': with norm='linf' it must be "
                             f"in (0, 1] ([0, 1] pixel units; the paper uses 6/255)")
    if data is None:
        return p
    shape = data.image_shape
    if p["norm"] == "l2" and p["epsilon"] > math.sqrt(math.prod(shape)):
        raise ParameterError(f"epsilon={p['epsilon']!r} is not valid for method 'lsp': with norm='l2' it must be "
                             f"<= sqrt(C*H*W) = {math.sqrt(math.prod(shape)):g} for {shape} images")
    if p["patch_size"] is None:
        p["patch_size"] = max(1, min(shape[1:]) // 4)
    _check_patterns(p, shape, data)
    return p


def _grid(shape: tuple[int, ...], ps: int) -> int:
    """Values per pattern: channels x the patch grid."""
    c, h, w = shape
    return c * -(-h // ps) * -(-w // ps)


def _check_patterns(p: dict[str, Any], shape: tuple[int, ...], data: FitData) -> None:
    """Refuse a patch size that cannot give every class its own pattern (issue 23: patch_size=64 on
    32-px images gave 10 classes 7 distinct patterns, silently)."""
    c, h, w = shape
    ps, k = int(p["patch_size"]), int(data.num_classes)
    if ps > max(h, w):
        raise ParameterError(
            f"patch_size={ps} is larger than the {h}x{w} images: one patch covers the whole image, so each class's "
            f"pattern is a single colour shift. Use patch_size <= {max(1, min(h, w) // 2)} (the paper: 8 on 32x32; "
            "None picks min(H, W) // 4)")
    if p["pattern"] == "vertex" and 2 ** min(_grid(shape, ps), 62) < k:
        fits = [q for q in range(ps, 0, -1) if 2 ** min(_grid(shape, q), 62) >= k]
        raise ParameterError(
            f"patch_size={ps} leaves {_grid(shape, ps)} values per pattern on {h}x{w}x{c} images: "
            f"{2 ** _grid(shape, ps)} distinct vertex patterns for {k} classes, so some classes would share one. "
            f"Use patch_size <= {fits[0] if fits else 1}, or pattern='gaussian'")


METHOD = Method(
    key="lsp",
    paper="Availability Attacks Create Shortcuts: linear-separable synthetic perturbations (Yu et al., KDD 2022)",
    citation="D. Yu, H. Zhang, W. Chen, J. Yin, T.-Y. Liu, Availability Attacks Create Shortcuts, KDD 2022, "
             "arXiv:2111.00898",
    keyed_by="class",
    needs="nothing",
    kind="additive",
    summary="patch-wise constant, linearly separable synthetic noise per class",
    order=80,
    params=(
        Param("epsilon", 6 / 255, Number(0, lo_open=True), paper=6 / 255, public=True, budget="linf",
              help="budget in [0, 1] pixel units: L-inf in (0, 1], or L2 up to sqrt(C*H*W)"),
        Param("norm", "linf", Choice(("linf", "l2")), paper="linf", public=True, help="budget norm"),
        Param("patch_size", None, Number(1, integer=True, none=True), paper=8, public=True,
              help="side of the constant patches (None: min(H, W) // 4, 8 for 32x32)"),
        Param("pattern", "vertex", Choice(("vertex", "gaussian")), paper="vertex", public=True,
              help="'vertex': class centres on hypercube vertices (make_classification); 'gaussian'"),
    ),
    resolve=_resolve,
)


def _distinct_vertices(rng: np.random.Generator, k: int, dims: int) -> np.ndarray:
    """``k`` random +-1 vectors of length ``dims``, distinct whenever ``2**dims >= k``."""
    if dims <= 20:
        # Few vertices: draw vertex numbers without replacement (with, if there are more classes).
        idx = rng.choice(2**dims, size=k, replace=k > 2**dims)
        v = (idx[:, None] >> np.arange(dims - 1, -1, -1)[None, :]) & 1
    else:
        v = rng.integers(0, 2, size=(k, dims), dtype=np.int8)
        while True:  # a repeat among 2**21+ vertices is astronomically rare; redraw it
            _, first = np.unique(v, axis=0, return_index=True)
            dup = np.setdiff1d(np.arange(k), first)
            if len(dup) == 0:
                break
            v[dup] = rng.integers(0, 2, size=(len(dup), dims), dtype=np.int8)
    return v.astype(np.float64) * 2 - 1


@METHOD.fitter
def fit(data: FitData, *, seed: int, device: torch.device, **p: Any) -> NoiseBank:
    """One patch-wise constant pattern per class; reads only the label column."""
    shape = data.image_shape
    c, h, w = shape
    num_classes = data.num_classes
    ps = p["patch_size"]
    gh, gw = -(-h // ps), -(-w // ps)
    rng = np.random.default_rng(seed)
    if p["pattern"] == "vertex":
        z = _distinct_vertices(rng, num_classes, c * gh * gw).reshape(num_classes, c, gh, gw)
    else:
        z = rng.standard_normal((num_classes, c, gh, gw))
    delta = np.repeat(np.repeat(z, ps, axis=2), ps, axis=3)[:, :, :h, :w]
    flat = delta.reshape(num_classes, -1)
    size = np.abs(flat).max(axis=1) if p["norm"] == "linf" else np.linalg.norm(flat, axis=1)
    delta = delta * (p["epsilon"] / np.maximum(size, 1e-12)).reshape(-1, 1, 1, 1)
    delta = delta.astype(np.float32)
    if p["norm"] == "linf":
        delta = np.clip(delta, np.float32(-p["epsilon"]), np.float32(p["epsilon"]))
    return NoiseBank(
        method="lsp",
        kind="additive",
        keying="class",
        keys=np.arange(num_classes),
        tensors={"delta": delta},
        params={**p, "seed": int(seed)},
        image_shape=shape,
    )
