"""The dataset card: complete for the Hub (licence, source, task, size), honest, and secret-free."""

from __future__ import annotations

import re

import datasets
import numpy as np
import pytest
import yaml

import uetransforms as ue
from uetransforms.publishing.card import dataset_card


def _ds(n: int = 6, *, license: str = "", name: str = "") -> datasets.Dataset:
    rng = np.random.default_rng(0)
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    info = datasets.DatasetInfo(license=license, dataset_name=name or None, features=features)
    return datasets.Dataset.from_dict(
        {"img": list(rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)), "label": [i % 3 for i in range(n)]},
        features=features, info=info,
    )


def _front(card: str) -> dict:
    return yaml.safe_load(card.split("---\n")[1])


def test_card_has_what_the_hub_expects_of_a_derived_dataset():
    ds = _ds(license="cc-by-4.0", name="owner-cifar")
    card = dataset_card({"train": ds}, ue.fit("random", ds, image_column="img", seed=3), image_column="img")
    front = _front(card)
    assert front["license"] == "cc-by-4.0"
    assert front["source_datasets"] == ["owner-cifar"]
    assert front["task_categories"] == ["image-classification"]
    assert front["size_categories"] == ["n<1K"]
    assert "## Limitations" in card and "JPEG" in card and "adversarial training" in card
    assert "lossily" in card
    # Read on the Hub, where a link relative to this library's source is dead (issue 24, point 11).
    assert not re.findall(r"\]\((?!https?://)[^)]*\)", card)
    assert front["pretty_name"] == "owner-cifar (unlearnable, random)" and "## How to load" in card
    # Only documented dataset_info fields (https://huggingface.co/docs/hub/datasets-cards).
    assert set(front["dataset_info"]) <= {"features", "config_name", "splits", "download_size", "dataset_size"}


def test_unknown_licence_is_said_and_overridable():
    ds = _ds()
    bank = ue.fit("random", ds, image_column="img", seed=3)
    card = dataset_card({"train": ds}, bank, image_column="img")
    assert _front(card)["license"] == "unknown" and "did not state the source's licence" in card
    # The card speaks to its readers: no instructions to its author (publish warns those instead).
    assert "card_extra" not in card and "--license" not in card and "--source-dataset" not in card
    assert "source_datasets" not in _front(card)  # "parquet"/in-memory builders name no dataset
    card = dataset_card({"train": ds}, bank, image_column="img",
                        card_extra={"license": "mit", "source_datasets": ["me/src"]})
    assert _front(card)["license"] == "mit" and _front(card)["source_datasets"] == ["me/src"]


def test_card_is_honest_about_visible_methods():
    ds = _ds()
    conv = dataset_card({"train": ds}, ue.fit("cuda", ds, image_column="img", seed=1), image_column="img")
    assert "visible change" in conv and "A person sees the same pictures" not in conv
    add = dataset_card({"train": ds}, ue.fit("random", ds, image_column="img", seed=1), image_column="img")
    assert "at most 8/255" in add


@pytest.mark.parametrize("method", ["random", "cuda", "ar"])
def test_card_never_holds_seed_or_bank_identity(method, tmp_path):
    ds = _ds()
    bank = ue.fit(method, ds, image_column="img", seed=987654321)
    bank.save(tmp_path / "k.bank.arrow")
    card = dataset_card({"train": ds}, bank, image_column="img")
    assert "987654321" not in card and bank.sha256 not in card and "k.bank.arrow" not in card
    assert "seed" not in _front(card)["uetransforms"]


def test_card_cites_the_method_from_its_contract():
    from uetransforms.algorithms import get

    ds = _ds()
    card = dataset_card({"train": ds}, ue.fit("cuda", ds, image_column="img", seed=1), image_column="img")
    citation = get("cuda").citation
    assert citation and "## Citation of the method" in card and citation in card
    assert _front(card)["uetransforms"]["citation"] == citation


