"""``ueraser[:repeats=<k>]``: UEraser (Qin et al. 2023, arXiv 2303.15127): per-sample plasma
brightness and contrast, random channel shuffle and TrivialAugment on every batch;
``repeats=5`` is UEraser-Max (the loss maximised over 5 draws per image), ``repeats=1`` (default)
UEraser-Lite.

A CPU re-implementation. Equal to the paper's kornia pipeline: the ops, their order, the
probabilities and ranges (plasma brightness: roughness U(0.1, 0.7), intensity U(0, 1), always;
plasma contrast: roughness U(0.1, 0.7), always; channel shuffle p = 0.5; TrivialAugment).
Simplified: the plasma maps (:func:`plasma`, octave noise instead of diamond-square); brightness
adds ``intensity * (plasma - 0.5)`` and contrast scales the deviation from the image mean by
``2 * plasma`` (our reading of the kornia ops); TrivialAugment is torchvision's
``TrivialAugmentWide`` on the 8-bit image.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from ...core.errors import DefenceError
from . import Defence, number, only


def plasma(shape: tuple[int, int, int], roughness: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Fractal noise in [0, 1], one ``[H, W]`` map per entry of ``roughness`` (``[B]``).

    Simplified plasma: octaves of bilinearly upsampled uniform noise, octave ``o`` weighted by
    ``roughness ** o``, then min-max normalised per map. Kornia's plasma (used by UEraser) is the
    diamond-square algorithm; both give smooth maps whose high-frequency share grows with roughness.
    """
    b, h, w = shape
    size = max(h, w)
    out = torch.zeros(b, 1, h, w)
    octave, cells = 0, 2
    while cells <= size:
        grid = torch.rand(b, 1, cells + 1, cells + 1, generator=generator)
        up = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=True)
        out += roughness.view(b, 1, 1, 1) ** octave * up
        octave, cells = octave + 1, cells * 2
    lo = out.flatten(1).amin(1).view(b, 1, 1, 1)
    hi = out.flatten(1).amax(1).view(b, 1, 1, 1)
    return ((out - lo) / (hi - lo).clamp_min(1e-6)).squeeze(1)


def ueraser_parameters(shape: tuple[int, ...], generator: torch.Generator) -> dict[str, Any]:
    """Every random draw of one UEraser pass over a ``[B, C, H, W]`` batch, in the order drawn."""
    b, c, h, w = shape
    p: dict[str, Any] = {}
    rough_b = 0.1 + 0.6 * torch.rand(b, generator=generator)
    p["intensity"] = torch.rand(b, generator=generator).view(b, 1, 1, 1)
    p["brightness"] = plasma((b, h, w), rough_b, generator).unsqueeze(1)
    rough_c = 0.1 + 0.6 * torch.rand(b, generator=generator)
    p["contrast"] = plasma((b, h, w), rough_c, generator).unsqueeze(1)
    if c > 1:
        shuffle = torch.rand(b, generator=generator) < 0.5
        perms = torch.stack([torch.randperm(c, generator=generator) for _ in range(b)])
        p["channels"] = torch.where(shuffle.view(b, 1), perms, torch.arange(c).view(1, c))
    # TrivialAugment draws from torch's global RNG: it is seeded from ours so runs repeat.
    p["trivial_seed"] = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    return p


def ueraser_apply(x: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
    """One UEraser draw applied to a float batch in [0, 1] (on the CPU; returned on ``x``'s device)."""
    from torchvision.transforms import v2

    b, c, h, w = x.shape
    dev = x.device
    x = x.cpu()
    x = (x + p["intensity"] * (p["brightness"] - 0.5)).clamp_(0, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * 2 * p["contrast"] + mean).clamp_(0, 1)
    if "channels" in p:
        x = torch.gather(x, 1, p["channels"].view(b, c, 1, 1).expand_as(x))
    trivial = v2.TrivialAugmentWide()
    u8 = (x * 255).round_().to(torch.uint8)
    state = torch.get_rng_state()
    torch.manual_seed(p["trivial_seed"])
    try:
        u8 = torch.stack([trivial(img) for img in u8])
    finally:
        torch.set_rng_state(state)
    return u8.to(torch.float32).div_(255).to(dev)


def ueraser_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One UEraser draw per image of a float batch in [0, 1]."""
    return ueraser_apply(x, ueraser_parameters(tuple(x.shape), generator))


class UEraser(Defence):
    key, spec = "ueraser", "ueraser[:repeats=<k>]"
    paper = "UEraser (Qin et al. 2023, arXiv 2303.15127)"
    summary = "plasma brightness/contrast, channel shuffle, TrivialAugment; repeats=5: loss maximised over draws"
    order = 310

    def __init__(self, repeats: int = 1) -> None:
        self.repeats = int(repeats)

    @classmethod
    def parse(cls, num, options):
        only(options, ("repeats",), cls.key)
        k = int(number(options, "repeats", num, 1))
        if k < 1:
            raise DefenceError(f"UEraser needs repeats >= 1 (1: Lite, 5: the paper's Max), got {k}")
        return {"repeats": k}

    def loss(self, model, x, targets, generator):
        """K augmented draws of every image, each image's worst draw (UEraser-Max); K = 1 is
        UEraser-Lite, plain training on one draw."""
        losses = torch.stack([F.cross_entropy(model(ueraser_augment(x, generator)), targets, reduction="none")
                              for _ in range(self.repeats)])
        return losses.amax(0).mean()


DEFENCE = UEraser
