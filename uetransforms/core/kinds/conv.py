"""``conv``: per-key ``k x k`` depthwise filters, each image then divided by its own maximum (the
CUDA paper's normalisation). The filters are size-free, so any image size works. The bank's
params ``normalise``, ``padding`` and ``dilation`` (absent in older banks: ``"max"``, ``"zeros"``,
1) pick the kernel's options (:func:`conv_options`, also ``convadd``'s), so every apply path gives
the same bytes. ``dilation="auto"`` spaces the taps by each image's own size
(:func:`scaled_dilation`), so one bank acts alike on photos of any size."""

from __future__ import annotations

import numpy as np
import torch

from . import register_kind
from ..kernels import convolve


#: ``dilation="auto"``: the side (px) at which the taps are contiguous. A filter then spans the same
#: share of every image that it spans of a 32-px one (CIFAR's size, where the CUDA paper's contiguous
#: filters were measured), so protection and damage do not depend on the size a photo is published
#: (or resized) at: cuda's 7 x 7 reflect filters gave 17.2 dB PSNR at 96, 160 and 224 px with dilation
#: 3, 5 and 7 (benchmarks/RESULTS.md, "Filter spacing across sizes on the GPU (session 13)").
AUTO_DILATION_SIDE = 32


def scaled_dilation(height: int, width: int) -> int:
    """The tap spacing ``dilation="auto"`` uses on an image of ``height x width`` pixels:
    ``round(min(height, width) / AUTO_DILATION_SIDE)``, at least 1.

    Example:
        >>> [scaled_dilation(s, s) for s in (8, 32, 64, 96, 224, 1024)]
        [1, 1, 2, 3, 7, 32]
        >>> scaled_dilation(3000, 4000)
        94
    """
    return max(1, int(min(int(height), int(width)) / AUTO_DILATION_SIDE + 0.5))


def conv_options(params, shape: tuple[int, ...]) -> dict:
    """The convolution's options for images of ``shape`` (``[..., H, W]``) as a bank's params store them:
    the one reader of both conv kinds.

    Banks from before ``padding`` / ``dilation`` existed were zero-padded with contiguous 3 x 3 taps
    (the paper's ``Conv2d(padding=k // 2)``), so those are the values a missing key means.
    ``dilation="auto"`` is resolved here, from the images' own size (:func:`scaled_dilation`).
    """
    dilation = params.get("dilation", 1)
    if dilation == "auto":
        dilation = scaled_dilation(shape[-2], shape[-1])
    return {"normalise": params.get("normalise", "max"), "padding": params.get("padding", "zeros"),
            "dilation": int(dilation)}


def apply_conv(app, x: torch.Tensor, rows: np.ndarray, seeds: list[int] | None) -> torch.Tensor:
    return convolve(x, app.rows_of("weight", rows), **conv_options(app.bank.params, x.shape))


def measure_conv(bank) -> dict[str, float]:
    """``kernel_size``: the filters' size, read from the weight tensor."""
    return {"kernel_size": int(bank.tensors["weight"].shape[-1])}


KIND = register_kind("conv", required_tensors=("weight",), kernel=apply_conv, measure=measure_conv)
