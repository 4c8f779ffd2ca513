"""Every exception (and warning) uetransforms raises on purpose, in one place.

All errors derive from :class:`UETransformsError`, so ``except ue.UETransformsError``
catches exactly what this library raises on purpose. Each also derives from the built-in a
caller would have caught before (``ValueError`` for bad input, ``RuntimeError`` for missing
weights, ``KeyError`` for an unknown method), so existing ``except`` clauses keep working.
Every one is public at the top level (``ue.BankError``...); this module is their one home.

Example:
    >>> import numpy as np, uetransforms as ue
    >>> try:
    ...     ue.fit("cuda", {"image": [np.zeros((4, 4, 3), np.uint8)], "label": [0]}, kernel_sise=3)
    ... except ue.UETransformsError as exc:
    ...     print(type(exc).__name__, isinstance(exc, ValueError), isinstance(exc, TypeError))
    UnknownParameterError True True
"""

from __future__ import annotations


class UETransformsError(Exception):
    """Base class of every error uetransforms raises on purpose."""


class BankError(UETransformsError, ValueError):
    """A bank file or bank object is malformed, tampered with, or does not fit the data."""


class DataError(UETransformsError, ValueError):
    """The dataset cannot be used as given (missing column, empty, mixed sizes...)."""


class ImageModeError(UETransformsError, ValueError):
    """An image's mode or layout cannot be protected faithfully as it is."""


class SizeMismatchError(UETransformsError, ValueError):
    """An image's size differs from the bank's and the policy is ``"error"``."""


class DefenceError(UETransformsError, ValueError):
    """A defence spec that cannot be parsed or combined."""


class ClipWeightsError(UETransformsError, RuntimeError):
    """CLIP weights could not be found, fetched or loaded."""


class PushError(UETransformsError, RuntimeError):
    """Pushing to the Hub cannot start, or failed; the message says what was uploaded and how to go on."""


class PublishConflict(UETransformsError, RuntimeError):
    """Another publish is writing the same output directory right now."""


class ParameterError(UETransformsError, ValueError):
    """A method parameter has a value outside its valid range (or of the wrong type)."""


class UnknownParameterError(ParameterError, TypeError):
    """A method was given a parameter it does not declare.

    Both a ``ValueError`` (a bad value for ``**params``) and a ``TypeError`` (what Python raises
    for an unexpected keyword), so either ``except`` clause a caller wrote keeps working.
    """


class UnknownMethodError(UETransformsError, KeyError):
    """No method is registered under the key asked for."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class DoubleProtectionError(UETransformsError, ValueError):
    """The images already carry the "protected by uetransforms" marker and ``allow_double`` is off."""


class RandomInitWarning(UserWarning):
    """A CLIP surrogate with random weights was built: it is a weak surrogate."""


__all__ = [
    "BankError", "ClipWeightsError", "DataError", "DefenceError", "DoubleProtectionError", "ImageModeError",
    "ParameterError",
    "PublishConflict", "PushError", "RandomInitWarning", "SizeMismatchError", "UETransformsError",
    "UnknownMethodError", "UnknownParameterError",
]
