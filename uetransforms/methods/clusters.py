"""``clusters``: Unlearnable Clusters (Zhang et al., CVPR 2023), label-agnostic.

The protector needs no labels. A frozen surrogate encoder embeds the training images, K-means
splits them into ``K`` clusters, and one L-inf-bounded perturbation per cluster is optimised so
that the cluster's perturbed images move onto *another* cluster's centre (cluster ``i`` targets
``(i + target_offset) mod K``). This "feature dispersion" breaks the uniformity inside each
cluster and the discrepancy between clusters, whatever labels a trainer later attaches.

Objective (paper's loss, ``loss="kl"``): for cluster ``i`` with members ``x``,
``min_delta_i E_x KL(softmax(mu_t(i)) || softmax(h(x + delta_i)))`` with ``h`` the surrogate's
image embedding and ``mu`` the centroids of the raw embeddings; ``loss="cosine"`` maximises the
cosine similarity to the target centroid instead.

What differs from the authors' code (deliberate):

* one perturbation tensor per cluster, ``delta = epsilon * tanh(w)``, all K optimised together in
  one batched Adam loop (each batch holds ``per_cluster`` images of every cluster), instead of
  K separately trained ResNet generators fed a fixed noise image;
* each cluster's noise is optimised on that cluster's own images (the paper's description; the
  released code trains every generator on the whole dataset);
* the noise is made at the training images' size, and K-means runs on L2-normalised features
  (cosine geometry, as CLIP embeddings are used); new images of another size get the noise
  interpolated (``size_mismatch="resize"``, UC's ``noise`` resize mode).

The bank keeps the noise (``delta [K, C, H, W]``), the centroids (``centroid [K, D]``) and the
surrogate's identity, so ``Protect(bank, label_column=None)`` assigns unseen, unlabelled images
to clusters itself (embedding + nearest centroid, :class:`uetransforms.assign.ClusterAssigner`),
or ``Protect(bank, label_column=<cluster column>)`` uses precomputed ids.

Surrogates: ``model``/``pretrained`` name an open_clip CLIP (the paper's best surrogate is CLIP
RN50 with OpenAI weights: ``model="RN50", pretrained="openai"``, the default, which needs the
network once or a local checkpoint path). ``pretrained=None`` builds a random-init CLIP, a weak
surrogate (its clusters follow colour statistics, not content). Any ``nn.Module`` mapping [0, 1]
images to features can be passed as ``encoder``; such a bank cannot rebuild it, so assign
clusters with ``ClusterAssigner(bank, encoder=module)``.

Example:
    >>> import uetransforms as ue
    >>> bank = ue.fit("clusters", ds, image_column="img", label_column=None,
    ...               model="RN50", pretrained="openai", n_clusters=10)  # doctest: +SKIP
    >>> prot = ds.map(ue.Protect(bank, image_column="img", label_column=None), batched=True)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..assign import embed_batch, embed_images, encoder_identity, normalise
from ..bank import NoiseBank
from ..data import FitData
from ..kmeans import assign, kmeans
from . import Choice, Flag, Free, Method, Number, Param, ParameterError, _common


def _resolve(p: dict[str, Any], data: FitData | None) -> dict[str, Any]:
    if data is not None and p["n_clusters"] > len(data):
        raise ParameterError(f"n_clusters={p['n_clusters']} is not valid for method 'clusters': it must be between 2 "
                             f"and the number of images ({len(data)})")
    return p


METHOD = Method(
    key="clusters",
    paper="Unlearnable Clusters (Zhang et al., CVPR 2023)",
    citation="J. Zhang, X. Ma, Q. Yi, J. Sang, Y.-G. Jiang, Y. Wang, C. Xu, Unlearnable Clusters: Towards "
             "Label-agnostic Unlearnable Examples, CVPR 2023, arXiv:2301.01217",
    keyed_by="cluster",
    needs="a surrogate image encoder (open_clip CLIP or any nn.Module); no labels",
    kind="additive",
    summary="K-means clusters of surrogate features; per-cluster noise pushes features to another cluster's centre",
    label_free=True,
    order=20,
    params=(
        *_common.clip_surrogate("RN50"),
        Param("encoder", None, Free("an nn.Module or None"),
              help="any nn.Module mapping [0, 1] images to features, instead of model/pretrained"),
        Param("n_clusters", 10, Number(2, integer=True), paper=10, public=True, help="K, the number of clusters"),
        Param("epsilon", 16 / 255, Number(0, 1, lo_open=True), paper=16 / 255, public=True, budget="linf",
              help="L-inf budget in [0, 1] pixel units"),
        Param("steps", 200, Number(0, integer=True), public=True,
              help="Adam steps on all K noises at once (the paper trains generators for 50 epochs)"),
        Param("lr", 0.05, Number(0, lo_open=True), help="Adam learning rate"),
        Param("per_cluster", 16, Number(1, integer=True), help="images of each cluster in every step's batch"),
        Param("target_offset", 1, Number(integer=True), paper=1,
              help="cluster i is pushed to centre (i + target_offset) mod K"),
        Param("loss", "kl", Choice(("kl", "cosine")), paper="kl", help="'kl' (the paper's) or 'cosine'"),
        Param("augment", True, Flag(), help="random flips and small shifts while optimising"),
        Param("feature_norm", "l2", Choice(("l2", "none")),
              help="'l2' (cosine K-means) or 'none' on the surrogate features"),
        Param("kmeans_batch_size", None, Number(1, integer=True, none=True),
              help="mini-batch K-means with this batch for very large data (None: full-batch Lloyd)"),
        Param("kmeans_iter", 100, Number(1, integer=True), help="K-means iterations at most"),
        Param("embed_batch_size", 256, Number(1, integer=True), help="images per surrogate forward pass"),
    ),
    resolve=_resolve,
)

_RANDOM = (None, "none", "random")


def _surrogate(model: str, pretrained: str | None, encoder: torch.nn.Module | None, init_seed: int | None,
               device: torch.device) -> torch.nn.Module:
    if encoder is not None:
        if not isinstance(encoder, torch.nn.Module):
            raise TypeError(f"encoder must be a torch.nn.Module mapping [0, 1] images to features, got {type(encoder).__name__}")
        return encoder.to(device).eval().requires_grad_(False)
    from .. import clip

    return clip.load(model, None if pretrained in _RANDOM else pretrained, device=device, init_seed=init_seed)


def _augment(x: torch.Tensor, gen: torch.Generator, shift: int) -> torch.Tensor:
    """Random horizontal flips and up-to-``shift``-pixel translations (reflect padded), per image."""
    b, _, h, w = x.shape
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip.to(x.device).view(b, 1, 1, 1), x.flip(-1), x)
    if shift > 0:
        pad = F.pad(x, (shift, shift, shift, shift), mode="reflect")
        dy, dx = (torch.randint(0, 2 * shift + 1, (2,), generator=gen)).tolist()
        x = pad[:, :, dy : dy + h, dx : dx + w]  # one offset per batch keeps it one slice
    return x


@METHOD.fitter
def fit(data: FitData, *, seed: int, device: torch.device, model: str, pretrained: str | None,
        encoder: torch.nn.Module | None, init_seed: int | None, n_clusters: int, epsilon: float, steps: int,
        lr: float, per_cluster: int, target_offset: int, loss: str, augment: bool, feature_norm: str,
        kmeans_batch_size: int | None, kmeans_iter: int, embed_batch_size: int) -> NoiseBank:
    """Fit Unlearnable Clusters noise.

    Args:
        model / pretrained: open_clip surrogate (``pretrained=None`` or ``"random"``: random init,
            weak; a tag such as ``"openai"`` needs the network; a file path works offline).
        encoder: any ``nn.Module`` surrogate instead (takes [0, 1] images, returns features).
        init_seed: random-init seed of the CLIP surrogate (default 0); recorded in the bank.
        n_clusters: K (the paper uses 10).
        epsilon: L-inf budget in [0, 1] units (the paper uses 16/255).
        steps / lr / per_cluster: Adam steps on all K noises at once, its learning rate, and the
            images of each cluster in every step's batch (batch = K * per_cluster).
        target_offset: cluster ``i`` is pushed to centre ``(i + target_offset) mod K``.
        loss: ``"kl"`` (paper) or ``"cosine"``.
        augment: random flips and small shifts while optimising, so the noise survives a
            trainer's augmentation.
        feature_norm: ``"l2"`` (cosine K-means) or ``"none"``.
        kmeans_batch_size: mini-batch K-means with this batch (for very large data); ``None``
            runs full-batch Lloyd.
    """
    k = n_clusters  # checked against the data by the method's declaration (2 <= K <= N)
    gen = torch.Generator().manual_seed(int(seed))
    enc = _surrogate(model, pretrained, encoder, init_seed, device)

    images = data.images()  # uint8 [N, C, H, W]
    feats_raw = embed_images(enc, images, device=device, batch_size=embed_batch_size)
    feats = normalise(feats_raw, feature_norm)
    km = kmeans(feats, k, seed=int(seed), batch_size=kmeans_batch_size, max_iter=kmeans_iter)
    labels = km.labels.cpu()
    counts = torch.bincount(labels, minlength=k)
    members = [torch.nonzero(labels == j).flatten() for j in range(k)]
    target = (torch.arange(k) + int(target_offset)) % k
    if bool((target == torch.arange(k)).any()):
        raise ValueError(f"target_offset={target_offset} maps clusters onto themselves; use one not divisible by K={k}")
    # Targets of the loss: the paper's KL works on raw embeddings, the cosine loss on directions.
    raw_centre = torch.stack([feats_raw[m.to(feats_raw.device)].mean(0) for m in members])
    tgt = raw_centre[target.to(raw_centre.device)]
    tgt_prob = F.softmax(tgt, dim=-1)
    tgt_dir = F.normalize(tgt, dim=-1)

    c, h, w = data.image_shape
    # Small random start (drawn on CPU so every device starts the same): tanh is near-linear there.
    w_param = (torch.rand(k, c, h, w, generator=gen) - 0.5).to(device).requires_grad_(True)
    opt = torch.optim.Adam([w_param], lr=lr)
    keys = torch.arange(k).repeat_interleave(per_cluster)  # cluster of each batch row
    x_all = torch.from_numpy(images)
    shift = max(1, min(h, w) // 8) if augment else 0
    history = []
    for _ in range(int(steps)):
        rows = torch.cat([m[torch.randint(len(m), (per_cluster,), generator=gen)] for m in members])
        x = x_all[rows].to(device, torch.float32).div_(255)
        delta = epsilon * torch.tanh(w_param)
        xp = (x + delta[keys.to(device)]).clamp(0, 1)
        if augment:
            xp = _augment(xp, gen, shift)
        f = embed_batch(enc, xp)
        tk = keys.to(device)
        if loss == "kl":
            lval = F.kl_div(F.log_softmax(f, dim=-1), tgt_prob[tk], reduction="batchmean")
        else:
            lval = 1 - (F.normalize(f, dim=-1) * tgt_dir[tk]).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        lval.backward()
        opt.step()
        history.append(float(lval.detach()))

    with torch.no_grad():
        delta = (epsilon * torch.tanh(w_param)).clamp(-epsilon, epsilon).cpu().numpy().astype(np.float32)
        # How far the objective got: the share of perturbed training images whose nearest centre is
        # their target (1/K by chance), measured on up to 64 images per cluster without augmentation.
        probe = torch.cat([m[:64] for m in members])
        xp = (x_all[probe].float().div(255) + torch.from_numpy(delta)[labels[probe]]).clamp(0, 1)
        fp = normalise(embed_images(enc, (xp * 255).round().to(torch.uint8).numpy(), device=device), feature_norm)
        moved, _ = assign(fp, km.centroids)
        hit = float((moved.cpu() == target[labels[probe]]).float().mean())

    info = {
        "surrogate": encoder_identity(enc),
        "feature_norm": feature_norm,
        "size_mismatch": "resize",
        "label_agnostic": True,
        "cluster_sizes": counts.tolist(),
        "targets": target.tolist(),
        "kmeans_inertia": round(km.inertia, 6),
        "loss_first_last": [round(history[0], 6), round(history[-1], 6)] if history else None,
        "target_hit_rate": round(hit, 4),
    }
    params = {
        "epsilon": float(epsilon), "norm": "linf", "n_clusters": k, "steps": int(steps), "lr": float(lr),
        "per_cluster": int(per_cluster), "target_offset": int(target_offset), "loss": loss, "augment": bool(augment),
        "seed": int(seed),
    }
    return NoiseBank(method="clusters", kind="additive", keying="cluster", keys=np.arange(k),
                     tensors={"delta": delta, "centroid": km.centroids.cpu().numpy().astype(np.float32)},
                     params=params, image_shape=(c, h, w), info=info)

