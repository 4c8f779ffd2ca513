"""uetransforms: publish image datasets in unlearnable form.

Fit a protection once (``fit``), keep the precomputed noise as an Arrow :class:`NoiseBank`,
and apply it wherever images flow: ``datasets.Dataset.map(Protect(bank), batched=True)``,
a torchvision v2 pipeline (``ProtectTransform``), or ``publish`` for lossless hub shards.

Example:
    >>> import numpy as np, uetransforms as ue
    >>> ds = {"image": list(np.zeros((4, 8, 8, 3), np.uint8)), "label": [0, 1, 0, 1]}
    >>> bank = ue.fit("cuda", ds, seed=1234)
    >>> bank.kind, bank.keying
    ('conv', 'class')
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

from . import ops
from .bank import BankError, NoiseBank
from .data import DataError, FitData
from . import methods  # the subpackage, callable: ue.methods() is its table
from .fitting import fit
from .images import ImageModeError
from .ops import SizeMismatchError

# `publish` and `evaluate` share their module's name: imported eagerly, because a later
# `import uetransforms.publish` would otherwise rebind `ue.publish` to the module.
from .evaluate import evaluate
from .publish import publish

# Adapters import lazily: `import uetransforms` need not pull in torchvision's transforms.
_LAZY = {
    "Protect": ".protect",
    "ProtectTransform": ".transforms",
    "evaluate_suite": ".suite",
}

if TYPE_CHECKING:  # pragma: no cover
    from .protect import Protect
    from .suite import evaluate_suite
    from .transforms import ProtectTransform


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'uetransforms' has no attribute {name!r}")


__all__ = [
    "BankError", "DataError", "FitData", "ImageModeError", "NoiseBank", "Protect", "ProtectTransform",
    "SizeMismatchError", "__version__", "evaluate", "evaluate_suite", "fit", "methods", "ops", "publish",
]
