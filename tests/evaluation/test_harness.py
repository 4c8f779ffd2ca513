"""evaluate() on a tiny synthetic task where the expected direction of every effect is certain.

Images (8x8 RGB, uniform noise) carry two independent, flip-invariant contents: ``label`` (top vs
bottom half brighter) and ``other`` (centre brighter vs darker). The "protection" is a hand-built
class-wise additive bank keyed by ``label``: a strong, luma-neutral colour shift (red up / green
down for class 0, the opposite for class 1). A CNN learns that shortcut first and fails on clean
test images; grayscale erases it, clean rows dilute it, and labels it is not keyed by ignore it.
"""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import uetransforms as ue
from uetransforms.cli.evaluate import add_cli_arguments, run_cli
from uetransforms.evaluation.harness import SCHEMA, SCHEMA_VERSION, evaluate, random_crop_flip
from uetransforms.core.apply import apply

FAST = dict(epochs=3, batch_size=64, progress=False)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models run faster on one thread, and much faster when other processes share the cores.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make(n, seed):
    r = np.random.default_rng(seed)
    a, b = r.integers(0, 2, n), r.integers(0, 2, n)
    x = r.integers(50, 190, (n, 8, 8, 3)).astype(np.int64)
    x[a == 1, :4] += 20
    x[a == 0, 4:] += 20
    x[b == 1, 2:6, 2:6] += 20
    x[b == 0, 2:6, 2:6] -= 20
    return {"image": list(x.astype(np.uint8)), "label": a.tolist(), "other": b.tolist(),
            "swapped": (1 - a).tolist()}


def colour_bank():
    delta = np.zeros((2, 3, 8, 8), "float32")
    delta[0, 0], delta[0, 1] = 0.2, -0.1019  # 0.299 * 0.2 == 0.587 * 0.1019: no luma change
    delta[1, 0], delta[1, 1] = -0.2, 0.1019
    return ue.NoiseBank(method="hand", kind="additive", keying="class", keys=[0, 1], tensors={"delta": delta},
                        params={"epsilon": 0.2})


def protect(ds, bank):
    x = torch.from_numpy(np.stack(ds["image"])).permute(0, 3, 1, 2)
    out = apply(bank, x, np.array(ds["label"])).permute(0, 2, 3, 1).numpy()
    return dict(ds, image=list(out))


@pytest.fixture(scope="module")
def data():
    clean = make(384, 1)
    return clean, protect(clean, colour_bank()), make(256, 2)


@pytest.fixture(scope="module")
def report(data, tmp_path_factory):
    clean, prot, test = data
    out = tmp_path_factory.mktemp("eval")
    return evaluate(prot, test, clean_train=clean, defences=["none", "grayscale"], protected_fraction=[1.0, 0.5],
                       out_dir=str(out), **FAST)


def test_shortcut_protects_and_grayscale_removes_it(report):
    clean, prot = report.accuracy("clean"), report.accuracy("protected")
    assert clean >= 0.9
    assert prot <= 0.75 and prot <= clean - 0.25
    assert report.accuracy("protected", "grayscale") >= 0.9


def test_partial_protection_is_weaker(report):
    assert report.accuracy("protected 50%") >= report.accuracy("protected") + 0.2
    row = next(r for r in report.rows if r.setting == "protected 50%")
    assert row.protected_fraction == 0.5 and row.train_size == 384


def test_table_has_settings_by_defences(report):
    lines = report.table().splitlines()
    assert lines[0] == "| training set | none | grayscale |"
    assert [ln.split("|")[1].strip() for ln in lines[2:]] == ["clean", "protected", "protected 50%"]
    assert len(report.table(long=True).splitlines()) == 2 + 6


