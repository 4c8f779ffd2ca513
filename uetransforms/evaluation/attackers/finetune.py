"""``finetune``: a pretrained backbone plus a new linear head, every layer trained on the protected set.

The usual transfer-learning recipe: start from someone else's weights, train all of them with a
smaller peak learning rate than from scratch (default 0.01), the harness's augmentation and
defences. BatchNorm layers update their statistics, as in plain fine-tuning.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import AttackContext, AttackRun, Attacker


def run(ctx: AttackContext) -> AttackRun:
    if ctx.backbone is None:
        raise ValueError("attacker='finetune' starts from a pretrained backbone: pass backbone=<spec>")
    torch.manual_seed(ctx.cfg["seed"])  # the head's init
    body = ctx.backbone.copy(trainable=True)  # the caller's backbone keeps its weights
    model = nn.Sequential(body, nn.Linear(body.feature_dim, ctx.num_classes))
    return ctx.loop(model.to(ctx.device))


ATTACKER = Attacker(key="finetune", summary="fine-tune a pretrained backbone (backbone=) + a new linear head, all layers",
                    needs_backbone=True, run=run, default_lr=0.01)
