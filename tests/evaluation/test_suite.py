"""The defence suite: grid, resume, parallel claims, JSON schema, heatmap (tiny synthetic data, fast)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from uetransforms.evaluation import suite as suite_mod
from uetransforms.evaluation.suite import BROKEN_RATIO, PROFILES, SCHEMA, _Claim, evaluate_suite, resolve_profile, summarise, table

TINY = {"epochs": 1, "train_size": None, "test_size": None}


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    train = {"image": list(rng.integers(0, 256, (48, 8, 8, 3), dtype=np.uint8)), "label": [0, 1, 2] * 16}
    test = {"image": list(rng.integers(0, 256, (24, 8, 8, 3), dtype=np.uint8)), "label": [0, 1, 2] * 8}
    return train, test


def _run(data, out, **kw):
    kw.setdefault("methods", ["random"])
    kw.setdefault("defences", ["none", "bdr"])
    return evaluate_suite(*data, profile="cpu", overrides=TINY, out_dir=out, progress=False, **kw)


def test_grid_json_schema_and_heatmap(data, tmp_path, one_thread):
    doc = _run(data, tmp_path, command="pytest")
    assert doc["schema"] == SCHEMA and doc["command"] == "pytest"
    assert doc["methods"] == ["clean", "random"] and doc["defences"] == ["none", "bdr"]
    assert {(c["method"], c["defence"]) for c in doc["cells"]} == {(m, d) for m in ("clean", "random")
                                                                      for d in ("none", "bdr")}
    for c in doc["cells"]:
        assert {"test_accuracy", "peak_accuracy", "peak_epoch", "curve", "train_seconds", "spec"} <= set(c)
        assert c["peak_accuracy"] >= c["test_accuracy"] and c["peak_epoch"] == 1
    clean = {c["defence"]: c["test_accuracy"] for c in doc["cells"] if c["method"] == "clean"}
    prot = {c["defence"]: c["test_accuracy"] for c in doc["cells"] if c["method"] == "random"}
    assert doc["ratio"]["random"]["bdr"] == pytest.approx(prot["bdr"] / clean["bdr"])
    assert doc["not_run"] == [] and doc["verdict"]["random"]["not_run"] == []
    assert doc["method_info"]["random"]["quality"]["linf_max"] <= 8
    assert doc["defence_specs"]["bdr"] == "bdr"
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["cells"] == doc["cells"]
    img = Image.open(tmp_path / "heatmap.png")
    assert img.format == "PNG" and img.size[0] >= 300
    assert (tmp_path / "banks" / "random.bank.arrow").exists()
    md = table(doc)
    assert md.splitlines()[0].startswith("| method | none | bdr |") and "| random |" in md


def test_rerun_skips_finished_cells_and_fills_missing_ones(data, tmp_path, monkeypatch, one_thread):
    _run(data, tmp_path)
    os.remove(tmp_path / "cells" / "random__bdr.json")  # as if the run had been stopped before this cell
    ran = []
    real = suite_mod._run_cell
    monkeypatch.setattr(suite_mod, "_run_cell", lambda *a, **k: ran.append((a[2], a[3])) or real(*a, **k))
    doc = _run(data, tmp_path)
    assert ran == [("random", "bdr")]
    assert len(doc["cells"]) == 4
    ran.clear()
    _run(data, tmp_path)
    assert ran == []  # everything done: nothing retrained


def test_not_run_cells_are_listed_never_guessed(data, tmp_path, monkeypatch, one_thread):
    _run(data, tmp_path, defences=["none"])
    # A later, larger grid on the same folder that is stopped at once: its new cells are "not run".
    monkeypatch.setattr(suite_mod, "_run_cell", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        _run(data, tmp_path, defences=["none", "jpeg10"])
    doc = suite_mod._write_results(str(tmp_path), ["clean", "random"], ["none", "jpeg10"],
                                   resolve_profile("cpu", TINY), {}, None)
    assert {"method": "random", "defence": "jpeg10"} in doc["not_run"]
    assert doc["ratio"]["random"]["jpeg10"] is None and "jpeg10" in doc["verdict"]["random"]["not_run"]
    assert not (tmp_path / "cells" / "clean__jpeg10.json.lock").exists()  # the claim was released


def test_claims_exclude_live_owners_and_take_over_dead_ones(tmp_path):
    a, b = _Claim(str(tmp_path / "x.lock")), _Claim(str(tmp_path / "x.lock"))
    assert a.acquire()
    (tmp_path / "x.lock").write_text("1")  # pid 1 is alive: someone else holds it
    assert not b.acquire()
    (tmp_path / "x.lock").write_text("999999999")  # no such process: a crashed run's lock
    assert b.acquire() and (tmp_path / "x.lock").read_text() == str(os.getpid())
    b.release()
    assert not (tmp_path / "x.lock").exists()


def test_another_configuration_is_refused(data, tmp_path, one_thread):
    _run(data, tmp_path, defences=["none"])
    with pytest.raises(ValueError, match="another configuration"):
        evaluate_suite(*data, methods=["random"], defences=["none"], profile="cpu",
                       overrides={**TINY, "epochs": 2}, out_dir=tmp_path, progress=False)


def test_bad_names_fail_before_training(data, tmp_path):
    with pytest.raises(ValueError, match="unknown method"):
        _run(data, tmp_path, methods=["nope"])
    with pytest.raises(ValueError, match="unknown defence"):
        _run(data, tmp_path / "b", defences=["blur"])
    with pytest.raises(ValueError, match="unknown profile"):
        resolve_profile("gpu")
    with pytest.raises(ValueError, match="unknown profile field"):
        resolve_profile("cpu", {"epoch": 3})


def test_paper_profile_runs_resnet18_on_a_tiny_shape(data, tmp_path, one_thread):
    prof = PROFILES["paper"]
    assert (prof.arch, prof.train_size, prof.epochs >= 60) == ("resnet18", None, True)
    doc = evaluate_suite(*data, methods=["random"], defences=["none", "pgd"], profile="paper",
                         overrides={"epochs": 1, "pgd": "pgd:eps=8,steps=1"}, out_dir=tmp_path, progress=False)
    assert {c["arch"] for c in doc["cells"]} == {"resnet18"} and len(doc["cells"]) == 4
    assert doc["defence_specs"]["pgd"] == "pgd:eps=8,steps=1"
    assert doc["config"]["profile"]["name"] == "paper"


def test_summarise_calls_broken_only_what_protected():
    cell = lambda m, d, acc, peak=None: {"method": m, "defence": d, "test_accuracy": acc,  # noqa: E731
                                         "peak_accuracy": peak or acc}
    cells = {(c["method"], c["defence"]): c for c in [
        cell("clean", "none", 0.6), cell("clean", "jpeg10", 0.5), cell("clean", "iss", 0.5),
        cell("a", "none", 0.1, 0.55), cell("a", "jpeg10", 0.45), cell("a", "iss", 0.2),
        cell("b", "none", 0.58), cell("b", "jpeg10", 0.5),
    ]}
    s = summarise(cells, ["clean", "a", "b"], ["none", "jpeg10", "iss"])
    assert s["verdict"]["a"] == {"protects": True, "broken_by": ["jpeg10", "early-stop"], "holds_against": ["iss"],
                                 "not_run": []}
    assert s["ratio"]["a"]["jpeg10"] == pytest.approx(0.9) and 0.9 >= BROKEN_RATIO
    # b never protected: nothing to break; its missing iss cell is listed as not run
    assert s["verdict"]["b"] == {"protects": False, "broken_by": [], "holds_against": [], "not_run": ["iss"]}


def test_cells_claimed_by_another_live_process_are_left_to_it(data, tmp_path, one_thread):
    (tmp_path / "cells").mkdir(parents=True)
    (tmp_path / "cells" / "random__bdr.json.lock").write_text("1")  # pid 1: alive, not us
    doc = _run(data, tmp_path, wait=False)
    assert {"method": "random", "defence": "bdr"} in doc["not_run"] and len(doc["cells"]) == 3
    assert (tmp_path / "cells" / "random__bdr.json.lock").read_text() == "1"  # not taken over


def test_collect_rewrites_results_without_training(data, tmp_path, monkeypatch, one_thread):
    _run(data, tmp_path, defences=["none"])
    monkeypatch.setattr(suite_mod, "_run_cell", lambda *a, **k: pytest.fail("collect must not train"))
    doc = suite_mod.collect(tmp_path, methods=["random"], defences=["none", "iss"], command="two runs")
    assert doc["command"] == "two runs" and len(doc["cells"]) == 2
    assert {"method": "random", "defence": "iss"} in doc["not_run"]
    assert json.loads((tmp_path / "results.json").read_text())["command"] == "two runs"
    with pytest.raises(FileNotFoundError, match="no suite run"):
        suite_mod.collect(tmp_path / "empty")
