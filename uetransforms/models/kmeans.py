"""Batched K-means in torch: k-means++ seeding, full-batch Lloyd or mini-batch updates, any device.

Distances are computed in row chunks (``||x||^2 - 2 x.c + ||c||^2`` as one matmul per chunk), so
memory stays ``O(chunk x K)`` whatever ``N`` is, and the same code runs on CPU or GPU. All
randomness comes from one seeded CPU generator, so a seed gives the same clustering on every
device (up to floating-point ties).

Example:
    >>> import torch
    >>> from uetransforms.models.kmeans import kmeans
    >>> x = torch.cat([torch.randn(50, 2) * 0.1, torch.randn(50, 2) * 0.1 + 5])
    >>> res = kmeans(x, 2, seed=0)
    >>> sorted(torch.bincount(res.labels).tolist())
    [50, 50]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_CHUNK = 8192


@dataclass
class KMeansResult:
    centroids: torch.Tensor  #: ``[K, D]`` float32
    labels: torch.Tensor  #: ``[N]`` int64, nearest centroid of each point
    inertia: float  #: sum of squared distances to the nearest centroid
    iterations: int  #: Lloyd iterations or mini-batch steps run


def _sq_dists(x: torch.Tensor, c: torch.Tensor, c_sq: torch.Tensor | None = None) -> torch.Tensor:
    """Squared euclidean distances ``[n, K]``, clamped at 0 (the expansion can go slightly negative)."""
    if c_sq is None:
        c_sq = (c * c).sum(1)
    d = (x * x).sum(1, keepdim=True) - 2.0 * (x @ c.T) + c_sq.unsqueeze(0)
    return d.clamp_min_(0.0)


def assign(x: torch.Tensor, centroids: torch.Tensor, *, chunk: int = _CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid of every row of ``x``: ``(labels [N] int64, squared distance [N])``."""
    if x.ndim != 2 or centroids.ndim != 2 or x.shape[1] != centroids.shape[1]:
        raise ValueError(f"assign needs [N, D] points and [K, D] centroids, got {tuple(x.shape)} and {tuple(centroids.shape)}")
    c = centroids.to(x.device, x.dtype)
    c_sq = (c * c).sum(1)
    labels, dists = [], []
    for s in range(0, x.shape[0], chunk):
        d = _sq_dists(x[s : s + chunk], c, c_sq)
        m, i = d.min(1)
        labels.append(i)
        dists.append(m)
    return torch.cat(labels), torch.cat(dists)


