"""The top-level namespace: light to import, one list of public names, no module shadows a function."""

from __future__ import annotations

import json
import subprocess
import sys

import uetransforms as ue


def _fresh(code: str) -> str:
    """Run ``code`` in a new interpreter (module state of this one would hide import effects)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_import_is_light():
    out = _fresh("import sys, json, uetransforms; print(json.dumps(sorted(m for m in sys.modules "
                 "if m.split('.')[0] in ('torch', 'pyarrow', 'datasets', 'torchvision', 'open_clip') "
                 "or m.startswith('uetransforms.'))))")
    assert json.loads(out) == ["uetransforms.core", "uetransforms.core.version"]


def test_public_functions_stay_functions_after_every_subpackage_loads():
    out = _fresh(
        "import uetransforms as ue\n"
        "import uetransforms.publishing.pipeline, uetransforms.evaluation.harness, uetransforms.algorithms.cuda\n"
        "print(ue.publish.__module__, ue.publish.__name__, ue.evaluate.__module__, ue.evaluate.__name__,\n"
        "      ue.methods.__name__, ue.methods()[0]['key'])\n")
    assert out.split() == ["uetransforms.publishing.pipeline", "publish", "uetransforms.evaluation.harness", "evaluate",
                           "table", "cuda"]


def test_every_public_name_resolves_and_nothing_else_does():
    for name in ue.__all__:
        assert getattr(ue, name) is not None, name
    for gone in ("ops", "bank", "quality", "errors", "codecs", "measured"):  # old module re-exports
        assert gone not in ue.__all__
        assert not hasattr(ue, gone), f"ue.{gone} still resolves"


def test_exceptions_are_public_and_share_one_base():
    for name in ue.__all__:
        obj = getattr(ue, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and not issubclass(obj, Warning):
            assert issubclass(obj, ue.UETransformsError), name
