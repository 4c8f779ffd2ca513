"""``ue.fit``: the front door to the method registry (:mod:`uetransforms.algorithms`)."""

from __future__ import annotations

import secrets
import time
import warnings
from typing import Any

import numpy as np
import torch

from .. import algorithms as _methods
from ..core.bank import NoiseBank
from ..core.data import FitData
from ..core.apply import SIZE_POLICIES
from ..core.device import resolve_device
from ..core.errors import DataError, ParameterError
from ..core.images import to_chw
# the label-free keying options live with the clustering, where the measured facts read them too
from ..models.assign import KEYING_OPTIONS
from . import measured

#: Rows whose sizes are compared before a bank of one size is accepted (spread over the data).
_SIZE_SAMPLE = 64


def _refuse_mixed_sizes(data: FitData, bank: NoiseBank) -> None:
    """A bank of one size must not silently take the first image's size when the data has several."""
    n = len(data)
    rows = sorted({int(i) for i in np.linspace(0, n - 1, min(n, _SIZE_SAMPLE))})
    sizes: dict[tuple[int, int], int] = {}
    for i in rows:
        raw = data.dataset[data.image_column][i] if isinstance(data.dataset, dict) else data.dataset[i][data.image_column]
        if raw is None:  # a missing image has no size; protecting it fails with its own clear error
            continue
        chw = to_chw(raw, channels=data.channels, convert=True, column=data.image_column)
        sizes.setdefault((int(chw.shape[1]), int(chw.shape[2])), i)
    if len(sizes) > 1:
        listed = ", ".join(f"{h}x{w}" for h, w in list(sizes)[:4]) + (" ..." if len(sizes) > 4 else "")
        _, h, w = bank.image_shape
        raise DataError(
            f"the images come in {len(sizes)} sizes ({listed}, height x width, in {len(rows)} rows sampled), but a "
            f"{bank.method!r} bank holds noise of one size, {h}x{w} (the first image's), so the other images could "
            "not be protected; pass size_mismatch='resize' to record that its noise is interpolated to each "
            "image's size, or resize the images to one size first"
        )


