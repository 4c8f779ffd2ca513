"""Measured facts per method: recorded from a suite's results, read back by key."""

import json

import numpy as np
import pytest

from uetransforms.algorithms import measured
from uetransforms.evaluation.suite import evaluate_suite


def test_record_and_read_back(tmp_path, one_thread):
    rng = np.random.default_rng(0)
    train = {"image": list(rng.integers(0, 256, (36, 8, 8, 3), dtype=np.uint8)), "label": [0, 1, 2] * 12}
    test = {"image": list(rng.integers(0, 256, (18, 8, 8, 3), dtype=np.uint8)), "label": [0, 1, 2] * 6}
    doc = evaluate_suite(train, test, methods=["random"], defences=["none", "jpeg10"], profile="cpu",
                         overrides={"epochs": 1, "train_size": None, "test_size": None}, out_dir=tmp_path / "s",
                         progress=False, command="uetransforms evaluate --suite standard")
    path = tmp_path / "measured.json"
    assert measured.for_method("random", path=path) == {}  # nothing recorded yet
    measured.record(doc, path)
    facts = measured.for_method("random", path=path)
    assert facts["profile"] == "cpu" and facts["command"] == "uetransforms evaluate --suite standard"
    cells = {(c["method"], c["defence"]): c["test_accuracy"] for c in doc["cells"]}
    assert facts["effect"]["protected_accuracy"] == cells[("random", "none")]
    assert facts["effect"]["clean_accuracy"] == cells[("clean", "none")]
    assert facts["defences"]["jpeg10"]["ratio"] == pytest.approx(cells[("random", "jpeg10")] / cells[("clean", "jpeg10")])
    assert facts["quality"]["linf_max"] <= 8 and "psnr_mean" in facts["quality"]
    assert set(facts["broken_by"]) | set(facts["holds_against"]) <= {"jpeg10", "early-stop"}
    assert "seed" not in facts["bank_params"] and "epsilon" in facts["bank_params"]  # never the private key
    assert "seed" not in json.dumps(doc["method_info"]["random"]["bank_params"])
    assert measured.for_method("random", profile="paper", path=path) == {}
    text = measured.summary("random", path=path)
    assert f"{cells[('random', 'none')]:.3f} against {cells[('clean', 'none')]:.3f}" in text
    assert "cpu harness" in text and "PSNR" in text and measured.summary("cuda", path=path) is None
    # another profile's facts are kept side by side, and the paper profile is preferred
    doc2 = json.loads(json.dumps(doc))
    doc2["profile"] = "paper"
    measured.record(doc2, path)
    assert measured.for_method("random", path=path)["profile"] == "paper"
    assert measured.for_method("random", profile="cpu", path=path)["profile"] == "cpu"


def test_foreign_file_is_refused(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"schema": "something else"}')
    with pytest.raises(ValueError, match="not a uetransforms measured"):
        measured.load(p)


def test_shipped_file_is_valid():
    doc = measured.load()
    assert doc["schema"] == measured.SCHEMA
    for key, per_profile in doc["methods"].items():
        for prof, facts in per_profile.items():
            assert facts["profile"] == prof and facts["command"]
            assert measured.for_method(key, profile=prof) == facts


def _bench_doc(attacker, rows, *, backbone_sha="abc", resolution=32, train_size=500, epochs=2, command="bench"):
    """A bench_protection.py results document: {method: test accuracy} rows of one setting."""
    b = None if attacker == "scratch" else {"kind": "small-cnn", "arch": "small-cnn-w8", "checkpoint_sha256": backbone_sha,
                                              "trained_on": "rows 100-200", "checkpoint_path": "/private/path"}
    return {"command": command,
            "config": {"train_size": train_size, "test_size": 100, "epochs": epochs, "seed": 0},
            "results": [{"method": m, "defence": "none", "attacker": attacker, "backbone": b, "resolution": resolution,
                         "protected_fraction": 1.0, "label_map": "none", "test_accuracy": acc, "peak_accuracy": acc,
                         "quality": None if m == "clean" else {"psnr_mean": 20.0, "ssim_mean": 0.8}}
                        for m, acc in rows.items()]}


