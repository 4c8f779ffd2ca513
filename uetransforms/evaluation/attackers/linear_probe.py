"""``linear-probe``: multinomial logistic regression on a frozen pretrained backbone's pooled features.

The cheapest attack with a pretrained model and the one the literature reports first: only forward
passes through the backbone (once per image, no augmentation), then a linear classifier on the
standardised features. The classifier is fitted by full-batch L-BFGS with an L2 penalty of
``1 / (2 N)`` on the mean loss, i.e. scikit-learn's ``LogisticRegression(C=1)``; one "epoch" is
:data:`ITERATIONS_PER_EPOCH` L-BFGS iterations, and the clean test accuracy after each one makes the
curve (so "peak" is the best point along the optimisation, as for the trainers).

Only the defence's data-level preparation applies (JPEG, grey, BDR, ISS, ...); a defence that
transforms each training batch (PGD, cutout, mixup, UEraser) needs a trainer and is refused.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from .base import AttackContext, AttackRun, Attacker

#: L-BFGS iterations between two test evaluations.
ITERATIONS_PER_EPOCH = 10


@torch.no_grad()
def features(backbone: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Pooled features ``[N, D]`` of uint8 images, in batches sized for the backbone's input side."""
    side = getattr(backbone, "image_size", None) or max(images.shape[-2:])
    batch = max(8, min(500, int(500 * (32 / side) ** 2)))  # ~same memory at 32 px and 224 px
    out = [backbone(images[s : s + batch].to(device, torch.float32).div_(255)).float().cpu()
           for s in range(0, len(images), batch)]
    return torch.cat(out) if out else torch.empty(0, 0)


def run(ctx: AttackContext) -> AttackRun:
    if ctx.backbone is None:
        raise ValueError("attacker='linear-probe' reads a pretrained backbone's features: pass backbone=<spec>")
    if ctx.batch_transforms:
        raise ValueError(
            f"defence {ctx.defence_name!r} transforms training batches, which a linear probe on frozen features "
            "cannot apply; use it with attacker='finetune' or 'scratch', or pick a data-level defence "
            "(jpeg75, grayscale, bdr, iss, ...) for the probe"
        )
    start = time.perf_counter()
    x_train, x_test = ctx.prepared()
    body = ctx.backbone.copy(trainable=False).to(ctx.device).eval()
    f_train, f_test = features(body, x_train, ctx.device), features(body, x_test, ctx.device)
    mu, sd = f_train.mean(0), f_train.std(0).clamp_min(1e-6)
    f_train, f_test = (f_train - mu) / sd, (f_test - mu) / sd
    y_train, y_test = ctx.train_labels.cpu(), ctx.test_labels.cpu()

    torch.manual_seed(ctx.cfg["seed"])
    head = nn.Linear(f_train.shape[1], ctx.num_classes)
    penalty = 1.0 / (2 * len(f_train))  # scikit-learn's C=1 on the summed loss, per sample
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=ITERATIONS_PER_EPOCH, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(head(f_train), y_train) + penalty * head.weight.pow(2).sum()
        loss.backward()
        return loss

    curve: list[float] = []
    for _ in range(ctx.cfg["epochs"]):
        opt.step(closure)
        with torch.no_grad():
            curve.append(float((head(f_test).argmax(1) == y_test).float().mean()))
    gen = torch.Generator().manual_seed(ctx.cfg["seed"])
    sub = torch.randperm(len(f_train), generator=gen)[: ctx.cfg["train_eval_size"]]
    with torch.no_grad():
        train_acc = float((head(f_train[sub]).argmax(1) == y_train[sub]).float().mean())
    return AttackRun(curve=curve, train_accuracy=train_acc, seconds=time.perf_counter() - start)


ATTACKER = Attacker(key="linear-probe",
                    summary="logistic regression on a frozen pretrained backbone's (backbone=) pooled features",
                    needs_backbone=True, run=run, default_lr=1.0, augmentation="none (features computed once)")
