"""The attackers ``ue.evaluate(..., attacker=...)`` can play, one file each:

* ``scratch`` (:mod:`.scratch`): a random-init classifier trained on the protected set (default);
* ``linear-probe`` (:mod:`.linear_probe`): logistic regression on a frozen pretrained backbone;
* ``finetune`` (:mod:`.finetune`): a pretrained backbone + new head, all layers trained.

The pretrained ones take ``backbone=`` (a spec for
:func:`uetransforms.models.backbones.load_backbone`, e.g. ``"tv:resnet18@IMAGENET1K_V1"`` or the
path of a local checkpoint). Adding an attacker: a new file here defining ``ATTACKER`` (an
:class:`~.base.Attacker`) and its module name in :data:`BUILTIN`.

Example:
    >>> from uetransforms.evaluation import attackers
    >>> sorted(attackers.keys())
    ['finetune', 'linear-probe', 'scratch']
    >>> attackers.get("finetune").needs_backbone
    True
"""

from __future__ import annotations

from . import finetune, linear_probe, scratch
from .base import AttackContext, AttackRun, Attacker

BUILTIN = (scratch, linear_probe, finetune)
_REGISTRY: dict[str, Attacker] = {m.ATTACKER.key: m.ATTACKER for m in BUILTIN}


def keys() -> list[str]:
    """The attacker names, in the order they were registered."""
    return list(_REGISTRY)


def get(key: str) -> Attacker:
    """The attacker called ``key``; a ValueError listing the known ones otherwise."""
    try:
        return _REGISTRY[key]
    except (KeyError, TypeError):
        raise ValueError(f"unknown attacker {key!r}; choose one of {', '.join(_REGISTRY)}") from None


__all__ = ["AttackContext", "AttackRun", "Attacker", "get", "keys"]
