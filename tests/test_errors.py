"""uetransforms.errors: one base class, the old import paths and built-in bases kept."""

from __future__ import annotations

import importlib

import pytest

import uetransforms as ue
from uetransforms import bank, clip, codecs, data, defences, errors, images, ops, writer

OLD_HOMES = [
    (bank, "BankError"), (data, "DataError"), (codecs, "ImageModeError"), (images, "ImageModeError"),
    (ops, "SizeMismatchError"), (defences, "DefenceError"), (clip, "ClipWeightsError"), (clip, "RandomInitWarning"),
    # `from uetransforms import publish` is the function ue.publish; the module is reached by its name
    (importlib.import_module("uetransforms.publish"), "PushError"), (writer, "PublishConflict"),
]


@pytest.mark.parametrize("module, name", OLD_HOMES)
def test_old_import_paths_are_the_same_classes(module, name):
    assert getattr(module, name) is getattr(errors, name)


def test_one_base_class_and_the_builtin_bases_callers_caught():
    for name in errors.__all__:
        cls = getattr(errors, name)
        if issubclass(cls, Warning):
            continue
        assert issubclass(cls, errors.UETransformsError), name
    assert issubclass(errors.BankError, ValueError) and issubclass(errors.ClipWeightsError, RuntimeError)
    assert issubclass(errors.UnknownParameterError, ValueError) and issubclass(errors.UnknownParameterError, TypeError)
    assert issubclass(errors.UnknownMethodError, KeyError)


def test_top_level_exception_names_resolve_but_are_not_exported():
    for name in ("BankError", "DataError", "ImageModeError", "SizeMismatchError"):
        assert getattr(ue, name) is getattr(errors, name)
        assert name not in ue.__all__
    assert "errors" in ue.__all__


def test_library_errors_are_caught_by_the_base_class():
    with pytest.raises(errors.UETransformsError, match="unknown method 'nope'"):
        ue.methods.get("nope")
    with pytest.raises(errors.UETransformsError, match="kernel_size"):
        ue.methods.get("cuda").check({"kernel_size": 4})
    with pytest.raises(errors.UETransformsError, match="empty"):
        ue.fit("cuda", {"image": [], "label": []})
    err = pytest.raises(KeyError, ue.methods.get, "nope").value
    assert str(err).startswith("unknown method")  # not wrapped in quotes as KeyError would
