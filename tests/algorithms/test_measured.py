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


def test_a_bench_protection_rows_colour_variant_is_not_taken_for_what_was_fitted():
    # bench_protection.py writes the data's colour variant into each row ("variant": "rgb"); the
    # recorded variant is the caller's --variant (session 9 recorded "rgb" for dilated cuda rows).
    base = _bench_doc("scratch", {"clean": 0.6})
    doc = _bench_doc("scratch", {"cuda": 0.3})
    for d in (base, doc):
        for r in d["results"]:
            r["variant"] = "rgb"
    rows = measured.attack_rows([doc], baselines=[base], variant="dilation=6, padding=reflect")
    assert [r["variant"] for r in rows["cuda"]] == ["dilation=6, padding=reflect"]
    assert [r["variant"] for r in measured.attack_rows([doc], baselines=[base])["cuda"]] == ["defaults"]


def test_two_backbones_at_one_size_quote_the_weaker_protection(tmp_path):
    # A protection has to hold against every backbone measured at that size: the higher ratio is quoted.
    path = str(tmp_path / "m.json")
    for sha, clean, prot in (("aaa", 0.5, 0.2), ("bbb", 0.3, 0.28)):
        base = _bench_doc("linear-probe", {"clean": clean}, backbone_sha=sha, resolution=224)
        measured.record_attacks([_bench_doc("linear-probe", {"cuda": prot}, backbone_sha=sha, resolution=224)],
                                baselines=[base], path=path)
    row = measured.nearest_attacks("cuda", resolution=224, path=path)["linear-probe"]
    assert row["protected_accuracy"] == 0.28 and row["ratio"] > 0.9


def test_two_bank_keys_of_one_setting_are_two_rows_and_the_weaker_is_quoted(tmp_path):
    # Session 9: one 224-px setting gave 0.45x with one key and 0.61x with another; recording the
    # second key replaced the first. Each key is now a row; the quote is the weaker, naming the other.
    path = str(tmp_path / "m.json")
    base = _bench_doc("linear-probe", {"clean": 0.5}, resolution=224)
    for seed, prot in ((1234, 0.225), (4321, 0.305)):
        doc = _bench_doc("linear-probe", {"cuda": prot}, resolution=224)
        doc["config"]["bank_seed"] = seed
        measured.record_attacks([doc], baselines=[base], path=path)
    rows = measured.attacks("cuda", path=path)
    assert sorted((r["bank"], r["protected_accuracy"]) for r in rows) == [("seed 1234", 0.225), ("seed 4321", 0.305)]
    quoted = measured.nearest_attacks("cuda", resolution=224, path=path)["linear-probe"]
    assert quoted["bank"] == "seed 4321" and quoted["ratio"] == pytest.approx(0.61)
    assert [r["bank"] for r in measured.other_keys(quoted, rows)] == ["seed 1234"]
    assert "0.305 vs 0.500 clean (0.61x; 0.45x with another bank key)" in measured.attacks_text("cuda", path=path)
    # the same key measured again replaces its own row only
    doc = _bench_doc("linear-probe", {"cuda": 0.3}, resolution=224)
    doc["config"]["bank_seed"] = 1234
    measured.record_attacks([doc], baselines=[base], path=path)
    assert sorted(r["protected_accuracy"] for r in measured.attacks("cuda", path=path)) == [0.3, 0.305]


def test_a_class_subset_task_is_its_own_setting_and_says_so(tmp_path):
    # bench_protection.py --classes 5-9: a 5-way task of the classes a backbone never saw. Recorded
    # as a plain row it read as a 10-way CIFAR-10 probe of the requested rows (chance 0.2 vs 0.1).
    path = str(tmp_path / "m.json")
    base, doc = _bench_doc("linear-probe", {"clean": 0.75}), _bench_doc("linear-probe", {"cuda": 0.375})
    for d in (base, doc):
        d["config"].update(classes=[5, 6, 7, 8, 9], train_rows_kept=252, test_rows_kept=49)
    ten = _bench_doc("linear-probe", {"cuda": 0.3})  # a 10-way row has no clean row of its own here
    rows = measured.attack_rows([doc, ten], baselines=[base])["cuda"]
    assert len(rows) == 1 and rows[0]["classes"] == [5, 6, 7, 8, 9] and rows[0]["ratio"] == pytest.approx(0.5)
    measured.record_attacks([doc], baselines=[base], path=path)
    measured.record_attacks([_bench_doc("linear-probe", {"cuda": 0.4})], baselines=[_bench_doc("linear-probe", {"clean": 0.8})],
                            path=path)
    assert sorted(r.get("classes") is None for r in measured.attacks("cuda", path=path)) == [False, True]
    assert "252 images of CIFAR-10 classes 5, 6, 7, 8, 9 only (5-way)" in measured.where(rows[0])
    assert "classes" not in measured.attack_rows([ten], baselines=[_bench_doc("linear-probe", {"clean": 0.6})])["cuda"][0]


