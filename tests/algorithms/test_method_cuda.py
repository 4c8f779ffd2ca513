"""CUDA (conv bank): construction, determinism, apply, save/load, parameter errors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import uetransforms as ue
from uetransforms.core import kernels
from _toy import to_chw, toy_data
from uetransforms.algorithms import cuda


def test_weights_follow_the_construction():
    ds, _, _ = toy_data(classes=4)
    bank = ue.fit("cuda", ds, seed=11, blur_parameter=0.2, kernel_size=5, center_parameter=1.0)
    w = bank.tensors["weight"]
    assert bank.kind == "conv" and bank.keying == "class"
    assert w.shape == (4, 3, 5, 5) and w.dtype == np.float32
    assert (w[:, 1] == w[:, 0]).all() and (w[:, 2] == w[:, 0]).all()  # channel 0 copied
    for k in range(4):
        centre = w[k, 0] == np.float32(1.0)
        assert centre.sum() == 1
        rest = w[k, 0][~centre].astype(np.float64)
        assert (rest >= 0).all() and (rest < 0.2).all()
    assert bank.params == {"blur_parameter": 0.2, "center_parameter": 1.0, "kernel_size": 5,
                           "normalise": "max", "padding": "zeros", "dilation": 1, "seed": 11}
    assert bank.info["size_mismatch"] == "resize"
    # centre positions are random: not all classes share one
    ds10, _, _ = toy_data(n=20, classes=10)
    w10 = ue.fit("cuda", ds10, seed=3).tensors["weight"][:, 0]
    assert len({int(np.argmax(x)) for x in w10}) > 1


def test_filters_lie_on_the_exact_convolution_grid():
    # Rounded down to 2**-f (f = 14 here) so the library convolution is exact; the draws move by < 2**-f.
    ds, _, _ = toy_data(classes=4)
    w = ue.fit("cuda", ds, seed=11).tensors["weight"].astype(np.float64)
    f = kernels.conv_grid_bits(np.abs(w).sum(axis=(-2, -1)).max())
    assert f == 14 and (w * 2.0**f == np.round(w * 2.0**f)).all()
    draws = np.random.default_rng(11).uniform(0.0, 0.3, size=(3, 3))  # class 0's entries before the centre
    centre = w[0, 0] == 1.0
    assert (np.abs(w[0, 0] - draws)[~centre] < 2.0**-f).all()
    # A huge kernel's grid would be too coarse to round to: its filters stay as drawn.
    big = ue.fit("cuda", ds, seed=11, kernel_size=65).tensors["weight"].astype(np.float64)
    assert kernels.conv_grid_bits(np.abs(big).sum(axis=(-2, -1)).max()) < cuda._MIN_GRID_BITS
    assert not (big * 2.0**14 == np.round(big * 2.0**14)).all()


def test_center_none_keeps_all_entries_uniform():
    ds, _, _ = toy_data()
    w = ue.fit("cuda", ds, seed=1, center_parameter=None).tensors["weight"]
    assert (w >= 0).all() and (w < 0.3).all()


def test_same_seed_same_bank_other_seed_other_bank():
    ds, _, _ = toy_data()
    a, b, c = (ue.fit("cuda", ds, seed=s) for s in (5, 5, 6))
    assert a.sha256 == b.sha256
    assert a.tensors["weight"].tobytes() == b.tensors["weight"].tobytes()
    assert a.sha256 != c.sha256 and not np.array_equal(a.tensors["weight"], c.tensors["weight"])
    data = ue.FitData.from_arrays(np.stack(ds["image"]), ds["label"])
    cpu = torch.device("cpu")
    assert cuda.fit(data, seed=5, device=cpu).sha256 == cuda.fit(data, seed=5, device=cpu).sha256


def test_apply_is_the_per_class_filter_then_max_normalisation():
    ds, imgs, labels = toy_data()
    bank = ue.fit("cuda", ds, seed=2)
    x = to_chw(imgs)
    out = ue.apply(bank, x, labels)
    w = torch.from_numpy(bank.tensors["weight"]).to(torch.float64)
    for i, y in enumerate(labels):
        ref = F.conv2d(x[i : i + 1].double() / 255, w[y].unsqueeze(1), padding=1, groups=3)
        ref = (ref / ref.max() * 255).round().clamp(0, 255).to(torch.uint8)
        assert torch.equal(out[i : i + 1], ref)
    # size-independent: the same bank filters a larger image
    big = torch.randint(0, 256, (2, 3, 16, 12), dtype=torch.uint8)
    assert ue.apply(bank, big, [0, 1]).shape == big.shape


def _reflect_ref(x, w, labels, dilation=1):
    """The reference for reflect padding: ``F.pad(mode="reflect")``, then a float64 conv (exact for grid
    filters, so it is the float32 sum too), then the kernel's float32 max-normalisation."""
    out = []
    for i, y in enumerate(labels):
        k = w.shape[-1]
        xp = F.pad(x[i : i + 1].double(), (dilation * (k // 2),) * 4, mode="reflect")
        ref = F.conv2d(xp, w[y].unsqueeze(1).double(), groups=3, dilation=dilation).float()
        out.append((ref / ref.max() * 255).round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def test_reflect_padding_drops_the_dark_frame():
    # A flat grey image: zero padding darkens its 1-px border (the frame COIN's detector sees);
    # reflect padding filters the border like the interior, so the output stays flat.
    ds = {"image": list(np.full((4, 12, 10, 3), 128, np.uint8)), "label": [0, 1, 0, 1]}
    x = to_chw(np.stack(ds["image"]))
    zeros = ue.apply(ue.fit("cuda", ds, seed=4), x, ds["label"]).float()
    reflect_bank = ue.fit("cuda", ds, seed=4, padding="reflect")
    reflect = ue.apply(reflect_bank, x, ds["label"])
    frame = torch.cat([zeros[..., 0, :], zeros[..., -1, :], zeros[..., :, 0], zeros[..., :, -1]], -1)
    assert frame.mean() < zeros[..., 1:-1, 1:-1].mean() - 30  # the frame is there with zeros
    assert (reflect == 255).all()  # flat in, flat out (max-normalised): no frame
    assert reflect_bank.params["padding"] == "reflect"
    # Same filters either way: the padding is an apply option stored in the bank, not another key.
    assert np.array_equal(reflect_bank.tensors["weight"], ue.fit("cuda", ds, seed=4).tensors["weight"])


@pytest.mark.parametrize("hw", [(9, 7), (100, 96)])  # the shifted adds, and the library convolution
@pytest.mark.parametrize("k", [3, 5])
def test_reflect_matches_the_reference_and_is_the_same_batched_or_per_image(hw, k):
    ds, _, labels = toy_data(classes=3)
    bank = ue.fit("cuda", ds, seed=7, padding="reflect", kernel_size=k)
    rng = np.random.default_rng(k)
    x = torch.from_numpy(rng.integers(0, 256, (len(labels), 3, *hw), dtype=np.uint8))
    out = ue.apply(bank, x, labels)
    w = torch.from_numpy(bank.tensors["weight"])
    assert torch.equal(out, _reflect_ref(x, w, labels))
    per_image = torch.cat([ue.apply(bank, x[i : i + 1], [y]) for i, y in enumerate(labels)])
    assert torch.equal(out, per_image)


@pytest.mark.parametrize("hw", [(20, 17), (100, 96)])
def test_dilation_spaces_the_same_filters_and_is_stored(hw):
    ds, _, labels = toy_data(classes=3)
    bank = ue.fit("cuda", ds, seed=7, padding="reflect", dilation=3)
    # The same random entries as dilation 1 (the key does not change), only spaced out at apply time.
    assert np.array_equal(bank.tensors["weight"], ue.fit("cuda", ds, seed=7).tensors["weight"])
    assert bank.params["dilation"] == 3 and bank.measure()["kernel_size"] == 3
    x = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (len(labels), 3, *hw), dtype=np.uint8))
    out = ue.apply(bank, x, labels)
    assert torch.equal(out, _reflect_ref(x, torch.from_numpy(bank.tensors["weight"]), labels, dilation=3))
    assert not torch.equal(out, ue.apply(ue.fit("cuda", ds, seed=7, padding="reflect"), x, labels))


# --- photo sizes: the size defaults and dilation="auto" ----------------------------------------------------------

def _photos(side, n=6, classes=3, seed=0, width=None):
    imgs = np.random.default_rng(seed).integers(0, 256, (n, side, width or side, 3), dtype=np.uint8)
    return {"image": list(imgs), "label": [i % classes for i in range(n)]}


PHOTO = {"kernel_size": 7, "padding": "reflect", "dilation": "auto"}


@pytest.mark.parametrize("h, w, photo", [(32, 32, False), (63, 200, False), (64, 64, True), (96, 80, True)])
def test_photo_sized_images_take_the_photo_defaults(h, w, photo):
    bank = ue.fit("cuda", _photos(h, width=w), seed=3)
    got = {k: bank.params[k] for k in PHOTO}
    if photo:  # the shorter side decides
        assert got == PHOTO
        assert bank.info["size_defaults"] == {"side": min(h, w), "min_side": 64, "values": PHOTO}
        # the same key as asking for the setting: only info tells that the size chose it
        explicit = ue.fit("cuda", _photos(h, width=w), seed=3, **PHOTO)
        assert np.array_equal(bank.tensors["weight"], explicit.tensors["weight"])
        assert "size_defaults" not in explicit.info and explicit.params == bank.params
    else:
        assert got == {"kernel_size": 3, "padding": "zeros", "dilation": 1} and "size_defaults" not in bank.info


def test_what_the_caller_passes_wins_over_the_photo_defaults():
    bank = ue.fit("cuda", _photos(96), seed=3, kernel_size=3, dilation=2)
    assert (bank.params["kernel_size"], bank.params["padding"], bank.params["dilation"]) == (3, "reflect", 2)
    assert bank.info["size_defaults"]["values"] == {"padding": "reflect"}  # only what the size chose
    assert "size_defaults" not in ue.fit("cuda", _photos(96), seed=3, **{**PHOTO, "dilation": 1}).info


@pytest.mark.parametrize("hw, dilation", [((64, 64), 2), ((100, 230), 3), ((224, 224), 7), ((20, 20), 1)])
def test_auto_dilation_spaces_the_taps_by_each_images_size(tmp_path, hw, dilation):
    # One bank, fitted on 64-px images, acts on every image at that image's own scale, also after a save / load.
    bank = ue.NoiseBank.load(ue.fit("cuda", _photos(64), seed=5).save(tmp_path / "auto.bank.arrow"))
    assert bank.params["dilation"] == "auto"
    labels = [0, 1, 2]
    x = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (3, 3, *hw), dtype=np.uint8))
    out = ue.apply(bank, x, labels)
    assert torch.equal(out, _reflect_ref(x, torch.from_numpy(bank.tensors["weight"]), labels, dilation=dilation))


