"""``cutout[<px>]``: zero one random square per training image (DeVries & Taylor 2017, arXiv
1708.04552); side: half the image by default, or the given pixels."""

from __future__ import annotations

import torch

from ...core.errors import DefenceError
from . import Defence, number, only



def cutout_centres(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One random centre ``(cy, cx)`` per image."""
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b,), generator=generator).to(x.device)
    cx = torch.randint(0, w, (b,), generator=generator).to(x.device)
    return cy, cx


def cutout_at(x: torch.Tensor, size: int, cy: torch.Tensor, cx: torch.Tensor) -> torch.Tensor:
    """Zero a ``size x size`` square centred at each image's ``(cy, cx)`` (clipped at the border)."""
    b, _, h, w = x.shape
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    y0 = (cy - size // 2).view(b, 1, 1)
    x0 = (cx - size // 2).view(b, 1, 1)
    inside = (ys >= y0) & (ys < y0 + size) & (xs >= x0) & (xs < x0 + size)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero one ``size x size`` square per image, centred anywhere (clipped at the border)."""
    return cutout_at(x, size, *cutout_centres(x, generator))


class Cutout(Defence):
    key, spec = "cutout", "cutout[<side px>]"
    paper = "Cutout (DeVries & Taylor 2017, arXiv 1708.04552)"
    summary = "zero one random square per training image (half the side by default)"
    order, stage = 210, "augment"

    def __init__(self, size: int = 0) -> None:
        self.size = int(size)  # 0: half the image side

    @classmethod
    def parse(cls, num, options):
        only(options, ("size",), cls.key)
        size = int(number(options, "size", num, 0))
        if size < 0:
            raise DefenceError(f"cutout size must be >= 0 pixels, got {size}")
        return {"size": size}

    def generate_parameters(self, x, generator):
        cy, cx = cutout_centres(x, generator)
        return {"cy": cy, "cx": cx}

    def apply_transform(self, x, targets, params):
        return cutout_at(x, self.size or max(1, x.shape[-1] // 2), params["cy"], params["cx"]), targets


DEFENCE = Cutout
