"""``additive``: ``clip(round(x + 255 * delta[key]))``; the delta is resized (bilinear) to the image
when the size mismatch policy allows it."""

from __future__ import annotations

import numpy as np
import torch

from . import hw, register_kind
from ..kernels import add_delta


def apply_additive(app, x: torch.Tensor, rows: np.ndarray, seeds: list[int] | None) -> torch.Tensor:
    return add_delta(x, app.sized_rows("delta", rows, hw(x), mode="bilinear"))


KIND = register_kind("additive", required_tensors=("delta",), kernel=apply_additive, shape_tensor="delta")