def test_card_lists_what_was_measured_about_the_method(monkeypatch, tmp_path):
    import json

    from uetransforms.algorithms import measured

    facts = {"profile": "cpu", "command": "x", "recorded": "2026-01-01", "protects": True,
             "harness": {"arch": "cnn-small", "epochs": 8, "train_size": 10000, "test_size": 2000},
             "effect": {"protected_accuracy": 0.312, "clean_accuracy": 0.66, "ratio": 0.4727},
             "quality": {"psnr_mean": 18.9, "ssim_mean": 0.8}, "broken_by": ["sharpen+lowpass"],
             "holds_against": ["iss", "jpeg10"], "not_run": ["pgd"], "broken_ratio": 0.8}
    path = tmp_path / "measured.json"
    path.write_text(json.dumps({"schema": measured.SCHEMA, "methods": {"cuda": {"cpu": facts}}}))
    monkeypatch.setattr(measured, "ASSET", str(path))
    ds = _ds()
    card = dataset_card({"train": ds}, ue.fit("cuda", ds, image_column="img", seed=1), image_column="img")
    line = next(s for s in card.splitlines() if s.startswith("- Measured with uetransforms"))
    assert "0.312 against 0.660" in line and "0.47x" in line and "PSNR 18.9 dB" in line
    assert "broken by (>= 0.8x clean under the same defence): sharpen+lowpass" in line
    assert "holds against: iss, jpeg10" in line and "not measured: pgd" in line
    plain = dataset_card({"train": ds}, ue.fit("random", ds, image_column="img", seed=1), image_column="img")
    assert "Measured with uetransforms" not in plain  # nothing recorded for it in this file: nothing claimed


# ------------------------------------------------------------------ the card tells the truth
def _additive(peak: float, epsilon: float, k: int = 3) -> ue.NoiseBank:
    delta = np.zeros((k, 3, 8, 8), np.float32)
    delta[:, 0, 0, 0] = peak
    delta[:, 1, 2, 3] = -peak
    return ue.NoiseBank(method="random", kind="additive", keying="class", keys=np.arange(k), tensors={"delta": delta},
                        params={"epsilon": epsilon, "norm": "linf", "seed": 123456789})


def test_card_refuses_params_that_understate_the_tensors(tmp_path):
    ds = _ds()
    bank = ue.fit("random", ds, image_column="img", seed=1)  # 8/255 noise
    lying = bank.replace(params={**bank.params, "epsilon": 1 / 255})
    with pytest.raises(ue.BankError, match=r"params say epsilon=1/255 \(linf\) but its tensors change images by up "
                                           r"to 7\.98/255"):
        dataset_card({"train": ds}, lying, image_column="img")
    with pytest.raises(ue.BankError, match="understate"):
        ue.publish(ds, lying, tmp_path / "out", image_column="img")
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_card_states_the_noise_measured_from_the_tensors():
    ds = _ds()
    card = dataset_card({"train": ds}, _additive(4 / 255, 8 / 255), image_column="img")
    front = _front(card)
    assert front["uetransforms"]["epsilon"] == pytest.approx(8 / 255)  # the budget, as fitted
    assert front["uetransforms"]["measured"]["linf"] == "4/255"      # what the pixels really get
    assert "every pixel changes by at most 4/255 of the intensity range (measured" in card
    # 7.65 grey levels of noise move whole pixels by up to 8 (the kernel rounds): said as 8/255.
    assert _front(dataset_card({"train": ds}, _additive(0.03, 0.03), image_column="img"))[
        "uetransforms"]["measured"]["linf"] == "8/255"


def test_card_refuses_pixel_and_conv_claims_the_tensors_contradict():
    ds = _ds()
    ops = ue.fit("ops", ds, image_column="img", seed=1)
    assert _front(dataset_card({"train": ds}, ops, image_column="img"))["uetransforms"]["measured"] == {"l0": 1}
    mask = np.zeros((3, 1, 8, 8), np.uint8)
    mask[:, :, :2, :2] = 1  # four pixels per image, while params say one
    four = ops.replace(tensors={**ops.tensors, "mask": mask})
    with pytest.raises(ue.BankError, match=r"epsilon=1 \(l0\) but its tensors change images by up to 4"):
        dataset_card({"train": ds}, four, image_column="img")
    cuda = ue.fit("cuda", ds, image_column="img", seed=1)
    with pytest.raises(ue.BankError, match=r"kernel_size=5 but its weight tensor holds 3x3 filters"):
        dataset_card({"train": ds}, cuda.replace(params={**cuda.params, "kernel_size": 5}), image_column="img")


