"""``conv``: per-key ``k x k`` depthwise filters, each image then divided by its own maximum (the
CUDA paper's normalisation). The filters are size-free, so any image size works. The bank's
params ``normalise`` and ``padding`` (absent in older banks: ``"max"``, ``"zeros"``) pick the
kernel's options, so every apply path gives the same bytes."""

from __future__ import annotations

import numpy as np
import torch

from . import register_kind
from ..kernels import convolve


def apply_conv(app, x: torch.Tensor, rows: np.ndarray, seeds: list[int] | None) -> torch.Tensor:
    # Banks from before the padding parameter were all zero-padded (the paper's Conv2d).
    params = app.bank.params
    return convolve(x, app.rows_of("weight", rows), normalise=params.get("normalise", "max"),
                    padding=params.get("padding", "zeros"))


def measure_conv(bank) -> dict[str, float]:
    """``kernel_size``: the filters' size, read from the weight tensor."""
    return {"kernel_size": int(bank.tensors["weight"].shape[-1])}


KIND = register_kind("conv", required_tensors=("weight",), kernel=apply_conv, measure=measure_conv)
