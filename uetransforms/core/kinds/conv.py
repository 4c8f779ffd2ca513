"""``conv``: per-key ``k x k`` depthwise filters, each image then divided by its own maximum (the
CUDA paper's normalisation). The filters are size-free, so any image size works. The bank's
params ``normalise``, ``padding`` and ``dilation`` (absent in older banks: ``"max"``, ``"zeros"``,
1) pick the kernel's options (:func:`conv_options`, also ``convadd``'s), so every apply path gives
the same bytes."""

from __future__ import annotations

import numpy as np
import torch

from . import register_kind
from ..kernels import convolve


def conv_options(params) -> dict:
    """The convolution's options as a bank's params store them: the one reader of both conv kinds.

    Banks from before ``padding`` / ``dilation`` existed were zero-padded with contiguous 3 x 3 taps
    (the paper's ``Conv2d(padding=k // 2)``), so those are the values a missing key means.
    """
    return {"normalise": params.get("normalise", "max"), "padding": params.get("padding", "zeros"),
            "dilation": int(params.get("dilation", 1))}


def apply_conv(app, x: torch.Tensor, rows: np.ndarray, seeds: list[int] | None) -> torch.Tensor:
    return convolve(x, app.rows_of("weight", rows), **conv_options(app.bank.params))


def measure_conv(bank) -> dict[str, float]:
    """``kernel_size``: the filters' size, read from the weight tensor."""
    return {"kernel_size": int(bank.tensors["weight"].shape[-1])}


KIND = register_kind("conv", required_tensors=("weight",), kernel=apply_conv, measure=measure_conv)
