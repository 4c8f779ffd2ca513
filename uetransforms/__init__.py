"""uetransforms: publish image datasets in unlearnable form.

Fit a protection once (``fit``), keep the precomputed noise as an Arrow :class:`NoiseBank`,
and apply it wherever images flow: ``datasets.Dataset.map(Protect(bank), batched=True)``,
a torchvision v2 pipeline (``ProtectTransform``), or ``publish`` for lossless hub shards.

The public names are the ones in ``__all__`` (the README lists them); everything else is
reached through its subpackage, whose imports flow one way (lowest first):
``core`` <- ``models`` <- ``algorithms`` <- ``integrations`` <- ``publishing`` <- ``evaluation``
<- ``cli``.

Example:
    >>> import numpy as np, uetransforms as ue
    >>> ds = {"image": list(np.zeros((4, 8, 8, 3), np.uint8)), "label": [0, 1, 0, 1]}
    >>> bank = ue.fit("cuda", ds, seed=1234)
    >>> bank.kind, bank.keying
    ('conv', 'class')
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .core.version import __version__

# Everything loads on first use, so `import uetransforms` does not pull in torch, pyarrow or the
# evaluation stack (benchmarks/bench_import.py). Public name -> the module that defines it.
_PUBLIC = {
    "fit": ".algorithms.fitting",
    "methods": ".algorithms",
    "NoiseBank": ".core.bank",
    "FitData": ".core.data",
    "apply": ".core.apply",
    "Protect": ".integrations.datasets",
    "ProtectTransform": ".integrations.transforms",
    "publish": ".publishing.pipeline",
    "publish_stream": ".publishing.streaming",
    "evaluate": ".evaluation.harness",
    "evaluate_suite": ".evaluation.suite",
    # The exceptions callers catch (all subclasses of UETransformsError).
    "UETransformsError": ".core.errors",
    "BankError": ".core.errors",
    "DataError": ".core.errors",
    "ImageModeError": ".core.errors",
    "SizeMismatchError": ".core.errors",
    "ParameterError": ".core.errors",
    "UnknownMethodError": ".core.errors",
    "UnknownParameterError": ".core.errors",
    "DoubleProtectionError": ".core.errors",
    "DefenceError": ".core.errors",
    "PublishConflict": ".core.errors",
    "PushError": ".core.errors",
    "ClipWeightsError": ".core.errors",
    "RandomInitWarning": ".core.errors",
}
_ATTRIBUTE = {"methods": "table"}  # ue.methods() is the registry's table

if TYPE_CHECKING:  # pragma: no cover
    from .algorithms import table as methods
    from .algorithms.fitting import fit
    from .core.apply import apply
    from .core.bank import NoiseBank
    from .core.data import FitData
    from .core.errors import (
        BankError, ClipWeightsError, DataError, DefenceError, DoubleProtectionError, ImageModeError, ParameterError,
        PublishConflict, PushError, RandomInitWarning, SizeMismatchError, UETransformsError, UnknownMethodError,
        UnknownParameterError,
    )
    from .evaluation.harness import evaluate
    from .evaluation.suite import evaluate_suite
    from .integrations.datasets import Protect
    from .integrations.transforms import ProtectTransform
    from .publishing.pipeline import publish
    from .publishing.streaming import publish_stream


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'uetransforms' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), _ATTRIBUTE.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = ["__version__", *_PUBLIC]
