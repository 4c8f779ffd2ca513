"""``grayscale``: every image to gray (ITU-R 601 luma, kept at C channels), training *and* test
images: the model never sees colour (ISS, Liu et al. 2023, arXiv 2301.13838, against
low-frequency noise). ISS's code squeezes test images only on request; a gray-trained model tested
on colour is the weaker choice for the trainer, so the test set is gray too."""

from __future__ import annotations

import torch

from ...core.errors import DefenceError
from . import Defence

#: ITU-R BT.601 luma weights, as PIL's ``convert("L")`` uses.
_LUMA = (0.299, 0.587, 0.114)


def to_grayscale(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, C, H, W]`` -> the same shape with every channel set to the luma (C=1: unchanged)."""
    if images.shape[1] == 1:
        return images
    if images.shape[1] != 3:
        raise DefenceError(f"grayscale needs 1- or 3-channel images, got {images.shape[1]} channels")
    w = torch.tensor(_LUMA, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    luma = (images.to(torch.float32) * w).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
    return luma.expand_as(images).contiguous()


class Grayscale(Defence):
    key, aliases, spec = "grayscale", ("gray", "grey", "greyscale"), "grayscale"
    paper = "ISS (Liu et al. 2023, arXiv 2301.13838)"
    summary = "every image to gray, training and test (the model never sees colour)"
    order = 10

    def prepare_train(self, images, labels, *, generator):
        return to_grayscale(images)

    def prepare_test(self, images):
        return to_grayscale(images)


DEFENCE = Grayscale
