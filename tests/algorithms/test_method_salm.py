"""salm: error-minimising noise on the top-k pixels only (L0 + L-inf budgets)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import uetransforms as ue
from uetransforms.core.data import FitData
from uetransforms.algorithms import salm

EPS = 8 / 255

# Tiny fits stop on their round/step budgets on purpose; the tests that check the warning use pytest.warns.
pytestmark = pytest.mark.filterwarnings("ignore:.*stopped by its budget:UserWarning")


def tiny(n=16, hw=8, k=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, hw, hw, 3), dtype=np.uint8), (np.arange(n) % k).astype(int)


def fast(**kw):
    return {"surrogate": "cnn-tiny", "batch_size": 8, "steps": 3, "train_steps": 2, "max_rounds": 2,
            "class_batches": 2, **kw}


def changed_positions(delta: np.ndarray) -> np.ndarray:
    """Pixel positions (any channel) with non-zero noise, per row."""
    return (np.abs(delta.astype(np.float32)).max(axis=1) > 0).reshape(len(delta), -1).sum(1)


def test_top_fraction_mask_keeps_exactly_k():
    score = torch.rand(3, 1, 5, 5)
    m = salm.top_fraction_mask(score, 0.2)
    assert m.shape == (3, 1, 5, 5) and (m.sum((1, 2, 3)) == 5).all()
    thr = (score * m).flatten(1).masked_fill(m.flatten(1) == 0, 2).min(1).values
    assert ((score * (1 - m)).flatten(1).max(1).values <= thr).all()  # kept = the largest scores
    ties = salm.top_fraction_mask(torch.zeros(1, 1, 4, 4), 0.5)
    assert int(ties.sum()) == 8


@pytest.mark.parametrize("mode", ["sample", "class"])
@pytest.mark.parametrize("fraction", [0.1, 0.3])
def test_l0_and_linf_budgets_are_exact(mode, fraction):
    images, labels = tiny()
    data = FitData.from_arrays(images, labels)
    bank = ue.fit("salm", data, seed=0, mode=mode, fraction=fraction, **fast())
    k = math.ceil(fraction * 64)
    d = bank.tensors["delta"]
    assert bank.info["mask_pixels"] == k
    assert (changed_positions(d) <= k).all() and changed_positions(d).max() > 0
    assert (np.abs(d.astype(np.float64)) <= EPS).all()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    keys = labels if mode == "class" else data.sample_ids
    out = ue.apply(bank, x, keys)
    diff = (out.int() - x.int()).abs()
    assert diff.max() <= 8
    assert ((diff.amax(1) > 0).flatten(1).sum(1) <= k).all()  # what is applied, not only what is stored


def test_intensity_mask_follows_the_bright_region():
    # dark "scans" with a bright 3x3 lesion at a random place: the mask must stay on the lesion
    rng = np.random.default_rng(0)
    n, hw = 12, 8
    images = rng.integers(0, 20, (n, hw, hw, 3), dtype=np.uint8)
    corners = rng.integers(0, hw - 3, (n, 2))
    for i, (r, c) in enumerate(corners):
        images[i, r : r + 3, c : c + 3] = rng.integers(180, 255, (3, 3, 3))
    data = FitData.from_arrays(images, np.arange(n) % 2)
    bank = ue.fit("salm", data, seed=0, fraction=9 / 64, mask_by="intensity", **fast())
    rows = bank.rows_for(data.sample_ids)
    for i, (r, c) in enumerate(corners):
        support = np.abs(bank.tensors["delta"][rows[i]].astype(np.float32)).max(0) > 0
        lesion = np.zeros((hw, hw), bool)
        lesion[r : r + 3, c : c + 3] = True
        assert support.any() and not (support & ~lesion).any()


def test_objective_decreases():
    images, labels = tiny(24, k=3)
    bank = ue.fit("salm", FitData.from_arrays(images, labels), seed=0, fraction=0.5,
                  **fast(max_rounds=6, steps=4, train_steps=3, step_size=2 / 255))
    hist = bank.info["train_error_history"]
    assert hist[-1] < hist[0]


def test_bad_parameters():
    images, labels = tiny(4)
    data = FitData.from_arrays(images, labels)
    with pytest.raises(ValueError, match="fraction"):
        ue.fit("salm", data, fraction=0)
    with pytest.raises(ValueError, match="mask_by"):
        ue.fit("salm", data, mask_by="edges")


def test_per_step_mask_updates_only_top_positions_each_step(monkeypatch):
    images, labels = tiny()
    data = FitData.from_arrays(images, labels)
    k = math.ceil(0.1 * 64)
    seen = []
    real = salm.top_fraction_mask
    monkeypatch.setattr(salm, "top_fraction_mask", lambda *a: seen.append(real(*a)) or seen[-1])
    bank = ue.fit("salm", data, seed=0, fraction=0.1, mask_update="step", **fast(max_rounds=1, steps=2))
    assert seen and all(int(m[i].sum()) == k for m in seen for i in range(len(m)))  # every step: k positions
    assert bank.info["mask_pixels"] is None and bank.info["pixels_per_step"] == k
    d = bank.tensors["delta"]
    assert (np.abs(d.astype(np.float64)) <= EPS).all() and changed_positions(d).max() > 0
    assert changed_positions(d).max() <= 2 * k  # two steps: at most the union of two masks
    with pytest.raises(ValueError, match="mask_update"):
        ue.fit("salm", data, mask_update="always")
    with pytest.raises(ValueError, match="mask_by='grad'"):
        ue.fit("salm", data, mask_update="step", mask_by="intensity")


def test_bank_says_what_is_verified_and_what_is_reconstructed():
    images, labels = tiny(8)
    bank = ue.fit("salm", FitData.from_arrays(images, labels), seed=0, **fast(max_rounds=1))
    assert bank.info["verified"] and any("fraction" in r for r in bank.info["reconstruction"])


def test_no_paper_value_is_claimed_for_salm(capsys):
    # the SALM paper gives the idea only: every number is em's (Huang et al.) or ours
    assert all(p.paper is None for p in salm.METHOD.params)
    from uetransforms.algorithms import em as em_module

    em = {p.name: p.paper for p in em_module.METHOD.params}
    assert em["epsilon"] == EPS and em["steps"] == 20  # em keeps its own paper's values
    from uetransforms.cli import main

    assert main(["methods", "salm"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("parameter "))
    at, end = header.index(" paper ") + 1, header.index(" card ")  # the paper column
    rows = [line for line in lines if line.split()[:1] and line.split()[0] in salm.METHOD.defaults]
    assert len(rows) == len(salm.METHOD.params)
    assert all(r[at:end].strip() == "-" for r in rows), [r[:end] for r in rows]
    assert "Not Disclosed" not in salm.__doc__ and "no public code was found" in salm.__doc__
    assert "the paper gives none" not in salm.METHOD.paper


def separable(n=32, hw=8, seed=0):
    """Two classes a tiny CNN learns in a few steps: dark vs bright images."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.integers(0, 60, (n, hw, hw, 3)).astype(np.uint8)
    images[labels == 1] += 150
    return images, labels