def test_scaled_dilation_is_the_32_px_share():
    from uetransforms.core.kinds.conv import AUTO_DILATION_SIDE, scaled_dilation

    assert AUTO_DILATION_SIDE == 32
    assert [scaled_dilation(s, s) for s in (1, 47, 48, 80, 81, 96, 160, 224, 448)] == [1, 1, 2, 3, 3, 3, 5, 7, 14]
    assert scaled_dilation(224, 4000) == scaled_dilation(4000, 224) == 7  # the shorter side


def test_bank_without_a_dilation_param_applies_contiguous_filters(tmp_path):
    # Banks saved before the dilation parameter existed hold no "dilation": their taps were contiguous.
    ds, imgs, labels = toy_data()
    bank = ue.fit("cuda", ds, seed=9)
    old = bank.replace(params={k: v for k, v in bank.params.items() if k != "dilation"})
    loaded = ue.NoiseBank.load(old.save(tmp_path / "old.bank.arrow"))
    assert "dilation" not in loaded.params
    x = to_chw(imgs)
    assert torch.equal(ue.apply(loaded, x, labels), ue.apply(bank, x, labels))


def test_bank_without_a_padding_param_applies_as_zeros(tmp_path):
    # Banks saved before the padding parameter existed hold no "padding": they were zero-padded.
    ds, imgs, labels = toy_data()
    bank = ue.fit("cuda", ds, seed=9)
    old = ue.NoiseBank(method="cuda", kind="conv", keying="class", keys=bank.keys, tensors=bank.tensors,
                       params={k: v for k, v in bank.params.items() if k != "padding"},
                       image_shape=bank.image_shape, info=bank.info)
    loaded = ue.NoiseBank.load(old.save(tmp_path / "old.bank.arrow"))
    assert "padding" not in loaded.params
    x = to_chw(imgs)
    assert torch.equal(ue.apply(loaded, x, labels), ue.apply(bank, x, labels))
    assert not torch.equal(ue.apply(ue.fit("cuda", ds, seed=9, padding="reflect"), x, labels), ue.apply(bank, x, labels))


