"""Sparsity-Aware Local Masking (SALM; Sun, Liu, Yan, Xu, Sun: "Medical Unlearnable Examples:
Securing Medical Data from Unauthorized Training via Sparsity-Aware Local Masking",
arXiv 2403.10573, ICML 2024 NextGenAISafety workshop), as reconstructed here.

**What is the paper's and what is ours.** Only the abstracts (v1 and v2) and the opening of the
introduction could be read; the method section, the tables and the ablations could not be
retrieved, and no public code was found. So:

* the paper's (its abstract): the threat model (a data owner releases noised images so that an
  unauthorised classifier generalises poorly); the idea of perturbing only the *significant pixel
  regions* of each image instead of the whole image, which narrows the search space of the noise
  and exploits the sparsity of medical images; that it builds on error-minimising unlearnable
  examples. (The v1 abstract also claims that clinical utility is kept; v2 removed that sentence
  and nothing here checks it.)
* ours (a reconstruction, nothing of it checked against the paper): the objective (``em``'s
  min-min, Huang et al. 2021, with a binary mask), the score that picks the pixels (``mask_by``),
  the ratio (``fraction``), when the mask is drawn (``mask_update``, ``mask_warmup_accuracy``),
  the budget (epsilon, norm) and the loop with all its numbers (steps, step size, surrogate steps,
  stop error, sample-wise noise). Their defaults are ``em``'s (Huang et al.'s) values or chosen by
  our own measurement below; none is SALM's, so no parameter carries a ``paper=`` value.

``bank.info["verified"]`` and ``bank.info["reconstruction"]`` repeat this list, so a bank says
what it is.

The loop (ours): ``em``'s min-min loop, where the noise update is
``delta <- clip_eps(delta - alpha * sign(M * grad))`` with a binary mask ``M`` of the
``ceil(fraction * H * W)`` pixel positions with the largest score (all channels of a position):

* ``mask_update="once"`` (default): each image's (``mode="class"``: each class's) mask is drawn at
  its first visit and then fixed, so the stored noise is zero outside it and the L0 budget holds
  by construction: at most ``ceil(fraction * H * W)`` positions ever change;
* ``mask_update="step"``: every PGD step updates only the top-``fraction`` positions of *that
  step's* gradient (sparse steps); the union over steps may cover more positions, so there is no
  L0 guarantee (``mask_by="grad"`` only);
* ``mask_update="freeze"`` (sample-wise, ``mask_by="grad"``): ``"step"`` for ``freeze_rounds``
  rounds, then each image keeps the top-``fraction`` positions of that phase's accumulated
  ``|noise|`` (summed over channels) and the rest of the rounds run as ``"once"`` inside those
  masks, from a fresh random start, with the same surrogate: the L0 budget holds at the end.

``mask_pool`` (odd, default 1) averages the score over a ``mask_pool x mask_pool`` window before
the top positions are picked, so the mask gathers into local regions instead of scattered pixels
(the paper's words are "local regions"; what shape it gives them is not known).

``mask_cell`` (ours; default 0: the best positions of the whole image): with ``c >= 2`` the image
is cut into ``c x c`` cells and each keeps the top ``floor(fraction * c * c)`` positions of its own
score, so every region (every receptive field, every crop the attacker takes) holds perturbed
pixels; the L0 budget is then the sum of the cells' quotas, never above ``fraction * H * W``.

``tile`` (ours; default 0: no repetition; needs ``mode="class"`` and ``mask_update="once"``): with
``c >= 2`` each class's noise is one ``c x c`` tile repeated over the image from its top-left
corner, a periodic texture (the attacker's random crop only changes its phase, its flip mirrors
it). The tile keeps its top ``floor(fraction * c * c)`` positions by the score summed over their
repetitions (when ``c`` does not divide the image, positions near the top-left repeat once more,
and any that would take the image above ``floor(fraction * H * W)`` changed positions is
skipped), and every PGD step moves the tile by the sign of its own gradient (the sum over its
repetitions). So the positions are chosen per tile, for the whole class, not per image region:
"significant" here means a tile position that matters over the whole image on average, which is
the paper's idea only loosely.

``tile_design`` (ours; default ``"score"``: the positions above): ``"distinct"`` takes each class's
tile positions *and starting signs* from :func:`distinct_tiles`, a seeded search that keeps the
classes' tiles apart in what the attacker can see of them: every cyclic shift (its random crop of a
repeated tile) and mirror (its flip), :func:`tile_views`. Neither the score nor a random draw asks
two classes' tiles to differ there. The fit then moves the values inside those positions as
usual (start at ``+-epsilon`` with the design's signs). Nothing of SALM's significance idea is in
this mode: the positions come from the design, not from the image or the surrogate (so ``mask_by``
and ``mask_pool`` must stay at their defaults), and the tile must divide the image, so every tile
position repeats equally often and the L0 budget is exact. ``"distinct-chroma"``: zero-sum colours
(no grey part), kept zero-sum by every step. ``"distinct-grey"``: every designed position is
``+epsilon`` in every channel (grey, so it is the same noise in a one-channel scan and survives an
attacker's greyscale conversion; non-negative, so a black background does not clip it away), the
classes differ by their positions only, and every step keeps the table grey (:func:`grey_tie`) and
each position inside ``[0, epsilon]`` (:func:`keep_sign_rule`: no sign flips), so the fit only sets
strengths along the design. ``"distinct-grey-signs"``: the same with ``+-epsilon`` grey positions
(each position keeps its design sign). ``tile_block=b`` (ours; default 1) draws the design on a ``tile / b``
grid and makes each kept cell a ``b x b`` square (:func:`design_tiles`), a coarser, lower-frequency
pattern with the same share of positions.

``augment`` (ours; default ``"none"``): ``"flip"`` or ``"flip+crop"`` show the surrogate and the
PGD steps each perturbed batch through the from-scratch attacker's own augmentation (a random
horizontal flip; a random shift of up to 1/8 of the side with zeros shifted in, i.e. its zero-pad
random crop), an expectation over those views, so the noise is fitted to survive them. The masks
and the stop error are judged on the images as stored.

Scores (``mask_by``, ours): ``"grad"`` (default): ``|dL/dx|`` summed over channels under the
surrogate as it is at that moment; ``"intensity"``: pixel brightness (mean over channels), i.e.
the foreground of a dark-background scan; needs no model.

A mask from a surrogate that has learned (ours): without a warm-up the ``"grad"`` mask is drawn
after the surrogate's first ``train_steps`` (10) SGD steps, from a network that has learned almost
nothing. ``mask_warmup_accuracy=a`` first trains the surrogate on the clean images until its
accuracy on them (eval mode, on up to 1024 of them, checked every 20 steps) reaches ``a``, for at
most ``mask_warmup_steps`` steps (a warning if it stops short; ``bank.info["warmup"]`` records the
steps and the accuracy reached); the min-min loop then continues from that surrogate. The warm-up's
steps and seconds count against ``max_steps`` / ``max_seconds``.

**Defaults, chosen by measurement** (``benchmarks/RESULTS.md``, "salm, session 6 (issue 26)"):
synthetic sparse 32 px scans (4 shapes, one bright object on a dark background, ~5% of the pixels),
2000 training images, a ``cnn-tiny`` surrogate with 90 s per fit (5 PGD steps of 2/255, 20
surrogate steps per round, no error stop), a ``cnn-small`` trained from scratch 10 epochs on the
protected copy, clean test accuracy (clean training: 1.000; dense ``em`` at the same budget:
0.250). One run each: ``fraction=0.1`` with ``mask_update="once"``: ``mask_by="grad"`` 0.819,
``"intensity"`` 0.666, ``"grad"`` after a warm-up to 0.9 clean accuracy (reached 0.986 in 80
steps) 1.000; ``mask_update="step"`` 0.403 but it changed 56% of the positions on average (74% at
most), so it is not an L0 budget. Intensity masks over the ratio: 0.05 -> 0.999, 0.1 -> 0.666,
0.2 -> 0.776, 0.5 -> 0.618 (not monotone: single runs differ by 0.1 or more); grad masks:
0.1 -> 0.819, 0.2 -> 0.728, 0.5 -> 0.378 (the 0.2 and 0.5 fits got 4 rounds instead of 12: the
machine was loaded). So the warm-up is off by default (it made the mask worse here), ``"once"``
stays (the only mode with an L0 budget) and ``"grad"``/0.1 stay (intensity won at 0.1, grad at
0.2: within that spread). Session 7 ("salm, session 7 (issue 26)"; 12 rounds for every fit, no
time budget): ``mode="class"`` with grad masks gave 0.531 at 0.1 and 0.497 / 0.638 at 0.2 (bank
seeds 1234 / 4321; dense ``em`` at those seeds: 0.250 / 0.271); ``mask_update="freeze"`` gave
0.976 at 0.1 and 0.464 at 0.2 (one run each; the attacker's last five epochs swing 0.29-0.78); ``mask_pool=7`` (class-wise, 0.2) gave 0.914. So ``mode`` stays ``"sample"``: at 0.1
the mean over the attacker's last five epochs does not separate class-wise (0.750) from
sample-wise (0.748), and a class's mask is one set of positions for all its images, wherever each
image's object is, which is not the paper's per-image "significant regions". No setting within
20% of the positions came near ``em``: on this benchmark, SALM as reconstructed here protects less
than dense ``em`` at the same epsilon. Session 8 ("salm, session 8 (issue 26)"; the same setting):
``mask_cell=4`` (class-wise, 0.2, i.e. 3 of every 4 x 4 cell, 18.75% of the positions) gave 0.267,
0.500 and 0.575 at three bank seeds (``em``: 0.250 / 0.271 / 0.250), 0.483 with ``mask_cell=8``,
and 0.541 sample-wise (whole image, sample-wise, 0.2: 0.581); ``augment="flip+crop"`` gave 0.548
class-wise and 0.704 with ``mask_cell=4``. So ``mask_cell`` stays 0 (class-wise it lowered the
final accuracy at both seeds that have a whole-image row, but the mean of the attacker's last five
epochs did not move one way, and sample-wise, the default mode, it has one seed) and ``augment``
stays ``"none"`` (it lost). Session 9 ("salm, session 9 (issue 26)"; the same setting): ``tile=4``
(class-wise, 0.2: 18.75% of the positions) gave 0.501 at seed 1234, and with a weaker surrogate
(``train_steps=5`` instead of 20) 0.250 / 0.250 / 0.500 at the three seeds above and 0.501 / 0.474 at
two more (``em``: 0.254 / 0.285), at or below ``em`` at two of the five; but random 4 x 4 tiles with no fit gave 0.500 / 0.278 /
0.250 / 0.609 / 0.535 at the same five seeds, so the fit is not shown to add to a random periodic class
pattern. ``tile=5`` gave 0.717, ``mask_cell=5`` 0.340. So ``tile`` stays 0. Session 10 ("salm, session
10 (issue 26)"; the same setting, tile 4, 0.2): ``tile_design="distinct"`` gave 0.501 / 0.255 / 0.689 at
seeds 1234 / 4321 / 99 (its design alone, no fit: 0.252 / 0.641 / 0.444 / 0.339 / 0.250 at the five);
zero-sum colour tiles with no fit gave 0.256 / 0.250 / 0.323 / 0.263 / 0.255, near ``em`` (0.262 mean), but
``tile_design="distinct-chroma"`` (the fit from them) gave 0.477 / 0.744 (``train_steps=5``) and
0.563 / 0.411 (``train_steps=20``) at 1234 / 4321: the fit undoes the design. So ``tile_design`` stays
``"score"``. Session 11 ("salm, session 11 (issue 26)"; the same setting, two attacker training seeds per
cell): grey noise only (equal in every channel, so it survives greyscale and exists in a one-channel scan)
protected nothing near ``em``: non-negative grey tiles with no fit 0.932 / 0.930 and 0.942 / 0.986 at bank
seeds 1234 / 4321, in 2 x 2 blocks on a tile of 8 0.998-1.000; ``+-epsilon`` grey tiles 0.922 / 0.931 and
0.501 / 0.691; ``tile_design="distinct-grey"`` fitted 0.857 / 0.970 (tile 4) and 1.000 / 1.000 (tile 8,
``tile_block=2``) at 1234; sample-wise noise on the object and its rim (``mask_by="intensity"``,
``mask_pool=5``, 18.75%) 0.987 / 0.930 (dense ``em``: 0.267 +- 0.028 over 5 bank x 3 training seeds). So
the defaults stay as they are.

Parameters: those of ``em`` (``mode`` defaults to ``"sample"``) plus ``fraction`` (0.1),
``mask_by`` ("grad"), ``mask_update`` ("once"), ``mask_pool`` (1), ``mask_cell`` (0), ``tile`` (0),
``tile_design`` ("score"), ``tile_block`` (1), ``augment`` ("none"), ``freeze_rounds`` (4), ``mask_warmup_accuracy``
(None: no warm-up) and ``mask_warmup_steps`` (1000). ``bank.info`` adds ``mask_pixels`` (the L0
budget in pixel positions, :func:`mask_budget`, or a design's exact support; ``None`` for
``mask_update="step"``), for
``"freeze"`` ``freeze`` (the rounds and the surrogate error before the masks were fixed), and for a
designed tile ``tile_design`` (the design's smallest squared distance between two classes' tiles
over the views, in +-1 units).

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

import dataclasses
import math
from collections.abc import Callable
import time
import warnings
from typing import Any

import numpy as np
import torch

from ..core.bank import NoiseBank
from ..core.data import FitData
from ..core.images import content_id
from . import Choice, Method, Number, Param, _common
from . import em as _em

sg = _em.sg  # the surrogates module, through em (one import path to keep up to date)

MASK_RULES = ("grad", "intensity")
MASK_UPDATES = ("once", "step", "freeze")
AUGMENTS = ("none", "flip", "flip+crop")
TILE_DESIGNS = ("score", "distinct", "distinct-chroma", "distinct-grey", "distinct-grey-signs")
COLOURS = ("signs", "chroma", "grey", "grey-signs")
#: Clean images the warm-up's accuracy is judged on, and how often (surrogate steps).
WARMUP_PROBE, WARMUP_EVERY = 1024, 20


def _resolve(p: dict[str, Any], data: Any) -> dict[str, Any]:
    p = _em.METHOD.resolve(p, data)
    if p["mask_update"] in ("step", "freeze") and p["mask_by"] != "grad":
        raise ValueError(f"mask_update={p['mask_update']!r} redraws the mask from each step's gradient: use "
                         "mask_by='grad' (a brightness mask does not change between steps; use mask_update='once')")
    cell, tile = p["mask_cell"], p["tile"]
    h, w = data.image_shape[1:] if hasattr(data, "image_shape") else (None, None)
    if cell:
        if cell < 2:
            raise ValueError(f"mask_cell={cell}: use 0 (the whole image) or a cell side of at least 2 pixels")
        if h is not None and cell > max(h, w):
            raise ValueError(f"mask_cell={cell} is larger than the {h}x{w} image: use a cell side up to {max(h, w)}, "
                             "or 0 for the whole image")
        if _cell_quota(cell, cell, p["fraction"], cell)[0, 0] < 1:
            raise ValueError(f"mask_cell={cell} with fraction={p['fraction']} keeps no position in a {cell}x{cell} "
                             f"cell (fraction * cell * cell < 1): use mask_cell >= {math.ceil(math.sqrt(1 / p['fraction']))} "
                             "or a larger fraction")
    if tile:
        if tile < 2:
            raise ValueError(f"tile={tile}: use 0 (no periodic pattern) or a tile side of at least 2 pixels")
        if h is not None and tile > min(h, w):
            raise ValueError(f"tile={tile} is larger than the {h}x{w} image: use a tile side up to {min(h, w)}, "
                             "or 0 for no periodic pattern")
        if p["mode"] != "class":
            raise ValueError("tile repeats one pattern per class over the image: use mode='class' (sample-wise "
                             "noise is clipped to each image's own pixel box, which breaks the repetition)")
        if p["mask_update"] != "once":
            raise ValueError(f"tile with mask_update={p['mask_update']!r}: use mask_update='once' (the tile's "
                             "positions are drawn once; per-step masks would break the repetition)")
        if cell:
            raise ValueError(f"tile={tile} and mask_cell={cell} both decide where the positions go: use one "
                             "(mask_cell=0 with a tile)")
        if p["tile_design"] != "score":
            if p["tile_design"] == "distinct-chroma" and hasattr(data, "image_shape") and data.image_shape[0] < 2:
                raise ValueError("tile_design='distinct-chroma' moves colour between channels: it needs colour "
                                 "images (at least 2 channels); use tile_design='distinct'")
            if h is not None and (h % tile or w % tile):
                raise ValueError(f"tile_design={p['tile_design']!r} with tile={tile} on a {h}x{w} image: use a tile "
                                 "side that divides the image (then the attacker's crop only shifts the repeated tile "
                                 "cyclically, and every tile position repeats equally often), or tile_design='score'")
            if p["mask_by"] != "grad" or p["mask_pool"] != 1:
                raise ValueError(f"tile_design={p['tile_design']!r} takes the tile's positions from the design: leave "
                                 "mask_by and mask_pool at their defaults ('grad', 1), or use tile_design='score'")
            block = p["tile_block"]
            if tile % block:
                raise ValueError(f"tile_block={block} does not divide tile={tile}: use a block side that divides the "
                                 "tile (e.g. tile=8, tile_block=2), or tile_block=1")
            if math.floor(p["fraction"] * (tile // block) ** 2 + 1e-9) < 1:
                raise ValueError(f"tile={tile} with tile_block={block} and fraction={p['fraction']} keeps no block "
                                 f"(fraction * (tile / tile_block)^2 < 1): use a larger tile, a smaller tile_block or "
                                 "a larger fraction")
        elif p["tile_block"] != 1:
            raise ValueError(f"tile_block={p['tile_block']} shapes a designed tile: use a tile_design other than "
                             "'score' (e.g. 'distinct-grey'), or tile_block=1")
        if math.floor(p["fraction"] * tile * tile + 1e-9) < 1:
            raise ValueError(f"tile={tile} with fraction={p['fraction']} keeps no position of the {tile}x{tile} "
                             f"tile (fraction * tile * tile < 1): use tile >= {math.ceil(math.sqrt(1 / p['fraction']))} "
                             "or a larger fraction")
    elif p["tile_design"] != "score":
        raise ValueError(f"tile_design={p['tile_design']!r} designs the periodic class tiles: set tile (e.g. tile=4, "
                         "mode='class'), or leave tile_design='score'")
    elif p["tile_block"] != 1:
        raise ValueError(f"tile_block={p['tile_block']} shapes a designed tile: set tile and tile_design (e.g. tile=8, "
                         "tile_design='distinct-grey'), or leave tile_block=1")
    if p["mask_update"] == "freeze":
        if p["mode"] != "sample":
            raise ValueError("mask_update='freeze' keeps each image's own positions: use mode='sample' (class-wise "
                             "noise: mask_update='once')")
        if not 0 < p["freeze_rounds"] < p["max_rounds"]:
            raise ValueError(f"freeze_rounds={p['freeze_rounds']} must be between 1 and max_rounds - 1 "
                             f"(max_rounds={p['max_rounds']}): the rounds before the masks freeze, then at least "
                             "one inside them")
    return p


def _ours(param: Param) -> Param:
    """``em``'s parameter without a ``paper=`` value: em's paper is Huang et al.'s, not SALM's."""
    note = " (em's default, Huang et al.; the SALM paper gives none)" if param.paper is not None else ""
    return dataclasses.replace(param, paper=None, help=param.help + note)


METHOD = Method(
    key="salm",
    paper="Medical Unlearnable Examples: Sparsity-Aware Local Masking (arXiv 2403.10573, 2024)",
    citation="W. Sun, Y. Liu, Z. Yan, K. Xu, L. Sun, Medical Unlearnable Examples: Securing Medical Data from "
             "Unauthorized Training via Sparsity-Aware Local Masking, arXiv:2403.10573, 2024",
    keyed_by="sample/class",
    needs="a surrogate classifier (trained on the fly)",
    kind="additive",
    summary="a reconstruction: error-minimising noise on the top-k most significant pixels only (L0 + L-inf budget)",
    # The paper gives the idea only (its body was not available: see METHOD-NOTES): every number
    # below is ours or em's, so no parameter carries a paper= value.
    order=40,
    params=tuple(_ours(p) for p in _em.METHOD.params) + (
        Param("fraction", 0.1, Number(0, 1, lo_open=True), public=True,
              help="share of pixel positions perturbed in each image (the L0 budget; ours, the paper's ratio is "
                   "unknown)"),
        Param("mask_by", "grad", Choice(MASK_RULES),
              help="'grad' (|loss gradient|) or 'intensity' (bright foreground); ours: the paper's "
                   "significance rule is unknown"),
        Param("mask_update", "once", Choice(MASK_UPDATES),
              help="'once' (each image's mask fixed at its first visit: an L0 budget), 'step' (every PGD step "
                   "updates the top pixels of its own gradient) or 'freeze' ('step' for freeze_rounds rounds, then "
                   "each image's top positions by accumulated |noise| are fixed: an L0 budget); ours"),
        Param("mask_pool", 1, Number(1, integer=True, odd=True, cast=False),
              help="average the score over a mask_pool x mask_pool window before picking positions (odd; 1: "
                   "single pixels), so the mask gathers into local regions; ours"),
        Param("mask_cell", 0, Number(0, integer=True, cast=False),
              help="0: the top positions of the whole image; c >= 2: the top fraction of each c x c cell (so every "
                   "region of the image holds some; needs fraction * c * c >= 1); ours"),
        Param("tile", 0, Number(0, integer=True, cast=False),
              help="mode='class': 0, or c >= 2: each class's noise is one c x c tile repeated over the image "
                   "(periodic) and its mask the tile's top floor(fraction * c * c) positions by the score summed "
                   "over the repetitions; ours"),
        Param("tile_design", "score", Choice(TILE_DESIGNS),
              help="tile > 0: 'score' (the tile's positions by the summed score, mask_by), 'distinct' (positions "
                   "and starting signs from a design whose class tiles stay apart under the attacker's shifts and "
                   "mirror, distinct_tiles; needs a tile that divides the image) or 'distinct-chroma' (the same with "
                   "zero-sum colours, kept zero-sum by every step; colour images only) or 'distinct-grey' (the "
                   "same with every position +epsilon in every channel, and every step keeps it grey and inside "
                   "[0, epsilon]: the fit only sets strengths along the design) or 'distinct-grey-signs' (the same "
                   "with +-epsilon grey positions); ours"),
        Param("tile_block", 1, Number(1, integer=True, cast=False),
              help="a designed tile (tile_design other than 'score'): its positions come in tile_block x tile_block "
                   "squares (the design is drawn on a tile / tile_block grid and keeps floor(fraction * (tile / "
                   "tile_block)^2) squares), a coarser pattern; 1: single positions; ours"),
        Param("augment", "none", Choice(AUGMENTS),
              help="the attacker's views inside the fit: 'none', 'flip' or 'flip+crop' (a random flip and shift "
                   "of up to 1/8 of the side on every perturbed batch the surrogate and the PGD steps see); ours"),
        Param("freeze_rounds", 4, Number(1, integer=True, cast=False),
              help="mask_update='freeze': rounds of per-step masks before each image's top-fraction positions "
                   "(by accumulated |noise|) are frozen; ours"),
        Param("mask_warmup_accuracy", None, Number(0, 1, lo_open=True, none=True, cast=False),
              help="train the surrogate on the clean images to this accuracy before the masks are drawn "
                   "(None: no warm-up); ours"),
        Param("mask_warmup_steps", 1000, Number(0, integer=True, cast=False),
              help="at most this many surrogate steps for the warm-up; ours"),
    ),
    resolve=_resolve,
)

VERIFIED = ("threat model: released noised images make an unauthorised classifier generalise poorly",
            "perturb significant pixel regions of each image, not the whole image (smaller search space, "
            "exploits sparsity)", "built on error-minimising unlearnable examples")
RECONSTRUCTION = ("objective (em's min-min loop with a binary mask)", "pixel-selection rule (mask_by)",
                  "ratio (fraction)", "fixed, per-step or step-then-frozen mask (mask_update, freeze_rounds)",
                  "local regions by a pooled score (mask_pool)", "top positions per cell (mask_cell)",
                  "one periodic pattern per class: a tile repeated over the image (tile)",
                  "class tiles designed to stay apart under the attacker's shifts and mirror (tile_design, "
                  "tile_block)",
                  "the attacker's flip / crop inside the fit (augment)",
                  "surrogate warm-up before the masks (mask_warmup_accuracy, mask_warmup_steps)",
                  "budget and loop numbers (em's defaults, Huang et al.: eps 8/255 L-inf, 20 PGD steps of eps/10, "
                  "10 surrogate steps per round, stop at 1% surrogate error, sample-wise): none is SALM's")


def warm_up(data: FitData, p: dict[str, Any], *, seed: int, device: torch.device) -> tuple[Any, dict[str, Any]]:
    """The surrogate, trained on the clean images until its accuracy reaches ``mask_warmup_accuracy``.

    Accuracy: eval mode, on up to :data:`WARMUP_PROBE` clean images (a fixed shuffled subset),
    checked every :data:`WARMUP_EVERY` steps. Stops at ``mask_warmup_steps`` steps or when
    ``max_steps`` / ``max_seconds`` run out (a ``UserWarning`` if short of the target).
    Returns (surrogate, info) with the steps, seconds and accuracy reached.
    """
    t0 = time.perf_counter()
    model = sg.build(p["surrogate"], num_classes=data.num_classes, image_shape=data.image_shape, device=device,
                     seed=seed)
    trainer = sg.Trainer(model, lr=p["lr"])
    src = sg.ImageSource(data, device)
    rng = np.random.default_rng([seed, 26])
    probe, seen = [], 0
    for rows, x in src.batches(p["batch_size"], shuffle=True, rng=rng):
        probe.append((x, src.labels(rows)))
        seen += len(rows)
        if seen >= WARMUP_PROBE:
            break

    def accuracy() -> float:
        model.eval()
        with torch.no_grad():
            right = sum(int((model(x).argmax(1) == y).sum()) for x, y in probe)
        return right / max(1, sum(len(y) for _, y in probe))

    target, limit = p["mask_warmup_accuracy"], p["mask_warmup_steps"]
    budget = sg.Budget(p["max_steps"], p["max_seconds"])
    feed = src.cycle(p["batch_size"], rng)
    acc = accuracy()
    while acc < target and trainer.steps < limit and not budget.exhausted():
        for _ in range(min(WARMUP_EVERY, limit - trainer.steps)):
            if budget.exhausted():
                break
            rows, x = next(feed)
            trainer.step(x, src.labels(rows))
            budget.tick()
        acc = accuracy()
    info = {"target_accuracy": target, "accuracy": round(acc, 4), "steps": trainer.steps,
            "seconds": round(time.perf_counter() - t0, 2), "reached": acc >= target}
    if acc < target:
        why = budget.exhausted()
        name, value = ("mask_warmup_steps", limit) if not why else (("max_steps", p["max_steps"]) if why == "steps"
                                                                     else ("max_seconds", p["max_seconds"]))
        warnings.warn(f"salm: the surrogate warm-up was stopped by its budget ({name}={value}) at clean accuracy "
                      f"{acc:.3f} < mask_warmup_accuracy={target}; the masks come from a weaker surrogate. Raise "
                      f"{name} or lower mask_warmup_accuracy.", UserWarning, stacklevel=4)
    return model, info


def top_fraction_mask(score: torch.Tensor, fraction: float, pool: int = 1, cell: int = 0) -> torch.Tensor:
    """0/1 mask ``[b, 1, H, W]`` keeping the highest-scoring positions of ``score`` ``[b, 1, H, W]``.

    ``cell=0``: the ``ceil(fraction * H * W)`` best of the whole image (exactly that many, even with
    ties: topk). ``cell=c``: the image is cut into ``c x c`` cells (the last row and column of cells
    may be smaller) and each cell keeps its own ``floor(fraction * area)`` best, so every region of
    the image holds perturbed positions and no more than ``fraction`` of the image changes
    (:func:`mask_budget`). ``pool`` (odd) first averages the score over a ``pool x pool`` window
    around each position, so the kept positions gather into local regions instead of scattered pixels.
    """
    b, _, h, w = score.shape
    if pool > 1:
        score = torch.nn.functional.avg_pool2d(score, pool, stride=1, padding=pool // 2, count_include_pad=False)
    if not cell:
        k = max(1, math.ceil(fraction * h * w))
        flat = score.reshape(b, h * w)
        idx = flat.topk(k, dim=1).indices
        return torch.zeros_like(flat).scatter_(1, idx, 1.0).reshape(b, 1, h, w)
    nh, nw = -(-h // cell), -(-w // cell)
    # padding scores -inf: a cell's quota never exceeds its real area, so padding is never kept
    padded = torch.nn.functional.pad(score, (0, nw * cell - w, 0, nh * cell - h), value=float("-inf"))
    cells = padded.reshape(b, nh, cell, nw, cell).permute(0, 1, 3, 2, 4).reshape(b, nh * nw, cell * cell)
    order = cells.argsort(dim=2, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(2, order, torch.arange(cell * cell, device=score.device).expand_as(order).contiguous())
    quota = torch.from_numpy(_cell_quota(h, w, fraction, cell).reshape(-1)).to(score.device)
    keep = (rank < quota[None, :, None]).to(score.dtype)
    full = keep.reshape(b, nh, nw, cell, cell).permute(0, 1, 3, 2, 4).reshape(b, 1, nh * cell, nw * cell)
    return full[:, :, :h, :w].contiguous()


def _cell_quota(h: int, w: int, fraction: float, cell: int) -> np.ndarray:
    """Positions each ``cell x cell`` cell keeps: ``floor(fraction * area)`` of its real area ``[nh, nw]``."""
    hs = np.minimum(cell, h - cell * np.arange(-(-h // cell)))
    ws = np.minimum(cell, w - cell * np.arange(-(-w // cell)))
    # the 1e-9 keeps e.g. 0.29 * 100 (28.999...) at 29: float error must not shrink the budget
    return np.floor(fraction * np.outer(hs, ws) + 1e-9).astype(np.int64)


def mask_budget(h: int, w: int, fraction: float, cell: int = 0, tile: int = 0) -> int:
    """The L0 budget: pixel positions a mask of :func:`top_fraction_mask` keeps in an ``h x w`` image
    (with ``tile``: the most a :func:`tile_mask` can keep, which a given score may not reach)."""
    if tile:
        counts = np.sort(tile_counts(h, w, tile).reshape(-1))[::-1]
        quota = math.floor(fraction * tile * tile + 1e-9)
        return int(min(math.floor(fraction * h * w + 1e-9), counts[:quota].sum()))
    if not cell:
        return max(1, math.ceil(fraction * h * w))
    return int(_cell_quota(h, w, fraction, cell).sum())


def tile_counts(h: int, w: int, tile: int) -> np.ndarray:
    """How often each position of a ``tile x tile`` tile repeats in an ``h x w`` image ``[tile, tile]``."""
    return np.outer(np.bincount(np.arange(h) % tile, minlength=tile),
                    np.bincount(np.arange(w) % tile, minlength=tile))


def fold(t: torch.Tensor, tile: int) -> torch.Tensor:
    """``[b, C, H, W] -> [b, C, tile, tile]``: each tile position summed over its repetitions."""
    b, c, h, w = t.shape
    nh, nw = -(-h // tile), -(-w // tile)
    padded = torch.nn.functional.pad(t, (0, nw * tile - w, 0, nh * tile - h))
    return padded.reshape(b, c, nh, tile, nw, tile).sum((2, 4))


def unfold(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``[b, C, tile, tile] -> [b, C, h, w]``: the tile repeated from the top-left corner, cut to the image."""
    tile = t.shape[-1]
    return t.repeat(1, 1, -(-h // tile), -(-w // tile))[:, :, :h, :w].contiguous()


def tie_rule(tile: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The engine's ``tie``: the orthogonal projection onto ``tile``-periodic tables (each position's mean
    over its repetitions, repeated). On a gradient its sign is that of the tile's own gradient (the sum)."""
    def tie(t: torch.Tensor) -> torch.Tensor:
        h, w = t.shape[-2:]
        counts = torch.from_numpy(tile_counts(h, w, tile)).to(t.device, t.dtype)
        return unfold(fold(t, tile) / counts, h, w)
    return tie


def tile_mask(score: torch.Tensor, fraction: float, tile: int, pool: int = 1) -> torch.Tensor:
    """0/1 mask ``[b, 1, H, W]``: a ``tile x tile`` tile's best positions, repeated over the image.

    The tile's score is ``score`` ``[b, 1, H, W]`` (pooled first, as in :func:`top_fraction_mask`)
    summed over each position's repetitions; the tile keeps its top ``floor(fraction * tile * tile)``
    positions in score order, skipping any whose repetitions would take the image above
    ``floor(fraction * H * W)`` changed positions (only when ``tile`` does not divide the image: then
    positions near the top-left corner repeat once more than the others).
    """
    b, _, h, w = score.shape
    if pool > 1:
        score = torch.nn.functional.avg_pool2d(score, pool, stride=1, padding=pool // 2, count_include_pad=False)
    quota = math.floor(fraction * tile * tile + 1e-9)
    limit = math.floor(fraction * h * w + 1e-9)
    counts = tile_counts(h, w, tile).reshape(-1)
    order = fold(score, tile).reshape(b, -1).argsort(dim=1, descending=True, stable=True).cpu().numpy()
    keep = np.zeros((b, tile * tile), np.float32)
    for i in range(b):
        kept = used = 0
        for j in order[i]:
            if kept == quota:
                break
            if used + counts[j] <= limit:
                keep[i, j], kept, used = 1.0, kept + 1, used + counts[j]
    return unfold(torch.from_numpy(keep).reshape(b, 1, tile, tile).to(score.device, score.dtype), h, w)


def tile_views(tile: int) -> np.ndarray:
    """The attacker's views of a repeated ``tile x tile`` tile as index maps ``[2 * tile * tile, tile * tile]``.

    Its random crop (zero padding aside) shifts a repeated tile cyclically, and its horizontal flip
    mirrors it (plus a shift when the tile does not divide the width): so the views are the
    ``tile * tile`` cyclic shifts of the tile and of its mirror. Row ``g`` maps ``view.flat = tile.flat[map[g]]``.
    """
    idx = np.arange(tile * tile).reshape(tile, tile)
    return np.stack([np.roll(f, (dy, dx), axis=(0, 1)).reshape(-1) for f in (idx, idx[:, ::-1])
                     for dy in range(tile) for dx in range(tile)])


def view_correlation(tiles: np.ndarray) -> np.ndarray:
    """``[K, K]``: for each pair of tiles ``[K, C, t, t]``, the largest ``<a, view(b)>`` over :func:`tile_views`.

    Tiles of equal norm ``n``: ``min_view ||a - view(b)||^2 = 2 n - 2 * corr``, so a low correlation
    is a large distance between what the attacker can see of two classes.
    """
    k, c, t, _ = tiles.shape
    flat = tiles.reshape(k, c, t * t).astype(np.float64)
    views = flat[:, :, tile_views(t)]  # [K, C, G, t*t]
    return np.einsum("acp,bcgp->abg", flat, views).max(2)


def _design_rows(flat: np.ndarray, c: int, views: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class ``c``'s row of the signed and the support :func:`view_correlation` (``flat``: ``[K, C, t*t]``).
    The views are closed under inverses, so ``corr(a, b) = corr(b, a)`` and a row is also a column."""
    mine = flat[c][:, views].astype(np.float64)  # [C, G, t*t]
    signed = np.einsum("cgp,bcp->bg", mine, flat.astype(np.float64)).max(1)
    on = (np.abs(flat).max(1) > 0).astype(np.float64)  # [K, t*t]
    support = np.einsum("gp,bp->bg", on[c][views], on).max(1)
    return signed, support


def _design_cost(signed: np.ndarray, support: np.ndarray) -> tuple[float, float, float, float]:
    """What :func:`distinct_tiles` makes small, in order: the closest pair's signed correlation over the
    views, the most positions two classes' supports share in any view, then the same two summed over pairs."""
    off = ~np.eye(len(signed), dtype=bool)
    return (float(signed[off].max()), float(support[off].max()), float(signed[off].sum()),
            float(support[off].sum()))


def _design_distance(tiles: np.ndarray) -> float:
    """The smallest ``||a - view(b)||^2`` between two classes' tiles (``{-1, 0, 1}`` units), for bank.info."""
    k = len(tiles)
    norms = (tiles.astype(np.float64) ** 2).reshape(k, -1).sum(1)
    corr = view_correlation(tiles)
    return float(min(norms[a] + norms[b] - 2 * corr[a, b] for a in range(k) for b in range(k) if a != b))


def distinct_tiles(num_classes: int, channels: int, tile: int, keep: int, seed: int, *, colours: str = "signs",
                   restarts: int = 8, iters: int = 400) -> np.ndarray:
    """One ``tile x tile`` tile per class, ``keep`` positions each, kept apart under the attacker's views:
    ``[num_classes, channels, tile, tile]`` int8 in ``{-1, 0, 1}``.

    ``colours="signs"``: every kept position is ``+-1`` in every channel. ``"chroma"``: every kept
    position is ``+1`` in one channel and ``-1`` in another (0 in the rest), so the tile sums to zero
    over the channels at every position: it has no grey component, and a feature that responds only to
    it is blind to grey images (whose channels are equal), such as a scan stored as RGB. ``"grey"``:
    every kept position is ``+1`` in every channel (grey, and never negative: a ``-1`` on a black
    background is clipped away when applied); classes then differ by their positions only, and the
    search moves positions only. ``"grey-signs"``: every kept position is ``+1`` or ``-1``, the same in
    every channel (grey, signed).

    Local search from random starts (``restarts`` of ``iters`` moves: move one position of a class's tile,
    flip one sign, recolour one position or the whole tile; a move is kept unless it raises
    :func:`_design_cost`). First it makes the largest
    correlation between two classes' tiles over every cyclic shift and mirror (:func:`view_correlation`)
    as small as it can, i.e. the smallest distance between what the attacker can see of two classes as
    large as it can; then the shared positions of their supports (so two classes do not differ only by
    signs); then the sums over all pairs. With ``keep * keep < tile * tile`` some shift of any two
    tiles shares no position, so a correlation of 0 (distance ``2 * keep * channels``) is the best a pair
    can get (e.g. 4 classes, 3 channels: each class one colour of ``+++, +--, -+-, --+``, which differ in
two channels, so every overlap has a negative dot product); the search stops after a restart that
gets every pair there with no two supports sharing more than one position in any view.
    The same ``seed`` gives the same tiles.
    """
    if keep < 1 or keep > tile * tile:
        raise ValueError(f"keep={keep}: a {tile}x{tile} tile keeps between 1 and {tile * tile} positions")
    if colours not in COLOURS:
        raise ValueError(f"colours={colours!r}; expected one of {COLOURS}")
    if colours == "chroma" and channels < 2:
        raise ValueError(f"colours='chroma' needs at least 2 channels (got {channels}): use colours='signs'")
    rng = np.random.default_rng([int(seed), 26, 10])
    floor = 0.0 if keep * keep < tile * tile else -math.inf
    signs = np.array([-1, 1], np.int8)
    # chroma: +1 in one channel, -1 in another
    palette = np.array([[1 if i == a else -1 if i == b else 0 for i in range(channels)]
                        for a in range(channels) for b in range(channels) if a != b], np.int8)

    def colour(n: int) -> np.ndarray:
        """``[channels, n]``: a new colour for each of ``n`` positions (signs: one channel sign each)."""
        if colours == "signs":
            return rng.choice(signs, (channels, n))
        if colours == "grey":
            return np.ones((channels, n), np.int8)
        if colours == "grey-signs":
            return np.repeat(rng.choice(signs, (1, n)), channels, axis=0)
        return palette[rng.integers(len(palette), size=n)].T

    views = tile_views(tile)
    best, best_cost = None, None
    for _ in range(restarts):
        # start: each class one random colour (sign vector) on all its positions; a class whose
        # positions share one colour is told from another class by that colour at every overlap
        tiles = np.zeros((num_classes, channels, tile * tile), np.int8)
        for c in range(num_classes):
            tiles[c][:, rng.choice(tile * tile, keep, replace=False)] = colour(1)
        signed = np.zeros((num_classes, num_classes))
        support = np.zeros((num_classes, num_classes))
        for c in range(num_classes):
            signed[c], support[c] = _design_rows(tiles, c, views)
        cost = _design_cost(signed, support)
        for _ in range(iters):
            cand = tiles.copy()
            c = rng.integers(num_classes)
            on = np.flatnonzero(np.abs(cand[c]).max(0))
            move = 0 if colours == "grey" else rng.integers(4)  # grey: one colour, only positions move
            if move == 0 and keep < tile * tile:  # move one position, its signs with it
                src, dst = rng.choice(on), rng.choice(np.setdiff1d(np.arange(tile * tile), on))
                cand[c][:, dst], cand[c][:, src] = cand[c][:, src], 0
            elif move == 1:  # flip one sign (chroma, grey-signs: the whole position, to stay zero-sum / grey)
                if colours == "signs":
                    cand[c][rng.integers(channels), rng.choice(on)] *= -1
                else:
                    cand[c][:, rng.choice(on)] *= -1
            elif move == 2:  # a new colour for one position
                cand[c][:, rng.choice(on)] = colour(1)[:, 0]
            else:  # a new colour for the whole class
                cand[c][:, on] = colour(1)
            row_s, row_u = _design_rows(cand, c, views)
            s2, u2 = signed.copy(), support.copy()
            s2[c], s2[:, c], u2[c], u2[:, c] = row_s, row_s, row_u, row_u
            new = _design_cost(s2, u2)
            if new <= cost:
                tiles, cost, signed, support = cand, new, s2, u2
        if best_cost is None or cost < best_cost:
            best, best_cost = tiles, cost
        if best_cost[0] <= floor and best_cost[1] <= 1:
            break
    return best.reshape(num_classes, channels, tile, tile)


def zero_sum_rule(eps: float, iters: int = 40) -> Callable[[torch.Tensor], torch.Tensor]:
    """The engine's ``project`` for chroma tiles: each position's colour ``v`` (``[.., C, H, W]``) goes to the
    nearest point with channel sum 0 and ``|x| <= eps``, ``x = clip(v - t, -eps, eps)`` with the shift ``t``
    found by bisection (the sum falls as ``t`` grows). A zero colour stays zero; the map is per position."""
    def project(d: torch.Tensor) -> torch.Tensor:
        lo = d.amin(-3, keepdim=True) - eps
        hi = d.amax(-3, keepdim=True) + eps
        for _ in range(iters):
            mid = (lo + hi) / 2
            big = (d - mid).clamp(-eps, eps).sum(-3, keepdim=True) > 0
            lo, hi = torch.where(big, mid, lo), torch.where(big, hi, mid)
        return (d - (lo + hi) / 2).clamp(-eps, eps)
    return project


def chroma_tie(tile: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``tie_rule(tile)`` then the channel mean removed: a gradient's part that changes colour, not grey."""
    periodic = tie_rule(tile)
    return lambda t: (lambda q: q - q.mean(-3, keepdim=True))(periodic(t))


def design_tiles(num_classes: int, channels: int, tile: int, fraction: float, seed: int, *, colours: str = "signs",
                 block: int = 1) -> np.ndarray:
    """The designed class tiles ``[num_classes, channels, tile, tile]`` int8 in ``{-1, 0, 1}`` for a fraction.

    :func:`distinct_tiles` on a ``tile / block`` grid keeping ``floor(fraction * (tile / block)^2)`` cells,
    each cell then a ``block x block`` square of the tile: a coarser pattern (lower spatial frequency)
    with ``block^2`` times as many positions per kept cell, never more than ``fraction`` of the tile.
    ``block=1`` is ``distinct_tiles(..., keep=floor(fraction * tile^2))`` itself.
    """
    if block < 1 or tile % block:
        raise ValueError(f"block={block} must be a positive divisor of tile={tile}")
    coarse = tile // block
    keep = math.floor(fraction * coarse * coarse + 1e-9)
    small = distinct_tiles(num_classes, channels, coarse, keep, seed, colours=colours)
    return np.kron(small, np.ones((block, block), np.int8)) if block > 1 else small


def keep_sign_rule(signs: torch.Tensor, eps: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """The engine's ``project`` that keeps the design's sign: each entry ``d`` goes to ``s * clip(s * d, 0, eps)``
    with ``s`` in ``{-1, 0, 1}`` (``signs``, the class table's shape), the nearest point that never flips a sign
    and is zero where ``s`` is: the fit can only set each position's strength along the design."""
    s = signs.float()
    return lambda d: s.to(d.device, d.dtype) * (d * s.to(d.device, d.dtype)).clamp(0, eps)


def grey_tie(tile: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``tie_rule(tile)`` then the channel mean in every channel: a gradient's grey part, so every step keeps a
    grey table grey (equal channels)."""
    periodic = tie_rule(tile)
    return lambda t: periodic(t).mean(-3, keepdim=True).expand_as(t).contiguous()


def mask_rule(mask_by: str, fraction: float, pool: int = 1, cell: int = 0, tile: int = 0) -> _em.MaskRule:
    """The ``(x, grad) -> mask`` rule for the min-min engine."""
    if tile:
        pick = lambda s: tile_mask(s, fraction, tile, pool)  # noqa: E731
    else:
        pick = lambda s: top_fraction_mask(s, fraction, pool, cell)  # noqa: E731
    if mask_by == "grad":
        return lambda x, g: pick(g.abs().sum(1, keepdim=True))
    if mask_by == "intensity":
        return lambda x, g: pick(x.mean(1, keepdim=True))
    raise ValueError(f"mask_by={mask_by!r}; expected one of {MASK_RULES}")


def step_rule(fraction: float, pool: int = 1, cell: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-step rule: each PGD update touches only the top-``fraction`` positions of its own gradient."""
    return lambda g: top_fraction_mask(g.abs().sum(1, keepdim=True), fraction, pool, cell)


def view_rule(augment: str) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None:
    """``augment`` as the engine's ``(x, gen) -> x`` view of each perturbed batch (None for ``"none"``)."""
    if augment == "none":
        return None
    if augment == "flip":
        return _common.flip_some
    if augment == "flip+crop":
        return lambda x, gen: _common.shift_some(_common.flip_some(x, gen), gen)
    raise ValueError(f"augment={augment!r}; expected one of {AUGMENTS}")


def _fit_freeze(data: FitData, p: dict[str, Any], *, seed: int, device: torch.device) -> tuple[Any, dict[str, Any]]:
    """``mask_update="freeze"``: per-step masks for ``freeze_rounds`` rounds, then each image's mask is fixed.

    Phase 1 is the ``"step"`` loop; its noise (which starts at zero, so only positions that some
    step touched are non-zero) scores each position by ``|delta|`` summed over channels, and each
    image keeps its top ``ceil(fraction * H * W)``. Phase 2 is the ``"once"`` loop inside those
    masks, continuing with phase 1's surrogate, for the rounds (and steps, seconds) that are left.
    """
    t0 = time.perf_counter()
    model = sg.build(p["surrogate"], num_classes=data.num_classes, image_shape=data.image_shape, device=device,
                     seed=seed)
    first = dict(p, surrogate=model, max_rounds=p["freeze_rounds"])
    with warnings.catch_warnings():  # phase 1 stops at freeze_rounds by design, not by a short budget
        warnings.filterwarnings("ignore", message=".*stopped by its budget", category=UserWarning)
        table1, info1, _ = _em.minmin(data, first, seed=seed, device=device, method="salm",
                                      step_rule=step_rule(p["fraction"], p["mask_pool"], p["mask_cell"]),
                                      augment=view_rule(p["augment"]))
    score = torch.from_numpy(np.abs(np.asarray(table1, np.float32)).sum(1, keepdims=True))
    masks = top_fraction_mask(score, p["fraction"], p["mask_pool"], p["mask_cell"]).to(torch.uint8).numpy()
    # The engine asks for a row's mask by its clean pixels (mask_rule(x, grad)); rows are found by
    # their content id, so identical images share the first one's mask (the L0 budget still holds).
    by_content: dict[str, np.ndarray] = {}
    for (batch, sl) in data.iter_batches(512):
        for i, img in enumerate(batch):
            by_content.setdefault(content_id(img), masks[sl.start + i])

    def frozen(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        u8 = (x * 255).round().to(torch.uint8).cpu().numpy()
        return torch.from_numpy(np.stack([by_content[content_id(img)] for img in u8])).to(x.device, x.dtype)

    second = dict(p, surrogate=model, max_rounds=p["max_rounds"] - info1["rounds"])
    if p["max_steps"] is not None:
        second["max_steps"] = max(0, p["max_steps"] - info1["steps"])
    if p["max_seconds"] is not None:
        second["max_seconds"] = max(0.0, p["max_seconds"] - (time.perf_counter() - t0))
    with warnings.catch_warnings():  # a budget stop is warned below with the caller's numbers, not phase 2's
        warnings.filterwarnings("ignore", message=".*stopped by its budget", category=UserWarning)
        table, info, _ = _em.minmin(data, second, seed=seed + 1, device=device, method="salm", mask_rule=frozen,
                                    augment=view_rule(p["augment"]))
    info.update(rounds=info1["rounds"] + info["rounds"], steps=info1["steps"] + info["steps"],
                surrogate_steps=info1["surrogate_steps"] + info["surrogate_steps"],
                train_error_history=info1["train_error_history"] + info["train_error_history"],
                freeze={"rounds": info1["rounds"], "error": info1["final_train_error"]})
    why = info["stopped_by"]
    if why != "error":
        limit = {"max_rounds": p["max_rounds"], "steps": p["max_steps"], "time": p["max_seconds"]}[why]
        sg.warn_budget_stop("salm", why, wanted=f"the surrogate error on the perturbed set fell below "
                            f"stop_error={p['stop_error']}", reached=f"error {info['final_train_error']:.4f} after "
                            f"{info['rounds']} round(s)", limit=limit, stacklevel=6)
    return table, info


@METHOD.fitter
def fit(data: FitData, *, seed: int, device: torch.device, **p: Any) -> NoiseBank:
    """Fit error-minimising noise restricted to each image's top-``fraction`` pixels."""
    h, w = data.image_shape[1:]
    k = mask_budget(h, w, p["fraction"], p["mask_cell"], p["tile"])
    view = view_rule(p["augment"])
    run = dict(p)
    warm = None
    if p["mask_warmup_accuracy"] is not None:
        run["surrogate"], warm = warm_up(data, p, seed=seed, device=device)
        # the warm-up spends the same budget as the loop
        if p["max_steps"] is not None:
            run["max_steps"] = max(0, p["max_steps"] - warm["steps"])
        if p["max_seconds"] is not None:
            run["max_seconds"] = max(0.0, p["max_seconds"] - warm["seconds"])
    if p["mask_update"] == "freeze":
        table, info = _fit_freeze(data, run, seed=seed, device=device)
        info["mask_pixels"] = k
    elif p["mask_update"] == "once":
        rule = mask_rule(p["mask_by"], p["fraction"], p["mask_pool"], p["mask_cell"], p["tile"])
        start = project = None
        tie = tie_rule(p["tile"]) if p["tile"] else None
        if p["tile_design"] != "score":
            # every class's tile positions and signs come from the design; the fit moves the values
            colours = {"distinct": "signs", "distinct-chroma": "chroma", "distinct-grey": "grey",
                       "distinct-grey-signs": "grey-signs"}[p["tile_design"]]
            design = design_tiles(data.num_classes, data.image_shape[0], p["tile"], p["fraction"], seed,
                                  colours=colours, block=p["tile_block"])
            signs = unfold(torch.from_numpy(design.astype(np.float32)), h, w).numpy()
            start = ((np.abs(signs).max(1, keepdims=True) > 0).astype(np.uint8), signs * p["epsilon"])
            # the design fixes the positions exactly (the tile divides the image): the L0 budget is its support
            k = int(start[0].reshape(len(start[0]), -1).sum(1).max())
            if colours == "chroma":  # the values move too, but every position stays zero-sum over the channels
                tie, project = chroma_tie(p["tile"]), zero_sum_rule(p["epsilon"])
            elif colours in ("grey", "grey-signs"):  # strengths only: grey, in [0, eps] along the sign, no flips
                tie, project = grey_tie(p["tile"]), keep_sign_rule(torch.from_numpy(signs), p["epsilon"])
        table, info, _masks = _em.minmin(data, run, seed=seed, device=device, method="salm", mask_rule=rule,
                                         augment=view, tie=tie, start=start, project=project)
        info["mask_pixels"] = k
        if start is not None:
            info["tile_design"] = {"min_view_distance2": _design_distance(design)}
    else:
        table, info, _masks = _em.minmin(data, run, seed=seed, device=device, method="salm",
                                         step_rule=step_rule(p["fraction"], p["mask_pool"], p["mask_cell"]),
                                         augment=view)
        info["mask_pixels"] = None
        info["pixels_per_step"] = k
    if warm is not None:
        info["warmup"] = warm
        info["surrogate_steps"] += warm["steps"]
    info["verified"] = list(VERIFIED)
    info["reconstruction"] = list(RECONSTRUCTION)
    return _em.to_bank("salm", data, p, table, info, seed)
