"""Tiny synthetic datasets shared by the method tests (imported as a plain module by pytest)."""

from __future__ import annotations

import numpy as np
import torch


def toy_data(n: int = 6, h: int = 8, w: int = 8, classes: int = 3, value: int | None = None, seed: int = 0):
    """``({"image", "label"}, uint8 [N, H, W, 3], labels)``: random pixels, or all ``value``."""
    rng = np.random.default_rng(seed)
    if value is None:
        imgs = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    else:
        imgs = np.full((n, h, w, 3), value, np.uint8)
    labels = [i % classes for i in range(n)]
    return {"image": list(imgs), "label": labels}, imgs, labels


def to_chw(imgs: np.ndarray) -> torch.Tensor:
    """uint8 ``[N, H, W, C]`` -> the kernels' ``[N, C, H, W]`` tensor."""
    return torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).contiguous()