def test_reflect_on_images_too_small_to_mirror_says_what_to_do():
    ds = {"image": list(np.full((2, 2, 2, 3), 100, np.uint8)), "label": [0, 1]}
    bank = ue.fit("cuda", ds, seed=1, padding="reflect", kernel_size=5)
    with pytest.raises(ue.BankError, match="padding='zeros'"):
        ue.apply(bank, to_chw(np.stack(ds["image"])), ds["label"])


def test_save_load_round_trip(tmp_path):
    ds, imgs, labels = toy_data()
    bank = ue.fit("cuda", ds, seed=9)
    path = bank.save(tmp_path / "cuda.bank.arrow")
    loaded = ue.NoiseBank.load(path)
    assert loaded.sha256 == bank.sha256 and loaded.params == bank.params
    x = to_chw(imgs)
    assert torch.equal(ue.apply(loaded, x, labels), ue.apply(bank, x, labels))


def test_reads_labels_only_not_images():
    img = np.zeros((8, 8, 3), np.uint8)
    ds = {"image": [img] + [None] * 5, "label": [0, 1, 2, 0, 1, 2]}  # decoding row 1+ would fail
    assert ue.fit("cuda", ds, seed=0).num_keys == 3


@pytest.mark.parametrize(
    "params, name",
    [
        ({"blur_parameter": 0}, "blur_parameter"),
        ({"blur_parameter": -0.1}, "blur_parameter"),
        ({"blur_parameter": float("nan")}, "blur_parameter"),
        ({"center_parameter": -1}, "center_parameter"),
        ({"kernel_size": 4}, "kernel_size"),
        ({"kernel_size": 0}, "kernel_size"),
        ({"kernel_size": 3.0}, "kernel_size"),
        ({"normalise": "min"}, "normalise"),
        ({"padding": "replicate"}, "padding"),
        ({"dilation": 0}, "dilation"),
        ({"dilation": 2.0}, "dilation"),
        ({"dilation": "Auto"}, "dilation"),
        ({"dilation": "3"}, "dilation"),
        ({"blur": 0.3}, "blur"),
    ],
)
def test_bad_params_raise_value_error_naming_the_parameter(params, name):
    ds, _, _ = toy_data()
    with pytest.raises(ValueError, match=name):
        ue.fit("cuda", ds, seed=0, **params)


