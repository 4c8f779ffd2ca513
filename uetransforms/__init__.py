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

import importlib
import importlib.util
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

from . import errors, methods  # both light; `methods` is the subpackage, callable: ue.methods() is its table

# Everything else loads on first use, so `import uetransforms` does not pull in torch, pyarrow or
# the evaluation stack (see benchmarks/RESULTS.md, "import time"). name -> module that defines it.
_LAZY = {
    "fit": ".fitting",
    "NoiseBank": ".bank",
    "FitData": ".data",
    "Protect": ".protect",
    "ProtectTransform": ".transforms",
    "publish": ".publish",
    "evaluate": ".evaluate",
    "evaluate_suite": ".suite",
}
#: Old top-level names of the exceptions: they still resolve, from :mod:`uetransforms.errors`.
_ERRORS = ("BankError", "DataError", "ImageModeError", "SizeMismatchError")
#: Functions that share their module's name: ``ue.publish(...)`` stays the function even after
#: ``import uetransforms.publish`` (which would otherwise rebind the package attribute to the module).
_SHADOWING = ("publish", "evaluate")

if TYPE_CHECKING:  # pragma: no cover
    from . import ops
    from .bank import NoiseBank
    from .data import FitData
    from .evaluate import evaluate
    from .fitting import fit
    from .protect import Protect
    from .publish import publish
    from .suite import evaluate_suite
    from .transforms import ProtectTransform


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    elif name in _ERRORS:
        value = getattr(errors, name)
    elif not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f".{name}", __name__)  # a submodule: ue.ops, ue.bank, ue.quality...
    else:
        raise AttributeError(f"module 'uetransforms' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_ERRORS))


class _Package(ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWING and isinstance(value, ModuleType):
            return  # the import system binding the submodule; the module stays in sys.modules
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = [
    "FitData", "NoiseBank", "Protect", "ProtectTransform", "__version__", "errors", "evaluate", "evaluate_suite",
    "fit", "methods", "ops", "publish",
]
