"""``bdr[:bits=<n>]``: bit-depth reduction of the training images to ``2**bits`` levels per channel.
Feature squeezing's definition (Xu et al. 2018, arXiv 1704.01155), which ISS lists among its
squeezers; ISS's code posterizes instead (keep the top bits)."""

from __future__ import annotations

import torch

from ...core.errors import DefenceError
from . import Defence, number, only


def bit_depth_reduce(images: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 images quantised to ``2**bits`` evenly spaced levels per channel (0 and 255 kept).

    Feature squeezing's rounding (Xu et al. 2018, arXiv 1704.01155); ISS (Liu et al. 2023,
    arXiv 2301.13838) tests bit-depth reduction alongside grayscale and JPEG: a few levels cannot
    hold a +-8/255 perturbation. ISS's code posterizes instead (floor to the top bits).
    """
    if images.dtype != torch.uint8:
        raise DefenceError(f"bit-depth reduction takes uint8 images, got {images.dtype}")
    if not 1 <= int(bits) <= 8:
        raise DefenceError(f"bits must be in 1..8, got {bits}")
    top = (1 << int(bits)) - 1
    q = torch.round(images.to(torch.float32) * (top / 255.0))
    return torch.round(q * (255.0 / top)).clamp_(0, 255).to(torch.uint8)


class BitDepth(Defence):
    key, spec = "bdr", "bdr[:bits=<1-7>]"
    paper = "feature squeezing (Xu et al. 2018, arXiv 1704.01155), as ISS uses it"
    summary = "bit-depth reduction of the training images to 2**bits levels (2 bits by default)"
    order = 30

    def __init__(self, bits: int = 2) -> None:
        self.bits = int(bits)

    @classmethod
    def parse(cls, num, options):
        only(options, ("bits",), cls.key)
        bits = int(number(options, "bits", num, 2))
        if not 1 <= bits <= 7:
            raise DefenceError(f"bit-depth reduction keeps 1..7 bits per channel, got bits={bits}")
        return {"bits": bits}

    def prepare_train(self, images, labels, *, generator):
        return bit_depth_reduce(images, self.bits)


DEFENCE = BitDepth