# --- key_trials: several candidate keys, the most learnable kept ---------------------------------------------

def _golden_data():
    # the data the golden hashes below were computed on (main before key_trials, commit 0665c7f)
    imgs = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    return {"image": list(imgs), "label": [0, 1, 2, 0, 1, 2]}


@pytest.mark.parametrize("seed, params, sha", [
    (7, {}, "960902cb4f1a94b2680346d96919c74a8f86cc1e2d0e8d145ea1e0031bbcbb8c"),
    (1234, {"kernel_size": 5, "padding": "reflect"}, "13200ae57f5940d1c305daf064b9a77b13fd6fa1915837be8a4eda157bea17d4"),
    (99, {"kernel_size": 5, "dilation": 2}, "2540c50cb2fc0b3f8c993214516061ae6730704c743a8c65d338ca0cfcb2b89b"),
])
def test_one_key_trial_is_main_bank_byte_for_byte(seed, params, sha):
    ds = _golden_data()
    assert ue.fit("cuda", ds, seed=seed, **params).sha256 == sha
    bank = ue.fit("cuda", ds, seed=seed, key_trials=1, **params)
    assert bank.sha256 == sha and "key_trials" not in bank.params and bank.info == {"size_mismatch": "resize"}


class _CountingList(list):
    """A list that records which slices were read (what FitData decodes of a dict dataset)."""

    def __init__(self, *a):
        super().__init__(*a)
        self.reads: list[tuple[int, int]] = []

    def __getitem__(self, i):
        if isinstance(i, slice):
            self.reads.append((i.start, i.stop))
        return super().__getitem__(i)


def test_one_key_trial_reads_no_image_but_the_first():
    ds = _golden_data()
    ds["image"] = _CountingList(ds["image"])
    ue.fit("cuda", ds, seed=3, key_trials=1)
    assert ds["image"].reads == [(0, 1)]  # the first image, for its shape only