def test_bank_of_names_a_saved_bank_file_or_the_fitting_seed():
    cmd = "python benchmarks/bench_protection.py --methods cuda tap --bank tap=/tmp/x/tap.bank.arrow --bank-seed 7"
    assert measured.bank_of("tap", {"_command": cmd}) == "file tap.bank.arrow"
    assert measured.bank_of("cuda", {"_command": cmd}) == "seed 7"  # only tap's bank was saved
    assert measured.bank_of("cuda", {"_command": "bench --bank=cuda=/a/b.arrow", "bank_seed": 3}) == "file b.arrow"
    assert measured.bank_of("cuda", {"_command": "bench", "bank_seed": 3}) == "seed 3"
    assert measured.bank_of("cuda", {"_command": "bench"}) is None  # the file does not say


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
            assert r["command"] and r["variant"] and r["bank"]  # which key or saved bank was measured
            if r["attacker"] != "scratch":  # a pretrained attacker names the backbone it started from
                b = r["backbone"]
                if measured.is_control(r):  # random weights: no file, named by its init seed
                    assert b["arch"] and b["init_seed"] is not None and r["backbone_tag"] == measured.backbone_tag(b)
                else:
                    assert b["arch"] and b["trained_on"] and b["checkpoint_sha256"]


def _labelfree_doc(attacker, clean, configs, *, backbone_sha="abc", resolution=32, command="labelfree"):
    """A bench_labelfree.py results document: clean accuracy per labelling, then per config
    ``(name, method, params, bank_params, key_purity, {labelling: protected accuracy})``."""
    b = None if attacker == "scratch" else {"kind": "small-cnn", "arch": "small-cnn-w8", "checkpoint_sha256": backbone_sha,
                                              "trained_on": "rows 100-200", "checkpoint_path": "/private/path"}
    enc = {"kind": "torchvision", "arch": "resnet18", "checkpoint": "enc.safetensors", "checkpoint_sha256": "e" * 64,
           "trained_on": "rows 300-400"}
    results = [{"name": name, "method": m, "params": params, "bank_params": bank_params, "key_purity": kp,
                "n_clusters": None if kp is not None else params.get("n_clusters", 10),
                "keying": "class" if kp is not None else "cluster", "encoder": None if kp is not None else enc,
                "quality": {"psnr_mean": 16.8, "ssim_mean": 0.6},
                "rows": [{"method": name, "labelling": lab, "clean_accuracy": clean[lab], "protected_accuracy": acc,
                          "ratio": acc / clean[lab], "floor": 0.1, "floor_ratio": 0.1 / clean[lab],
                          "train_accuracy": 0.7, "seconds": 1.0} for lab, acc in accs.items()]}
               for name, m, params, bank_params, kp, accs in configs]
    return {"command": command, "encoder": "/nowhere/enc.safetensors",
            "harness": {"epochs": 2, "seed": 0, "attacker": attacker, "backbone": b, "resolution": resolution,
                        "train_rows": [0, 500], "test_rows": [0, 100]},
            "clean": clean, "floors": {lab: 0.1 for lab in clean}, "results": results}


def test_labelfree_rows_are_recorded_as_fitted_without_labels_per_attacker_labelling():
    doc = _labelfree_doc("linear-probe", {"true": 0.6, "pairs": 0.8}, [
        ("k10", "cuda", {"n_clusters": 10, "kernel_size": 5}, {"kernel_size": 5}, None, {"true": 0.3, "pairs": 0.6}),
        ("k50", "cuda", {"n_clusters": 50}, {"kernel_size": 5}, None, {"true": 0.45}),
        ("p10", "cuda", {"kernel_size": 5}, {"kernel_size": 5}, 0.1, {"true": 0.2}),  # noisy true labels: no fit
    ])
    rows = measured.attack_rows([doc])["cuda"]
    got = {(r["variant"], r["labelling"]): (r["labels"], round(r["ratio"], 6)) for r in rows}
    # 5 x 5 is cuda's label-free default, K = 10 the keying default: "defaults"; each labelling
    # against the clean row of its own labelling
    assert got == {("defaults", "true"): ("none", 0.5), ("defaults", "pairs"): ("none", 0.75),
                   ("n_clusters=50", "true"): ("none", 0.75)}
    r = rows[0]
    assert r["encoder"]["checkpoint_sha256"] == "e" * 64 and r["n_clusters"] == 10 and r["attacker"] == "linear-probe"
    assert "checkpoint_path" not in r["backbone"] and r["backbone"]["checkpoint_sha256"] == "abc"
    assert r["train_size"] == 500 and r["test_size"] == 100 and r["resolution"] == 32


