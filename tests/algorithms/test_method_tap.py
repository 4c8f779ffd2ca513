"""tap: targeted adversarial poisoning through a frozen backbone, on tiny data with a local checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import uetransforms as ue
from uetransforms.algorithms.tap import derangement
from uetransforms.models.encoders import save_small_cnn
from uetransforms.models.networks import SmallCNN


def _data(n=24, k=3, size=8):
    rng = np.random.default_rng(0)
    return {"image": list(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)), "label": [i % k for i in range(n)]}


def test_derangement_has_no_fixed_point_and_follows_the_seed():
    for k in (2, 3, 10):
        for seed in range(5):
            p = derangement(k, seed)
            assert sorted(p) == list(range(k)) and not (p == np.arange(k)).any()
    assert (derangement(10, 1) == derangement(10, 1)).all()
    assert any((derangement(10, 1) != derangement(10, s)).any() for s in range(2, 6))
    with pytest.raises(ValueError, match="at least 2 classes"):
        derangement(1, 0)


def test_sample_noise_within_budget_box_and_hits_targets(backbone_file):
    ds = _data()
    bank = ue.fit("tap", ds, backbone=backbone_file, steps=10, seed=3)
    d = bank.tensors["delta"].astype(np.float64)
    assert bank.keying == "sample" and d.shape == (24, 3, 8, 8)
    assert np.abs(d).max() <= 8 / 255 and np.allclose(np.rint(d * 255), d * 255, atol=1e-3)
    x = np.stack(ds["image"]).transpose(0, 3, 1, 2) / 255
    assert (x + d).min() >= -1e-6 and (x + d).max() <= 1 + 1e-6  # applying never clips
    # the crafting model (frozen backbone + its probe) now sees many images as their wrong target: a
    # random tiny backbone on noise images moves little, but descent (not ascent) is what this checks;
    # the clean images' own labels are what the probe predicts (it fits them), so chance is below 1/3
    assert bank.info["target_hit_rate"] > 0.4 and bank.info["head_clean_train_accuracy"] > 0.5
    assert bank.info["backbone"]["kind"] == "small-cnn"
    again = ue.fit("tap", ds, backbone=backbone_file, steps=10, seed=3)
    assert np.array_equal(again.tensors["delta"], bank.tensors["delta"])  # same seed, same noise


def test_class_mode_and_protect(backbone_file):
    ds = _data()
    bank = ue.fit("tap", ds, backbone=backbone_file, mode="class", steps=3, seed=1)
    assert bank.keying == "class" and bank.tensors["delta"].shape == (3, 3, 8, 8)
    x = torch.from_numpy(np.stack(ds["image"])).permute(0, 3, 1, 2).contiguous()
    out = ue.apply(bank, x, ds["label"])
    assert 0 < int((out.int() - x.int()).abs().max()) <= 8


def test_backbone_errors_say_what_to_pass(tmp_path):
    with pytest.raises(Exception, match="small-cnn encoder file|does not exist"):
        ue.fit("tap", _data(), backbone=str(tmp_path / "missing.safetensors"), steps=1, seed=0)


def test_an_ensemble_of_backbones_and_crop_in_the_loop(backbone_file, tmp_path):
    torch.manual_seed(1)
    other = tmp_path / "other.safetensors"
    save_small_cnn(SmallCNN(10, 3, width=4), other)
    ds = _data()
    bank = ue.fit("tap", ds, backbone=f"{backbone_file}+{other}", augment="flip+crop", steps=4, seed=3)
    assert [b["kind"] for b in bank.info["backbone"]] == ["small-cnn", "small-cnn"]
    assert len(bank.info["head_clean_train_accuracy"]) == 2
    assert np.abs(bank.tensors["delta"].astype(float)).max() <= 8 / 255
    as_list = ue.fit("tap", ds, backbone=[backbone_file, str(other)], augment="flip+crop", steps=4, seed=3)
    assert np.array_equal(as_list.tensors["delta"], bank.tensors["delta"])  # a list or '+': the same ensemble
    single = ue.fit("tap", ds, backbone=backbone_file, augment="flip+crop", steps=4, seed=3)
    assert not np.array_equal(single.tensors["delta"], bank.tensors["delta"])
    with pytest.raises(ValueError, match="joined by '\\+'"):
        ue.fit("tap", ds, backbone=f"{backbone_file}+", steps=1, seed=0)
    with pytest.raises(Exception, match="augment"):
        ue.fit("tap", ds, backbone=backbone_file, augment="rotate", steps=1, seed=0)


def test_the_shift_moves_pixels_and_passes_gradients():
    from uetransforms.algorithms._common import shift_some

    x = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).reshape(2, 3, 16, 16).requires_grad_(True)
    gen = torch.Generator().manual_seed(0)
    out = shift_some(x, gen)
    assert out.shape == x.shape
    out.sum().backward()
    assert x.grad is not None and x.grad.sum() > 0
    moved = [not torch.equal(shift_some(x.detach(), gen), x.detach()) for _ in range(5)]
    assert any(moved)


def test_coin_augment_crafts_through_the_coin_defences_re_read(backbone_file, monkeypatch):
    """``augment="flip+crop+coin"`` puts COIN's re-read (the defence's own function) into every PGD step,
    so the noise is crafted against it; the other choices never call it, and it changes the bank."""
    from uetransforms.algorithms import _common
    from uetransforms.evaluation.defences import coin as coin_defence

    assert coin_defence.coin_resample is _common.coin_resample  # one owner of the re-read
    ds = _data()
    calls: list[int] = []
    real = _common.coin_some
    monkeypatch.setattr(_common, "coin_some", lambda x, gen, alpha=2.0: (calls.append(len(x)), real(x, gen, alpha))[1])
    plain = ue.fit("tap", ds, backbone=backbone_file, augment="flip+crop", steps=2, seed=3)
    assert calls == []
    robust = ue.fit("tap", ds, backbone=backbone_file, augment="flip+crop+coin", steps=2, seed=3)
    assert sum(calls) == 2 * len(ds["label"])  # every image, every step
    assert robust.params["augment"] == "flip+crop+coin"
    assert not np.array_equal(plain.tensors["delta"], robust.tensors["delta"])


def _blocks_constant(d: np.ndarray, cell: int) -> bool:
    """Whether ``d`` ``[..., H, W]`` is constant on every ``cell x cell`` block (the last ones may be partial)."""
    h, w = d.shape[-2:]
    coarse = d[..., ::cell, ::cell]
    return np.array_equal(coarse.repeat(cell, -2).repeat(cell, -1)[..., :h, :w], d)


@pytest.mark.parametrize("mode", ["sample", "class"])
def test_grid_makes_the_noise_constant_on_blocks(backbone_file, mode):
    # mid-grey images: no pixel reaches the box's edge, so the end clamp cannot break a block
    rng = np.random.default_rng(1)
    ds = {"image": list(rng.integers(64, 192, (12, 10, 10, 3), dtype=np.uint8)), "label": [i % 3 for i in range(12)]}
    bank = ue.fit("tap", ds, backbone=backbone_file, grid=3, mode=mode, steps=4, seed=2)
    d = bank.tensors["delta"].astype(np.float64)
    assert d.shape[-2:] == (10, 10) and bank.info["grid"] == 3 and bank.params["grid"] == 3
    assert _blocks_constant(d, 3)  # 10 = 3 + 3 + 3 + 1: the last block is cut to the image
    assert np.abs(d).max() <= 8 / 255 + 1e-6 and np.abs(d).max() > 0
    per_pixel = ue.fit("tap", ds, backbone=backbone_file, mode=mode, steps=4, seed=2)
    assert per_pixel.info["grid"] == 1 and not _blocks_constant(per_pixel.tensors["delta"].astype(np.float64), 3)


def test_grid_blocks_near_the_box_edge_stay_inside_it(backbone_file):
    # black and white images: the sum is clamped into the pixel box, so applying never clips
    rng = np.random.default_rng(2)
    ds = {"image": list((rng.integers(0, 2, (8, 8, 8, 3)) * 255).astype(np.uint8)), "label": [i % 2 for i in range(8)]}
    bank = ue.fit("tap", ds, backbone=backbone_file, grid=2, steps=3, seed=4)
    x = np.stack(ds["image"]).transpose(0, 3, 1, 2) / 255
    d = bank.tensors["delta"].astype(np.float64)
    assert (x + d).min() >= -1e-6 and (x + d).max() <= 1 + 1e-6


def test_grid_auto_follows_the_images_size(backbone_file):
    from uetransforms.algorithms.tap import noise_grid

    assert [noise_grid("auto", s, s) for s in (8, 32, 64, 96, 224)] == [1, 1, 2, 3, 7]
    assert noise_grid("auto", 96, 200) == 3 and noise_grid(5, 8, 8) == 5
    rng = np.random.default_rng(3)
    ds = {"image": list(rng.integers(64, 192, (6, 64, 64, 3), dtype=np.uint8)), "label": [0, 1, 2] * 2}
    bank = ue.fit("tap", ds, backbone=backbone_file, grid="auto", steps=1, seed=0)
    assert bank.info["grid"] == 2 and bank.params["grid"] == "auto"
    assert _blocks_constant(bank.tensors["delta"].astype(np.float64), 2)


@pytest.mark.parametrize("bad", [0, -2, 1.5, "big"])
def test_a_bad_grid_says_what_is_allowed(backbone_file, bad):
    with pytest.raises(ValueError, match="grid"):
        ue.fit("tap", _data(), backbone=backbone_file, grid=bad, steps=1, seed=0)
