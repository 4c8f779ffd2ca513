"""OPS: One-Pixel Shortcut (Wu et al., ICLR 2023); method key "ops" (this file is named onepixel so
it does not share a name with the kernel module ``uetransforms.core.apply``).

Paper: S. Wu, S. Chen, C. Xie, X. Huang, "One-Pixel Shortcut: on the Learning Preference of Deep
Neural Networks", ICLR 2023 (arXiv:2205.12141).

Every image of class ``k`` gets one pixel, at a class-specific position, set to a
class-specific colour; nothing else changes (an L0 budget of one pixel). The position and
colour are searched per class, model-free, over every pixel position and the ``2**C`` corners of
the colour cube (each channel 0 or 255), for a change that is *large and consistent* across
the class:

    score(position, colour) = mean_i d_i / (std_i d_i + std_eps),   d_i = |colour - x_i[position]| / 255

Faithful to the paper and the authors' search code: the candidate set (all positions, the
``2**C`` boundary colours), the mean/std objective, and the greedy order: classes are searched in
class order and a (position, colour) pair already taken by an earlier class is excluded, so two
classes never share one whenever there are enough pairs (``H*W*2**C >= K``; otherwise the best
pair is reused and ``info["shared_pairs"]`` is set).

Two variants of the spread (``objective``):

* ``"official"`` (default): mean and std over the class's images *and* channels together,
  ``d_{i,c} = |colour_c - x_{i,c}|``, as the released search code computes them;
* ``"channel_mean"``: ``d_i`` is first averaged over channels, then mean/std over images.

Ours: ``std_eps`` (default 1e-3) keeps a perfectly constant pixel from dividing by zero (the code
divides by the bare std, giving inf/nan); the search reads every image once, in batches, and only
keeps exact integer per-class sums of pixel values and channel products (so memory is
``K * (C + C(C+1)/2) * H * W`` int64 values, ~7 MB for CIFAR-10, and every device gives the same
choice); a class with no images gets a random free pair from the seed. The bank keeps the
default size policy (``"error"``): a one-pixel mask cannot be resized faithfully.

Parameters (stored in ``bank.params`` with ``norm="l0"``, ``epsilon=1`` (pixels) and the seed):

* ``objective`` (default ``"official"``): ``"official"`` or ``"channel_mean"``.
* ``std_eps`` (default 1e-3): added to the std, in [0, 1] pixel units; > 0.

Example:
    >>> import numpy as np, torch, uetransforms as ue
    >>> rng = np.random.default_rng(0)
    >>> imgs = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    >>> bank = ue.fit("ops", {"image": list(imgs), "label": [0, 1, 2, 0, 1, 2]}, seed=0)
    >>> bank.kind, bank.tensors["mask"].shape, bank.tensors["value"].shape
    ('pixel', (3, 1, 8, 8), (3, 3, 8, 8))
    >>> bank.tensors["mask"].reshape(3, -1).sum(axis=1).tolist()
    [1, 1, 1]
    >>> x = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()
    >>> out = ue.apply(bank, x, [0, 1, 2, 0, 1, 2])
    >>> int((out != x).any(dim=1).sum(dim=(1, 2)).max())
    1
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core.bank import NoiseBank
from ..core.data import FitData
from . import Choice, Method, Number, Param

METHOD = Method(
    key="ops",
    paper="One-Pixel Shortcut (Wu et al., ICLR 2023)",
    citation="S. Wu, S. Chen, C. Xie, X. Huang, One-Pixel Shortcut: on the Learning Preference of Deep Neural "
             "Networks, ICLR 2023, arXiv:2205.12141",
    keyed_by="class",
    needs="nothing (a search over the training images)",
    kind="pixel",
    summary="one pixel per class set to a searched boundary colour",
    order=90,
    params=(
        Param("objective", "official", Choice(("official", "channel_mean")), paper="official", public=True,
              help="'official': mean/std over images and channels together (the released code); "
                   "'channel_mean': channels averaged first"),
        Param("std_eps", 1e-3, Number(0, lo_open=True), paper=0,
              help="added to the std in the score, so a constant pixel does not divide by zero (ours)"),
    ),
)


def class_sums(data: FitData, num_classes: int, device: torch.device) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact per-class sums over the images: counts ``[K]``, ``S1 [K, C, HW]`` of pixel values and
    ``S2 [K, C(C+1)/2, HW]`` of channel products ``x_a * x_b`` (``a <= b``), as int64."""
    c, h, w = data.image_shape
    hw = h * w
    pairs = [(a, b) for a in range(c) for b in range(a, c)]
    labels = data.labels
    if len(labels) and int(labels.max()) >= num_classes:
        raise ValueError(f"label {int(labels.max())} is outside the {num_classes} classes of this dataset")
    s1 = torch.zeros((num_classes, c, hw), dtype=torch.int64, device=device)
    s2 = torch.zeros((num_classes, len(pairs), hw), dtype=torch.int64, device=device)
    counts = torch.zeros(num_classes, dtype=torch.int64, device=device)
    batch_size = max(1, min(256, 2**24 // (len(pairs) * hw)))  # <= 128 MiB of products per batch
    for batch, rows in data.iter_batches(batch_size):
        if not batch.flags.writeable:
            batch = batch.copy()
        x = torch.from_numpy(batch).to(device).reshape(len(batch), c, hw).to(torch.int64)
        y = torch.from_numpy(np.ascontiguousarray(labels[rows])).to(device)
        s1.index_add_(0, y, x)
        s2.index_add_(0, y, torch.stack([x[:, a] * x[:, b] for a, b in pairs], dim=1))
        counts += torch.bincount(y, minlength=num_classes)
    return counts.cpu().numpy(), s1.cpu().numpy(), s2.cpu().numpy()


def _colours(c: int) -> np.ndarray:
    """The ``2**C`` corners of the colour cube as 0/1 bits ``[2**C, C]``, channel 0 most significant."""
    v = np.arange(2**c)
    return (v[:, None] >> np.arange(c - 1, -1, -1)[None, :]) & 1


def _var_numerator(n: int, sq: np.ndarray, lin: np.ndarray, bound: float) -> np.ndarray:
    """``n * sq - lin**2`` (= n^2 * variance): exact in int64 when it cannot overflow."""
    if float(n) * bound < 2.0**62:
        return (n * sq - lin * lin).astype(np.float64)
    return n * sq.astype(np.float64) - lin.astype(np.float64) ** 2


def scores(n: int, s1: np.ndarray, s2: np.ndarray, *, objective: str, std_eps: float) -> np.ndarray:
    """Score ``[HW, 2**C]`` of every (position, colour) for one class from its exact sums."""
    c = s1.shape[0]
    bits = _colours(c)  # [V, C]
    sign = 1 - 2 * bits  # |0 - x| = x, |255 - x| = 255 - x = 255 - 1 * x
    base = 255 * bits
    full = np.zeros((c, c, s1.shape[1]), dtype=np.int64)  # symmetric S2
    k = 0
    for a in range(c):
        for b in range(a, c):
            full[a, b] = full[b, a] = s2[k]
            k += 1
    if objective == "channel_mean":
        # u_i = sum_c sign_c x_ic; d_i = (sum_c base_c + u_i) / C
        lin = sign @ s1  # [V, HW] = sum_i u_i
        sq = np.einsum("va,vb,abp->vp", sign, sign, full)  # sum_i u_i^2
        mean = (n * base.sum(axis=1)[:, None] + lin) / (n * c * 255.0)
        var = _var_numerator(n, sq, lin, n * (255.0 * c) ** 2) / (n * n * (c * 255.0) ** 2)
    else:
        # d_ic = base_c + sign_c x_ic, pooled over images and channels (m = n*C values)
        diag = np.stack([full[a, a] for a in range(c)])  # [C, HW] sum_i x_ic^2
        tot = n * base.sum(axis=1)[:, None] + sign @ s1  # sum of d
        tot2 = n * (base**2).sum(axis=1)[:, None] + 2 * (base * sign) @ s1 + diag.sum(axis=0)[None]
        m = n * c
        mean = tot / (m * 255.0)
        var = _var_numerator(m, tot2, tot, m * 255.0**2) / (m * m * 255.0**2)
    score = mean / (np.sqrt(np.maximum(var, 0.0)) + std_eps)
    return np.ascontiguousarray(score.T)


@METHOD.fitter
def fit(data: FitData, *, seed: int, device: torch.device, **p: Any) -> NoiseBank:
    """Search one (position, colour) per class over the training images (read once, in batches)."""
    num_classes = data.num_classes
    c, h, w = data.image_shape
    counts, s1, s2 = class_sums(data, num_classes, device)
    rng = np.random.default_rng(seed)
    n_pairs = h * w * 2**c
    taken = np.zeros(n_pairs, dtype=bool)
    chosen = np.full(num_classes, -1, dtype=np.int64)
    best = [None] * num_classes
    shared = False
    for k in range(num_classes):
        if counts[k] == 0:
            continue  # no images: drawn at random below, after every class with images has chosen
        sc = scores(int(counts[k]), s1[k], s2[k], objective=p["objective"], std_eps=p["std_eps"]).reshape(-1)
        free = np.where(taken, -np.inf, sc)
        idx = int(np.argmax(free))
        if taken[idx]:  # every pair taken: more classes than pairs
            idx, shared = int(np.argmax(sc)), True
        chosen[k], taken[idx], best[k] = idx, True, float(sc[idx])
    for k in np.flatnonzero(chosen < 0):
        pool = np.flatnonzero(~taken)
        if len(pool) == 0:
            pool, shared = np.arange(n_pairs), True
        idx = int(pool[rng.integers(len(pool))])
        chosen[k], taken[idx] = idx, True
    pos, colour = np.divmod(chosen, 2**c)
    rows, cols = np.divmod(pos, w)
    bits = _colours(c)[colour]  # [K, C]
    mask = np.zeros((num_classes, 1, h, w), dtype=np.uint8)
    value = np.zeros((num_classes, c, h, w), dtype=np.uint8)
    keys = np.arange(num_classes)
    mask[keys, 0, rows, cols] = 1
    value[keys, :, rows, cols] = (255 * bits).astype(np.uint8)
    selection = [
        {"row": int(rows[k]), "col": int(cols[k]), "colour": (255 * bits[k]).tolist(), "score": best[k],
         "images": int(counts[k])}
        for k in range(num_classes)
    ]
    info: dict[str, Any] = {"selection": selection}
    if shared:
        info["shared_pairs"] = True
    return NoiseBank(
        method="ops",
        kind="pixel",
        keying="class",
        keys=keys,
        tensors={"mask": mask, "value": value},
        params={**p, "norm": "l0", "epsilon": 1, "seed": int(seed)},
        image_shape=data.image_shape,
        info=info,
    )
