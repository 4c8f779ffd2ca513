"""``ProtectTransform``: a noise bank as a ``torchvision.transforms.v2`` transform.

It reads each sample's label (``(img, label)`` tuples, or dicts with a ``label``-like key),
protects the image (PIL, ``tv_tensors.Image``, uint8 or float tensors) and passes everything
else through untouched. For the same image it returns exactly what :class:`~uetransforms.Protect`
writes, because both go through the same decode -> kernel -> encode path.

Example:
    >>> import numpy as np, torch, uetransforms as ue
    >>> from PIL import Image
    >>> from torchvision.transforms import v2
    >>> bank = ue.fit("random", {"image": list(np.zeros((2, 8, 8, 3), np.uint8)), "label": [0, 1]}, seed=0)
    >>> tf = v2.Compose([ue.ProtectTransform(bank), v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    >>> img, label = tf(Image.new("RGB", (8, 8)), 1)
    >>> tuple(img.shape), label
    ((3, 8, 8), 1)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import PIL.Image
import torch
from torch.utils._pytree import tree_flatten, tree_unflatten
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..core.bank import NoiseBank
from ..core.codecs import mark_pil
from ..core.images import from_chw, to_chw
from .datasets import _BankUser


def default_labels_getter(sample: Any) -> Any:
    """The label of a sample: the 2nd item of a tuple, or a ``label``/``labels``-like dict key.

    Returns ``None`` when the sample carries no label (fine for sample- and cluster-keyed banks).
    """
    if isinstance(sample, (tuple, list)):
        if len(sample) < 2:
            return None
        second = sample[1]
        if isinstance(second, Mapping):
            return default_labels_getter(second)
        return second
    if isinstance(sample, Mapping):
        keys = {str(k).lower(): k for k in sample}
        for want in ("label", "labels"):
            if want in keys:
                return sample[keys[want]]
        for low, k in keys.items():
            if "label" in low:
                return sample[k]
    return None


class ProtectTransform(_BankUser, v2.Transform):
    """Protect images inside a torchvision v2 pipeline.

    Args:
        bank: a :class:`NoiseBank` or the path of a saved one.
        labels_getter: ``"default"`` (tuple's 2nd item or a ``label``-like dict key; cluster banks
            ignore it and assign clusters themselves), a callable ``sample -> label`` (or cluster
            id), or ``None`` (only for sample-/cluster-keyed banks).
        sample_id_getter: ``sample -> id`` for sample-wise/synth banks; default: a hash of the
            image's pixels.
        device / size_mismatch / convert / encoder / allow_double: as in :class:`~uetransforms.Protect`.

    Float tensor images must be in [0, 1] (torchvision's convention): they are read as the 8-bit
    pixels ``round(x * 255)`` they stand for (exact for ``v2.ToDtype(torch.float32, scale=True)``
    output) and come back as ``protected / 255`` in the input's dtype, the very pixels the uint8
    path gives. Floats outside [0, 1] (0-255 floats, normalised tensors) are refused: put
    ProtectTransform before ``ToDtype``/``Normalize``, or pass uint8. The output keeps the input's
    type and dtype.
    """

    _transformed_types = (torch.Tensor, PIL.Image.Image)

    def __init__(
        self,
        bank: NoiseBank | str | os.PathLike,
        *,
        labels_getter: str | Callable[[Any], Any] | None = "default",
        sample_id_getter: Callable[[Any], Any] | None = None,
        device: str | torch.device | None = None,
        size_mismatch: str | None = None,
        convert: bool = False,
        encoder: torch.nn.Module | None = None,
        allow_double: bool = False,
    ) -> None:
        v2.Transform.__init__(self)
        _BankUser.__init__(self, bank, device=device, size_mismatch=size_mismatch, convert=convert, encoder=encoder,
                           allow_double=allow_double)
        if labels_getter == "default":
            labels_getter = default_labels_getter
        elif labels_getter is not None and not callable(labels_getter):
            raise ValueError(f"labels_getter must be 'default', a callable or None, got {labels_getter!r}")
        self.labels_getter = labels_getter
        self.sample_id_getter = sample_id_getter

    def extra_repr(self) -> str:
        return f"bank={self.bank.method!r} ({self.bank.keying}-wise {self.bank.kind})"

    def forward(self, *inputs: Any) -> Any:
        # Like SanitizeBoundingBoxes, we need the whole sample (for its label), so we override forward.
        sample = inputs if len(inputs) > 1 else inputs[0]
        getter = self.labels_getter
        if getter is default_labels_getter and self.bank.keying == "cluster":
            # A sample's default label is its class, never its cluster id: a cluster bank assigns
            # clusters itself unless a custom labels_getter returns cluster ids.
            getter = None
        label = getter(sample) if getter is not None else None
        sid = self.sample_id_getter(sample) if self.sample_id_getter is not None else None
        flat, spec = tree_flatten(sample)
        self.check_inputs(flat)
        needs = self._needs_transform_list(flat)
        params = {"label": label, "sample_id": sid}
        out = [self.transform(x, params) if n else x for x, n in zip(flat, needs)]
        return tree_unflatten(out, spec)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, (tv_tensors.BoundingBoxes, tv_tensors.Mask, tv_tensors.KeyPoints)):
            return inpt  # geometry and masks are not pixels to protect
        if isinstance(inpt, tv_tensors.Video):
            raise TypeError("ProtectTransform protects images; videos are not supported")
        batched = isinstance(inpt, torch.Tensor) and inpt.ndim == 4
        if batched:
            raise TypeError(
                "ProtectTransform works per sample (one image and its label); protect batches with "
                "ue.apply or Protect on a dataset"
            )
        self._refuse_protected([inpt], "image")
        chw = to_chw(inpt, channels=self.bank.channels, convert=self.convert, column="image")
        label, sid = params["label"], params["sample_id"]
        res = self._protect_chws([chw], None if label is None else [label], None if sid is None else [sid])[0]
        return _like(inpt, res, self.bank.method)

    def __reduce__(self):
        return (_restore_transform, (self._state(),))

    def _state(self) -> dict[str, Any]:
        # nn.Module internals (hooks, buffers) are rebuilt by v2.Transform.__init__; keep only our
        # own fields. The encoder is an nn.Module, so the Module machinery files it under _modules.
        from ..core.version import __version__

        state = {k: getattr(self, k) for k in _TRANSFORM_FIELDS}
        state["_version"] = __version__
        return state


_TRANSFORM_FIELDS = ("bank", "device", "size_mismatch", "convert", "encoder", "allow_double", "labels_getter",
                     "sample_id_getter")


def _restore_transform(state: dict[str, Any]) -> ProtectTransform:
    obj = ProtectTransform.__new__(ProtectTransform)
    v2.Transform.__init__(obj)
    state = dict(state)
    state.pop("_version", None)
    for k, v in state.items():
        setattr(obj, k, v)
    object.__setattr__(obj, "_appliers", {})
    return obj


def _like(inpt: Any, chw: np.ndarray, method: str | None = None) -> Any:
    """Return protected pixels in the input's own type (PIL mode, tv_tensor, dtype)."""
    if isinstance(inpt, PIL.Image.Image):
        return mark_pil(from_chw(chw), method)
    t = torch.from_numpy(chw)
    if inpt.is_floating_point():
        t = t.to(inpt.dtype).div_(255)
    t = t.to(inpt.device)
    if inpt.ndim == 2:
        t = t[0]
    if isinstance(inpt, tv_tensors.TVTensor):
        return tv_tensors.wrap(t, like=inpt)
    return t