# ------------------------------------------------------------------ secrets never written
@pytest.mark.parametrize("method,param", [("random", "seed"), ("ar", "salt"), ("ar", "seed")])
def test_card_extra_may_not_carry_a_secret_value(tmp_path, method, param):
    ds = _ds()
    bank = ue.fit(method, ds, image_column="img", seed=987654321)
    value = bank.params[param]
    for extra in ({"pretty_name": f"{param} {value}"}, {"notes": [{"x": value}]}, {"pretty_name": f"{value:x}"}):
        with pytest.raises(ValueError, match=rf"secret parameter '{param}'") as info:
            dataset_card({"train": ds}, bank, image_column="img", card_extra=extra)
        assert str(value) not in str(info.value)  # the error never prints the secret either
    with pytest.raises(ValueError, match="secret parameter"):
        ue.publish(ds, bank, tmp_path / "out", image_column="img", card_extra={"pretty_name": f"seed {value}"})
    assert not (tmp_path / "out").exists()


def test_short_secrets_are_matched_as_whole_words_only():
    ds = _ds()
    bank = _additive(4 / 255, 8 / 255).replace(params={"epsilon": 8 / 255, "norm": "linf", "seed": 7})
    dataset_card({"train": ds}, bank, image_column="img", card_extra={"pretty_name": "CIFAR v7, 17 classes"})
    with pytest.raises(ValueError, match="secret parameter 'seed'"):
        dataset_card({"train": ds}, bank, image_column="img", card_extra={"pretty_name": "made with seed 7"})


def test_card_extra_may_not_carry_the_key_tensors():
    ds = _ds()
    bank = ue.fit("cuda", ds, image_column="img", seed=5)
    weight = bank.tensors["weight"]
    for extra in ({"kernel": weight[1].tolist()}, {"kernel": weight.tobytes().hex()}, {"kernel": weight.tobytes()}):
        with pytest.raises(ValueError, match="'weight' tensor"):
            dataset_card({"train": ds}, bank, image_column="img", card_extra=extra)


def test_card_quotes_the_attacker_rows_nearest_its_image_size(monkeypatch, tmp_path):
    import json

    from uetransforms.algorithms import measured

    def row(res, acc):
        return {"attacker": "linear-probe", "backbone": {"arch": "small-cnn-w32", "trained_on": "other rows",
                                                         "checkpoint_sha256": "ab"},
                "resolution": res, "train_size": 5000, "test_size": 2000, "epochs": 8, "seed": 0,
                "variant": "defaults", "clean_accuracy": 0.8, "protected_accuracy": acc, "ratio": acc / 0.8,
                "command": "x", "recorded": "2026-01-01"}

    path = tmp_path / "measured.json"
    path.write_text(json.dumps({"schema": measured.SCHEMA, "methods": {},
                                "attacks": {"cuda": [row(32, 0.4), row(96, 0.6)]}}))
    monkeypatch.setattr(measured, "ASSET", str(path))
    ds = _ds()
    bank = ue.fit("cuda", ds, image_column="img", seed=1)
    small = next(s for s in dataset_card({"train": ds}, bank, image_column="img").splitlines()
                 if s.startswith("- Measured with uetransforms"))
    # these test images are 8 px: the 32-px row is the nearest, and 4x away is not "near"
    assert "a linear probe 0.400 vs 0.800 clean (0.50x)" in small
    assert "nothing was measured near 8 px (the nearest measured size is 32 px)" in small
    big = next(s for s in dataset_card({"train": ds}, bank, image_column="img", image_sizes=[(300, 400), (768, 1024)])
               .splitlines() if s.startswith("- Measured with uetransforms"))
    assert "a linear probe 0.600 vs 0.800 clean (0.75x)" in big  # 96 px is nearer 1024 px than 32 px
    assert "nothing was measured near 1024 px (the nearest measured size is 96 px)" in big
    assert "fine-tuning: not measured" in big


