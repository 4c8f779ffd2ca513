"""The fair label-agnostic protocol (issue 25): labellings, floors, ratios under the same labelling."""

from __future__ import annotations

import types

import numpy as np
import pytest

from uetransforms.evaluation import labelfree


def test_cifar10_pairs_are_five_groups_of_two():
    groups = np.bincount(labelfree.CIFAR10_PAIRS.label_map)
    assert groups.tolist() == [2, 2, 2, 2, 2]
    assert labelfree.CIFAR10_PAIRS.kind == "coarser"
    # cat (3) and dog (5) share a group; airplane (0) and ship (8) too
    m = labelfree.CIFAR10_PAIRS.label_map
    assert m[3] == m[5] and m[0] == m[8] and m[1] == m[9]
    assert [lab.name for lab in labelfree.cifar10_labellings()] == ["true", "pairs"]
    assert labelfree.cifar10_labellings("fine_label")[-1].evaluate_kwargs() == {"train_label_column": "fine_label"}


def test_majority_floor():
    assert labelfree.majority_floor([0, 0, 1, 2]) == 0.5
    # mapped: 3 and 5 become one group, which then holds 3 of 4
    assert labelfree.majority_floor([3, 5, 5, 0], labelfree.CIFAR10_PAIRS.label_map) == 0.75
    with pytest.raises(ValueError, match="at least one"):
        labelfree.majority_floor([])
    with pytest.raises(ValueError, match="label_map has 2 entries"):
        labelfree.majority_floor([0, 3], [0, 1])


def test_labelling_is_checked():
    with pytest.raises(ValueError, match="kind"):
        labelfree.Labelling("x", "other", "")
    with pytest.raises(ValueError, match="not both"):
        labelfree.Labelling("x", "finer", "", label_map=(0,), column="c")


def _fake_evaluate(calls):
    """An evaluate that answers 0.8 clean / 0.4 protected with the true labels and 0.9 / 0.6 with a
    label map, recording each call."""

    def evaluate(train, test, **kw):
        calls.append((train["name"], "label_map" in kw, kw.get("baseline", True)))
        coarse = "label_map" in kw
        acc = {("clean", False): 0.8, ("prot", False): 0.4, ("clean", True): 0.9, ("prot", True): 0.6}
        row = types.SimpleNamespace(test_accuracy=acc[(train["name"], coarse)], train_accuracy=1.0, seconds=1.0)
        return types.SimpleNamespace(rows=[row])

    return evaluate


def test_ratios_are_under_the_same_labelling_with_the_floor(monkeypatch):
    calls: list = []
    monkeypatch.setattr(labelfree, "evaluate", _fake_evaluate(calls))
    test = {"label": [0, 0, 0, 1, 2, 3, 4, 5, 8, 9]}
    rep = labelfree.run({"m": {"name": "prot"}}, test, clean_train={"name": "clean"})
    assert rep.ratio("m", "true") == pytest.approx(0.5)
    assert rep.ratio("m", "pairs") == pytest.approx(0.6 / 0.9)
    rows = {r.labelling: r for r in rep.rows}
    assert rows["true"].floor == pytest.approx(0.3) and rows["true"].floor_ratio == pytest.approx(0.3 / 0.8)
    assert rows["pairs"].floor == pytest.approx(0.4)  # airplane x3 + ship: group 0 holds 4 of 10
    table = rep.table()
    assert "majority-class floor" in table and "0.67x" in table and "0.50x" in table
    # one clean run and one protected run per labelling
    assert sorted(calls) == sorted([("clean", False, True), ("prot", False, False), ("clean", True, True),
                                    ("prot", True, False)])


def test_given_clean_baselines_are_not_retrained(monkeypatch):
    calls: list = []
    monkeypatch.setattr(labelfree, "evaluate", _fake_evaluate(calls))
    test = {"label": [0, 1]}
    rep = labelfree.run({"m": {"name": "prot"}}, test, clean_train={"name": "clean"}, clean={"true": 0.5},
                        labellings=[labelfree.TRUE])
    assert rep.ratio("m") == pytest.approx(0.8) and [c[0] for c in calls] == ["prot"]
    with pytest.raises(ValueError, match="set by the protocol"):
        labelfree.run({"m": {}}, test, clean_train={}, label_map=[0, 1])
    with pytest.raises(ValueError, match="protected is empty"):
        labelfree.run({}, test, clean_train={})


def test_protocol_trains_for_real_on_tiny_data():
    datasets = pytest.importorskip("datasets")
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    make = lambda n, s: datasets.Dataset.from_dict(  # noqa: E731
        {"image": list(np.random.default_rng(s).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)),
         "label": [i % 10 for i in range(n)]}, features=feats)
    train, test = make(20, 1), make(10, 2)
    rep = labelfree.run({"same": train}, test, clean_train=train, epochs=1, batch_size=10)
    # the "protected" set is the clean one: same seed, same labelling, same accuracy
    assert {r.labelling for r in rep.rows} == {"true", "pairs"}
    for r in rep.rows:  # the "protected" set is the clean one: same seed and labelling, same accuracy
        assert r.protected_accuracy == r.clean_accuracy
    assert rep.to_dict()["table"] == rep.table()