@pytest.fixture
def fast_score(monkeypatch):
    """The real score at a unit-test budget: one epoch, one training seed."""
    monkeypatch.setattr(cuda, "SCORE_EPOCHS", 1)
    monkeypatch.setattr(cuda, "SCORE_SEEDS", (0,))


def test_key_trials_keeps_the_lowest_score_and_is_a_candidate_draw(monkeypatch):
    ds, _, _ = toy_data(n=9, classes=3)
    seen = []

    def fake_score(images, labels, weight, *, normalise, padding):
        seen.append(weight.copy())
        return float(weight.sum() % 1.0)  # any deterministic, key-dependent number

    monkeypatch.setattr(cuda, "key_score", fake_score)
    bank = ue.fit("cuda", ds, seed=21, key_trials=5, kernel_size=5)
    cands = cuda.candidate_seeds(21, 5)
    assert cands[0] == 21 and len(set(cands)) == 5
    scores = [float(w.sum() % 1.0) for w in seen]
    kept = int(np.argmin(scores))
    assert bank.info["key_kept"] == kept and bank.info["key_scores"] == scores
    assert bank.info["key_score"] == min(scores) and bank.info["key_trials"] == 5
    # candidate i is the one-key bank of seed candidate_seeds(21, 5)[i]: candidate 0 is today's draw
    for i, c in enumerate(cands):
        assert (ue.fit("cuda", ds, seed=c, kernel_size=5).tensors["weight"] == seen[i]).all()
    assert (bank.tensors["weight"] == seen[kept]).all()
    assert bank.params["key_trials"] == 5 and bank.params["seed"] == 21
    # info says how the key was chosen, never which seed it came from
    assert set(bank.info) == {"size_mismatch", "key_trials", "key_kept", "key_score", "key_scores", "key_score_images"}


def test_key_trials_same_seed_same_bytes_and_a_bounded_seeded_sample(monkeypatch, fast_score):
    monkeypatch.setattr(cuda, "SCORE_IMAGES", 6)
    ds, _, _ = toy_data(n=12, classes=3)
    ds["image"] = _CountingList(ds["image"])
    a = ue.fit("cuda", ds, seed=5, key_trials=3)
    rows_a = sorted({r for r, _ in ds["image"].reads[1:]})  # after the first image's shape
    ds["image"].reads.clear()
    b = ue.fit("cuda", ds, seed=5, key_trials=3)
    rows_b = sorted({r for r, _ in ds["image"].reads[1:]})
    assert a.sha256 == b.sha256 and a.info == b.info
    assert len(rows_a) == 6 and rows_a == rows_b and a.info["key_score_images"] == 6  # 6 of 12 rows, seeded
    assert all(0.0 <= s <= 1.0 for s in a.info["key_scores"]) and len(a.info["key_scores"]) == 3


def test_key_score_is_a_held_out_accuracy_and_repeatable(fast_score):
    ds, imgs, labels = toy_data(n=12, classes=3)
    x = to_chw(imgs)
    w = ue.fit("cuda", ds, seed=4).tensors["weight"]
    s = cuda.key_score(x, np.asarray(labels), w, normalise="max", padding="zeros")
    assert s == cuda.key_score(x, np.asarray(labels), w, normalise="max", padding="zeros")
    assert 0.0 <= s <= 1.0 and abs(s * 3 - round(s * 3)) < 1e-9  # accuracy on the held-out quarter: 3 of 12 images


def test_score_images_shrinks_large_images_only():
    small = np.zeros((2, 3, 20, 30), np.uint8)
    assert tuple(cuda.score_images(small).shape) == (2, 3, 20, 30)
    big = np.full((2, 3, 96, 64), 200, np.uint8)
    out = cuda.score_images(big)
    assert tuple(out.shape) == (2, 3, 32, 21) and out.dtype == torch.uint8 and int(out.min()) == 200


def test_key_trials_errors():
    ds, _, _ = toy_data()
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="key_trials"):
            ue.fit("cuda", ds, seed=0, key_trials=bad)
    one = {"image": ds["image"][:1], "label": [0]}
    with pytest.raises(ValueError, match="key_trials=1"):
        ue.fit("cuda", one, seed=0, key_trials=2)