def test_warmup_trains_the_surrogate_before_the_masks():
    images, labels = separable()
    data = FitData.from_arrays(images, labels)
    bank = ue.fit("salm", data, seed=0, mask_warmup_accuracy=0.9, mask_warmup_steps=200, **fast(max_rounds=1))
    w = bank.info["warmup"]
    assert w["reached"] and w["accuracy"] >= 0.9 and 0 < w["steps"] <= 200 and w["target_accuracy"] == 0.9
    assert bank.info["surrogate_steps"] == w["steps"] + 2  # warm-up + one round of train_steps
    assert bank.params["mask_warmup_accuracy"] == 0.9 and bank.params["surrogate"] == "cnn-tiny"
    k = math.ceil(0.1 * 64)
    assert (changed_positions(bank.tensors["delta"]) <= k).all()
    plain = ue.fit("salm", data, seed=0, **fast(max_rounds=1))
    assert "warmup" not in plain.info


def test_warmup_budget_stop_warns_and_counts_against_max_steps():
    images, labels = tiny(64, k=4)  # random labels: 100% clean accuracy is out of reach in 20 steps
    data = FitData.from_arrays(images, labels)
    with pytest.warns(UserWarning, match=r"warm-up was stopped by its budget \(mask_warmup_steps=20\)"):
        bank = ue.fit("salm", data, seed=0, mask_warmup_accuracy=1.0, mask_warmup_steps=20, **fast(max_rounds=1))
    assert bank.info["warmup"]["steps"] == 20 and not bank.info["warmup"]["reached"]
    with pytest.warns(UserWarning, match=r"warm-up was stopped by its budget \(max_steps=10\)"):
        bank = ue.fit("salm", data, seed=0, mask_warmup_accuracy=1.0, max_steps=10, **fast(max_rounds=3))
    assert bank.info["warmup"]["steps"] == 10
    # the loop got what was left (0): one first pass over the data so that every sample has noise
    assert bank.info["rounds"] == 1 and changed_positions(bank.tensors["delta"]).max() > 0
    with pytest.raises(ValueError, match="mask_warmup_accuracy"):
        ue.fit("salm", data, mask_warmup_accuracy=0)


