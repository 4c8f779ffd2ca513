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
from ..core.errors import DataError
from ..core.images import to_chw
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
        image_column / label_column / id_column: columns to read; ``label_column=None`` for
            label-agnostic methods; ``id_column`` gives sample-wise banks stable keys (else
            content hashes of the pixels).
        seed: the private key: the same seed and data give the same bank. ``None`` (the default)
            draws a fresh secret one from :mod:`secrets`; it is recorded in the bank (``bank.params
            ["seed"]``, never on a dataset card), so keep the bank private and backed up.
        device: where fitting runs (``"cuda"`` for a GPU); CPU by default.
        size_mismatch: ``"resize"`` records in the bank that its noise is interpolated to images
            of other sizes (photos of mixed sizes); ``None`` keeps the method's own policy. A bank
            of one size fitted on images of several sizes is refused without it.
        **params: method parameters (``epsilon``, ``kernel_size``...), see each method's docs.

    Example:
        >>> import numpy as np, uetransforms as ue
        >>> ds = {"image": list(np.zeros((4, 8, 8, 3), np.uint8)), "label": [0, 1, 0, 1]}
        >>> ue.fit("random", ds, seed=1).num_keys
        2
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
    if not module.label_free and data.label_column is None:
        raise ValueError(f"method {method!r} needs labels: pass label_column=<integer label column>")
    start = time.perf_counter()
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
