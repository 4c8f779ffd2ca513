"""Cluster assignment of unseen, unlabelled images for cluster-keyed banks (``clusters``).

A cluster bank stores its K-means centroids and the identity of the surrogate that embedded the
training images. :class:`ClusterAssigner` rebuilds that surrogate, embeds new images the same
way and returns each one's nearest centroid, so ``Protect(bank, label_column=None)`` can protect
images nobody has labelled or clustered. A bank keyed by the encoder's own classifier head
(:func:`head_clusters`, ``cluster_by="head"``) stores that head instead, and each image's key is
the head's prediction (argmax of its logits).

Example:
    >>> import numpy as np, uetransforms as ue
    >>> from uetransforms.models.assign import ClusterAssigner
    >>> bank = ue.NoiseBank.load("clusters.bank.arrow")  # doctest: +SKIP
    >>> ClusterAssigner(bank)([np.zeros((3, 32, 32), np.uint8)])  # doctest: +SKIP
    array([4])
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.bank import BankError, NoiseBank


#: ``ue.fit`` options of label-free keying (``label_column=None`` with a class-keyed method), with
#: their defaults: read here, never passed to the method. Measured on CIFAR-10 (10k rows, a
#: ResNet-18 encoder trained on other rows; benchmarks/RESULTS.md, "Label-free protection, session
#: 6 (issue 25)"): cosine K-means ("l2") gives purity 0.628 against the 10 true labels at K = 10,
#: raw features 0.472; more clusters barely add purity (K = 20 / 50 / 100: 0.624 / 0.637 / 0.634)
#: while each key gets fewer images, so K = 10. Session 7 (same RESULTS.md, "session 7"): the
#: encoder's own class head keys purer (0.703 vs K-means 0.625, ResNet-18 of 0.713 accuracy) and
#: protects more (cuda 0.74x vs 0.80x clean), but only an encoder trained on classes like the
#: owner's has such a head, so K-means stays the default and ``cluster_by="head"`` is the option.
KEYING_OPTIONS: dict[str, Any] = {"encoder": None, "encoder_checkpoint": None, "n_clusters": 10,
                                  "feature_norm": "l2", "cluster_by": "kmeans"}


def encoder_identity(encoder: torch.nn.Module) -> dict[str, Any]:
    """What a bank records about a surrogate: a rebuildable identity, or a module's class name."""
    from .encoders import identity_of

    return identity_of(encoder)


def embed_batch(encoder: torch.nn.Module, x01: torch.Tensor) -> torch.Tensor:
    """Features ``[B, D]`` of images in [0, 1]: ``encode_image`` for CLIP, ``encoder(x)`` otherwise.

    A plain module gets the [0, 1] images unchanged: resizing and normalisation are its job
    (wrap it in ``nn.Sequential(v2.Resize(...), v2.Normalize(...), model)``). Outputs with more
    than two dims are flattened.
    """
    enc = getattr(encoder, "encode_image", None)
    feats = enc(x01) if callable(enc) else encoder(x01)
    if not isinstance(feats, torch.Tensor):
        raise TypeError(f"the surrogate encoder returned {type(feats).__name__}; it must return a [B, D] tensor")
    return feats.flatten(1).float()


def normalise(feats: torch.Tensor, how: str) -> torch.Tensor:
    """The feature normalisation applied before K-means and assignment (``"l2"`` or ``"none"``)."""
    if how == "l2":
        return torch.nn.functional.normalize(feats, dim=-1)
    if how == "none":
        return feats
    raise BankError(f"unknown feature normalisation {how!r}; expected 'l2' or 'none'")


