"""``ue.fit``: the front door to the method registry (:mod:`uetransforms.algorithms`)."""

from __future__ import annotations

import secrets
import time
from typing import Any

import numpy as np
import torch

from .. import algorithms as _methods
from ..core.bank import NoiseBank
from ..core.data import FitData
from ..core.device import resolve_device


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
    if not module.label_free and data.label_column is None:
        raise ValueError(f"method {method!r} needs labels: pass label_column=<integer label column>")
    start = time.perf_counter()
    bank = module.fit(data, seed=int(seed), device=resolve_device(device), **params)
    # fit_seconds is kept on the object, not in the hashed metadata: the same seed and data must
    # give the same bytes. The bank is immutable: the additions make a new one.
    info = bank.info
    if data.class_names and bank.keying == "class" and "class_names" not in info:
        info = {**info, "class_names": data.class_names}
    return bank.replace(info=info, fit_seconds=round(time.perf_counter() - start, 3))