def test_report_json_schema_and_figure(report):
    with open(report.files["report"]) as f:
        doc = json.load(f, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert doc["schema"] == SCHEMA and doc["schema_version"] == SCHEMA_VERSION
    assert set(doc) >= {"config", "data", "quality", "rows", "environment", "files"}
    cfg = doc["config"]
    assert (cfg["arch"], cfg["epochs"], cfg["batch_size"], cfg["seed"], cfg["augment"]) == ("cnn-small", 3, 64, 0, True)
    assert [d["name"] for d in cfg["defences"]] == ["none", "grayscale"] and cfg["protected_fraction"] == [1.0, 0.5]
    assert doc["data"] == {"train_size": 384, "test_size": 256, "image_shape": [3, 8, 8], "num_classes": 2,
                           "threat": "same labels"}
    q = doc["quality"]
    assert q["linf_max"] == 51.0 and q["changed_fraction"] == 1.0 and 0 < q["ssim_mean"] < 1 and q["psnr_mean"] > 10
    assert len(doc["rows"]) == 6
    for row in doc["rows"]:
        assert set(row) == {"setting", "defence", "test_accuracy", "curve", "train_accuracy", "seconds",
                            "protected_fraction", "train_size", "peak_accuracy", "peak_epoch"}
        assert len(row["curve"]) == 3 and row["curve"][-1] == row["test_accuracy"] and row["seconds"] > 0
        assert row["peak_accuracy"] == max(row["curve"]) == row["curve"][row["peak_epoch"] - 1]
    img = Image.open(report.files["figure"])
    assert img.format == "PNG" and img.width >= 600 and img.height >= 300


def test_label_agnostic_column_defeats_class_keyed_protection(data, report):
    clean, prot, test = data
    r = evaluate(prot, test, train_label_column="other", **FAST)
    assert r.data["threat"] == "label-agnostic"
    # The noise says nothing about `other`, so the model has to learn it (and does), unlike `label`.
    assert r.accuracy("protected") >= 0.75
    assert r.accuracy("protected") >= report.accuracy("protected") + 0.15


def test_label_map_relabels_train_and_test(data):
    _, prot, test = data
    mapped = evaluate(prot, test, label_map={0: 1, 1: 0}, epochs=1, batch_size=64, progress=False)
    column = evaluate(prot, test, train_label_column="swapped", epochs=1, batch_size=64, progress=False)
    assert mapped.rows[0].curve == column.rows[0].curve  # same labels both ways, same seed: same run
    assert mapped.config["label_map"] == {"0": 1, "1": 0}


def test_seeded_and_other_defences_run(data):
    clean, prot, test = data
    kw = dict(epochs=1, batch_size=64, progress=False)
    a = evaluate(prot, test, defences=["none", "cutout", "mixup", "cutmix", "pgd:eps=8,steps=1", "jpeg50"], **kw)
    b = evaluate(prot, test, defences="none", **kw)
    assert a.rows[0].curve == b.rows[0].curve  # deterministic for a seed
    curves = {r.defence: r.curve[0] for r in a.rows}
    assert all(0 <= v <= 1 for v in curves.values())
    assert len(set(curves.values())) > 1  # the defences changed the training
    c = evaluate(prot, test, defences="none", seed=1, **kw)
    assert c.config["seed"] == 1


def test_bad_input_is_named(data):
    clean, prot, test = data
    with pytest.raises(ValueError, match="clean_train"):
        evaluate(prot, test, protected_fraction=0.5, progress=False)
    with pytest.raises(ValueError, match="protected_fraction"):
        evaluate(prot, test, clean_train=clean, protected_fraction=0, progress=False)
    with pytest.raises(ue.DataError, match="same rows"):
        evaluate(prot, test, clean_train={k: v[:10] for k, v in clean.items()}, progress=False)
    with pytest.raises(ue.DataError, match="label_column"):
        evaluate(prot, test, label_column="target", progress=False)
    with pytest.raises(ValueError, match="unknown defence"):
        evaluate(prot, test, defences=["blur"], progress=False)
    with pytest.raises(ValueError, match="no entry"):
        evaluate(prot, test, label_map={0: 0}, progress=False)
    with pytest.raises(ValueError, match="not both"):
        evaluate(prot, test, label_map=[1, 0], train_label_column="other", progress=False)


def test_random_crop_flip_is_a_shifted_maybe_flipped_crop():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6) + 1
    out = random_crop_flip(x, 1, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for i in range(2):
        crops = [padded[i, :, dy : dy + 6, dx : dx + 6] for dy in range(3) for dx in range(3)]
        assert any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(-1)) for c in crops)


def test_cli_with_bank_and_parquet(data, tmp_path):
    import argparse

    import datasets

    clean, _, test = data
    for name, d in (("train", clean), ("test", test)):
        datasets.Dataset.from_dict({"image": [Image.fromarray(a) for a in d["image"]], "label": d["label"]}
                                   ).to_parquet(str(tmp_path / f"{name}.parquet"))
    bank = colour_bank()
    bank.save(tmp_path / "hand.bank.arrow")
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    args = parser.parse_args(["--train", str(tmp_path / "train.parquet"), "--test", str(tmp_path / "test.parquet"),
                              "--bank", str(tmp_path / "hand.bank.arrow"), "--epochs", "1", "--batch-size", "64",
                              "--limit-train", "200", "--defence", "none", "jpeg75", "--out-dir", str(tmp_path / "out"),
                              "--quiet"])
    assert run_cli(args) == 0
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [(r["setting"], r["defence"]) for r in doc["rows"]] == [
        ("clean", "none"), ("clean", "jpeg75"), ("protected", "none"), ("protected", "jpeg75")]
    assert doc["data"]["train_size"] == 200 and doc["quality"]["linf_max"] == 51.0
    assert os.path.getsize(tmp_path / "out" / "figure.png") > 1000