def test_class_mode_keys_by_class_with_one_sparse_pattern_per_class():
    images, labels = tiny(24, k=3)
    data = FitData.from_arrays(images, labels)
    bank = ue.fit("salm", data, seed=0, mode="class", fraction=0.1, **fast())
    k = math.ceil(0.1 * 64)
    d = bank.tensors["delta"]
    assert bank.keying == "class" and d.shape == (3, 3, 8, 8) and list(bank.keys) == [0, 1, 2]
    assert ((changed_positions(d) > 0) & (changed_positions(d) <= k)).all()  # every class: its own k positions
    assert len({tuple(np.flatnonzero(np.abs(r).max(0))) for r in d}) == 3  # the masks differ between classes
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    out = ue.apply(bank, x, labels)
    inside = (x.float() + torch.from_numpy(np.round(255 * d[labels]))).clamp(0, 255)
    assert torch.equal(out.float(), inside)  # every image gets its class's pattern, nothing else


def test_freeze_keeps_the_top_positions_of_the_per_step_noise(monkeypatch):
    from uetransforms.algorithms import em as em_module

    images, labels = tiny(16)
    data = FitData.from_arrays(images, labels)
    k = math.ceil(0.1 * 64)
    phases = []
    real = em_module.minmin

    def spy(*a, **kw):
        out = real(*a, **kw)
        phases.append((kw, np.asarray(out[0], np.float32).copy()))
        return out

    monkeypatch.setattr(em_module, "minmin", spy)
    bank = ue.fit("salm", data, seed=0, fraction=0.1, mask_update="freeze", freeze_rounds=2, **fast(max_rounds=4))
    assert len(phases) == 2 and phases[0][0]["step_rule"] is not None and phases[1][0]["mask_rule"] is not None
    assert bank.info["mask_pixels"] == k and bank.info["freeze"]["rounds"] == 2 and bank.info["rounds"] <= 4
    score = np.abs(phases[0][1]).sum(1).reshape(16, -1)  # phase 1's accumulated noise, per position
    top = salm.top_fraction_mask(torch.from_numpy(score).reshape(16, 1, 8, 8), 0.1).numpy().reshape(16, -1) > 0
    d = bank.tensors["delta"][bank.rows_for(data.sample_ids)]
    support = np.abs(d.astype(np.float32)).max(1).reshape(16, -1) > 0
    assert (changed_positions(d) <= k).all() and support.any()
    assert not (support & ~top).any()  # the final noise lives only on phase 1's top positions
    again = ue.fit("salm", data, seed=0, fraction=0.1, mask_update="freeze", freeze_rounds=2, **fast(max_rounds=4))
    assert np.array_equal(again.tensors["delta"], bank.tensors["delta"])  # a seed gives the same bank


def test_freeze_bad_values():
    images, labels = tiny(8)
    data = FitData.from_arrays(images, labels)
    with pytest.raises(ValueError, match="freeze_rounds=4 must be between 1 and max_rounds - 1"):
        ue.fit("salm", data, mask_update="freeze", freeze_rounds=4, max_rounds=4)
    with pytest.raises(ValueError, match="mode='sample'"):
        ue.fit("salm", data, mask_update="freeze", mode="class")
    with pytest.raises(ValueError, match="mask_by='grad'"):
        ue.fit("salm", data, mask_update="freeze", mask_by="intensity")
    with pytest.raises(ValueError, match="freeze_rounds"):
        ue.fit("salm", data, mask_update="freeze", freeze_rounds=0)


def test_mask_pool_gathers_the_mask_into_a_local_region():
    score = torch.zeros(1, 1, 9, 9)
    score[0, 0, 4, 4] = 1.0
    block = torch.zeros(1, 1, 9, 9)
    block[0, 0, 3:6, 3:6] = 1
    assert torch.equal(salm.top_fraction_mask(score, 9 / 81, pool=3), block)  # the 3x3 around the hot spot
    corner = torch.rand(1, 1, 9, 9) * 0.1
    corner[0, 0, :3, :3] += 1  # a hot 3x3 corner: pooled, it stays the top region
    m = salm.top_fraction_mask(corner, 9 / 81, pool=3)
    assert int(m.sum()) == 9 and int(m[0, 0, :4, :4].sum()) == 9
    images, labels = tiny(8)
    data = FitData.from_arrays(images, labels)
    bank = ue.fit("salm", data, seed=0, mode="class", fraction=0.25, mask_pool=3, **fast(max_rounds=1))
    assert (changed_positions(bank.tensors["delta"]) <= 16).all()  # the L0 budget is the same with pooling
    with pytest.raises(ValueError, match="mask_pool"):
        ue.fit("salm", data, mask_pool=2)


def test_freeze_budget_warning_names_the_callers_max_rounds():
    images, labels = tiny(8)
    data = FitData.from_arrays(images, labels)
    with pytest.warns(UserWarning, match=r"max_rounds=3\).*after 3 round") as caught:
        ue.fit("salm", data, seed=0, mask_update="freeze", freeze_rounds=1, stop_error=0, **fast(max_rounds=3))
    assert not any("max_rounds=2" in str(w.message) or "max_rounds=1" in str(w.message) for w in caught)


