"""``coin[:alpha=2]``: every pixel resampled at a randomly displaced position (bilinear), every batch.

COIN (Li, Wang et al., "Detecting and Corrupting Convolution-based Unlearnable Examples", AAAI
2025, arXiv 2311.18403) defeats class-wise convolutions (CUDA) by breaking the fixed spatial
relation between a pixel and its neighbours that a class's filter imprints: each output pixel
``(i, j)`` reads the image at ``(i + dy, j + dx)`` with ``dy, dx ~ U(-alpha, alpha)`` drawn
independently per pixel and per image, by bilinear interpolation. The authors apply it after
crop + flip on every training batch, with ``alpha = 2`` (their "severity 4") by default.

Ours: the displacement wraps around the image (periodic), where their ``scipy`` call uses its
``"wrap"`` mode; one displacement field per image shared by the channels, as theirs; pixels stay
float (theirs are truncated to uint8 before the tensor conversion, a rounding of at most 1/255).
The paper's edge-pixel detector (EPD) is not part of this defence.
"""

from __future__ import annotations

import torch

from ...core.errors import DefenceError
from . import Defence, number, only


def coin_displacements(x: torch.Tensor, alpha: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image, per-pixel ``(dy, dx)`` in ``U(-alpha, alpha)``, each ``[B, H, W]`` (drawn on the CPU)."""
    b, _, h, w = x.shape
    dy = (torch.rand((b, h, w), generator=generator) * 2 - 1) * alpha
    dx = (torch.rand((b, h, w), generator=generator) * 2 - 1) * alpha
    return dy.to(x.device, x.dtype), dx.to(x.device, x.dtype)


def coin_resample(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Float ``[B, C, H, W]`` read at ``(i + dy, j + dx)`` by bilinear interpolation, wrapping at the border."""
    b, c, h, w = x.shape
    ys = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1) + dy
    xs = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w) + dx
    y0, x0 = ys.floor(), xs.floor()
    fy, fx = (ys - y0).unsqueeze(1), (xs - x0).unsqueeze(1)  # [B, 1, H, W]: shared by the channels
    y0, x0 = y0.long() % h, x0.long() % w
    y1, x1 = (y0 + 1) % h, (x0 + 1) % w
    flat = x.reshape(b, c, h * w)

    def at(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        idx = (yy * w + xx).reshape(b, 1, h * w).expand(b, c, h * w)
        return flat.gather(2, idx).reshape(b, c, h, w)

    top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx
    bottom = at(y1, x0) * (1 - fx) + at(y1, x1) * fx
    return (top * (1 - fy) + bottom * fy).clamp_(0, 1)


class Coin(Defence):
    key, spec = "coin", "coin[:alpha=<pixels>]"
    paper = "COIN (Li, Wang et al., AAAI 2025, arXiv 2311.18403)"
    summary = "every pixel re-read at a random offset in (-2, 2) px by bilinear interpolation, every batch"
    order, stage = 200, "augment"

    def __init__(self, alpha: float = 2.0) -> None:
        self.alpha = float(alpha)

    @classmethod
    def parse(cls, num, options):
        only(options, ("alpha",), cls.key)
        alpha = number(options, "alpha", num, 2.0)
        if not 0 < alpha <= 16:
            raise DefenceError(f"COIN's alpha is the largest pixel offset, in (0, 16], got {alpha} (the paper uses 2)")
        return {"alpha": alpha}

    def generate_parameters(self, x, generator):
        dy, dx = coin_displacements(x, self.alpha, generator)
        return {"dy": dy, "dx": dx}

    def apply_transform(self, x, targets, params):
        return coin_resample(x, params["dy"], params["dx"]), targets


DEFENCE = Coin
