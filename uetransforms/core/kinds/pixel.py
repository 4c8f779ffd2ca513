"""``pixel``: sparse pixel edits ``where(mask[key], value[key], x)``; mask and values are resized
with nearest-neighbour sampling so an edit stays an edit. A mask may be ``[K, 1, H, W]``
(broadcast over channels): the values carry the channels."""

from __future__ import annotations

import numpy as np
import torch

from . import hw, register_kind
from ..kernels import blend_pixels


def apply_pixel(app, x: torch.Tensor, rows: np.ndarray, seeds: list[int] | None) -> torch.Tensor:
    mask = app.sized_rows("mask", rows, hw(x), mode="nearest")
    value = app.sized_rows("value", rows, hw(x), mode="nearest")
    return blend_pixels(x, mask, value)


KIND = register_kind("pixel", required_tensors=("mask", "value"), kernel=apply_pixel, shape_tensor="value")