def test_mask_cell_keeps_the_top_of_every_cell():
    score = torch.rand(2, 1, 8, 8)
    m = salm.top_fraction_mask(score, 0.25, cell=4)
    per_cell = m.reshape(2, 2, 4, 2, 4).sum((2, 4))
    assert (per_cell == 4).all() and salm.mask_budget(8, 8, 0.25, 4) == 16
    for b in range(2):
        for i in range(2):
            for j in range(2):
                s = score[b, 0, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4].flatten()
                k = m[b, 0, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4].flatten().bool()
                assert s[k].min() >= s[~k].max()  # a cell keeps its own largest scores
    # 10x10 in cells of 4: cells of 16, 8 and 4 positions keep 4, 2 and 1; never above fraction * H * W
    odd = salm.top_fraction_mask(torch.rand(1, 1, 10, 10), 0.25, cell=4)
    assert int(odd[0, 0, :4, :4].sum()) == 4 and int(odd[0, 0, :4, 8:].sum()) == 2
    assert int(odd[0, 0, 8:, 8:].sum()) == 1 and int(odd.sum()) == salm.mask_budget(10, 10, 0.25, 4) == 25
    assert salm.mask_budget(32, 32, 0.2, 4) == 192 <= 0.2 * 32 * 32  # floor per cell: at most the fraction


@pytest.mark.parametrize("mode", ["sample", "class"])
def test_mask_cell_budget_holds_in_every_cell_of_what_is_applied(mode):
    images, labels = tiny()
    data = FitData.from_arrays(images, labels)
    bank = ue.fit("salm", data, seed=0, mode=mode, fraction=0.25, mask_cell=4, augment="flip+crop", **fast())
    assert bank.info["mask_pixels"] == 16
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    out = ue.apply(bank, x, labels if mode == "class" else data.sample_ids)
    changed = ((out.int() - x.int()).abs().amax(1) > 0).reshape(len(x), 2, 4, 2, 4).sum((2, 4))
    assert (changed <= 4).all() and changed.sum() > 0


def test_augment_views_every_perturbed_batch_and_is_deterministic(monkeypatch):
    images, labels = tiny()
    data = FitData.from_arrays(images, labels)
    calls = []
    real = salm._common.flip_some
    monkeypatch.setattr(salm._common, "flip_some", lambda x, gen: calls.append(x.requires_grad) or real(x, gen))
    kw = fast(max_rounds=2, steps=3, train_steps=2, batch_size=8)
    a = ue.fit("salm", data, seed=3, fraction=0.25, augment="flip", **kw)
    # per round: train_steps surrogate batches + steps PGD steps on each of the 16 / 8 batches
    assert len(calls) == 2 * (2 + 3 * 2) and sum(calls) == 2 * 3 * 2  # the PGD views carry the gradient
    b = ue.fit("salm", data, seed=3, fraction=0.25, augment="flip", **kw)
    plain = ue.fit("salm", data, seed=3, fraction=0.25, **kw)
    assert np.array_equal(a.tensors["delta"], b.tensors["delta"])
    assert not np.array_equal(a.tensors["delta"], plain.tensors["delta"])


def test_mask_cell_and_augment_bad_values():
    images, labels = tiny(4)
    data = FitData.from_arrays(images, labels)
    with pytest.raises(ValueError, match="mask_cell=1"):
        ue.fit("salm", data, mask_cell=1)
    with pytest.raises(ValueError, match="larger than the 8x8 image"):
        ue.fit("salm", data, mask_cell=9)
    with pytest.raises(ValueError, match=r"use mask_cell >= 4 or a larger fraction"):
        ue.fit("salm", data, mask_cell=3, fraction=0.1)
    with pytest.raises(ValueError, match="mask_cell"):
        ue.fit("salm", data, mask_cell=-2)
    with pytest.raises(ValueError, match="augment"):
        ue.fit("salm", data, augment="rotate")


