import json
import os

import numpy as np
import pytest
from PIL import Image

import uetransforms as ue
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


def _fake_evaluate(*args, out_dir, baseline, **kwargs):
    return _CurvesReport(out_dir, baseline, 0.5)


class _CurvesReport(_FakeReport):
    """What the demo reads of a report for its figures: curves by setting, samples, file paths."""

    def __init__(self, out_dir, baseline, acc):
        import torch

        self.curves = {**({"clean / none": [0.5, 0.9]} if baseline else {}), "protected / none": [0.2, acc]}
        x = torch.zeros((2, 1, 8, 8), dtype=torch.uint8)
        self.samples = (x, x + 40)
        self.data = {"train_size": 10, "test_size": 5}
        os.makedirs(out_dir, exist_ok=True)
        self.files = {"report": os.path.join(out_dir, "report.json"), "figure": os.path.join(out_dir, "figure.png")}


def test_demo_figures_give_each_training_set_one_colour_and_a_label(tmp_path, monkeypatch):
    """Issue 24, point 13: the random figure drew its protected line in the colour of cuda's clean line."""
    from uetransforms.evaluation import figures

    made = iter([0.25, 0.85])
    monkeypatch.setattr("uetransforms.evaluation.harness.evaluate",
                        lambda *a, out_dir, baseline, **k: _CurvesReport(out_dir, baseline, next(made)))
    drawn = {}
    real = figures.report_figure

    def spy(path, *, curves, **kw):
        drawn[os.path.basename(os.path.dirname(path))] = dict(curves)
        return real(path, curves=curves, **kw)

    monkeypatch.setattr(figures, "report_figure", spy)
    run_demo(str(tmp_path / "d"), methods=("cuda", "random"), epochs=2, progress=False)
    assert set(drawn) == {"eval-cuda", "eval-random"}
    names = ["clean (no protection)", "cuda (published)", "random (published)"]
    for curves in drawn.values():  # the same labelled lines in the same order: one colour per training set
        assert list(curves) == names
        assert curves["random (published)"] == [0.2, 0.85] and curves["clean (no protection)"] == [0.5, 0.9]
    colours = [figures.PALETTE[i % len(figures.PALETTE)] for i in range(len(names))]
    assert len(set(colours)) == len(names)
    for name in drawn:  # and the files drawn show each of those colours
        px = set(map(tuple, np.asarray(Image.open(tmp_path / "d" / name / "figure.png").convert("RGB")).reshape(-1, 3)))
        assert all(c in px for c in colours), name


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


def test_demo_banks_get_fresh_secret_keys(tmp_path, monkeypatch):
    """A key is never a fixed default, in the demo either: two runs, two keys."""
    monkeypatch.setattr("uetransforms.evaluation.harness.evaluate", _fake_evaluate)
    keys = []
    for run in ("a", "b"):
        run_demo(str(tmp_path / run), methods=("cuda",), epochs=1, progress=False)
        keys.append(ue.NoiseBank.load(tmp_path / run / "cuda.bank.arrow").params["seed"])
    assert keys[0] != keys[1]