@torch.no_grad()
def embed_images(encoder: torch.nn.Module, images: Sequence[np.ndarray] | np.ndarray, *, device: torch.device,
                 batch_size: int = 256) -> torch.Tensor:
    """Embed uint8 ``[C, H, W]`` images (a list of any sizes, or one ``[N, C, H, W]`` array) in batches.

    Images of one size share a batch; the features come back in input order, on ``device``.
    """
    if isinstance(images, np.ndarray) and images.ndim == 4:
        groups = {tuple(images.shape[1:]): list(range(len(images)))}
    else:
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(tuple(np.shape(im)), []).append(i)
    out: torch.Tensor | None = None
    for idx in groups.values():
        for s in range(0, len(idx), batch_size):
            part = idx[s : s + batch_size]
            arr = images[part] if isinstance(images, np.ndarray) else np.stack([images[i] for i in part])
            x = torch.from_numpy(np.ascontiguousarray(arr)).to(device, torch.float32).div_(255)
            f = embed_batch(encoder, x)
            if out is None:
                out = torch.empty(len(images), f.shape[1], device=f.device)
            out[torch.as_tensor(part, device=f.device)] = f
    assert out is not None
    return out


@dataclass
class Clustering:
    """K clusters of an encoder's features, as a cluster-keyed bank records them.

    Either K-means clusters (``centroids``, in the normalised space ``feature_norm`` that
    :class:`ClusterAssigner` assigns in) or the encoder's own class predictions (``head_weight``
    ``[K, D]`` and ``head_bias`` ``[K]``, applied to the raw features). ``features`` are the raw
    (unnormalised) embeddings, in input order.
    """

    encoder: torch.nn.Module
    features: torch.Tensor  #: ``[N, D]`` raw features, on the fitting device
    centroids: torch.Tensor | None  #: ``[K, D]`` float32, in the normalised space (K-means)
    labels: torch.Tensor  #: ``[N]`` int64 on the CPU: each image's cluster
    inertia: float | None
    feature_norm: str
    head_weight: torch.Tensor | None = None  #: ``[K, D]`` float32 (keyed by the encoder's head)
    head_bias: torch.Tensor | None = None  #: ``[K]`` float32

    @property
    def by(self) -> str:
        """``"kmeans"`` or ``"head"``: how the clusters were made (and are assigned)."""
        return "head" if self.head_weight is not None else "kmeans"

    @property
    def k(self) -> int:
        return int((self.head_weight if self.head_weight is not None else self.centroids).shape[0])

    def bank_tensors(self) -> dict[str, np.ndarray]:
        """The tensors :class:`ClusterAssigner` assigns new images with."""
        if self.by == "head":
            # one row per key, as every bank tensor: the key's weights, then its bias
            return {"head": torch.cat([self.head_weight, self.head_bias[:, None]], 1).cpu().numpy().astype(np.float32)}
        return {"centroid": self.centroids.cpu().numpy().astype(np.float32)}

    def bank_info(self) -> dict[str, Any]:
        """What a cluster bank's ``info`` must hold to assign new images (and what it describes)."""
        from .encoders import is_random

        ident = encoder_identity(self.encoder)
        info = {"surrogate": ident, "random_surrogate": is_random(ident), "feature_norm": self.feature_norm,
                "label_agnostic": True, "cluster_sizes": torch.bincount(self.labels, minlength=self.k).tolist()}
        if self.by == "head":
            return {**info, "cluster_by": "head"}
        return {**info, "kmeans_inertia": round(float(self.inertia), 6)}


def fit_clusters(encoder: torch.nn.Module, images: np.ndarray, k: int, *, seed: int, feature_norm: str = "l2",
                 device: torch.device, kmeans_batch_size: int | None = None, kmeans_iter: int = 100,
                 embed_batch_size: int = 256) -> Clustering:
    """Embed uint8 ``[N, C, H, W]`` images with ``encoder`` and split them into ``k`` K-means clusters.

    The one place a cluster-keyed bank's clusters are made (``clusters`` and every class-keyed
    method fitted without labels): embedding and normalisation are exactly what
    :class:`ClusterAssigner` repeats on new images at apply time.
    """
    from .kmeans import kmeans

    if not 2 <= int(k) <= len(images):
        raise ValueError(f"n_clusters={k} must be between 2 and the number of images ({len(images)}): lower "
                         "n_clusters or fit on more images")
    feats = embed_images(encoder, images, device=device, batch_size=embed_batch_size)
    km = kmeans(normalise(feats, feature_norm), int(k), seed=int(seed), batch_size=kmeans_batch_size,
                max_iter=kmeans_iter)
    return Clustering(encoder=encoder, features=feats, centroids=km.centroids.float(), labels=km.labels.cpu(),
                      inertia=float(km.inertia), feature_norm=feature_norm)