def test_attack_rows_pair_each_method_with_the_clean_row_of_its_own_setting():
    probe = _bench_doc("linear-probe", {"clean": 0.8, "cuda": 0.4})
    tune_base = _bench_doc("finetune", {"clean": 0.6})
    tune = _bench_doc("finetune", {"cuda": 0.45, "ar": 0.6})
    other = _bench_doc("finetune", {"cuda": 0.1}, backbone_sha="zzz")  # no clean row of that backbone anywhere
    rows = measured.attack_rows([probe, tune, other], baselines=[tune_base])
    got = {(m, r["attacker"]): r["ratio"] for m, rs in rows.items() for r in rs}
    assert got == {("cuda", "linear-probe"): pytest.approx(0.5), ("cuda", "finetune"): pytest.approx(0.75),
                   ("ar", "finetune"): pytest.approx(1.0)}
    r = rows["cuda"][0]
    assert "checkpoint_path" not in r["backbone"]  # where the file sat on one machine is not a fact
    assert r["variant"] == "defaults" and r["psnr"] == 20.0
    assert measured.attack_rows([tune], methods=["ar"], baselines=[tune_base]).keys() == {"ar"}


def test_record_attacks_replaces_only_the_same_setting_and_variant(tmp_path):
    path = tmp_path / "m.json"
    base = _bench_doc("linear-probe", {"clean": 0.8})
    measured.record_attacks([_bench_doc("linear-probe", {"cuda": 0.4})], baselines=[base], path=path)
    measured.record_attacks([_bench_doc("linear-probe", {"cuda": 0.2})], baselines=[base], variant="k=5", path=path)
    measured.record_attacks([_bench_doc("linear-probe", {"cuda": 0.6})], baselines=[base], path=path)  # a rerun
    rows = measured.attacks("cuda", path=path)
    assert sorted((r["variant"], r["protected_accuracy"]) for r in rows) == [("defaults", 0.6), ("k=5", 0.2)]
    # the defaults are what the method's own numbers quote; an option's rows never stand in for them
    assert measured.nearest_attacks("cuda", path=path)["linear-probe"]["protected_accuracy"] == 0.6


def test_nearest_attacks_picks_the_size_closest_to_the_users_images(tmp_path):
    path = tmp_path / "m.json"
    for res in (32, 96):
        base = _bench_doc("linear-probe", {"clean": 0.8}, resolution=res)
        measured.record_attacks([_bench_doc("linear-probe", {"cuda": 0.3 if res == 32 else 0.5}, resolution=res)],
                                baselines=[base], path=path)
    assert measured.nearest_attacks("cuda", resolution=40, path=path)["linear-probe"]["resolution"] == 32
    assert measured.nearest_attacks("cuda", resolution=300, path=path)["linear-probe"]["resolution"] == 96
    text = measured.attacks_text("cuda", resolution=1024, path=path)
    assert "a linear probe 0.400 vs 0.800 clean (0.50x)" not in text  # 96 px is nearest, its numbers are quoted
    assert "0.500 vs 0.800 clean (0.62x)" in text and "fine-tuning: not measured" in text
    assert "nothing was measured near 1024 px (the nearest measured size is 96 px)" in text
    assert "nothing was measured near" not in measured.attacks_text("cuda", resolution=100, path=path)


def test_a_method_never_attacked_says_so_plainly(tmp_path):
    path = tmp_path / "m.json"
    assert measured.attacks_text("em", path=path) == (
        "against a pretrained attacker (linear probe, fine-tune): not measured for em with its defaults")
    base = _bench_doc("finetune", {"clean": 0.5})
    measured.record_attacks([_bench_doc("finetune", {"tap": 0.45})], baselines=[base], variant="steps=8", path=path)
    assert "measured with other options: steps=8" in measured.attacks_text("tap", path=path)
    assert measured.summary("tap", path=path).startswith("against a pretrained attacker")


def test_shipped_attack_rows_name_their_setting():
    for key, rows in measured.load().get("attacks", {}).items():
        for r in rows:
            assert r["attacker"] in measured.ATTACKERS and r["resolution"] > 0 and r["train_size"] > 0
            assert r["ratio"] == pytest.approx(r["protected_accuracy"] / r["clean_accuracy"])
            assert r["command"] and r["variant"]
            if r["attacker"] != "scratch":  # a pretrained attacker names the backbone it started from
                assert r["backbone"]["arch"] and r["backbone"]["trained_on"] and r["backbone"]["checkpoint_sha256"]