def kmeans_plusplus(x: torch.Tensor, k: int, *, generator: torch.Generator, local_trials: int | None = None) -> torch.Tensor:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii): each new centre is drawn with probability
    proportional to the squared distance to the nearest chosen one; of ``local_trials`` draws the
    one that lowers the potential most is kept (``2 + log k`` by default, as is usual)."""
    n = x.shape[0]
    trials = local_trials or (2 + int(math.log(k)))
    first = int(torch.randint(n, (1,), generator=generator).item())
    centers = [x[first]]
    closest = _sq_dists(x, x[first : first + 1]).squeeze(1)
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:  # every point coincides with a centre: pick any unused point
            cand = torch.randint(n, (trials,), generator=generator)
        else:
            probs = (closest / total).double().cpu()
            cand = torch.multinomial(probs, trials, replacement=True, generator=generator)
        cand = cand.to(x.device)
        d_cand = _sq_dists(x, x[cand])  # [n, trials]
        new_closest = torch.minimum(closest.unsqueeze(1), d_cand)
        best = int(new_closest.sum(0).argmin().item())
        centers.append(x[cand[best]])
        closest = new_closest[:, best]
    return torch.stack(centers)


def kmeans(
    x: torch.Tensor,
    k: int,
    *,
    seed: int = 0,
    max_iter: int = 100,
    tol: float = 1e-4,
    batch_size: int | None = None,
    n_init: int = 1,
    device: str | torch.device | None = None,
) -> KMeansResult:
    """Cluster the rows of ``x`` into ``k`` groups.

    Args:
        x: ``[N, D]`` points (any float dtype; computed in float32).
        k: number of clusters (``1 <= k <= N``).
        seed: the same seed gives the same result.
        max_iter: Lloyd iterations (full batch) or mini-batch steps.
        tol: full batch: stop when centroids move less than ``tol`` times the data's mean
            variance (as scikit-learn does); mini-batch: stop when the smoothed relative change
            of the mini-batch inertia is below ``tol`` for 10 steps.
        batch_size: ``None`` for full-batch Lloyd; an int for mini-batch K-means (Sculley 2010:
            per-centre learning rate ``1/count``), for data too big to scan every step.
        n_init: restarts from different seedings; the lowest inertia wins.
        device: where to compute (default: ``x``'s device).
    """
    if x.ndim != 2:
        raise ValueError(f"kmeans takes [N, D] points, got shape {tuple(x.shape)}")
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k={k} clusters need 1 <= k <= N={n} points; lower k or give more data")
    dev = torch.device(device) if device is not None else x.device
    x = x.to(dev, torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError("kmeans input has NaN or inf values")
    gen = torch.Generator().manual_seed(int(seed))
    best: KMeansResult | None = None
    for _ in range(max(1, int(n_init))):
        if batch_size is None:
            res = _lloyd(x, k, gen, max_iter, tol)
        else:
            res = _minibatch(x, k, gen, max_iter, tol, int(batch_size))
        if best is None or res.inertia < best.inertia:
            best = res
    assert best is not None
    return best


def _lloyd(x: torch.Tensor, k: int, gen: torch.Generator, max_iter: int, tol: float) -> KMeansResult:
    c = kmeans_plusplus(x, k, generator=gen)
    shift_tol = tol * float(x.var(0).mean())
    it = 0
    for it in range(1, max_iter + 1):
        labels, _ = assign(x, c)
        sums = torch.zeros_like(c).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).to(x.dtype)
        new_c = sums / counts.clamp_min(1).unsqueeze(1)
        empty = counts == 0
        if empty.any():
            new_c[empty] = _reseed(x, new_c[~empty], int(empty.sum()), gen)
        shift = float(((new_c - c) ** 2).sum())
        c = new_c
        if shift <= shift_tol:
            break
    labels, d = assign(x, c)
    return KMeansResult(c, labels, float(d.sum()), it)


def _minibatch(x: torch.Tensor, k: int, gen: torch.Generator, max_iter: int, tol: float, batch: int) -> KMeansResult:
    n = x.shape[0]
    init_n = min(n, max(3 * batch, 3 * k))  # seed on a sample, as full k-means++ over N is O(N K)
    init_idx = torch.randperm(n, generator=gen)[:init_n].to(x.device)
    c = kmeans_plusplus(x[init_idx], k, generator=gen)
    counts = torch.zeros(k, dtype=x.dtype, device=x.device)
    ewa, calm, it = None, 0, 0
    for it in range(1, max_iter + 1):
        idx = torch.randint(n, (min(batch, n),), generator=gen).to(x.device)
        xb = x[idx]
        labels, d = assign(xb, c)
        b_counts = torch.bincount(labels, minlength=k).to(x.dtype)
        sums = torch.zeros_like(c).index_add_(0, labels, xb)
        counts += b_counts
        # Per-centre step 1/count: each centre is the running mean of the points it has taken.
        rate = (b_counts / counts.clamp_min(1)).unsqueeze(1)
        hit = b_counts > 0
        c = torch.where(hit.unsqueeze(1), c + rate * (sums / b_counts.clamp_min(1).unsqueeze(1) - c), c)
        inertia = float(d.mean())
        if ewa is not None:
            change = abs(inertia - ewa) / max(ewa, 1e-12)
            calm = calm + 1 if change < tol else 0
            if calm >= 10:
                break
        ewa = inertia if ewa is None else 0.9 * ewa + 0.1 * inertia
    labels, d = assign(x, c)
    counts = torch.bincount(labels, minlength=k)
    if (counts == 0).any():  # a centre no point chose: move it to a far point, then one Lloyd pass
        c = c.clone()
        c[counts == 0] = _reseed(x, c[counts > 0], int((counts == 0).sum()), gen)
        labels, d = assign(x, c)
    return KMeansResult(c, labels, float(d.sum()), it)


def _reseed(x: torch.Tensor, c: torch.Tensor, m: int, gen: torch.Generator) -> torch.Tensor:
    """``m`` replacement centres for empty clusters: points far from their centre, drawn by distance."""
    _, d = assign(x, c)
    probs = d.double().cpu() + 1e-12
    idx = torch.multinomial(probs / probs.sum(), m, replacement=False, generator=gen)
    return x[idx.to(x.device)]


__all__ = ["KMeansResult", "kmeans", "kmeans_plusplus", "assign"]