#: Where each rebuildable encoder kind keeps its linear classifier in its checkpoint file.
_HEAD_PREFIX = {"torchvision": "fc.", "small-cnn": "head."}


def class_head(encoder: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The linear classifier (``weight [C, D]``, ``bias [C]``) that an encoder's checkpoint file keeps.

    An encoder file (``save_torchvision``: ``fc``; ``save_small_cnn``: ``head``) or a torchvision
    checkpoint holds the whole classifier; the encoder drops the head for features, this reads it
    back. Encoders without such a file (a named model's downloaded weights, CLIP, a plain
    ``nn.Module``) have none here.
    """
    from .encoders import _read_state_dict

    ident = encoder_identity(encoder)
    prefix, path = _HEAD_PREFIX.get(str(ident.get("kind"))), ident.get("checkpoint_path")
    if prefix is None or not path:
        raise ValueError(
            f"cluster_by='head' keys images by the encoder's own classifier, which only an encoder file or a "
            f"torchvision/small-cnn checkpoint keeps; this encoder ({ident.get('kind')}: "
            f"{ident.get('arch', ident.get('class', '?'))}) has none: pass such a file as encoder=, or use "
            "cluster_by='kmeans'")
    sd = _read_state_dict(str(path))
    w, b = sd.get(prefix + "weight"), sd.get(prefix + "bias")
    if w is None or b is None or w.ndim != 2 or b.shape != (w.shape[0],):
        raise ValueError(f"cluster_by='head': {path!r} holds no linear classifier '{prefix}weight'/'{prefix}bias'; "
                         "save the whole classifier (save_torchvision / save_small_cnn), or use cluster_by='kmeans'")
    return w.detach().float().cpu(), b.detach().float().cpu()


def head_logits(feats: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The classifier head's logits of raw features (one rule for fitting and assignment)."""
    if feats.shape[1] != weight.shape[1]:
        raise BankError(f"the encoder gives {feats.shape[1]}-d features but the classifier head takes "
                        f"{weight.shape[1]}-d: pass the encoder the head belongs to")
    return feats @ weight.to(feats.device).T + bias.to(feats.device)


def head_clusters(encoder: torch.nn.Module, images: np.ndarray, *, device: torch.device,
                  embed_batch_size: int = 256) -> Clustering:
    """Key uint8 ``[N, C, H, W]`` images by the encoder's own classifier head: each image's cluster is
    the class the encoder predicts (:func:`class_head`); K = the head's number of classes.

    With an encoder trained on classes like the owner's (e.g. a classifier trained elsewhere on the
    same kind of images), its predictions are purer keys than K-means of its features (measured in
    benchmarks/RESULTS.md, "Label-free protection, session 7").
    """
    weight, bias = class_head(encoder)
    feats = embed_images(encoder, images, device=device, batch_size=embed_batch_size)
    labels = head_logits(feats, weight, bias).argmax(1).cpu()
    return Clustering(encoder=encoder, features=feats, centroids=None, labels=labels, inertia=None,
                      feature_norm="none", head_weight=weight, head_bias=bias)


class ClusterAssigner:
    """Nearest-centroid cluster ids for images, using the surrogate a cluster bank records.

    Args:
        bank: a cluster-keyed :class:`NoiseBank` with a ``centroid`` tensor (e.g. from
            ``ue.fit("clusters", ...)``).
        device: where the surrogate runs (``"cpu"``, ``"cuda"``).
        encoder: the surrogate module itself. Needed when the bank was fitted with a plain
            ``nn.Module`` encoder (nothing to rebuild it from); for named surrogates (torchvision,
            CLIP, small-cnn: :mod:`uetransforms.models.encoders`) it skips rebuilding. It must be the
            same encoder the bank was fitted with.
        checkpoint: new path of the surrogate's checkpoint file if it moved (sha256 checked).
        batch_size: images embedded per forward pass.

    ``__call__(chws)`` takes a list of uint8 ``[C, H, W]`` arrays and returns int64 cluster ids.
    """

    def __init__(self, bank: NoiseBank | str | os.PathLike, device: str | torch.device = "cpu", *,
                 encoder: torch.nn.Module | None = None, checkpoint: str | os.PathLike | None = None,
                 batch_size: int = 256) -> None:
        if not isinstance(bank, NoiseBank):
            bank = NoiseBank.load(bank)
        if bank.keying != "cluster" or not ("centroid" in bank.tensors or "head" in bank.tensors):
            raise BankError(
                f"ClusterAssigner needs a cluster-keyed bank with centroids (or a classifier head); this "
                f"{bank.method!r} bank is keyed "
                f"by {bank.keying!r} with tensors {sorted(bank.tensors)}"
            )
        self.bank = bank
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.feature_norm = str(bank.info.get("feature_norm", "l2"))
        ident = bank.info.get("surrogate") or {}
        if encoder is None:
            if ident.get("kind") in (None, "module"):
                raise BankError(
                    f"this bank was fitted with a custom encoder ({ident.get('class', 'unknown')}), which a bank "
                    "cannot rebuild. Assign clusters with ClusterAssigner(bank, encoder=<that module>) (e.g. in "
                    "dataset.map to add a cluster column) or Protect(bank, encoder=<that module>)"
                )
            from .encoders import from_identity

            encoder = from_identity(ident, device=self.device, checkpoint=checkpoint)
        self.encoder = encoder.to(self.device).eval()
        def tensor(name: str) -> torch.Tensor:
            return torch.from_numpy(np.array(bank.tensors[name], dtype=np.float32)).to(self.device)

        # a head bank's rows: [weights | bias] of each key's logit (Clustering.bank_tensors)
        self._head = (tensor("head")[:, :-1], tensor("head")[:, -1]) if "head" in bank.tensors else None
        self._centroids = tensor("centroid") if self._head is None else None

    def embed(self, chws: Sequence[np.ndarray]) -> torch.Tensor:
        """Normalised surrogate features ``[N, D]`` of uint8 ``[C, H, W]`` images."""
        feats = embed_images(self.encoder, chws, device=self.device, batch_size=self.batch_size)
        dim = (self._head[0] if self._head is not None else self._centroids).shape[1]
        if feats.shape[1] != dim:
            raise BankError(
                f"the encoder gives {feats.shape[1]}-d features but the bank's "
                f"{'classifier head takes' if self._head is not None else 'centroids are'} {dim}-d: pass the "
                "encoder the bank was fitted with"
            )
        return normalise(feats, self.feature_norm)

    def __call__(self, chws: Sequence[np.ndarray]) -> np.ndarray:
        if len(chws) == 0:
            return np.zeros(0, dtype=np.int64)
        from .kmeans import assign

        feats = self.embed(chws)
        if self._head is not None:  # the encoder's prediction: the rule head_clusters fitted with
            labels = head_logits(feats, *self._head).argmax(1)
        else:
            labels, _ = assign(feats, self._centroids)
        return np.asarray(self.bank.keys)[labels.cpu().numpy()].astype(np.int64)

    def __repr__(self) -> str:
        return f"ClusterAssigner({self.bank.num_keys} clusters, encoder={type(self.encoder).__name__}, device={str(self.device)!r})"


__all__ = ["ClusterAssigner", "Clustering", "class_head", "fit_clusters", "head_clusters", "head_logits", "embed_images",
           "embed_batch", "encoder_identity", "normalise"]