def test_tile_mask_repeats_the_tiles_best_positions_within_the_budget():
    score = torch.rand(2, 1, 8, 8)
    m = salm.tile_mask(score, 0.25, 4)
    tiles = m.reshape(2, 1, 2, 4, 2, 4)
    assert (tiles == tiles[:, :, :1, :, :1]).all()  # one 4x4 tile, repeated
    assert (m[:, :, :4, :4].sum((1, 2, 3)) == 4).all() and salm.mask_budget(8, 8, 0.25, tile=4) == 16
    folded = salm.fold(score, 4).flatten(1)  # the tile's score: the sum over its 4 repetitions
    kept = m[:, 0, :4, :4].flatten(1).bool()
    for b in range(2):
        assert folded[b][kept[b]].min() >= folded[b][~kept[b]].max()
    # 8x8 in tiles of 3: positions in the first two rows / columns of the tile repeat 3 times, the last 2;
    # quota floor(0.25 * 9) = 2, budget floor(0.25 * 64) = 16: 9 + 6 fits, 9 + 9 would not
    hot = torch.zeros(1, 1, 8, 8)
    hot[0, 0, 0::3, 0::3] = 3.0  # tile position (0, 0), 9 repetitions
    hot[0, 0, 1::3, 1::3] = 2.0  # (1, 1), 9 repetitions
    hot[0, 0, 2::3, 0::3] = 1.0  # (2, 0), 6 repetitions
    odd = salm.tile_mask(hot, 0.25, 3)
    assert int(odd.sum()) == 15 <= 16 and odd[0, 0, 0, 0] == 1 and odd[0, 0, 1, 1] == 0 and odd[0, 0, 2, 0] == 1
    assert salm.mask_budget(8, 8, 0.25, tile=3) == 16  # the most any tile mask may keep: min(16, 9 + 9)
    tie = salm.tie_rule(3)
    t = torch.randn(2, 3, 8, 8)
    once = tie(t)
    assert torch.allclose(tie(once), once) and torch.equal(once, salm.unfold(once[:, :, :3, :3], 8, 8))
    assert torch.equal(torch.sign(once), torch.sign(salm.unfold(salm.fold(t, 3), 8, 8)))  # sign of the tile's sum


@pytest.mark.parametrize("tile", [4, 3])
def test_tile_noise_is_one_periodic_pattern_per_class_within_the_l0_budget(tile):
    images, labels = tiny(24, k=3)
    data = FitData.from_arrays(images, labels)
    bank = ue.fit("salm", data, seed=5, mode="class", fraction=0.25, tile=tile, **fast())
    d = torch.from_numpy(np.array(bank.tensors["delta"]))
    assert torch.equal(d, salm.unfold(d[:, :, :tile, :tile], 8, 8))  # stored noise: the tile, repeated
    assert (changed_positions(d[:, :, :tile, :tile].numpy()) <= math.floor(0.25 * tile * tile)).all()
    k = bank.info["mask_pixels"]
    assert k == salm.mask_budget(8, 8, 0.25, tile=tile) <= 0.25 * 64
    assert (changed_positions(d.numpy()) <= k).all() and changed_positions(d.numpy()).min() > 0
    assert (d.abs() <= EPS).all()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    out = ue.apply(bank, x, labels)
    assert (((out.int() - x.int()).abs().amax(1) > 0).flatten(1).sum(1) <= k).all()  # what is applied
    again = ue.fit("salm", data, seed=5, mode="class", fraction=0.25, tile=tile, **fast())
    assert np.array_equal(again.tensors["delta"], bank.tensors["delta"])  # a seed gives the same bank


def test_tile_bad_values():
    images, labels = tiny(4)
    data = FitData.from_arrays(images, labels)
    with pytest.raises(ValueError, match="tile=1: use 0"):
        ue.fit("salm", data, mode="class", tile=1)
    with pytest.raises(ValueError, match="tile=9 is larger than the 8x8 image"):
        ue.fit("salm", data, mode="class", tile=9)
    with pytest.raises(ValueError, match="use mode='class'"):
        ue.fit("salm", data, tile=4)
    with pytest.raises(ValueError, match="use mask_update='once'"):
        ue.fit("salm", data, mode="class", tile=4, mask_update="step")
    with pytest.raises(ValueError, match="use one"):
        ue.fit("salm", data, mode="class", tile=4, mask_cell=4)
    with pytest.raises(ValueError, match=r"use tile >= 4 or a larger fraction"):
        ue.fit("salm", data, mode="class", tile=3, fraction=0.1)
    with pytest.raises(ValueError, match="tile"):
        ue.fit("salm", data, mode="class", tile=-4)


def test_tile_views_are_what_the_attackers_crop_and_flip_show_of_a_repeated_tile():
    views = salm.tile_views(4)
    assert views.shape == (32, 16) and (np.sort(views, 1) == np.arange(16)).all()  # each a permutation
    rng = np.random.default_rng(0)
    t = rng.standard_normal((3, 4, 4))
    seen = {t.reshape(3, -1)[:, v].tobytes() for v in views}
    image = np.tile(t, (1, 3, 3))  # a 12x12 image of the repeated tile
    for dy, dx in [(0, 0), (1, 3), (-2, 1), (3, -3)]:  # crops (shifts), of the image and of its mirror
        for img in (image, image[:, :, ::-1]):
            crop = np.roll(img, (dy, dx), axis=(1, 2))[:, 4:8, 4:8]
            assert np.ascontiguousarray(crop).reshape(3, -1).tobytes() in seen


