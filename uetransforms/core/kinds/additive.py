"""``additive``: ``clip(round(x + 255 * delta[key]))``; the delta is resized (bilinear) to the image
when the size mismatch policy allows it."""

from __future__ import annotations

import numpy as np
import torch

from . import hw, register_kind, row_chunks
from ..kernels import add_delta, carried_score


def apply_additive(app, x: torch.Tensor, rows: np.ndarray, seeds: list[int] | None) -> torch.Tensor:
    return add_delta(x, app.sized_rows("delta", rows, hw(x), mode="bilinear"))


def measure_additive(bank) -> dict[str, float]:
    """The largest change of any pixel (``linf``, a fraction of 255) and the largest per-image L2 norm."""
    linf = l2 = 0.0
    for part in row_chunks(bank, "delta"):
        flat = part.reshape(len(part), -1).astype(np.float32)
        linf = max(linf, float(np.abs(flat).max()))
        l2 = max(l2, float(np.linalg.norm(flat, axis=1).max()))
    return {"linf": linf, "l2": l2}


def carried_additive(app, x: torch.Tensor, rows: np.ndarray, seeds: list[int] | None) -> torch.Tensor:
    """How much each image already carries its row's delta (the content test of double protection)."""
    return carried_score(x, app.sized_rows("delta", rows, hw(x), mode="bilinear"))


KIND = register_kind("additive", required_tensors=("delta",), kernel=apply_additive, shape_tensor="delta",
                     measure=measure_additive, carried=carried_additive)
