"""``pixel``: sparse pixel edits ``where(mask[key], value[key], x)``; mask and values are resized
with nearest-neighbour sampling so an edit stays an edit. A mask may be ``[K, 1, H, W]``
(broadcast over channels): the values carry the channels."""

from __future__ import annotations

import numpy as np
import torch

from . import hw, register_kind, row_chunks
from ..kernels import blend_pixels


def apply_pixel(app, x: torch.Tensor, rows: np.ndarray, seeds: list[int] | None) -> torch.Tensor:
    mask = app.sized_rows("mask", rows, hw(x), mode="nearest")
    value = app.sized_rows("value", rows, hw(x), mode="nearest")
    return blend_pixels(x, mask, value)


def measure_pixel(bank) -> dict[str, float]:
    """``l0``: the most pixel positions one image has edited (any channel)."""
    most = 0
    for part in row_chunks(bank, "mask"):
        most = max(most, int((part.reshape(len(part), part.shape[1], -1) != 0).any(axis=1).sum(axis=1).max()))
    return {"l0": most}


KIND = register_kind("pixel", required_tensors=("mask", "value"), kernel=apply_pixel, shape_tensor="value",
                     measure=measure_pixel)