def test_card_says_a_convadd_bank_blurs_visibly_and_adds_measured_noise():
    ds = _ds()
    rng = np.random.default_rng(0)
    bank = ue.NoiseBank(method="cudatap", kind="convadd", keying="class", keys=[0, 1, 2],
                        params={"kernel_size": 3, "epsilon": 8 / 255, "norm": "linf", "normalise": "max"},
                        tensors={"weight": rng.uniform(0, 0.3, (3, 3, 3, 3)).astype("float32"),
                                 "delta": np.full((3, 3, 8, 8), 5 / 255, "float32")})
    card = dataset_card({"train": ds}, bank, image_column="img")
    assert "visible change" in card and "at most 5/255 more (measured" in card
    assert "A person sees the same pictures" not in card


def test_card_of_a_label_free_bank_quotes_only_label_free_rows(monkeypatch, tmp_path):
    """A bank fitted without labels is described by the rows measured without labels, and a
    labelled bank by the labelled ones: neither number stands in for the other."""
    import json

    import torch

    from uetransforms.algorithms import measured
    from uetransforms.models.encoders import save_small_cnn
    from uetransforms.models.networks import SmallCNN

    def row(labels, acc):
        r = {"attacker": "linear-probe", "backbone": {"arch": "small-cnn-w32", "trained_on": "other rows",
                                                      "checkpoint_sha256": "ab"},
             "resolution": 32, "train_size": 5000, "test_size": 2000, "epochs": 8, "seed": 0, "labels": labels,
             "labelling": "true", "variant": "defaults", "clean_accuracy": 0.8, "protected_accuracy": acc,
             "ratio": acc / 0.8, "command": "x", "recorded": "2026-01-01"}
        if labels == "none":
            r.update(encoder={"arch": "resnet18", "trained_on": "rows 30k-50k"}, keying="cluster", n_clusters=10)
        return r

    path = tmp_path / "measured.json"
    path.write_text(json.dumps({"schema": measured.SCHEMA, "methods": {},
                                "attacks": {"cuda": [row("true", 0.4), row("none", 0.52)]}}))
    monkeypatch.setattr(measured, "ASSET", str(path))
    torch.manual_seed(0)
    enc = str(tmp_path / "enc.safetensors")
    save_small_cnn(SmallCNN(10, 3, width=8), enc)
    ds = _ds()

    def measured_line(bank):
        card = dataset_card({"train": ds}, bank, image_column="img")
        return next(s for s in card.splitlines() if s.startswith("- Measured with uetransforms"))

    labelled = measured_line(ue.fit("cuda", ds, image_column="img", seed=1))
    free = measured_line(ue.fit("cuda", ds, image_column="img", label_column=None, encoder=enc, n_clusters=2, seed=1))
    assert "a linear probe 0.400 vs 0.800 clean (0.50x)" in labelled and "0.520" not in labelled
    assert "a linear probe 0.520 vs 0.800 clean (0.65x)" in free and "0.400" not in free
    assert "keyed by K-means clusters (K = 10) of a resnet18 encoder" in free


def test_card_says_what_dilation_auto_means_and_names_the_photo_filters():
    # cuda's photo-size defaults store dilation="auto"; the card says what it does instead of printing a bare word.
    rng = np.random.default_rng(1)
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    ds = datasets.Dataset.from_dict({"img": list(rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)),
                                     "label": [i % 3 for i in range(6)]}, features=features)
    card = dataset_card({"train": ds}, ue.fit("cuda", ds, image_column="img", seed=2), image_column="img")
    assert "taps spaced by each image's own size" in card
    assert "kernel_size=7" in card and "padding=reflect" in card and "dilation=auto" in card
    small = dataset_card({"train": _ds()}, ue.fit("cuda", _ds(), image_column="img", seed=2), image_column="img")
    assert "taps spaced" not in small and "kernel_size=3" in small
