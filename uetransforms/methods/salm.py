"""Sparsity-Aware Local Masking (SALM; "Medical Unlearnable Examples: Securing Medical Data
from Unauthorized Training via Sparsity-Aware Local Masking", arXiv 2403.10573, 2024).

Error-minimising noise (see :mod:`uetransforms.methods.em`) restricted to the most significant
pixels of each image. Medical images are sparse: most pixels are background, and the
information sits in a small region. Perturbing only the top-``fraction`` pixels shrinks the
search space (fewer free variables for PGD) and the visible change (an L0 budget on top of the
L-inf one).

Only the paper's abstract was available, so the loop is a reconstruction (METHOD-NOTES, SALM):
the min-min loop of ``em``, where each image's (or, ``mode="class"``, each class's) binary
mask ``M`` keeps the ``ceil(fraction * H * W)`` pixel positions with the largest score and the
noise update is ``delta <- clip_eps(delta - alpha * sign(M * grad))``. The mask is drawn once,
at the first visit, and then fixed, so the stored noise is zero outside it and the L0 budget
holds by construction. Scores (``mask_by``):

* ``"grad"`` (default): ``|dL/dx|`` of the clean image summed over channels, under the
  surrogate as it is at that moment (after its first ``train_steps`` steps);
* ``"intensity"``: pixel brightness (mean over channels), i.e. the foreground of a dark-background
  scan; needs no model.

A mask covers all channels of a pixel position, so at most ``ceil(fraction * H * W)`` positions
(and ``C`` times as many values) ever change.

Parameters: those of ``em`` (``mode`` defaults to ``"sample"``) plus ``fraction`` (0.1) and
``mask_by`` ("grad"). ``bank.info`` adds ``mask_pixels`` (the L0 budget in pixel positions).

Example:
    >>> import numpy as np, uetransforms as ue
    >>> rng = np.random.default_rng(0)
    >>> ds = {"image": list(rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)), "label": [0, 1] * 4}
    >>> bank = ue.fit("salm", ds, surrogate="cnn-tiny", fraction=0.25, max_rounds=1, steps=2, train_steps=1)
    >>> changed = (np.abs(bank.tensors["delta"]).max(axis=1) > 0).sum(axis=(1, 2))
    >>> bool((changed <= 16).all())   # 25% of 8x8 pixel positions
    True
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..bank import NoiseBank
from ..data import FitData
from . import Choice, Method, Number, Param
from . import em as _em

MASK_RULES = ("grad", "intensity")

METHOD = Method(
    key="salm",
    paper="Medical Unlearnable Examples: Sparsity-Aware Local Masking (arXiv 2403.10573, 2024)",
    citation="W. Sun, Y. Liu, Z. Yan, K. Xu, L. Sun, Medical Unlearnable Examples: Securing Medical Data from "
             "Unauthorized Training via Sparsity-Aware Local Masking, arXiv:2403.10573, 2024",
    keyed_by="sample/class",
    needs="a surrogate classifier (trained on the fly)",
    kind="additive",
    summary="error-minimising noise on the top-k most significant pixels only (L0 + L-inf budget)",
    # The loop is em's (the paper's body was not available: see METHOD-NOTES), plus the mask.
    order=40,
    params=_em.METHOD.params + (
        Param("fraction", 0.1, Number(0, 1, lo_open=True), public=True,
              help="share of pixel positions perturbed in each image (the L0 budget)"),
        Param("mask_by", "grad", Choice(MASK_RULES),
              help="'grad' (|loss gradient|, the paper's significance) or 'intensity' (bright foreground)"),
    ),
    resolve=_em.METHOD.resolve,
)


def top_fraction_mask(score: torch.Tensor, fraction: float) -> torch.Tensor:
    """0/1 mask ``[b, 1, H, W]`` keeping the ``ceil(fraction * H * W)`` highest-scoring positions.

    ``score`` is ``[b, 1, H, W]``; exactly that many positions are kept even with ties (topk).
    """
    b, _, h, w = score.shape
    k = max(1, math.ceil(fraction * h * w))
    flat = score.reshape(b, h * w)
    idx = flat.topk(k, dim=1).indices
    mask = torch.zeros_like(flat).scatter_(1, idx, 1.0)
    return mask.reshape(b, 1, h, w)


def mask_rule(mask_by: str, fraction: float) -> _em.MaskRule:
    """The ``(x, grad) -> mask`` rule for the min-min engine."""
    if mask_by == "grad":
        return lambda x, g: top_fraction_mask(g.abs().sum(1, keepdim=True), fraction)
    if mask_by == "intensity":
        return lambda x, g: top_fraction_mask(x.mean(1, keepdim=True), fraction)
    raise ValueError(f"mask_by={mask_by!r}; expected one of {MASK_RULES}")


@METHOD.fitter
def fit(data: FitData, *, seed: int, device: torch.device, **p: Any) -> NoiseBank:
    """Fit error-minimising noise restricted to each image's top-``fraction`` pixels."""
    rule = mask_rule(p["mask_by"], p["fraction"])
    table, info, _masks = _em.minmin(data, p, seed=seed, device=device, method="salm", mask_rule=rule)
    h, w = data.image_shape[1:]
    info["mask_pixels"] = max(1, math.ceil(p["fraction"] * h * w))
    return _em.to_bank("salm", data, p, table, info, seed)
