"""``scratch``: a randomly initialised classifier trained on the protected set, every layer.

The setting every protection number of the project was measured in so far; ``arch`` names the
network (``"cnn-small"`` or a torchvision model, :func:`uetransforms.models.networks.build_model`).
"""

from __future__ import annotations

import torch

from ...models.networks import build_model
from .base import AttackContext, AttackRun, Attacker


def run(ctx: AttackContext) -> AttackRun:
    c, h, w = ctx.train_images.shape[1:]
    torch.manual_seed(ctx.cfg["seed"])  # weight init
    model = build_model(ctx.cfg["arch"], num_classes=ctx.num_classes, in_channels=c, image_size=max(h, w))
    return ctx.loop(model.to(ctx.device))


ATTACKER = Attacker(key="scratch", summary="train a randomly initialised classifier (arch=) on the protected set",
                    needs_backbone=False, run=run, default_lr=0.1)