def test_an_older_labelfree_row_is_recorded_only_when_it_says_what_was_fitted():
    # no bank_params (files before session 9): only params that pin cuda's label-free kernel_size say
    # what was fitted; a row fitted 3 x 3 by the default of its day would read as today's 5 x 5
    doc = _labelfree_doc("scratch", {"true": 0.6}, [
        ("old-k10", "cuda", {"n_clusters": 10}, None, None, {"true": 0.5}),
        ("pinned-k10", "cuda", {"n_clusters": 10, "kernel_size": 3}, None, None, {"true": 0.55}),
    ])
    rows = measured.attack_rows([doc])["cuda"]
    assert [(r["variant"], r["protected_accuracy"]) for r in rows] == [("kernel_size=3", 0.55)]


def test_label_free_and_labelled_rows_are_never_quoted_for_each_other(tmp_path):
    path = tmp_path / "m.json"
    labelled = _bench_doc("linear-probe", {"clean": 0.8, "cuda": 0.4})
    free = _labelfree_doc("linear-probe", {"true": 0.8, "pairs": 0.9}, [
        ("k10", "cuda", {"n_clusters": 10}, {"kernel_size": 5}, None, {"true": 0.52, "pairs": 0.63})])
    measured.record_attacks([labelled], path=path)
    measured.record_attacks([free], path=path)  # same setting, other fit: kept beside the labelled row
    assert sorted(r["labels"] for r in measured.attacks("cuda", path=path)) == ["none", "none", "true"]
    assert measured.nearest_attacks("cuda", path=path)["linear-probe"]["protected_accuracy"] == 0.4
    with_labels = measured.summary("cuda", labels="true", path=path)
    without = measured.summary("cuda", labels="none", path=path)
    both = measured.summary("cuda", path=path)
    assert "0.400 vs 0.800" in with_labels and "0.520" not in with_labels
    assert "a linear probe 0.520 vs 0.800 clean (0.65x; attacker with 5 groups of 2 classes: 0.70x)" in without
    assert "0.400" not in without and "do not describe a bank fitted without them" in without
    assert "keyed by K-means clusters (K = 10) of a resnet18 encoder trained on rows 300-400" in without
    head, _, tail = both.partition("fitted without labels:")
    assert "0.400 vs 0.800" in head and "0.520" not in head and "0.520 vs 0.800" in tail
    assert "0.520" not in measured.attacks_text("cuda", path=path)
    # a re-run of the label-free row replaces it, never the labelled one
    rerun = _labelfree_doc("linear-probe", {"true": 0.8, "pairs": 0.9}, [
        ("k10", "cuda", {"n_clusters": 10}, {"kernel_size": 5}, None, {"true": 0.56, "pairs": 0.63})])
    measured.record_attacks([rerun], path=path)
    rows = measured.attacks("cuda", labels="none", labelling="true", path=path)
    assert [r["protected_accuracy"] for r in rows] == [0.56]
    assert [r["protected_accuracy"] for r in measured.attacks("cuda", labels="true", path=path)] == [0.4]
    with pytest.raises(ValueError, match="labels="):
        measured.summary("cuda", labels="yes", path=path)


def test_a_method_that_never_takes_labels_quotes_its_label_free_rows_as_its_own(tmp_path):
    path = tmp_path / "m.json"
    uc = _labelfree_doc("finetune", {"true": 0.6}, [("uc", "clusters", {}, {}, None, {"true": 0.54})])
    measured.record_attacks([uc], path=path)
    assert measured.own_labels("clusters") == "none" and measured.own_labels("cuda") == "true"
    assert measured.nearest_attacks("clusters", path=path)["finetune"]["ratio"] == pytest.approx(0.9)
    assert "fine-tuning 0.540 vs 0.600 clean (0.90x)" in measured.summary("clusters", path=path)


