"""Bank kinds: what a bank can hold and which kernel applies it. One file per kind.

The kinds of perturbation a bank can hold are few (additive delta, per-key convolution, sparse
pixel edits, noise synthesised from per-key coefficients, a convolution followed by a delta);
every method maps onto one of them.
Each kind is one module in this package that calls :func:`register_kind` once: the tensors a
bank of that kind must hold and its kernel. ``NoiseBank`` validation and the apply entry
(:mod:`uetransforms.core.apply`) read this registry; nothing else names a kind. Registering a
name twice raises, as torchvision's kernel registry does. Which bank parameters may appear on a
public card is the method's business (:mod:`uetransforms.algorithms`), not the kind's.

A kernel receives the applier (duck-typed: ``bank``, ``device``, ``rows_of``, ``sized_rows``,
``fit_size``), the uint8 batch on the device, the bank rows and, for per-sample kinds, one seed
per image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import BankError

#: A synthesiser: ``(coef [B, ...], seeds, (C, H, W), *, epsilon, norm, innovation) -> float32 [B, C, H, W]``.
Synthesiser = Callable[..., np.ndarray]
_SYNTHS: dict[str, Synthesiser] = {}


def register_synth(name: str, fn: Synthesiser) -> Synthesiser:
    """Make ``fn`` the synthesiser of banks with ``params["synth"] == name`` (names are unique)."""
    if name in _SYNTHS and _SYNTHS[name] is not fn:
        raise ValueError(f"a synthesiser named {name!r} is already registered")
    _SYNTHS[name] = fn
    return fn


def synthesiser(name: Any) -> Synthesiser:
    fn = _SYNTHS.get(name)
    if fn is None:
        raise BankError(f"unknown synthesiser {name!r}; this library knows {sorted(_SYNTHS)}. "
                        "The bank was made by a newer or extended uetransforms: upgrade it or import the plugin")
    return fn


#: A kernel: ``(applier, images uint8 [B, C, H, W] on the device, rows [B], seeds or None) -> uint8``.
Kernel = Callable[["Applier", torch.Tensor, np.ndarray, "list[int] | None"], torch.Tensor]

#: A measure: ``(bank) -> {name: number}``, facts read from the payload (see :class:`BankKind`).
Measure = Callable[[Any], "dict[str, float]"]


@dataclass(frozen=True)
class BankKind:
    """What one kind of bank is: the tensors it must hold and its kernel.

    ``shape_tensor`` names the payload tensor whose per-row shape is the image shape when a bank
    is built without ``image_shape`` (``None``: the caller must give it); ``per_sample_seed``
    says the kernel draws per-image noise from a seed derived from each sample id. ``measure``
    reads what the payload does from the tensors themselves (``{"linf": ...}``...), so a card
    states that rather than what a parameter field claims (``None``: nothing measurable, the
    kernel takes its budget from the parameters).
    """

    name: str
    required_tensors: tuple[str, ...]
    kernel: Kernel
    shape_tensor: str | None = None
    per_sample_seed: bool = False
    measure: Measure | None = None
    #: ``(applier, images, rows, seeds) -> float [B]``: how much each image already carries its
    #: row's noise (:func:`~uetransforms.core.kernels.carried_score`'s scale), or None where no
    #: test from the pixels is reliable (then only the marker tells a protected image).
    carried: Kernel | None = None


_KINDS: dict[str, BankKind] = {}


def register_kind(
    name: str, *, required_tensors: Sequence[str], kernel: Kernel,
    shape_tensor: str | None = None, per_sample_seed: bool = False, measure: Measure | None = None,
    carried: Kernel | None = None,
) -> BankKind:
    """Register a bank kind once (twice raises); ``NoiseBank`` validation and the apply entry read it.

    Example:
        >>> from uetransforms.core import kinds
        >>> kinds.bank_kind("conv").required_tensors
        ('weight',)
    """
    if name in _KINDS:
        raise ValueError(f"bank kind {name!r} is already registered")
    kind = BankKind(name, tuple(required_tensors), kernel, shape_tensor, per_sample_seed, measure, carried)
    _KINDS[name] = kind
    return kind


def bank_kind(name: str) -> BankKind:
    """The registered :class:`BankKind` called ``name`` (a clear :class:`BankError` otherwise)."""
    kind = _KINDS.get(name)
    if kind is None:
        raise BankError(f"unknown bank kind {name!r}; expected one of {tuple(_KINDS)}")
    return kind


def kinds() -> tuple[str, ...]:
    """Names of the registered bank kinds, in registration order."""
    return tuple(_KINDS)


def hw(x: torch.Tensor) -> tuple[int, int]:
    """A batch's ``(height, width)``."""
    return int(x.shape[-2]), int(x.shape[-1])


def row_chunks(bank: Any, name: str, max_bytes: int = 16 * 2**20):
    """Rows of one payload tensor, a bounded number of bytes at a time (for measures of large banks)."""
    arr = bank.tensors[name]
    step = max(1, max_bytes // max(1, arr[:1].nbytes))
    for start in range(0, len(arr), step):
        yield bank.gather(name, np.arange(start, min(start + step, len(arr))))


# The built-in kinds register themselves on import, in this order (the order ``kinds()`` lists).
from . import additive, conv, pixel, synth, convadd  # noqa: E402,F401  (registration side effects)

__all__ = ["BankKind", "Kernel", "Measure", "Synthesiser", "bank_kind", "hw", "kinds", "register_kind", "register_synth",
           "synthesiser"]
