"""``pgd[<eps/255>][:norm=linf|l2,eps=..,steps=..,alpha=..]``: PGD adversarial training (Madry et
al. 2018, arXiv 1706.06083). L-inf budgets are quoted in /255 (8 by default), L2 radii in [0, 1]
pixel units per image (0.5 by default), as papers do; 5 steps of 2.5 eps / steps by default."""

from __future__ import annotations

from typing import Any

import torch

from ...core.errors import DefenceError
from . import Defence, only, positive

import torch.nn.functional as F


def pgd(model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor, *, epsilon: float, steps: int,
        step_size: float | None = None, generator: torch.Generator | None = None, norm: str = "linf") -> torch.Tensor:
    """PGD with a random start (Madry et al. 2018, arXiv 1706.06083): images in [0, 1] that raise the loss.

    ``norm="linf"``: sign steps, clipped to the ``epsilon`` box. ``norm="l2"``: steps along the
    per-image normalised gradient, projected back onto the L2 ball of radius ``epsilon`` (the
    random start is uniform in direction with radius up to ``epsilon``). ``targets`` are class ids
    or soft targets. Parameter gradients are left untouched; the model stays in whatever mode it
    is in (training mode during adversarial training).
    """
    if norm not in ("linf", "l2"):
        raise DefenceError(f"PGD norm must be 'linf' or 'l2', got {norm!r}")
    alpha = step_size if step_size is not None else 2.5 * epsilon / steps
    b = len(x)
    if norm == "linf":
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        adv = (x + (2 * noise - 1) * epsilon).clamp_(0, 1)
    else:
        direction = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        radius = torch.rand(b, generator=generator, dtype=x.dtype).to(x.device).view(-1, 1, 1, 1) * epsilon
        adv = (x + direction / _l2(direction) * radius).clamp_(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv), targets)
        (grad,) = torch.autograd.grad(loss, adv)
        with torch.no_grad():
            if norm == "linf":
                adv = adv + alpha * grad.sign()
                adv = torch.min(torch.max(adv, x - epsilon), x + epsilon).clamp_(0, 1)
            else:
                delta = adv + alpha * grad / _l2(grad) - x
                delta = delta * (epsilon / _l2(delta)).clamp(max=1.0)  # project onto the L2 ball
                adv = (x + delta).clamp_(0, 1)  # clipping to [0, 1] only shrinks the delta
    return adv.detach()


def _l2(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.ndim - 1)))


class Pgd(Defence):
    key, aliases, spec = "pgd", ("at", "adv"), "pgd[<eps/255>][:norm=linf|l2,steps=<n>,alpha=<step>]"
    paper = "PGD adversarial training (Madry et al. 2018, arXiv 1706.06083)"
    summary = "train on PGD adversarial examples of every batch (L-inf 8/255 by default, 5 steps)"
    order = 300

    def __init__(self, epsilon: float = 8 / 255, steps: int = 5, step_size: float | None = None,
                 norm: str = "linf") -> None:
        self.epsilon, self.steps, self.step_size, self.norm = float(epsilon), int(steps), step_size, norm

    @classmethod
    def parse(cls, num, options):
        only(options, ("norm", "eps", "epsilon", "steps", "alpha"), cls.key)
        norm = options.get("norm", "linf").replace("-", "")
        if norm not in ("linf", "l2"):
            raise DefenceError(f"PGD norm must be linf or l2, got {options.get('norm')!r}")
        scale = 255.0 if norm == "linf" else 1.0
        eps = positive(float(options.get("eps", options.get("epsilon", num or (8 if norm == "linf" else 0.5)))),
                       "PGD epsilon") / scale
        steps = int(options.get("steps", 5))
        if steps < 1:
            raise DefenceError(f"PGD needs at least one step, got steps={steps}")
        out: dict[str, Any] = {"epsilon": eps, "steps": steps, "norm": norm}
        if "alpha" in options:
            out["step_size"] = positive(float(options["alpha"]), "PGD step size") / scale
        return out

    def perturb(self, model, x, targets, generator):
        return pgd(model, x, targets, epsilon=self.epsilon, steps=self.steps, step_size=self.step_size,
                   generator=generator, norm=self.norm)


DEFENCE = Pgd
