"""What an attacker is: one way a scraper trains on the protected set (from scratch, a linear probe
on a pretrained backbone's frozen features, fine-tuning that backbone), and what it gets to work with.

The harness owns the data, the defences and the SGD loop; an attacker owns the model it trains
and how. It receives an :class:`AttackContext` and returns an :class:`AttackRun`. Each attacker
is one file in this folder defining ``ATTACKER``; :mod:`uetransforms.evaluation.attackers` lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from ...models.backbones import Backbone


@dataclass
class AttackRun:
    """One training run's outcome: clean test accuracy per epoch, train accuracy, wall seconds."""

    curve: list[float]
    train_accuracy: float
    seconds: float


@dataclass
class AttackContext:
    """Everything an attacker may use for one run (one training set under one defence).

    Attributes:
        train_images / train_labels: uint8 ``[N, C, H, W]`` and int64 ``[N]`` (protected rows).
        test_images / test_labels: the clean test set.
        num_classes: size of the output layer.
        cfg: the harness's configuration (``seed``, ``epochs``, ``batch_size``, ``lr``, ``weight_decay``,
            ``train_eval_size``...), ``lr`` already resolved for this attacker.
        device: where to train.
        backbone: the pretrained :class:`~uetransforms.models.backbones.Backbone` (``None`` for scratch).
        loop: the harness's training loop: ``loop(model)`` trains every parameter of ``model`` that
            requires grad with the harness's optimiser, schedule, augmentation and the defence's
            batch transforms, and returns an :class:`AttackRun`.
        prepared: ``prepared()`` -> ``(train_images, test_images)`` after the defence's data-level
            preparation (uint8), with no per-batch transforms: what a cached-feature attacker sees.
        batch_transforms: the defence changes training batches (PGD, cutout, mixup, UEraser...),
            which an attacker on cached features cannot apply.
        defence_name: for messages.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    cfg: dict[str, Any]
    device: torch.device
    backbone: Backbone | None
    loop: Callable[[nn.Module], AttackRun]
    prepared: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    batch_transforms: bool = False
    defence_name: str = "none"
    desc: str = ""
    progress: bool = False


@dataclass(frozen=True)
class Attacker:
    """One attacker: its key, what it does, whether it needs ``backbone=``, its default peak lr."""

    key: str
    summary: str
    needs_backbone: bool
    run: Callable[[AttackContext], AttackRun]
    #: peak learning rate when the caller passes none (fine-tuning wants a smaller one than scratch)
    default_lr: float
    #: what the report records as the augmentation this attacker trains with
    augmentation: str = "harness"
    notes: dict[str, Any] = field(default_factory=dict)


__all__ = ["AttackContext", "AttackRun", "Attacker"]
