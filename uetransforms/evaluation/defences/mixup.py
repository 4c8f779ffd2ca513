"""``mixup[<alpha>]``: mix pairs of training images and their labels (Zhang et al. 2018, arXiv
1710.09412), Beta(alpha, alpha) with alpha 1 by default."""

from __future__ import annotations

import torch

from . import Defence, number, only, positive



def beta(alpha: float, generator: torch.Generator) -> float:
    """One Beta(alpha, alpha) draw (torch.distributions takes no generator: two seeded Gammas)."""
    g = torch._standard_gamma(torch.full((2,), float(alpha)), generator=generator)
    return float(g[0] / g.sum())


def mixup(x: torch.Tensor, targets: torch.Tensor, alpha: float,
          generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``lam * x + (1 - lam) * x[perm]`` and the same mix of the soft targets."""
    lam = beta(alpha, generator)
    perm = torch.randperm(len(x), generator=generator).to(x.device)
    return lam * x + (1 - lam) * x[perm], lam * targets + (1 - lam) * targets[perm]


class Mixup(Defence):
    key, spec = "mixup", "mixup[<alpha>]"
    paper = "mixup (Zhang et al. 2018, arXiv 1710.09412)"
    summary = "mix pairs of training images and their labels, Beta(alpha, alpha)"
    order, stage, soft_targets = 220, "augment", True

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = float(alpha)

    @classmethod
    def parse(cls, num, options):
        only(options, ("alpha",), cls.key)
        return {"alpha": positive(number(options, "alpha", num, 1.0), "mixup alpha")}

    def generate_parameters(self, x, generator):
        lam = beta(self.alpha, generator)
        return {"lam": lam, "perm": torch.randperm(len(x), generator=generator).to(x.device)}

    def apply_transform(self, x, targets, params):
        lam, perm = params["lam"], params["perm"]
        return lam * x + (1 - lam) * x[perm], lam * targets + (1 - lam) * targets[perm]


DEFENCE = Mixup
