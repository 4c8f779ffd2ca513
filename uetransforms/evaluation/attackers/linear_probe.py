"""``linear-probe``: multinomial logistic regression on a frozen pretrained backbone's pooled features.

The cheapest attack with a pretrained model and the one the literature reports first: only forward
passes through the backbone (once per image, no augmentation), then a linear classifier on the
standardised features (:func:`uetransforms.models.backbones.fit_linear_probe`: full-batch L-BFGS,
scikit-learn's ``LogisticRegression(C=1)`` penalty). One "epoch" is
:data:`ITERATIONS_PER_EPOCH` L-BFGS iterations, and the clean test accuracy after each one makes
the curve (so "peak" is the best point along the optimisation, as for the trainers).

Only the defence's data-level preparation applies (JPEG, grey, BDR, ISS, ...); a defence that
transforms each training batch (PGD, cutout, mixup, UEraser) needs a trainer and is refused.
"""

from __future__ import annotations

import time

import torch

from ...models.backbones import features, fit_linear_probe
from .base import AttackContext, AttackRun, Attacker

#: L-BFGS iterations between two test evaluations.
ITERATIONS_PER_EPOCH = 10


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
    y_train, y_test = ctx.train_labels.cpu(), ctx.test_labels.cpu()
    curve: list[float] = []

    def test(probe: torch.nn.Module) -> None:
        with torch.no_grad():
            curve.append(float((probe(f_test).argmax(1) == y_test).float().mean()))

    probe = fit_linear_probe(f_train, y_train, ctx.num_classes, rounds=ctx.cfg["epochs"],
                             iterations=ITERATIONS_PER_EPOCH, seed=ctx.cfg["seed"], on_round=test)
    sub = torch.randperm(len(f_train), generator=torch.Generator().manual_seed(ctx.cfg["seed"]))
    sub = sub[: ctx.cfg["train_eval_size"]]
    with torch.no_grad():
        train_acc = float((probe(f_train[sub]).argmax(1) == y_train[sub]).float().mean())
    return AttackRun(curve=curve, train_accuracy=train_acc, seconds=time.perf_counter() - start)


ATTACKER = Attacker(key="linear-probe",
                    summary="logistic regression on a frozen pretrained backbone's (backbone=) pooled features",
                    needs_backbone=True, run=run, default_lr=1.0, augmentation="none (features computed once)")