def fit(
    method: str,
    dataset: Any,
    *,
    image_column: str = "image",
    label_column: str | None = "label",
    id_column: str | None = None,
    seed: int | None = None,
    device: str | torch.device | None = None,
    convert: bool = False,
    size_mismatch: str | None = None,
    **params: Any,
) -> NoiseBank:
    """Fit protection ``method`` on ``dataset`` and return its (secret) :class:`NoiseBank`.

    Args:
        method: a key of :func:`methods` (``"cuda"``, ``"em"``, ``"clusters"``...).
        dataset: a ``datasets.Dataset`` (or a dict of lists / a :class:`FitData`).
        image_column / label_column / id_column: columns to read; ``id_column`` gives sample-wise
            banks stable keys (else content hashes of the pixels). ``label_column=None``: no labels.
            Label-free methods (``clusters``) need none; any class-keyed method (``cuda``, ``em``...)
            is then keyed by K clusters of an image encoder's features instead of classes, which
            needs ``encoder=`` (see :func:`fit_keyed_by_clusters`).
        seed: the private key: the same seed and data give the same bank. ``None`` (the default)
            draws a fresh secret one from :mod:`secrets`; it is recorded in the bank (``bank.params
            ["seed"]``, never on a dataset card), so keep the bank private and backed up.
        device: where fitting runs (``"cuda"`` for a GPU); CPU by default.
        size_mismatch: ``"resize"`` records in the bank that its noise is interpolated to images
            of other sizes (photos of mixed sizes); ``None`` keeps the method's own policy. A bank
            of one size fitted on images of several sizes is refused without it.
        **params: method parameters (``epsilon``, ``kernel_size``...), see each method's docs; without
            labels also the keying options ``encoder``, ``encoder_checkpoint``, ``n_clusters``,
            ``feature_norm``, ``cluster_by`` (:data:`KEYING_OPTIONS`).

    Example:
        >>> import numpy as np, uetransforms as ue
        >>> ds = {"image": list(np.zeros((4, 8, 8, 3), np.uint8)), "label": [0, 1, 0, 1]}
        >>> ue.fit("random", ds, seed=1).num_keys
        2
        >>> bank = ue.fit("cuda", ds, label_column=None, encoder="resnet18-c10.safetensors")  # doctest: +SKIP
        >>> bank.keying, "centroid" in bank.tensors  # doctest: +SKIP
        ('cluster', True)
    """
    module = _methods.get(method)  # the Method declaration
    if seed is None:
        # A fixed default would be a public key shared by every user who omits it.
        seed = secrets.randbits(62)
    elif isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer (the private key) or None for a fresh secret one, "
                         f"got {seed!r}")
    if isinstance(dataset, FitData):
        data = dataset
    else:
        data = FitData(dataset, image_column=image_column, label_column=label_column, id_column=id_column,
                       convert=convert)
    if size_mismatch is not None and size_mismatch not in SIZE_POLICIES:
        raise ValueError(f"size_mismatch={size_mismatch!r}; expected one of {SIZE_POLICIES}")
    given = sorted(set(params) & set(KEYING_OPTIONS))
    if given and not module.label_free and data.label_column is not None:
        raise ValueError(f"{', '.join(given)} key {method!r} by clusters of an encoder, which is for fitting "
                         f"without labels: pass label_column=None as well, or drop {', '.join(given)}")
    start = time.perf_counter()
    if not module.label_free and data.label_column is None:
        bank = fit_keyed_by_clusters(module, data, seed=int(seed), device=resolve_device(device), **params)
    else:
        bank = module.fit(data, seed=int(seed), device=resolve_device(device), **params)
    # fit_seconds is kept on the object, not in the hashed metadata: the same seed and data must
    # give the same bytes. The bank is immutable: the additions make a new one.
    info = bank.info
    if size_mismatch is not None:
        info = {**info, "size_mismatch": size_mismatch}
    if info.get("size_mismatch", "error") != "resize":
        _refuse_mixed_sizes(data, bank)
    note = measured.not_protecting(method)
    if note:
        warnings.warn(note, UserWarning, stacklevel=2)
    if data.class_names and bank.keying == "class" and "class_names" not in info:
        info = {**info, "class_names": data.class_names}
    return bank.replace(info=info, fit_seconds=round(time.perf_counter() - start, 3))


