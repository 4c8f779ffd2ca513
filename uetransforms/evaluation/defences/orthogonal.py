"""``orthogonal``: orthogonal projection (Sandoval-Segura et al., "What Can We Learn from
Unlearnable Datasets?", NeurIPS 2023, arXiv 2305.19254): fit a bias-free linear classifier on the
training set, then remove the span of its class weight vectors from every training image."""

from __future__ import annotations

from typing import Any

import torch

from ...core.errors import DefenceError
from . import Defence

import torch.nn.functional as F


def fit_linear_directions(images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 20, lr: float = 0.1,
                          batch_size: int = 1024, generator: torch.Generator | None = None) -> torch.Tensor:
    """The class weight vectors ``[K, D]`` of a bias-free linear classifier on flattened images.

    As Sandoval-Segura et al. (arXiv 2305.19254, Algorithm 1) fit it: inputs in [0, 1], plain SGD
    at lr 0.1, batch 1024, 20 epochs, the rate divided by 10 at 50% and 75% of the epochs.
    On class-wise linearly separable noise the weights recover the noise patterns.
    """
    x = images.to(torch.float32).flatten(1) / 255.0
    y = labels.to(torch.int64)
    k = int(y.max()) + 1
    w = torch.zeros(k, x.shape[1], requires_grad=True)
    opt = torch.optim.SGD([w], lr=lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(epochs * 0.5), int(epochs * 0.75)])
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    # The paper initialises like torch's Linear; a small seeded init keeps the fit reproducible.
    with torch.no_grad():
        bound = 1.0 / x.shape[1] ** 0.5
        w.copy_((torch.rand(w.shape, generator=gen) * 2 - 1) * bound)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for s in range(0, len(x), batch_size):
            idx = order[s : s + batch_size]
            loss = F.cross_entropy(x[idx] @ w.t(), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return w.detach()


def orthogonal_projection(images: torch.Tensor, labels: torch.Tensor, *,
                          generator: torch.Generator | None = None, **fit_options: Any) -> torch.Tensor:
    """Project every training image onto the orthogonal complement of the linear class directions.

    Sandoval-Segura et al., "What Can We Learn from Unlearnable Datasets?" (NeurIPS 2023, arXiv
    2305.19254): fit :func:`fit_linear_directions`, orthonormalise the K weight vectors (QR), and
    subtract each image's component in their span. Returns float32 ``[B, C, H, W]`` in 0..255 units,
    not clipped (the paper trains on the projected floats). Only the training set is projected.
    """
    w = fit_linear_directions(images, labels, generator=generator, **fit_options)
    q, _ = torch.linalg.qr((w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)).t())  # [D, K], orthonormal
    x = images.to(torch.float32).flatten(1)
    return (x - (x @ q) @ q.t()).view(images.shape)


class Orthogonal(Defence):
    key, aliases, spec = "orthogonal", ("ortho",), "orthogonal"
    paper = "Sandoval-Segura et al., NeurIPS 2023 (arXiv 2305.19254)"
    summary = "remove the span of a linear classifier's class directions from every training image"
    order = 40

    def prepare_train(self, images, labels, *, generator):
        if labels is None:
            raise DefenceError("the orthogonal projection defence fits a linear model: pass the training labels")
        return orthogonal_projection(images, labels, generator=generator)


DEFENCE = Orthogonal