def test_distinct_tiles_keep_every_pair_of_classes_apart_in_every_view():
    d = salm.distinct_tiles(4, 3, 4, 3, seed=1)
    assert d.shape == (4, 3, 4, 4) and set(np.unique(d)) <= {-1, 0, 1}
    on = np.abs(d).max(1) > 0
    assert (on.reshape(4, -1).sum(1) == 3).all() and (np.abs(d).min(1)[on] == 1).all()  # 3 positions, every channel
    # brute force, apart from tile_views: every shift and mirror of the repeated tile of class b
    worst = min(float(((d[a] - np.roll(f, (dy, dx), axis=(1, 2))) ** 2).sum())
                for a in range(4) for b in range(4) if a != b for f in (d[b], d[b][:, :, ::-1])
                for dy in range(4) for dx in range(4))
    # 3 positions of 16: some view of any two tiles shares no position, so 3 + 3 positions x 3 channels = 18
    # is the most the closest pair can get; a random draw of signs usually has a pair that is closer
    assert worst == 18.0 == salm._design_distance(d)
    assert np.array_equal(d, salm.distinct_tiles(4, 3, 4, 3, seed=1))  # same seed, same design
    with pytest.raises(ValueError, match="keep=17"):
        salm.distinct_tiles(4, 3, 4, 17, seed=1)


def test_tile_design_distinct_starts_from_the_design_and_keeps_its_positions():
    images, labels = tiny(24, k=3)
    data = FitData.from_arrays(images, labels)
    kw = dict(mode="class", fraction=0.25, tile=4, tile_design="distinct")
    design = salm.distinct_tiles(3, 3, 4, 4, seed=5)  # quota floor(0.25 * 16) = 4 positions
    signs = salm.unfold(torch.from_numpy(design.astype(np.float32)), 8, 8).numpy()
    # one PGD step of 1/255 from +-8/255: the stored noise still has the design's signs everywhere
    first = ue.fit("salm", data, seed=5, **fast(**kw, steps=1, step_size=1 / 255, max_rounds=1, class_batches=1))
    d = np.array(first.tensors["delta"])
    assert np.array_equal(np.sign(d), signs) and (np.abs(d[signs != 0]) >= 7 / 255 - 1e-6).all()
    bank = ue.fit("salm", data, seed=5, **fast(**kw))
    d = np.array(bank.tensors["delta"])
    assert not (d[signs == 0]).any()  # the fit moves values only inside the design's positions
    k = bank.info["mask_pixels"]
    assert k == 16 == salm.mask_budget(8, 8, 0.25, tile=4) and (changed_positions(d) <= k).all()
    assert bank.info["tile_design"]["min_view_distance2"] == salm._design_distance(design)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    out = ue.apply(bank, x, labels)
    assert (((out.int() - x.int()).abs().amax(1) > 0).flatten(1).sum(1) <= k).all()  # what is applied
    assert np.array_equal(ue.fit("salm", data, seed=5, **fast(**kw)).tensors["delta"], d)  # same bytes for a seed


def test_tile_design_bad_values():
    images, labels = tiny(4)
    data = FitData.from_arrays(images, labels)
    with pytest.raises(ValueError, match="set tile"):
        ue.fit("salm", data, mode="class", tile_design="distinct")
    with pytest.raises(ValueError, match="use a tile side that divides the image"):
        ue.fit("salm", data, mode="class", tile=3, fraction=0.25, tile_design="distinct")
    with pytest.raises(ValueError, match="leave mask_by and mask_pool"):
        ue.fit("salm", data, mode="class", tile=4, tile_design="distinct", mask_by="intensity")
    with pytest.raises(ValueError, match="tile_design"):
        ue.fit("salm", data, mode="class", tile=4, tile_design="best")


def test_chroma_tiles_have_no_grey_part_and_stay_apart():
    d = salm.distinct_tiles(4, 3, 4, 3, seed=2, colours="chroma")
    on = np.abs(d).max(1) > 0
    assert (on.reshape(4, -1).sum(1) == 3).all() and not d.sum(1).any()  # 3 positions, each sums to 0 over channels
    assert (np.abs(d).sum(1)[on] == 2).all()  # +1 in one channel, -1 in another
    # the chroma hexagon has no 4 colours pairwise opposite (> 90 degrees): the best the closest pair can get is one
    # overlap at dot +1 below the 12 of disjoint views; a random chroma draw usually shares a colour (dot +2 or more)
    assert salm._design_distance(d) == 10.0
    with pytest.raises(ValueError, match="colours='chroma' needs at least 2 channels"):
        salm.distinct_tiles(4, 1, 4, 3, seed=2, colours="chroma")
    with pytest.raises(ValueError, match="colours='rainbow'"):
        salm.distinct_tiles(4, 3, 4, 3, seed=2, colours="rainbow")


