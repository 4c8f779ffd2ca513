import json
import os

import numpy as np
import pytest
from PIL import Image

from uetransforms.cli.demo import load_digits, run_demo


pytestmark = pytest.mark.usefixtures("one_thread")


def test_bundled_digits_load_offline():
    train, test = load_digits()
    assert (len(train), len(test)) == (1400, 397)
    assert train.features["label"].names == [str(d) for d in range(10)]
    img = train[0]["image"]
    assert img.mode == "L" and img.size == (8, 8)
    counts = np.bincount(test["label"], minlength=10)
    assert counts.min() >= 25  # a seeded shuffle, so every digit is in the test split
    again, _ = load_digits()
    assert np.array_equal(np.asarray(again[5]["image"]), np.asarray(train[5]["image"]))


def test_demo_steps_say_which_method_they_belong_to(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("uetransforms.evaluation.harness.evaluate", _fake_evaluate)
    run_demo(str(tmp_path / "d"), methods=("cuda", "random"), epochs=1, progress=True)
    out = capsys.readouterr().out
    assert "[2/4, cuda 1/2]" in out and "[2/4, random 2/2]" in out and "[4/4, random 2/2]" in out


class _FakeReport:
    quality = {"psnr_mean": 20.0, "ssim_mean": 0.8, "linf_max": 100}
    files = {"report": "/nonexistent/report.json"}

    def accuracy(self, setting):
        return 0.5


def _fake_evaluate(*args, **kwargs):
    return _FakeReport()


def test_quick_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    summary = run_demo(str(out), quick=True, epochs=4, progress=False)
    acc = summary["accuracy"]
    assert set(acc) == {"clean", "cuda"}
    assert acc["clean"] >= 0.8
    assert acc["cuda"] <= acc["clean"] - 0.3  # the published data teaches far less than the clean data
    printed = capsys.readouterr().out
    assert "| clean (no protection) |" in printed and "| cuda (published) |" in printed
    # published locally: lossless PNG shards + card, and a bank that stays out of the published folder
    pub = out / "published-cuda"
    assert (pub / "README.md").exists() and not any(p.suffix == ".arrow" for p in pub.rglob("*"))
    assert "license: cc-by-4.0" in (pub / "README.md").read_text()  # the bundled digits' licence, not unknown
    assert (out / "cuda.bank.arrow").exists()
    doc = json.loads(open(summary["reports"]["cuda"]).read())
    assert doc["config"]["epochs"] == 4 and doc["data"]["train_size"] == 1400
    assert Image.open(os.path.join(os.path.dirname(summary["reports"]["cuda"]), "figure.png")).format == "PNG"
