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
        ({"blur": 0.3}, "blur"),
    ],
)
def test_bad_params_raise_value_error_naming_the_parameter(params, name):
    ds, _, _ = toy_data()
    with pytest.raises(ValueError, match=name):
        ue.fit("cuda", ds, seed=0, **params)
