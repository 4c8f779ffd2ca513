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