def fit_keyed_by_clusters(module: _methods.Method, data: FitData, *, seed: int, device: torch.device,
                          **params: Any) -> NoiseBank:
    """Fit a class-keyed method without labels: K clusters of an encoder's features stand in for classes.

    The one owner of the rule "cluster the images with an encoder and key any class-keyed method by
    cluster". The images are embedded and split into ``n_clusters`` K-means clusters
    (:func:`uetransforms.models.assign.fit_clusters`, as ``clusters`` does); the method is fitted
    with the cluster ids in the labels' place; a class-keyed result becomes a *cluster*-keyed
    bank carrying the centroids and the encoder's identity, so ``Protect(bank, label_column=None)``
    assigns each new image its cluster (:class:`uetransforms.models.assign.ClusterAssigner`). A
    sample-keyed result (``em`` ``mode="sample"``) stays keyed by sample; its noise was made with
    the cluster ids as labels.

    Keying options (popped from ``params``):
        encoder: an encoder file (``models.encoders.save_torchvision`` / ``save_small_cnn``; offline),
            a model name for ``models.encoders.load`` (``"resnet50"``, ``"clip:RN50"``; weights
            download once) or any ``nn.Module`` mapping [0, 1] images to ``[B, D]`` features (such a
            bank cannot rebuild it: protect with ``Protect(bank, encoder=module)``).
        encoder_checkpoint: local weights for a named encoder (offline).
        n_clusters: K, at least 2 and at most the number of images (10 by default).
        feature_norm: ``"l2"`` (cosine K-means, the default) or ``"none"``.
        cluster_by: ``"kmeans"`` (the default: K-means of the features) or ``"head"``: key each image
            by the class the encoder itself predicts (its file's classifier head; K = its classes),
            for an encoder trained elsewhere on classes like the owner's
            (:func:`uetransforms.models.assign.head_clusters`).

    The method's own ``label_free_defaults`` (e.g. ``cuda``'s ``kernel_size=5``) replace its declared
    defaults here, except where its ``size_defaults`` apply (``cuda`` on photos keeps its 7 x 7 filters);
    parameters the caller passes win.
    """
    k_given = "n_clusters" in params
    opts = {name: params.pop(name, default) for name, default in KEYING_OPTIONS.items()}
    # Keys that are only partly the classes may need a stronger setting than labels do (the method
    # declares it; RESULTS.md "Label-free protection, session 8"); what the caller passes wins, and on
    # large images the method's size defaults (the setting measured at that size) come before these.
    sized = {} if module.size_defaults is None else module.sized(params, tuple(data.image_shape))
    params = {**{k: v for k, v in module.label_free_defaults.items() if k not in sized}, **params}
    key = module.key
    if "class" not in module.keyed_by:
        raise ValueError(f"method {key!r} is keyed by {module.keyed_by} and needs labels: pass "
                         "label_column=<integer label column>")
    if opts["encoder"] is None:
        raise ValueError(
            f"method {key!r} needs labels: pass label_column=<integer label column>, or fit it label-free, keyed "
            "by clusters of an image encoder's features: label_column=None plus encoder=<an encoder file, a "
            "model name such as 'resnet50', or an nn.Module> (n_clusters=K, default 10)")
    if opts["cluster_by"] not in ("kmeans", "head"):
        raise ParameterError(f"cluster_by={opts['cluster_by']!r} is not valid: expected 'kmeans' (K-means of the "
                             "encoder's features) or 'head' (the encoder's own class predictions)")
    k = opts["n_clusters"]
    if opts["cluster_by"] == "kmeans" and (isinstance(k, bool) or not isinstance(k, (int, np.integer))
                                           or not 2 <= k <= len(data)):
        raise ParameterError(f"n_clusters={k!r} is not valid: it must be an integer between 2 and the number of "
                             f"images ({len(data)}); lower n_clusters or fit on more images")
    if opts["feature_norm"] not in ("l2", "none"):
        raise ParameterError(f"feature_norm={opts['feature_norm']!r} is not valid: expected 'l2' or 'none'")
    with warnings.catch_warnings():  # the method's own parameters fail before the (slow) embedding;
        warnings.simplefilter("ignore")  # its budget warnings come once, from the fit below
        module.check(params)
    from ..models import encoders
    from ..models.assign import class_head, fit_clusters, head_clusters

    enc = encoders.resolve(opts["encoder"], checkpoint=opts["encoder_checkpoint"], device=device)
    if opts["cluster_by"] == "head":
        classes = int(class_head(enc)[0].shape[0])  # read before the (slow) embedding
        if k_given and k != classes:
            raise ParameterError(f"n_clusters={k} but cluster_by='head' keys by the encoder's {classes} classes: "
                                 "drop n_clusters (or pass cluster_by='kmeans' for K clusters)")
        if classes < 2:
            raise ParameterError(f"cluster_by='head': the encoder's classifier has {classes} class; it needs 2 or "
                                 "more (or use cluster_by='kmeans')")
        clusters = head_clusters(enc, data.images(), device=device)
        k = clusters.k
    else:
        clusters = fit_clusters(enc, data.images(), int(k), seed=seed, feature_norm=opts["feature_norm"],
                                device=device)
    bank = module.fit(data.keyed_by(clusters.labels.numpy(), int(k), "clusters"), seed=seed, device=device,
                      **params)
    info = {**bank.info, **clusters.bank_info()}
    if bank.keying == "sample":
        return bank.replace(info={**info, "keyed_by": "sample, noise fitted with cluster ids as labels"})
    if bank.keying != "class" or list(bank.keys) != list(range(int(k))):
        raise ValueError(f"method {key!r} returned a {bank.keying}-keyed bank with keys {list(bank.keys)[:5]}..., "
                         f"not one row per cluster 0..{int(k) - 1}: it cannot be keyed by clusters")
    return bank.replace(keying="cluster", tensors={**bank.tensors, **clusters.bank_tensors()}, info=info,
                        params={**bank.params, "n_clusters": int(k)})