def test_zero_sum_rule_is_the_nearest_zero_sum_colour_in_the_box():
    project = salm.zero_sum_rule(EPS)
    v = torch.from_numpy(np.random.default_rng(0).normal(0, 0.05, (2, 3, 4, 4)).astype(np.float32))
    x = project(v)
    assert x.sum(1).abs().max() < 1e-6 and x.abs().max() <= EPS + 1e-7
    assert torch.equal(project(torch.zeros(1, 3, 2, 2)).abs() < 1e-9, torch.ones(1, 3, 2, 2, dtype=torch.bool))
    assert torch.allclose(project(x), x, atol=1e-6)  # a projection
    # nearest: no feasible point on a grid of the box's zero-sum plane is closer to v at a position
    g = np.linspace(-EPS, EPS, 41)
    a, b = np.meshgrid(g, g)
    feas = np.stack([a, b, -a - b], -1).reshape(-1, 3)
    feas = feas[np.abs(feas).max(1) <= EPS]
    for i, j in [(0, 0), (1, 3)]:
        pv, px = v[0, :, i, j].numpy(), x[0, :, i, j].numpy()
        assert ((feas - pv) ** 2).sum(1).min() >= ((px - pv) ** 2).sum() - 1e-7


def test_tile_design_distinct_chroma_fits_zero_sum_colours_in_the_designs_positions():
    images, labels = tiny(24, k=3)
    data = FitData.from_arrays(images, labels)
    kw = dict(mode="class", fraction=0.25, tile=4, tile_design="distinct-chroma")
    design = salm.distinct_tiles(3, 3, 4, 4, seed=5, colours="chroma")
    on = salm.unfold(torch.from_numpy(design.astype(np.float32)), 8, 8).abs().amax(1).numpy() > 0
    bank = ue.fit("salm", data, seed=5, **fast(**kw))
    q = np.round(np.array(bank.tensors["delta"], np.float64) * 255).astype(int)
    assert not q.transpose(0, 2, 3, 1)[~on].any() and q.transpose(0, 2, 3, 1)[on].any()  # only the design's positions
    # zero-sum before the noise is rounded to whole grey levels channel by channel: at most a level or so off
    assert np.abs(q.sum(1)).max() <= 1 and np.abs(q).max() <= 8
    assert (changed_positions(q) <= bank.info["mask_pixels"]).all()
    assert np.array_equal(ue.fit("salm", data, seed=5, **fast(**kw)).tensors["delta"], bank.tensors["delta"])
    grey = FitData.from_arrays(images[..., :1], labels)
    with pytest.raises(ValueError, match="at least 2 channels"):
        ue.fit("salm", grey, **fast(**kw))


def test_grey_tiles_are_grey_non_negative_and_blocks_are_squares():
    d = salm.distinct_tiles(4, 3, 4, 3, seed=2, colours="grey")
    on = np.abs(d).max(1) > 0
    assert set(np.unique(d)) == {0, 1} and (d == d[:, :1]).all()  # +1 in every channel or nothing
    assert (on.reshape(4, -1).sum(1) == 3).all()
    # classes differ by positions only: the closest pair shares at most 2 of its 3 positions in any view
    # (brute force over the repeated tile's shifts and mirror), never all 3
    share = max(int((on[a] & np.roll(f, (dy, dx), axis=(0, 1))).sum()) for a in range(4) for b in range(4) if a != b
                for f in (on[b], on[b][:, ::-1]) for dy in range(4) for dx in range(4))
    assert share <= 2 and salm._design_distance(d) == 2 * 9 - 2 * 3 * share
    assert np.array_equal(d, salm.distinct_tiles(4, 3, 4, 3, seed=2, colours="grey"))
    assert np.array_equal(salm.design_tiles(4, 3, 4, 0.2, 2, colours="grey"), d)  # block 1: the design itself
    big = salm.design_tiles(4, 3, 8, 0.2, 2, colours="grey", block=2)
    assert big.shape == (4, 3, 8, 8) and np.array_equal(big[:, :, ::2, ::2], d)  # the 4x4 design, each cell 2x2
    assert np.array_equal(big, big.repeat(2, 2)[:, :, ::2].repeat(2, 3)[:, :, :, ::2])  # constant on every 2x2 block
    assert ((np.abs(big).max(1) > 0).reshape(4, -1).sum(1) == 12).all()  # floor(0.2 * 16) = 3 squares of 4: 12 of 64
    with pytest.raises(ValueError, match="block=3"):
        salm.design_tiles(4, 3, 8, 0.2, 2, block=3)


