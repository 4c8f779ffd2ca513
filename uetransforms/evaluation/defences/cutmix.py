"""``cutmix[<alpha>]``: paste one random box of another training image into every image, labels
mixed by the pasted area (Yun et al. 2019, arXiv 1905.04899)."""

from __future__ import annotations

import torch

from . import Defence, number, only, positive
from .mixup import beta


def cutmix(x: torch.Tensor, targets: torch.Tensor, alpha: float,
           generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste one random box of ``x[perm]`` into every image; targets mixed by area."""
    part = CutMix(alpha)
    return part.apply_transform(x, targets, part.generate_parameters(x, generator))


class CutMix(Defence):
    key, spec = "cutmix", "cutmix[<alpha>]"
    paper = "CutMix (Yun et al. 2019, arXiv 1905.04899)"
    summary = "paste a random box from another image, labels mixed by area"
    order, stage, soft_targets = 230, "augment", True

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = float(alpha)

    @classmethod
    def parse(cls, num, options):
        only(options, ("alpha",), cls.key)
        return {"alpha": positive(number(options, "alpha", num, 1.0), "cutmix alpha")}

    def generate_parameters(self, x, generator):
        _, _, h, w = x.shape
        lam = beta(self.alpha, generator)
        perm = torch.randperm(len(x), generator=generator).to(x.device)
        cy, cx = (int(v) for v in (torch.randint(0, h, (1,), generator=generator),
                                   torch.randint(0, w, (1,), generator=generator)))
        return {"lam": lam, "perm": perm, "cy": cy, "cx": cx}

    def apply_transform(self, x, targets, params):
        _, _, h, w = x.shape
        lam, perm, cy, cx = params["lam"], params["perm"], params["cy"], params["cx"]
        bh, bw = int(round(h * (1 - lam) ** 0.5)), int(round(w * (1 - lam) ** 0.5))
        y0, y1 = max(cy - bh // 2, 0), min(cy - bh // 2 + bh, h)
        x0, x1 = max(cx - bw // 2, 0), min(cx - bw // 2 + bw, w)
        out = x.clone()
        out[:, :, y0:y1, x0:x1] = x[perm][:, :, y0:y1, x0:x1]
        area = (y1 - y0) * (x1 - x0) / (h * w)  # the box actually pasted, after clipping
        return out, (1 - area) * targets + area * targets[perm]


DEFENCE = CutMix
