"""notebooks/quickstart.ipynb: it runs the way its first cell says (``jupyter execute``), and the
copy in the repository carries the outputs the current code prints, a fresh secret key and words
that match its numbers (issue 24, point 13)."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("nbclient")  # the dev extra: nbclient gives `jupyter execute`, ipykernel the kernel
pytest.importorskip("ipykernel")

ROOT = os.path.join(os.path.dirname(__file__), "..")
NOTEBOOK = os.path.join(ROOT, "notebooks", "quickstart.ipynb")
QUALITY = re.compile(r"PSNR (\d+\.\d) dB, SSIM (\d\.\d\d), largest change (\d+)/255, (\d+)% of pixels changed")


def _code(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _text(cell: dict, name: str = "stdout") -> str:
    return "".join("".join(o.get("text", "")) for o in cell["outputs"] if o.get("name") == name)


def _shape(nb: dict) -> list[list[tuple]]:
    """What each code cell showed, without the values: output kinds, stream names, MIME types."""
    return [[(o["output_type"], o.get("name"), tuple(sorted(o.get("data", {})))) for o in cell["outputs"]
             if not (o["output_type"] == "stream" and o.get("name") == "stderr")]  # progress bars, warnings vary
            for cell in _code(nb)]


def _check_run(nb: dict) -> None:
    code = _code(nb)
    outputs = [o for cell in code for o in cell["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    text = "".join("".join(o.get("data", {}).get("text/markdown", "")) for o in outputs)
    assert "| clean | none |" in text and "| protected | none |" in text  # the evaluation table was shown
    assert any("image/png" in o.get("data", {}) for o in outputs)  # samples and figure were shown
    # Executed top to bottom in one kernel: counts 1..N.
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1))
    # The words of step 2 ("not small", "plainly visible") against the numbers this run printed.
    found = [QUALITY.search(_text(c)) for c in code]
    psnr, ssim, linf, changed = next(m for m in found if m).groups()
    assert float(psnr) < 20 and float(ssim) < 0.8 and int(changed) >= 90


def test_committed_notebook_has_its_outputs_and_no_fixed_key():
    assert os.path.getsize(NOTEBOOK) < 1_000_000  # outputs kept small: no large images
    nb = json.load(open(NOTEBOOK, encoding="utf-8"))
    _check_run(nb)
    for cell in _code(nb):  # a key is never a fixed default: ue.fit draws a fresh one
        code = re.sub(r"#.*", "", "".join(cell["source"]))
        assert not re.search(r"\bseed\s*=", code), code
    intro = "".join(nb["cells"][0]["source"])
    assert "jupyter execute notebooks/quickstart.ipynb" in intro


def test_quickstart_notebook_runs_with_jupyter_execute(tmp_path):
    """Run as the notebook says (``jupyter execute``; ``python -m nbclient`` is no command), on a copy,
    and compare with the committed outputs: the same cells show the same kinds of output, and what
    does not depend on the secret key is printed the same."""
    copy = tmp_path / "quickstart.ipynb"
    shutil.copy(NOTEBOOK, copy)
    env = {**os.environ, "OMP_NUM_THREADS": "1",  # a tiny CNN is faster on one thread, above all on a busy machine
           # the notebook keeps its (secret) bank in tempfile.mkdtemp(): inside tmp_path, so a test run leaves none behind
           "TMPDIR": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([os.path.abspath(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    run = subprocess.run([sys.executable, "-m", "jupyter", "execute", "--output=executed", str(copy)],
                         env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert list(tmp_path.glob("uetransforms-quickstart-*/*.bank.arrow"))  # its work folder was made where TMPDIR says
    fresh = json.load(open(tmp_path / "executed.ipynb", encoding="utf-8"))
    committed = json.load(open(NOTEBOOK, encoding="utf-8"))
    _check_run(fresh)
    assert _shape(fresh) == _shape(committed), "notebook outputs are stale: rerun `jupyter execute --inplace`"
    assert _text(_code(fresh)[0]) == _text(_code(committed)[0])  # the data loaded: no key involved