def test_keep_sign_rule_sets_strengths_along_the_design_without_flipping_a_sign():
    rng = np.random.default_rng(0)
    signs = torch.from_numpy(rng.integers(-1, 2, (2, 3, 4, 4)).astype(np.float32))
    project = salm.keep_sign_rule(signs, EPS)
    d = torch.from_numpy(rng.normal(0, 0.06, (2, 3, 4, 4)).astype(np.float32))
    x = project(d)
    assert not x[signs == 0].any() and ((x * signs) >= 0).all() and x.abs().max() <= EPS + 1e-7
    assert torch.allclose(project(x), x)  # a projection
    # nearest, entry by entry: the clip of d into [0, eps] along the sign (0 when d points the other way)
    want = torch.where(signs > 0, d.clamp(0, EPS), torch.where(signs < 0, d.clamp(-EPS, 0), torch.zeros_like(d)))
    assert torch.allclose(x, want)


def test_grey_tie_keeps_a_grey_periodic_table_grey():
    g = torch.from_numpy(np.random.default_rng(1).normal(0, 1, (2, 3, 8, 8)).astype(np.float32))
    t = salm.grey_tie(4)(g)
    assert torch.equal(t, t[:, :1].expand_as(t)) and torch.allclose(t, torch.roll(t, (4, 4), (2, 3)))
    assert torch.allclose(t[:, 0], salm.tie_rule(4)(g).mean(1), atol=1e-6)


def test_grey_signed_tiles_are_grey_and_signed():
    d = salm.distinct_tiles(4, 3, 4, 3, seed=2, colours="grey-signs")
    on = np.abs(d).max(1) > 0
    assert set(np.unique(d)) == {-1, 0, 1} and (d == d[:, :1]).all() and (on.reshape(4, -1).sum(1) == 3).all()
    assert np.array_equal(d, salm.distinct_tiles(4, 3, 4, 3, seed=2, colours="grey-signs"))


@pytest.mark.parametrize("tile,block,design", [(4, 1, "distinct-grey"), (8, 2, "distinct-grey"),
                                               (4, 1, "distinct-grey-signs")])
def test_tile_design_distinct_grey_fits_grey_strengths_inside_the_design(tile, block, design):
    images, labels = tiny(24, hw=16, k=3)
    data = FitData.from_arrays(images, labels)
    kw = dict(mode="class", fraction=0.25, tile=tile, tile_design=design, tile_block=block)
    colours = "grey" if design == "distinct-grey" else "grey-signs"
    signs = salm.unfold(torch.from_numpy(salm.design_tiles(3, 3, tile, 0.25, 5, colours=colours, block=block)
                                         .astype(np.float32)), 16, 16).numpy()
    on = np.abs(signs).max(1) > 0  # [K, 16, 16]
    bank = ue.fit("salm", data, seed=5, **fast(**kw))
    q = np.round(np.array(bank.tensors["delta"], np.float64) * 255).astype(int)
    assert (q == q[:, :1]).all() and (q * signs).min() >= 0 and np.abs(q).max() <= 8  # grey, design's sign, <= eps
    assert (q.min() >= 0) == (design == "distinct-grey")  # never negative for the non-negative design
    assert not q.transpose(0, 2, 3, 1)[~on].any() and q.transpose(0, 2, 3, 1)[on].any()  # only the design's positions
    # the L0 budget is the design's exactly: 4 of 16 (tile 4) or 4 squares of 4 of 64 (tile 8), 25% of 256
    k = bank.info["mask_pixels"]
    assert k == 64 == int(on.reshape(3, -1).sum(1).max()) and (changed_positions(q) <= k).all()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    out = ue.apply(bank, x, labels)
    assert (((out.int() - x.int()).abs().amax(1) > 0).flatten(1).sum(1) <= k).all()  # what is applied
    assert np.array_equal(ue.fit("salm", data, seed=5, **fast(**kw)).tensors["delta"], bank.tensors["delta"])
    one = ue.fit("salm", FitData.from_arrays(images[..., :1], labels), seed=5, **fast(**kw))  # one grey channel
    one_d = np.array(one.tensors["delta"])
    assert one_d.shape == (3, 1, 16, 16) and (one_d * signs[:, :1]).min() >= 0  # the design's signs, one channel


def test_tile_block_bad_values():
    images, labels = tiny(4)
    data = FitData.from_arrays(images, labels)
    with pytest.raises(ValueError, match="tile_block=3 does not divide tile=4"):
        ue.fit("salm", data, mode="class", tile=4, tile_design="distinct-grey", tile_block=3)
    with pytest.raises(ValueError, match="keeps no block"):
        ue.fit("salm", data, mode="class", tile=4, fraction=0.2, tile_design="distinct-grey", tile_block=2)
    with pytest.raises(ValueError, match="use a tile_design other than 'score'"):
        ue.fit("salm", data, mode="class", tile=4, tile_block=2)
    with pytest.raises(ValueError, match="set tile and tile_design"):
        ue.fit("salm", data, tile_block=2)
