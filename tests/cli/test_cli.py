"""The ``uetransforms`` command line, run in-process through ``main([...])``."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import datasets
import numpy as np
import pytest
from PIL import Image

import uetransforms as ue
from uetransforms.cli import load_data, main, parse_param


@pytest.fixture
def tiny_parquet(tmp_path) -> str:
    rng = np.random.default_rng(0)
    ds = datasets.Dataset.from_dict(
        {"img": list(rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)), "label": [0, 1, 2, 0, 1, 2]},
        features=datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])}),
    )
    path = tmp_path / "tiny.parquet"
    ds.to_parquet(str(path))
    return str(path)


def test_methods_lists_every_key(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[0] == "key"
    listed = [line.split()[0] for line in lines[2:]]
    assert listed == [m["key"] for m in ue.methods()]


def test_methods_key_shows_what_was_measured(capsys, monkeypatch, tmp_path):
    import json

    from uetransforms.algorithms import measured

    facts = {"profile": "cpu", "command": "x", "protects": True, "broken_by": ["iss"], "holds_against": [],
             "not_run": [], "harness": {"arch": "cnn-small", "epochs": 8, "train_size": 10000},
             "effect": {"protected_accuracy": 0.194, "clean_accuracy": 0.66, "ratio": 0.294},
             "defences": {"iss": {"accuracy": 0.594, "clean_accuracy": 0.5985, "ratio": 0.9925}}}
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"schema": measured.SCHEMA, "methods": {"em": {"cpu": facts}}}))
    monkeypatch.setattr(measured, "ASSET", str(path))
    assert main(["methods", "em"]) == 0
    out = capsys.readouterr().out
    assert "measured: cpu harness" in out and "0.194 against 0.660" in out and "broken by" in out
    assert any(line.split()[:4] == ["iss", "0.594", "0.599", "0.99"] for line in out.splitlines())
    assert next(r for r in ue.methods() if r["key"] == "em")["measured"] == measured.summary("em")
    assert main(["methods", "lsp"]) == 0
    assert "measured: nothing recorded yet" in capsys.readouterr().out


def test_fit_writes_a_loadable_bank(tmp_path, tiny_parquet, capsys):
    out = tmp_path / "b.arrow"
    rc = main(["fit", "cuda", tiny_parquet, "--image-column", "img", "--out", str(out), "--seed", "7",
               "--param", "kernel_size=3", "--param", "blur_parameter=3/10"])
    assert rc == 0, capsys.readouterr().err
    bank = ue.NoiseBank.load(out)
    assert (bank.method, bank.kind, bank.num_keys, bank.image_shape) == ("cuda", "conv", 3, (3, 8, 8))
    assert bank.params["blur_parameter"] == pytest.approx(0.3) and bank.params["seed"] == 7
    # Same seed, same data: the same kernels.
    assert main(["fit", "cuda", tiny_parquet, "--image-column", "img", "--out", str(out), "--seed", "7",
                 "--param", "blur_parameter=0.3", "--overwrite"]) == 0
    np.testing.assert_array_equal(ue.NoiseBank.load(out).tensors["weight"], bank.tensors["weight"])


def test_fit_without_seed_draws_a_fresh_private_key(tmp_path, tiny_parquet):
    a, b = tmp_path / "a.arrow", tmp_path / "b.arrow"
    assert main(["fit", "random", tiny_parquet, "--image-column", "img", "--out", str(a)]) == 0
    assert main(["fit", "random", tiny_parquet, "--image-column", "img", "--out", str(b)]) == 0
    ba, bb = ue.NoiseBank.load(a), ue.NoiseBank.load(b)
    assert ba.params["seed"] != bb.params["seed"]
    assert not np.array_equal(ba.tensors["delta"], bb.tensors["delta"])


def test_fit_refuses_to_replace_a_bank(tmp_path, tiny_parquet, capsys):
    out = tmp_path / "b.arrow"
    out.write_bytes(b"precious")
    assert main(["fit", "random", tiny_parquet, "--image-column", "img", "--out", str(out)]) == 2
    assert "error:" in capsys.readouterr().err and out.read_bytes() == b"precious"


def test_protect_writes_the_publish_layout(tmp_path, tiny_parquet, capsys):
    bank = tmp_path / "b.arrow"
    assert main(["fit", "random", tiny_parquet, "--image-column", "img", "--out", str(bank), "--seed", "1"]) == 0
    out = tmp_path / "pub"
    rc = main(["protect", tiny_parquet, "--bank", str(bank), "--out", str(out), "--image-column", "img",
               "--batch-size", "4"])
    assert rc == 0, capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["README.md", "data"]
    assert os.listdir(out / "data") == ["train-00000-of-00001.parquet"]
    loaded = datasets.load_dataset(str(out))["train"]
    src = datasets.Dataset.from_parquet(tiny_parquet)
    expected = src.map(ue.Protect(ue.NoiseBank.load(bank), image_column="img"), batched=True)
    assert loaded["label"] == src["label"]
    for got, want in zip(loaded["img"], expected["img"]):
        assert got.format == "PNG"
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # A second run into the same directory is refused with one error line, not a traceback.
    capsys.readouterr()
    assert main(["protect", tiny_parquet, "--bank", str(bank), "--out", str(out), "--image-column", "img"]) == 2
    err = capsys.readouterr().err
    assert "error: output directory" in err and "Traceback" not in err


def test_bad_args_exit_2_with_an_error_line(tmp_path, tiny_parquet, capsys):
    assert main(["fit"]) == 2  # argparse: missing arguments
    assert "error:" in capsys.readouterr().err
    assert main(["nonsense"]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["fit", "nope", tiny_parquet, "--out", str(tmp_path / "x.arrow")]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: unknown method 'nope'")
    assert "Traceback" not in err
    assert main(["fit", "cuda", tiny_parquet, "--out", str(tmp_path / "x.arrow")]) == 2  # no 'image' column
    err = capsys.readouterr().err
    assert "error:" in err and "img" in err and "Traceback" not in err
    assert main(["fit", "cuda", str(tmp_path / "missing.parquet"), "--out", str(tmp_path / "x.arrow")]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["fit", "cuda", tiny_parquet, "--image-column", "img", "--out", str(tmp_path / "x.arrow"),
                 "--param", "no-equals-sign"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path, tiny_parquet, capsys):
    assert main(["--debug", "fit", "nope", tiny_parquet, "--out", str(tmp_path / "x.arrow")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "error: unknown method" in err


def test_demo_delegates_to_run_demo(tmp_path, monkeypatch):
    seen = {}

    def run_demo(out_dir="uetransforms.cli.demo", *, quick=False):
        seen.update(out_dir=out_dir, quick=quick)
        return {}

    fake = types.ModuleType("uetransforms.cli.demo")
    fake.run_demo = run_demo
    monkeypatch.setitem(sys.modules, "uetransforms.cli.demo", fake)
    assert main(["demo", "--out", str(tmp_path / "d"), "--quick"]) == 0
    assert seen == {"out_dir": str(tmp_path / "d"), "quick": True}


def test_parse_param():
    assert parse_param("epsilon=8/255") == ("epsilon", pytest.approx(8 / 255))
    assert parse_param("kernel_size=3") == ("kernel_size", 3)
    assert parse_param("norm=linf") == ("norm", "linf")
    assert parse_param("center_parameter=null") == ("center_parameter", None)
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_param("=3")


def test_load_data_sources(tmp_path, tiny_parquet):
    src = datasets.Dataset.from_parquet(tiny_parquet)
    # save_to_disk directory (a DatasetDict: --split picks one)
    datasets.DatasetDict({"train": src, "test": src.select(range(2))}).save_to_disk(str(tmp_path / "arrow"))
    assert len(load_data(str(tmp_path / "arrow"), split="test")) == 2
    # Parquet glob
    assert len(load_data(str(tmp_path / "tiny*.parquet"))) == 6
    # image folder: one sub-directory per class
    for cls in ("cat", "dog"):
        (tmp_path / "folder" / cls).mkdir(parents=True)
        Image.new("RGB", (4, 4), (1, 2, 3)).save(tmp_path / "folder" / cls / "x.png")
    ds = load_data(str(tmp_path / "folder"), split="train")
    assert len(ds) == 2 and ds.features["label"].names == ["cat", "dog"]
    with pytest.raises(FileNotFoundError):
        load_data(str(tmp_path / "nothing-*.parquet"))


def test_python_dash_m_runs_the_cli():
    res = subprocess.run([sys.executable, "-m", "uetransforms", "methods"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "cuda" in res.stdout


def test_protect_push_is_private_by_default(tmp_path, tiny_parquet, monkeypatch):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub.HfApi, "whoami", lambda self, *a, **kw: {"name": "me"})
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo",
                        lambda self, repo_id, **kw: calls.append((repo_id, {**kw, "token": self.token})))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", lambda self, **kw: calls.append(("folder", kw)))
    bank = tmp_path / "b.arrow"
    assert main(["fit", "random", tiny_parquet, "--image-column", "img", "--out", str(bank)]) == 0
    rc = main(["protect", tiny_parquet, "--bank", str(bank), "--out", str(tmp_path / "pub"), "--image-column", "img",
               "--push", "me/tiny", "--token", "hf_x"])
    assert rc == 0
    (repo, kw), (what, card) = calls
    assert repo == "me/tiny" and kw["private"] is True and kw["token"] == "hf_x"
    # The folder written to --out is what is uploaded, card and shards, in one commit.
    assert what == "folder" and card["folder_path"] == str(tmp_path / "pub") and card["repo_id"] == "me/tiny"


def test_protect_push_offline_fails_in_cli_terms_before_writing(tmp_path, tiny_parquet, monkeypatch, capsys):
    import huggingface_hub
    from huggingface_hub import errors

    def offline(self, *a, **kw):
        raise errors.OfflineModeIsEnabled("offline mode is enabled")

    monkeypatch.setattr(huggingface_hub.HfApi, "whoami", offline)
    bank = tmp_path / "b.arrow"
    assert main(["fit", "random", tiny_parquet, "--image-column", "img", "--out", str(bank)]) == 0
    rc = main(["protect", tiny_parquet, "--bank", str(bank), "--out", str(tmp_path / "pub"), "--image-column", "img",
               "--push", "me/tiny"])
    err = capsys.readouterr().err
    assert rc != 0 and "--push" in err and "HF_HUB_OFFLINE" in err and "push=True" not in err
    assert not (tmp_path / "pub").exists()  # failed before protecting or writing anything


# ---------------------------------------------------------------------------- first-run ergonomics (issue 9)
def test_fit_prints_a_quality_line_and_warns_when_visible(tmp_path, tiny_parquet, capsys):
    assert main(["fit", "cuda", tiny_parquet, "--image-column", "img", "--out", str(tmp_path / "c.arrow")]) == 0
    cap = capsys.readouterr()
    line = next(ln for ln in cap.out.splitlines() if ln.startswith("quality:"))
    assert "PSNR" in line and "SSIM" in line and "L-inf" in line and "on 6 images" in line
    assert "likely visible" in cap.err  # a blur of random pixels is far from invisible
    assert main(["fit", "random", tiny_parquet, "--image-column", "img", "--out", str(tmp_path / "r.arrow"),
                 "--param", "epsilon=2/255"]) == 0
    cap = capsys.readouterr()
    assert "L-inf 2/255" in cap.out and "likely visible" not in cap.err


def test_limit_fits_and_protects_only_the_first_rows(tmp_path, tiny_parquet, capsys):
    bank = tmp_path / "b.arrow"
    assert main(["fit", "random", tiny_parquet, "--image-column", "img", "--out", str(bank), "--limit", "2"]) == 0
    cap = capsys.readouterr()
    assert "fitting 'random' on 2 images" in cap.err and "on 2 images" in cap.out  # fit and its quality probe
    out = tmp_path / "pub"
    assert main(["protect", tiny_parquet, "--bank", str(bank), "--out", str(out), "--image-column", "img",
                 "--label-column", "label", "--limit", "2"]) == 0
    assert datasets.load_dataset(str(out))["train"]["label"] == [0, 1]
    assert main(["fit", "random", tiny_parquet, "--image-column", "img", "--out", str(tmp_path / "z.arrow"),
                 "--limit", "0"]) == 2
    assert "--limit must be a positive" in capsys.readouterr().err


def test_splits_are_chosen_and_announced(tmp_path, tiny_parquet, capsys):
    src = datasets.Dataset.from_parquet(tiny_parquet)
    datasets.DatasetDict({"train": src, "test": src.select(range(3))}).save_to_disk(str(tmp_path / "dd"))
    bank = tmp_path / "b.arrow"
    assert main(["fit", "random", str(tmp_path / "dd"), "--image-column", "img", "--out", str(bank)]) == 0
    assert "fit: using split 'train' of ['train', 'test']" in capsys.readouterr().err
    out = tmp_path / "pub"
    assert main(["protect", str(tmp_path / "dd"), "--bank", str(bank), "--out", str(out), "--image-column", "img",
                 "--splits", "test"]) == 0
    assert "protect: splits test (3 rows)" in capsys.readouterr().err
    assert list(datasets.load_dataset(str(out))) == ["test"]
    assert main(["protect", str(tmp_path / "dd"), "--bank", str(bank), "--out", str(tmp_path / "all"),
                 "--image-column", "img"]) == 0
    assert "protect: splits train (6 rows), test (3 rows) (all; choose with --splits)" in capsys.readouterr().err
    assert main(["protect", str(tmp_path / "dd"), "--bank", str(bank), "--out", str(tmp_path / "x"),
                 "--image-column", "img", "--splits", "validation"]) == 2
    assert "--splits names ['validation']" in capsys.readouterr().err


def test_errors_speak_cli_flags_not_python_arguments(tmp_path, tiny_parquet, capsys):
    # The library says "pass image_column=<name>"; the CLI user must read the flag to type.
    assert main(["fit", "cuda", tiny_parquet, "--out", str(tmp_path / "x.arrow")]) == 2
    err = capsys.readouterr().err
    assert "--image-column" in err and "image_column=" not in err


def test_every_option_has_help_text():
    from uetransforms.cli import build_parser

    for command in ("fit", "protect", "evaluate", "demo", "methods"):  # evaluate: issue 24, point 7
        parser = build_parser([command])
        sub = next(a for a in parser._actions if a.dest == "command").choices[command]
        for action in sub._actions:
            if action.dest in ("help",):
                continue
            assert action.help, f"`uetransforms {command}` option {action.option_strings or action.dest} has no help"


def test_protect_card_flags(tmp_path, tiny_parquet):
    bank = tmp_path / "b.arrow"
    assert main(["fit", "random", tiny_parquet, "--image-column", "img", "--out", str(bank)]) == 0
    out = tmp_path / "pub"
    assert main(["protect", tiny_parquet, "--bank", str(bank), "--out", str(out), "--image-column", "img",
                 "--license", "cc-by-4.0", "--source-dataset", "me/src"]) == 0
    card = (out / "README.md").read_text()
    assert "license: cc-by-4.0" in card and "- me/src" in card


def test_protecting_a_published_copy_again_is_refused_unless_allowed(tmp_path, tiny_parquet, capsys):
    bank = tmp_path / "b.arrow"
    assert main(["fit", "random", tiny_parquet, "--image-column", "img", "--out", str(bank)]) == 0
    assert main(["protect", tiny_parquet, "--bank", str(bank), "--out", str(tmp_path / "once"),
                 "--image-column", "img"]) == 0
    capsys.readouterr()
    again = ["protect", str(tmp_path / "once"), "--bank", str(bank), "--out", str(tmp_path / "twice"),
             "--image-column", "img"]
    assert main(again) == 2
    err = capsys.readouterr().err
    assert "already protected" in err and "--allow-double" in err and "allow_double=" not in err
    assert not (tmp_path / "twice").exists()
    assert main(again + ["--allow-double"]) == 0


def test_protect_size_policy_and_png_flags(tmp_path, tiny_parquet, capsys):
    """A bank fitted on other sizes: refused in CLI terms, then published with --size-mismatch resize;
    --png-encoder/--png-level choose the encoder (same pixels, other bytes)."""
    rng = np.random.default_rng(1)
    bank = ue.NoiseBank(method="random", kind="additive", keying="class", keys=np.arange(3),
                        tensors={"delta": rng.uniform(-8 / 255, 8 / 255, (3, 3, 6, 6)).astype(np.float32)},
                        params={"epsilon": 8 / 255, "norm": "linf"})
    path = str(bank.save(tmp_path / "b6.arrow"))
    base = ["protect", tiny_parquet, "--bank", path, "--image-column", "img"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 2
    assert "pass --size-mismatch 'resize'" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "b"), "--size-mismatch", "resize"]) == 0
    assert main([*base, "--out", str(tmp_path / "c"), "--size-mismatch", "resize", "--png-encoder", "pil",
                 "--png-level", "9"]) == 0
    capsys.readouterr()
    b, c = (datasets.load_dataset(str(tmp_path / x), split="train") for x in "bc")
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(b["img"], c["img"]))
    raw = [d.cast_column("img", datasets.Image(decode=False))["img"][0]["bytes"] for d in (b, c)]
    assert raw[0] != raw[1]
    assert main([*base, "--out", str(tmp_path / "d"), "--size-mismatch", "resize", "--png-encoder", "isal",
                 "--png-level", "7"]) == 2
    err = capsys.readouterr().err
    assert "level must be an integer 0..3" in err and "Traceback" not in err


# ------------------------------------------------------------------ secrets never printed; clear errors at the door
def test_fit_never_prints_the_seed(tmp_path, tiny_parquet, capsys):
    assert main(["fit", "random", tiny_parquet, "--image-column", "img", "--out", str(tmp_path / "b.arrow"),
                 "--seed", "987654321"]) == 0
    captured = capsys.readouterr()
    assert "987654321" not in captured.err + captured.out
    assert "the --seed given, kept only in the bank" in captured.err


def test_push_that_cannot_reach_the_hub_does_not_claim_a_copy_exists(tmp_path, tiny_parquet, monkeypatch, capsys):
    import huggingface_hub

    def unreachable(self, *a, **kw):
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(huggingface_hub.HfApi, "whoami", unreachable)
    bank = tmp_path / "b.arrow"
    assert main(["fit", "random", tiny_parquet, "--image-column", "img", "--out", str(bank)]) == 0
    rc = main(["protect", tiny_parquet, "--bank", str(bank), "--out", str(tmp_path / "pub"), "--image-column", "img",
               "--push", "me/x", "--token", "hf_bogus"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot reach the Hugging Face Hub" in err
    assert "is complete" not in err and "leave out --push to write the copy to --out only" in err
    assert not (tmp_path / "pub").exists()


def test_max_shard_size_typo_names_the_flag(tmp_path, tiny_parquet, capsys):
    rc = main(["protect", tiny_parquet, "--bank", str(tmp_path / "b.arrow"), "--out", str(tmp_path / "pub"),
               "--max-shard-size", "abc"])
    err = capsys.readouterr().err
    assert rc == 2 and "argument --max-shard-size: 'abc' is not a size; use a number with a unit, e.g. 500MB" in err


def test_param_fraction_by_zero_is_named(tmp_path, tiny_parquet, capsys):
    rc = main(["fit", "random", tiny_parquet, "--image-column", "img", "--out", str(tmp_path / "b.arrow"),
               "--param", "epsilon=8/0"])
    err = capsys.readouterr().err
    assert rc == 2 and "--param 'epsilon=8/0': the fraction divides by zero; write e.g. --param epsilon=8/255" in err


def test_protect_column_flags_are_checked_at_the_door_in_flag_names(tmp_path, tiny_parquet, capsys, monkeypatch):
    bank = tmp_path / "b.arrow"
    assert main(["fit", "random", tiny_parquet, "--image-column", "img", "--out", str(bank)]) == 0
    capsys.readouterr()
    from uetransforms.integrations import datasets as integration

    def never(*a, **kw):  # nothing may be protected before the flags are checked
        raise AssertionError("protected before the column flags were checked")

    monkeypatch.setattr(integration.Protect, "__call__", never)
    rc = main(["protect", tiny_parquet, "--bank", str(bank), "--out", str(tmp_path / "pub"), "--image-column", "img",
               "--label-column", "lbl"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "--label-column 'lbl' is not a column of DATA (its columns: ['img', 'label'])" in err
    assert "label_column" not in err and not (tmp_path / "pub").exists()


# ---------------------------------------------------------------------------- issue 24
def _mixed_folder(root) -> str:
    rng = np.random.default_rng(2)
    for c, name in enumerate(("cats", "dogs")):
        (root / name).mkdir(parents=True)
        for i, (w, h) in enumerate([(40, 30), (30, 40), (64, 48)]):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / name / f"p{c}{i}.jpg")
    return str(root)


def test_fit_on_mixed_sizes_refuses_a_one_size_bank_and_shows_quality(tmp_path, capsys):
    photos = _mixed_folder(tmp_path / "photos")
    assert main(["fit", "random", photos, "--out", str(tmp_path / "r.bank.arrow")]) == 2
    err = capsys.readouterr().err
    assert "3 sizes" in err and "--size-mismatch resize" in err.replace("'", "")
    assert not (tmp_path / "r.bank.arrow").exists()
    assert main(["fit", "random", photos, "--out", str(tmp_path / "r.bank.arrow"), "--size-mismatch", "resize"]) == 0
    out = capsys.readouterr()
    assert "warning: method 'random' does not protect" in out.err  # the negative control, said loudly
    assert "quality: PSNR" in out.out and "any image size" in out.out
    assert main(["fit", "cuda", photos, "--out", str(tmp_path / "c.bank.arrow")]) == 0
    out = capsys.readouterr()
    assert "quality: PSNR" in out.out and "does not protect" not in out.err


def test_methods_for_answers_from_measured_facts(capsys, tmp_path, monkeypatch):
    import json

    from uetransforms.algorithms import measured
    from uetransforms.cli import method_guide

    assert main(["methods", "--for", "jpeg"]) == 0
    out = capsys.readouterr().out
    d = measured.for_method("cuda")["defences"]["jpeg10"]
    assert f"cuda: holds under JPEG-10: {d['accuracy']:.3f}" in out
    assert main(["methods", "--for", "pretrained"]) == 0
    out = capsys.readouterr().out
    # a method never attacked with a pretrained model is said to be so, not guessed (since session 11 every
    # shipped method has a row, so the rule is checked on a facts file with none as well)
    for key in (m["key"] for m in ue.methods()):
        if not measured.attacks(key, labels=measured.own_labels(key), labelling="true"):
            assert f"  {key}: not measured" in out
    empty = tmp_path / "none.json"
    empty.write_text(json.dumps({"schema": measured.SCHEMA, "methods": {}, "attacks": {}}))
    monkeypatch.setattr(measured, "ASSET", str(empty))
    assert "  bayes: not measured" in method_guide("pretrained")
    monkeypatch.undo()
    # the guide answers for each method as fitted by default (with labels, unless it never takes
    # them) and attacked with the true labels: label-free rows have their own answer (no-labels)
    def own(key):
        return measured.attacks(key, labels=measured.own_labels(key), labelling="true")

    keys = measured.load().get("attacks", {})
    pretrained = {(k, r["variant"], r["resolution"]) for k in keys for r in own(k) if r["attacker"] in measured.PRETRAINED}
    for key in ("cuda", "cudatap"):  # every attacker row of a setting with a pretrained row is quoted, at its size
        for row in own(key):
            if (key, row["variant"], row["resolution"]) not in pretrained:
                continue  # a from-scratch row alone (e.g. 96 px) is no answer to "pretrained"
            opts = "" if row["variant"] == "defaults" else f" (with {row['variant']})"
            line = next(x for x in out.splitlines() if x.startswith(f"  {key}{opts} at {row['resolution']} px:"))
            # where two backbones were measured at one size, the one it protected least against is quoted
            weakest = max((r for r in own(key) if (r["variant"], r["resolution"], r["attacker"])
                           == (row["variant"], row["resolution"], row["attacker"])), key=lambda r: r["ratio"])
            victim = f" ({weakest['victim']})" if weakest.get("victim") else ""  # a from-scratch model other than the CNN
            assert f"{measured.ATTACKER_WORDS[row['attacker']]}{victim} {weakest['ratio']:.2f}x" in line
    # ranked by the weaker of the two pretrained attackers: the first line is the most robust
    worst: dict = {}
    for key in keys:
        for r in own(key):
            if r["attacker"] in measured.PRETRAINED:
                got = worst.setdefault((key, r["variant"], r["resolution"]), {})
                # several backbones or bank keys of one attacker: the weakest is the one quoted
                got[r["attacker"]] = max(got.get(r["attacker"], 0.0), r["ratio"])
    best_key, best_variant, best_px = min((k for k, v in worst.items() if len(v) == 2),
                                          key=lambda k: max(worst[k].values()))
    opts = "" if best_variant == "defaults" else f" (with {best_variant})"
    assert out.splitlines()[1].startswith(f"  {best_key}{opts} at {best_px} px:")
    assert main(["methods", "--for", "no-labels"]) == 0
    assert "clusters" in capsys.readouterr().out and main(["methods", "--for", "nope"]) == 2


def test_pretrained_guide_names_each_numbers_backbone_and_its_bank_keys(tmp_path, monkeypatch):
    """Every number of the pretrained guide carries the tag of its own backbone and size (a 224-px
    probe of one backbone is never read as another's), and a setting measured with two bank keys
    quotes the weaker and says so."""
    import json

    from uetransforms.algorithms import measured
    from uetransforms.cli import method_guide

    def row(attacker, px, sha, trained_on, acc, clean, bank="seed 1234", variant="defaults"):
        return {"attacker": attacker, "backbone": {"arch": "small-cnn-w32", "trained_on": trained_on,
                                                   "checkpoint_sha256": sha},
                "backbone_sha256": sha, "resolution": px, "train_size": 3000, "test_size": 1000, "epochs": 8,
                "seed": 0, "labelling": "true", "labels": "true", "bank": bank, "variant": variant,
                "clean_accuracy": clean, "protected_accuracy": acc, "ratio": acc / clean, "psnr": 20.0, "ssim": 0.8,
                "command": "x", "recorded": "2026-01-01"}

    path = tmp_path / "measured.json"
    path.write_text(json.dumps({"schema": measured.SCHEMA, "methods": {}, "attacks": {"cuda": [
        row("linear-probe", 32, "aa", "rows A", 0.3, 0.6), row("finetune", 32, "aa", "rows A", 0.36, 0.6),
        row("linear-probe", 224, "dd", "digits", 0.2, 0.5, variant="k=5"),
        row("linear-probe", 224, "dd", "digits", 0.3, 0.5, bank="seed 4321", variant="k=5")]}}))
    monkeypatch.setattr(measured, "ASSET", str(path))
    lines = method_guide("pretrained")
    small = next(x for x in lines if x.startswith("  cuda at 32 px:"))
    big = next(x for x in lines if x.startswith("  cuda (with k=5) at 224 px:"))
    assert "[1] small-cnn-w32, trained on digits; 224 px" in lines[-1]
    assert "[2] small-cnn-w32, trained on rows A; 32 px" in lines[-1]
    assert "a linear probe 0.50x [2], fine-tuning 0.60x [2]" in small
    assert "a linear probe 0.60x [1], the weaker of 2 bank keys" in big and "0.40x" not in big


def test_shipped_measured_facts_are_read():
    from uetransforms.algorithms import measured

    assert measured.for_method("cuda")["effect"]["protected_accuracy"] < 0.5
    assert measured.not_protecting("random") and measured.not_protecting("cuda") is None


def test_verdict_rule():
    from uetransforms.evaluation.verdict import verdict

    assert verdict(clean_accuracy=0.416, protected_accuracy=0.342, num_classes=10).word == "baseline too weak to judge"
    assert verdict(clean_accuracy=0.66, protected_accuracy=0.312, num_classes=10).word == "protects"
    assert verdict(clean_accuracy=0.66, protected_accuracy=0.45, num_classes=10).word == "weak"
    assert verdict(clean_accuracy=0.66, protected_accuracy=0.60, num_classes=10).word == "broken"
    line = verdict(clean_accuracy=0.416, protected_accuracy=0.342, num_classes=10).line()
    assert "0.416" in line and "0.342" in line and "0.550" in line


def test_publish_without_returned_copy_and_with_source_names(tmp_path):
    photos = _mixed_folder(tmp_path / "photos")
    ds = datasets.load_dataset(photos, split="train")
    bank = ue.fit("cuda", ds, seed=1)
    out = ue.publish(ds, bank, tmp_path / "out", return_dataset=False, progress=False)
    assert out == str(tmp_path / "out")
    back = datasets.load_dataset(str(tmp_path / "out"), split="train").cast_column("image", datasets.Image(decode=False))
    assert sorted(r["path"] for r in back["image"]) == sorted(p.name for p in (tmp_path / "photos").rglob("*.jpg"))


# ------------------------------------------------------------------ issue 23: one marker that survives; clear errors
def test_protecting_a_published_shard_again_is_refused(tmp_path, tiny_parquet, capsys):
    """`uetransforms protect <published shard>`: the shard's PNGs carry the marker."""
    bank = tmp_path / "b.arrow"
    assert main(["fit", "random", tiny_parquet, "--image-column", "img", "--out", str(bank), "--seed", "1"]) == 0
    assert main(["protect", tiny_parquet, "--bank", str(bank), "--out", str(tmp_path / "once"),
                 "--image-column", "img"]) == 0
    capsys.readouterr()
    shard = str(tmp_path / "once" / "data" / "train-00000-of-00001.parquet")
    assert main(["protect", shard, "--bank", str(bank), "--out", str(tmp_path / "twice"), "--image-column", "img"]) == 2
    err = capsys.readouterr().err
    assert "already protected" in err and "--allow-double" in err and "Traceback" not in err
    assert not (tmp_path / "twice").exists()


def test_out_inside_data_is_refused(tmp_path, tiny_parquet, capsys):
    bank = tmp_path / "b.arrow"
    assert main(["fit", "random", tiny_parquet, "--image-column", "img", "--out", str(bank), "--seed", "1"]) == 0
    src = tmp_path / "src"
    src.mkdir()
    datasets.Dataset.from_parquet(tiny_parquet).to_parquet(str(src / "train-00000-of-00001.parquet"))
    capsys.readouterr()
    for out in (src / "prot", src):
        assert main(["protect", str(src), "--bank", str(bank), "--out", str(out), "--image-column", "img"]) == 2
        err = capsys.readouterr().err
        assert "--out" in err and "inside DATA" in err and "Traceback" not in err
    assert sorted(os.listdir(src)) == ["train-00000-of-00001.parquet"]  # nothing written into DATA


def test_split_cannot_rename_a_single_split_file(tmp_path, tiny_parquet, capsys):
    """`protect train.parquet --split test` published the train rows as data/test-*.parquet."""
    bank = tmp_path / "b.arrow"
    assert main(["fit", "random", tiny_parquet, "--image-column", "img", "--out", str(bank), "--seed", "1"]) == 0
    train = tmp_path / "train-00000-of-00001.parquet"
    datasets.Dataset.from_parquet(tiny_parquet).to_parquet(str(train))
    capsys.readouterr()
    assert main(["protect", str(train), "--bank", str(bank), "--out", str(tmp_path / "o"), "--image-column", "img",
                 "--split", "test"]) == 2
    err = capsys.readouterr().err
    assert "--split test" in err and "'train'" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
    # Naming the file's own split, or none, works; the split is the file's.
    assert main(["protect", str(train), "--bank", str(bank), "--out", str(tmp_path / "o"), "--image-column", "img",
                 "--split", "train"]) == 0
    assert os.listdir(tmp_path / "o" / "data") == ["train-00000-of-00001.parquet"]


def test_fit_no_labels_with_an_encoder_then_protect_assigns_clusters(tmp_path, tiny_parquet, capsys):
    """The README's "no labels" path: --no-labels --encoder FILE keys cuda by clusters; protect (no
    --label-column) assigns them, never reading the dataset's classes as cluster ids."""
    import torch

    from uetransforms.models.encoders import save_small_cnn
    from uetransforms.models.networks import SmallCNN

    torch.manual_seed(0)
    enc = str(tmp_path / "enc.safetensors")
    save_small_cnn(SmallCNN(10, 3, width=8), enc)
    bank = tmp_path / "b.arrow"
    assert main(["fit", "cuda", tiny_parquet, "--image-column", "img", "--no-labels", "--out", str(bank)]) == 2
    assert "--no-labels with --encoder" in capsys.readouterr().err
    assert main(["fit", "cuda", tiny_parquet, "--image-column", "img", "--encoder", enc, "--out", str(bank)]) == 2
    assert "add --no-labels" in capsys.readouterr().err
    assert main(["fit", "cuda", tiny_parquet, "--image-column", "img", "--no-labels", "--encoder", enc,
                 "--param", "n_clusters=2", "--seed", "3", "--out", str(bank)]) == 0
    loaded = ue.NoiseBank.load(bank)
    assert loaded.keying == "cluster" and loaded.num_keys == 2
    assert main(["protect", tiny_parquet, "--bank", str(bank), "--out", str(tmp_path / "pub"),
                 "--image-column", "img"]) == 0
    src = datasets.load_dataset("parquet", data_files=tiny_parquet, split="train")
    want = src.map(ue.Protect(loaded, image_column="img", label_column=None), batched=True)
    back = datasets.load_dataset(str(tmp_path / "pub"), split="train")
    assert [np.asarray(a).tobytes() for a in back["img"]] == [np.asarray(a).tobytes() for a in want["img"]]


def test_no_labels_guide_and_methods_key_quote_label_free_rows_apart(tmp_path, monkeypatch, capsys):
    """Recorded label-free rows (bench_labelfree.py) answer "no labels" and show in `methods cuda`
    marked as such; the labelled numbers never stand in for them, nor they for the labelled ones."""
    import json

    from uetransforms.algorithms import measured
    from uetransforms.cli import method_guide

    def row(labels, labelling, attacker, acc, clean):
        r = {"attacker": attacker, "backbone": None if attacker == "scratch" else
             {"arch": "small-cnn-w32", "trained_on": "other rows", "checkpoint_sha256": "ab"},
             "backbone_sha256": None if attacker == "scratch" else "ab", "resolution": 32, "train_size": 10000,
             "test_size": 2000, "epochs": 8, "seed": 0, "labelling": labelling, "labels": labels,
             "variant": "defaults", "clean_accuracy": clean, "protected_accuracy": acc, "ratio": acc / clean,
             "psnr": 16.8, "ssim": 0.6, "command": "x", "recorded": "2026-01-01"}
        if labels == "none":
            r.update(encoder={"arch": "resnet18", "trained_on": "rows 30k-50k", "checkpoint_sha256": "e" * 64},
                     keying="cluster", n_clusters=10)
        return r

    path = tmp_path / "measured.json"
    path.write_text(json.dumps({"schema": measured.SCHEMA, "methods": {}, "attacks": {"cuda": [
        row("true", "true", "linear-probe", 0.356, 0.671), row("true", "true", "finetune", 0.438, 0.594),
        row("none", "true", "scratch", 0.334, 0.660), row("none", "pairs", "scratch", 0.468, 0.764),
        row("none", "true", "linear-probe", 0.407, 0.684)]}}))
    monkeypatch.setattr(measured, "ASSET", str(path))
    guide = "\n".join(method_guide("no-labels"))
    line = next(x for x in guide.splitlines() if x.startswith("    cuda without labels:"))
    assert "training from scratch 0.334 vs 0.660 clean (0.51x; attacker with 5 groups of 2 classes: 0.61x)" in line
    assert "a linear probe 0.407 vs 0.684 clean (0.60x)" in line and "fine-tuning: not measured" in line
    assert "0.356" not in guide and "0.438" not in guide and "not in the shipped facts" not in guide
    pre = "\n".join(method_guide("pretrained"))
    assert "a linear probe 0.53x [1], fine-tuning 0.74x [1]" in pre and "0.60x" not in pre and "0.51x" not in pre
    assert main(["methods", "cuda"]) == 0
    out = capsys.readouterr().out
    assert "fit labels" in out and "attacker labels" in out
    table = [x.split() for x in out.splitlines() if x.startswith(("  linear-probe", "  scratch", "  finetune",
                                                                   "linear-probe", "scratch", "finetune"))]
    # the last column is the bank measured: these rows predate it and say "-"
    assert ["scratch", "-", "32", "10000", "none", "pairs", "0.468", "0.764", "0.61", "defaults", "-"] in table
    assert ["linear-probe", "small-cnn-w32", "32", "10000", "true", "true", "0.356", "0.671", "0.53", "defaults", "-"] in table


def test_pretrained_guide_never_quotes_a_random_weights_control_but_names_it(tmp_path, monkeypatch, capsys):
    """A random-init ResNet-18 probe gave cuda k5 d7 0.87x at 224 px where trained small CNNs gave
    0.36-0.60x: the guide quotes the trained backbone and names the control on a line of its own,
    and `methods KEY` lists it, marked."""
    import json

    from uetransforms.algorithms import measured
    from uetransforms.cli import method_guide

    def row(backbone, acc, clean):
        return {"attacker": "linear-probe", "backbone": backbone, "backbone_sha256": backbone.get("checkpoint_sha256"),
                "resolution": 224, "train_size": 3000, "test_size": 1000, "epochs": 8, "seed": 0, "labelling": "true",
                "labels": "true", "bank": "seed 1234", "variant": "defaults", "clean_accuracy": clean,
                "protected_accuracy": acc, "ratio": acc / clean, "psnr": 19.0, "ssim": 0.7, "command": "x",
                "recorded": "2026-01-01"}

    trained = {"kind": "small-cnn", "arch": "small-cnn-w32", "trained_on": "digits", "checkpoint_sha256": "dd"}
    rand = {"kind": "torchvision", "arch": "resnet18", "trained_on": None, "checkpoint_sha256": None,
            "random_init": True, "init_seed": 0}
    path = tmp_path / "measured.json"
    path.write_text(json.dumps({"schema": measured.SCHEMA, "methods": {}, "attacks": {"cuda": [
        row(trained, 0.2, 0.5), {**row(rand, 0.30, 0.35), "backbone_tag": measured.backbone_tag(rand)}]}}))
    monkeypatch.setattr(measured, "ASSET", str(path))
    lines = method_guide("pretrained")
    quoted = next(x for x in lines if x.startswith("  cuda at 224 px:"))
    assert "a linear probe 0.40x [1]" in quoted and "0.86x" not in quoted
    control = next(x for x in lines if x.startswith("  (not quoted"))
    assert "cuda 0.86x under resnet18, random weights (init seed 0), a control; 224 px" in control
    assert "resnet18" not in lines[lines.index(control) - 1]  # the backbone footnote names only the trained one
    assert main(["methods", "cuda"]) == 0
    table = [x for x in capsys.readouterr().out.splitlines() if x.startswith("linear-probe")]
    assert any("resnet18 (random: control)" in x and "0.86" in x for x in table)
    assert any("small-cnn-w32" in x and "0.40" in x for x in table)