def test_peak_accuracy_and_epoch():
    from uetransforms.evaluation.harness import EvalRow

    row = EvalRow(setting="protected", defence="none", test_accuracy=0.2, curve=[0.3, 0.5, 0.5, 0.2],
                  train_accuracy=0.9, seconds=1.0, protected_fraction=1.0, train_size=10)
    assert (row.peak_accuracy, row.peak_epoch) == (0.5, 2)  # the first epoch of a tie
    kept = EvalRow(**{**row.__dict__, "peak_accuracy": 0.7, "peak_epoch": 3})  # as read back from JSON
    assert (kept.peak_accuracy, kept.peak_epoch) == (0.7, 3)


def test_report_carries_peak_and_last(report):
    for r in report.rows:
        assert r.peak_accuracy == max(r.curve) and r.curve[r.peak_epoch - 1] == r.peak_accuracy
        assert report.accuracy(r.setting, r.defence, which="peak") == r.peak_accuracy
    assert "peak" in report.table() and "peak (epoch)" in report.table(long=True)
    with pytest.raises(ValueError, match="last"):
        report.accuracy("clean", which="best")


def _parquets(data, tmp_path):
    import datasets

    clean, _, test = data
    for name, d in (("train", clean), ("test", test)):
        datasets.Dataset.from_dict({"image": [Image.fromarray(a) for a in d["image"]], "label": d["label"]}
                                   ).to_parquet(str(tmp_path / f"{name}.parquet"))
    return str(tmp_path / "train.parquet"), str(tmp_path / "test.parquet")


def _parse(argv):
    import argparse

    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    return parser.parse_args(argv)


def test_cli_without_clean_train_says_why_and_writes_a_report(data, tmp_path, monkeypatch, capsys):
    train, test = _parquets(data, tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # reports go to the cache, not the cwd
    assert run_cli(_parse(["--train", train, "--test", test, "--epochs", "1", "--limit-train", "128", "--quiet"])) == 0
    out = capsys.readouterr().out
    assert "no clean baseline" in out and "--clean-train" in out and "--bank" in out
    assert not (tmp_path / "uetransforms-reports").exists()
    reports = list((tmp_path / "cache" / "uetransforms" / "reports").glob("evaluate-*/report.json"))
    assert len(reports) == 1 and str(reports[0]) in out
    assert json.loads(reports[0].read_text())["rows"][0]["setting"] == "protected"


def test_cli_suite_runs_resumes_and_refuses_mixed_options(data, tmp_path, monkeypatch, capsys):
    train, test = _parquets(data, tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    argv = ["--train", train, "--test", test, "--suite", "standard", "--methods", "random", "--defences", "none",
            "bdr", "--epochs", "1", "--limit-train", "96", "--limit-test", "64", "--quiet"]
    assert run_cli(_parse(argv)) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "cache" / "uetransforms" / "reports" / "suite-cpu"
    assert str(folder / "results.json") in out and (folder / "heatmap.png").exists()
    doc = json.loads((folder / "results.json").read_text())
    assert len(doc["cells"]) == 4 and doc["command"].startswith("uetransforms ")
    assert doc["config"]["profile"]["train_size"] == 96
    stamp = os.path.getmtime(folder / "cells" / "random__bdr.json")
    assert run_cli(_parse(argv)) == 0  # resumes: nothing to do
    assert os.path.getmtime(folder / "cells" / "random__bdr.json") == stamp
    with pytest.raises(ValueError, match="--clean-train"):
        run_cli(_parse(argv + ["--clean-train", train]))
    with pytest.raises(ValueError, match="--suite"):
        run_cli(_parse(["--train", train, "--test", test, "--methods", "cuda"]))


def test_literature_defences_train(data):
    clean, prot, test = data
    small = {k: v[:128] for k, v in prot.items()}
    specs = ["iss", "bdr:bits=3", "ueraser:repeats=2", "sharpen+lowpass", "orthogonal", "pgd:norm=l2,eps=0.5,steps=1"]
    rep = evaluate(small, test, defences=specs, epochs=1, batch_size=64, progress=False)
    assert [r.defence for r in rep.rows] == specs
    for r in rep.rows:
        assert 0 <= r.test_accuracy <= 1 and 0 <= r.train_accuracy <= 1 and r.peak_epoch == 1
