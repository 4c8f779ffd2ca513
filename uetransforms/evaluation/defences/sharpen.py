"""``sharpen[:center=2.5]``: random sharpening kernels, one per image, every batch ("RSK" of Kim &
Sandoval-Segura 2024, arXiv 2411.01742, against CUDA's class-wise blurs).

A cross-shaped 3x3 kernel: centre ~ N(center, 0.1), each of the four neighbours ~
N(-(c - 1) / 4, 0.1) around the drawn centre c, the corners 0, the same kernel on every channel,
then clipped to [0, 1]. The paper convolves without padding (32 -> 30 px and the crop pads back);
here the border is replicated so the image keeps its size."""

from __future__ import annotations

import torch

from . import Defence, number, only, positive

import torch.nn.functional as F


def sharpen_kernels(batch: int, center: float, generator: torch.Generator, *, std: float = 0.1) -> torch.Tensor:
    """The random ``[B, 3, 3]`` kernels of one batch."""
    centre = center + std * torch.randn(batch, generator=generator)
    neigh = (centre - 1).view(batch, 1) / 4 + std * torch.randn(batch, 4, generator=generator)
    k = torch.zeros(batch, 3, 3)
    k[:, 1, 1] = centre
    k[:, 0, 1], k[:, 1, 0], k[:, 1, 2], k[:, 2, 1] = (-neigh).unbind(1)
    return k


def sharpen(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Each image of a float batch in [0, 1] filtered by its kernel (replicated border), clipped."""
    b, c = x.shape[:2]
    weight = kernels.to(x.device, x.dtype).repeat_interleave(c, 0).unsqueeze(1)  # [B*C, 1, 3, 3]
    xp = F.pad(x.reshape(1, b * c, *x.shape[2:]), (1, 1, 1, 1), mode="replicate")
    return F.conv2d(xp, weight, groups=b * c).view_as(x).clamp_(0, 1)


def random_sharpen(x: torch.Tensor, center: float, generator: torch.Generator, *, std: float = 0.1) -> torch.Tensor:
    """:func:`sharpen` with freshly drawn kernels."""
    return sharpen(x, sharpen_kernels(x.shape[0], center, generator, std=std))


class Sharpen(Defence):
    key, aliases, spec = "sharpen", ("rsk",), "sharpen[:center=2.5]"
    paper = "RSK (Kim & Sandoval-Segura 2024, arXiv 2411.01742)"
    summary = "a random sharpening kernel per image, every batch (against convolution noise)"
    order, stage = 110, "pre_augment"

    def __init__(self, center: float = 2.5) -> None:
        self.center = float(center)

    @classmethod
    def parse(cls, num, options):
        only(options, ("center",), cls.key)
        return {"center": positive(number(options, "center", num, 2.5), "sharpening centre")}

    def generate_parameters(self, x, generator):
        return {"kernels": sharpen_kernels(x.shape[0], self.center, generator)}

    def apply_transform(self, x, targets, params):
        return sharpen(x, params["kernels"]), targets


DEFENCE = Sharpen