def test_a_bench_protection_row_of_a_bank_fitted_without_labels_is_recorded_as_such():
    doc = _bench_doc("linear-probe", {"clean": 0.8, "cuda": 0.4})
    doc["results"][1]["labels"] = "none"  # bench_protection.py --bank cuda=<a --no-labels bank>
    (row,) = measured.attack_rows([doc])["cuda"]
    assert row["labels"] == "none"
    assert measured.attack_rows([_bench_doc("linear-probe", {"clean": 0.8, "cuda": 0.4})])["cuda"][0]["labels"] == "true"


def test_a_label_free_row_fitted_with_other_options_is_named_not_passed_off_as_the_default(tmp_path):
    path = tmp_path / "m.json"
    uc = _labelfree_doc("linear-probe", {"true": 0.6}, [
        ("uc", "clusters", {}, {"profile": "cpu", "epochs": 6.0}, None, {"true": 0.5})])
    measured.record_attacks([uc], path=path)
    (row,) = measured.attacks("clusters", path=path)
    assert row["variant"] == "profile=cpu, epochs=6.0"  # what the bank says was fitted ("auto" resolved)
    assert measured.nearest_attacks("clusters", path=path) == {}
    assert measured.labelfree_text("clusters", path=path) == (
        "not measured for clusters with its label-free defaults (measured with other options: profile=cpu, "
        "epochs=6.0; see uetransforms methods clusters)")


def _random_doc(rows, *, init_seed=0, resolution=224):
    """A bench row whose attacker probes a torchvision ResNet-18 with *random* weights (no checkpoint file)."""
    doc = _bench_doc("linear-probe", rows, resolution=resolution)
    for r in doc["results"]:
        r["backbone"] = {"kind": "torchvision", "arch": "resnet18", "weights": None, "random_init": True,
                         "init_seed": init_seed, "image_size": resolution}
    return doc


def test_random_weights_rows_are_recorded_as_controls_listed_never_quoted(tmp_path):
    # Sessions 9-10 could not record the random-init ResNet-18 probe (0.87x for cuda k5 d7 at 224 px):
    # the row kept no sha256, so it would read as a nameless ResNet-18 and be quoted as an attacker.
    path = str(tmp_path / "m.json")
    base = _bench_doc("linear-probe", {"clean": 0.5}, resolution=224)
    measured.record_attacks([_bench_doc("linear-probe", {"cuda": 0.2}, resolution=224)], baselines=[base], path=path)
    measured.record_attacks([_random_doc({"clean": 0.35, "cuda": 0.30})], path=path)
    rows = measured.attacks("cuda", controls=True, path=path)
    control = [r for r in rows if measured.is_control(r)]
    assert len(rows) == 2 and len(control) == 1
    c = control[0]
    assert c["backbone"]["random_init"] is True and c["backbone"]["init_seed"] == 0
    assert c["backbone_tag"] == "torchvision resnet18 @random, init seed 0" and c["ratio"] == pytest.approx(0.30 / 0.35)
    assert "random weights (init seed 0), a control" in measured.where(c)
    # the quote stays the trained backbone's although the control protects less (0.86x > 0.40x)
    assert measured.attacks("cuda", path=path) == [r for r in rows if not measured.is_control(r)]
    assert measured.nearest_attacks("cuda", resolution=224, path=path)["linear-probe"]["ratio"] == pytest.approx(0.4)
    assert "0.86x" not in measured.attacks_text("cuda", path=path)


def test_file_less_backbones_are_told_apart_by_name_and_init_seed(tmp_path):
    # Two random inits (or two hub weights) have no sha256; before backbone_tag they were one setting,
    # so the second replaced the first and one's protected row could pair with the other's clean row.
    path = str(tmp_path / "m.json")
    measured.record_attacks([_random_doc({"clean": 0.35, "cuda": 0.30}, init_seed=0)], path=path)
    measured.record_attacks([_random_doc({"clean": 0.40, "cuda": 0.20}, init_seed=1)], path=path)
    rows = measured.attacks("cuda", controls=True, path=path)
    assert sorted((r["backbone"]["init_seed"], round(r["ratio"], 3)) for r in rows) == [(0, 0.857), (1, 0.5)]
    # a protected row with a clean row of another init only has no baseline
    assert measured.attack_rows([_random_doc({"cuda": 0.3}, init_seed=2)],
                                baselines=[_random_doc({"clean": 0.35}, init_seed=0)]) == {}
    # a file-backed backbone keeps no tag (its sha256 is the identity), as every row recorded before
    base = _bench_doc("linear-probe", {"clean": 0.5})
    row = measured.attack_rows([_bench_doc("linear-probe", {"cuda": 0.2})], baselines=[base])["cuda"][0]
    assert "backbone_tag" not in row and measured.backbone_tag(row["backbone"]) is None
    assert measured.backbone_tag({"kind": "torchvision", "arch": "resnet50", "weights": "IMAGENET1K_V2"}) == \
        "torchvision resnet50 @IMAGENET1K_V2"


