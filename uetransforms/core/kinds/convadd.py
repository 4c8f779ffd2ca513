"""``convadd``: a per-key ``k x k`` filter (as ``conv``), then a per-key additive delta on the filtered
image (as ``additive``). One bank, one key per image, both payloads keyed alike: a convolution
shortcut that a network trained from scratch learns, and an additive term crafted on the filtered
pixels for attackers that start from pretrained features (``cudatap``). The delta is resized
(bilinear) to the image when the size policy allows it; the filters are size-free."""

from __future__ import annotations

import numpy as np
import torch

from . import hw, register_kind
from ..kernels import convolve_add
from .additive import measure_additive
from .conv import conv_options, measure_conv


def apply_convadd(app, x: torch.Tensor, rows: np.ndarray, seeds: list[int] | None) -> torch.Tensor:
    # The filter's options come from the same reader as a conv bank's: a cudatap bank fitted with
    # padding="reflect" (or a dilation) was crafted on images filtered that way, and is applied so.
    return convolve_add(x, app.rows_of("weight", rows), app.sized_rows("delta", rows, hw(x), mode="bilinear"),
                        **conv_options(app.bank.params, x.shape))


def measure_convadd(bank) -> dict[str, float]:
    """The filters' ``kernel_size`` and the delta's ``linf`` / ``l2`` (the additive term's size only:
    the filter's own change is not bounded by them)."""
    return {**measure_conv(bank), **measure_additive(bank)}


# No ``carried`` test: the additive one reads the delta against the image's own texture, which the
# filter has already changed; only the PNG marker tells a protected image, as for ``conv``.
KIND = register_kind("convadd", required_tensors=("weight", "delta"), kernel=apply_convadd, shape_tensor="delta",
                     measure=measure_convadd)
