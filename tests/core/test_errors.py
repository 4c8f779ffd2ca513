"""uetransforms.core.errors: one base class, and the built-in bases callers catch."""

from __future__ import annotations

import pytest

import uetransforms as ue
from uetransforms.algorithms import get
from uetransforms.core import errors


def test_one_base_class_and_the_builtin_bases_callers_caught():
    for name in errors.__all__:
        cls = getattr(errors, name)
        if issubclass(cls, Warning):
            continue
        assert issubclass(cls, errors.UETransformsError), name
    assert issubclass(errors.BankError, ValueError) and issubclass(errors.ClipWeightsError, RuntimeError)
    assert issubclass(errors.UnknownParameterError, ValueError) and issubclass(errors.UnknownParameterError, TypeError)
    assert issubclass(errors.UnknownMethodError, KeyError)


def test_library_errors_are_caught_by_the_base_class():
    with pytest.raises(errors.UETransformsError, match="unknown method 'nope'"):
        get("nope")
    with pytest.raises(errors.UETransformsError, match="kernel_size"):
        get("cuda").check({"kernel_size": 4})
    with pytest.raises(errors.UETransformsError, match="empty"):
        ue.fit("cuda", {"image": [], "label": []})
    err = pytest.raises(KeyError, get, "nope").value
    assert str(err).startswith("unknown method")  # not wrapped in quotes as KeyError would