def test_a_backbone_reading_resized_images_is_its_own_setting(tmp_path):
    # Session 11: the same 224-px protected images probed by a backbone that first resizes them to its own
    # 64 px replaced the 224-px row of that key (0.64x -> 0.76x); the read size is part of the setting.
    path = str(tmp_path / "m.json")

    def doc(rows, side):
        d = _bench_doc("linear-probe", rows, resolution=224)
        for r in d["results"]:
            r["backbone"]["image_size"] = side
        return d
    measured.record_attacks([doc({"clean": 0.70, "cuda": 0.45}, 224)], path=path)
    measured.record_attacks([doc({"clean": 0.73, "cuda": 0.55}, 64)], path=path)
    rows = measured.attacks("cuda", path=path)
    assert sorted((r.get("backbone_size") or 0, round(r["ratio"], 3)) for r in rows) == [(0, 0.643), (64, 0.753)]
    read = next(r for r in rows if r.get("backbone_size"))
    assert "224 px resized to 64 px for the backbone" in measured.where(read)
    assert "resized" not in measured.where(next(r for r in rows if not r.get("backbone_size")))
    # a clean row read at another size is no baseline for a protected row
    assert measured.attack_rows([doc({"cuda": 0.5}, 64)], baselines=[doc({"clean": 0.7}, 224)]) == {}


def test_the_from_scratch_model_and_a_gpu_run_are_part_of_the_setting(tmp_path):
    # Session 12: the GPU rows at 224 px train a torchvision resnet18 from scratch; a small-CNN clean row
    # is no baseline for them, a CPU row is not replaced by a GPU one, and the table cell says both.
    path = str(tmp_path / "m.json")

    def doc(rows, arch=None, device=None):
        d = _bench_doc("scratch", rows, resolution=224)
        d["config"].update({k: v for k, v in (("arch", arch), ("device", device)) if v is not None})
        return d
    measured.record_attacks([doc({"clean": 0.60, "cuda": 0.30})], path=path)
    measured.record_attacks([doc({"clean": 0.88, "cuda": 0.44}, "resnet18", "cuda")], path=path)
    measured.record_attacks([doc({"clean": 0.80, "cuda": 0.60}, "cnn-small", "cuda:0")], path=path)
    rows = {(r.get("victim"), r.get("device")): r for r in measured.attacks("cuda", path=path)}
    assert {k: round(r["ratio"], 3) for k, r in rows.items()} == {
        (None, None): 0.5, (None, "gpu"): 0.75, ("resnet18", "gpu"): 0.5}
    assert [measured.attacker_words(rows[k]) for k in ((None, None), (None, "gpu"), ("resnet18", "gpu"))] == [
        "scratch", "scratch (GPU)", "scratch (resnet18, GPU)"]
    assert "victim" not in rows[None, None] and "device" not in rows[None, None]  # older rows keep their bytes
    # a CPU small-CNN clean row is no baseline for a GPU resnet18 row
    assert measured.attack_rows([doc({"cuda": 0.4}, "resnet18", "cuda")], baselines=[doc({"clean": 0.6})]) == {}


def test_labelfree_variant_counts_the_size_defaults_of_the_images_size():
    # cuda fitted without labels on 96-px images takes its photo filters by default: such a fit is "defaults",
    # and the same filters on 32-px images are a variant (there the defaults are 5 x 5, zero-padded).
    photo = {"kernel_size": 7, "padding": "reflect", "dilation": "auto"}
    assert measured.labelfree_variant("cuda", photo, 96) == "defaults"
    assert measured.labelfree_variant("cuda", photo, 32) == "kernel_size=7, padding=reflect, dilation=auto"
    assert measured.labelfree_variant("cuda", {"kernel_size": 5}, 96) == "kernel_size=5"
    assert measured.labelfree_variant("cuda", {"kernel_size": 5}) == "defaults"  # no size known: the declared ones
