"""Sparsity-Aware Local Masking (SALM; Sun, Liu, Yan, Xu, Sun: "Medical Unlearnable Examples:
Securing Medical Data from Unauthorized Training via Sparsity-Aware Local Masking",
arXiv 2403.10573, ICML 2024 workshop).

Error-minimising noise (see :mod:`uetransforms.algorithms.em`) restricted to the most significant
pixels of each image. Medical images are sparse: most pixels are background, and the
information sits in a small region. Perturbing only the top-``fraction`` pixels shrinks the
search space (fewer free variables for PGD) and the visible change.

**What is verified against the paper, and what is not.** Only the abstract (v1 and v2) and the
opening of the introduction could be read in this session; the method section, the tables and
any code were not reachable (the code is listed as not disclosed), so:

* verified (paper text): the threat model (a data owner releases noised images so that an
  unauthorised classifier generalises poorly); the idea of perturbing *significant pixel
  regions* of each image instead of the whole image, which narrows the search space of the
  noise and exploits the sparsity of medical images; that it builds on error-minimising
  unlearnable examples; the claim that clinical utility is kept;
* reconstruction (not verified): the rule that picks the pixels (here ``|dL/dx|`` of the
  surrogate, or brightness), the ratio (``fraction`` 0.1), whether the mask is fixed or redrawn
  each step (``mask_update``), the loop (``em``'s min-min loop and its defaults: eps 8/255, 20
  PGD steps of eps/10, 10 surrogate steps per round, stop at 1% surrogate error) and every number.

``bank.info["verified"]`` and ``bank.info["reconstruction"]`` repeat this list, so a bank says
what it is.

The loop: ``em``'s min-min loop, where the noise update is
``delta <- clip_eps(delta - alpha * sign(M * grad))`` with a binary mask ``M`` of the
``ceil(fraction * H * W)`` pixel positions with the largest score (all channels of a position):

* ``mask_update="once"`` (default): each image's (``mode="class"``: each class's) mask is drawn at
  its first visit and then fixed, so the stored noise is zero outside it and the L0 budget holds
  by construction: at most ``ceil(fraction * H * W)`` positions ever change;
* ``mask_update="step"``: every PGD step updates only the top-``fraction`` positions of *that
  step's* gradient (sparse steps, the other reading of "local masking"); the union over steps
  may cover more positions, so there is no L0 guarantee (``mask_by="grad"`` only).

Scores (``mask_by``): ``"grad"`` (default): ``|dL/dx|`` summed over channels under the surrogate
as it is at that moment; ``"intensity"``: pixel brightness (mean over channels), i.e. the
foreground of a dark-background scan; needs no model.

Parameters: those of ``em`` (``mode`` defaults to ``"sample"``) plus ``fraction`` (0.1),
``mask_by`` ("grad") and ``mask_update`` ("once"). ``bank.info`` adds ``mask_pixels`` (the L0
budget in pixel positions, ``None`` for ``mask_update="step"``).

Example:
    >>> import numpy as np, uetransforms as ue
    >>> rng = np.random.default_rng(0)
    >>> ds = {"image": list(rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)), "label": [0, 1] * 4}
    >>> bank = ue.fit("salm", ds, surrogate="cnn-tiny", fraction=0.25, max_rounds=1, steps=2, train_steps=1,
    ...               stop_error=0.9)
    >>> changed = (np.abs(bank.tensors["delta"]).max(axis=1) > 0).sum(axis=(1, 2))
    >>> bool((changed <= 16).all())   # 25% of 8x8 pixel positions
    True
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..core.bank import NoiseBank
from ..core.data import FitData
from . import Choice, Method, Number, Param
from . import em as _em

MASK_RULES = ("grad", "intensity")
MASK_UPDATES = ("once", "step")


def _resolve(p: dict[str, Any], data: Any) -> dict[str, Any]:
    p = _em.METHOD.resolve(p, data)
    if p["mask_update"] == "step" and p["mask_by"] != "grad":
        raise ValueError("mask_update='step' redraws the mask from each step's gradient: use mask_by='grad' "
                         "(a brightness mask does not change between steps; use mask_update='once')")
    return p


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
        Param("mask_update", "once", Choice(MASK_UPDATES),
              help="'once' (each image's mask fixed at its first visit: an L0 budget) or 'step' (every PGD step "
                   "updates the top pixels of its own gradient)"),
    ),
    resolve=_resolve,
)

VERIFIED = ("threat model: released noised images make an unauthorised classifier generalise poorly",
            "perturb significant pixel regions of each image, not the whole image (smaller search space, "
            "exploits sparsity)", "built on error-minimising unlearnable examples")
RECONSTRUCTION = ("pixel-selection rule (mask_by)", "ratio (fraction)", "fixed or per-step mask (mask_update)",
                  "loop and defaults (em's min-min loop: eps, steps, step size, surrogate steps, stop error)")

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
    h, w = data.image_shape[1:]
    k = max(1, math.ceil(p["fraction"] * h * w))
    if p["mask_update"] == "once":
        rule = mask_rule(p["mask_by"], p["fraction"])
        table, info, _masks = _em.minmin(data, p, seed=seed, device=device, method="salm", mask_rule=rule)
        info["mask_pixels"] = k
    else:
        step_rule = lambda g: top_fraction_mask(g.abs().sum(1, keepdim=True), p["fraction"])  # noqa: E731
        table, info, _masks = _em.minmin(data, p, seed=seed, device=device, method="salm", step_rule=step_rule)
        info["mask_pixels"] = None
        info["pixels_per_step"] = k
    info["verified"] = list(VERIFIED)
    info["reconstruction"] = list(RECONSTRUCTION)
    return _em.to_bank("salm", data, p, table, info, seed)
