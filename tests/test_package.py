"""The top-level namespace: light to import, names that explain themselves."""

from __future__ import annotations

import json
import subprocess
import sys


def _fresh(code: str) -> str:
    """Run ``code`` in a new interpreter (module state of this one would hide import effects)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_import_is_light():
    out = _fresh("import sys, json, uetransforms; print(json.dumps(sorted(m for m in sys.modules "
                 "if m.split('.')[0] in ('torch', 'pyarrow', 'datasets', 'torchvision', 'open_clip') "
                 "or m.startswith('uetransforms.'))))")
    assert json.loads(out) == ["uetransforms.errors", "uetransforms.methods"]


def test_functions_sharing_a_module_name_stay_callable():
    out = _fresh(
        "import uetransforms as ue\n"
        "import uetransforms.publish, uetransforms.evaluate\n"  # the submodules load first
        "from uetransforms.publish import public_params\n"
        "print(ue.publish.__module__, ue.publish.__name__, ue.evaluate.__module__, ue.evaluate.__name__,\n"
        "      callable(ue.publish), callable(ue.evaluate), public_params.__name__)\n")
    assert out.split() == ["uetransforms.publish", "publish", "uetransforms.evaluate", "evaluate", "True", "True",
                           "public_params"]


def test_method_submodules_import_by_name_and_the_table_still_works():
    out = _fresh(
        "import uetransforms as ue\n"
        "import uetransforms.methods.cuda, uetransforms.methods.onepixel\n"
        "print(uetransforms.methods.cuda.METHOD.key, uetransforms.methods.onepixel.METHOD.key,\n"
        "      ue.methods()[0]['key'], ue.ops.__name__)\n")
    assert out.split() == ["cuda", "ops", "cuda", "uetransforms.ops"]  # the kernels and the method: two names


def test_lazy_names_resolve():
    out = _fresh("import uetransforms as ue; print(ue.fit.__module__, ue.NoiseBank.__name__, ue.FitData.__name__, "
                 "ue.Protect.__name__, ue.quality.__name__)")
    assert out.split() == ["uetransforms.fitting", "NoiseBank", "FitData", "Protect", "uetransforms.quality"]
