"""cudatap: cuda's filters, then tap's noise crafted on the filtered images, on tiny data with a local checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import uetransforms as ue
from uetransforms.core import kernels

PHOTO = {"kernel_size": 7, "padding": "reflect", "dilation": "auto"}


def _data(n=12, k=3, size=8):
    rng = np.random.default_rng(0)
    return {"image": list(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)), "label": [i % k for i in range(n)]}


def _chw(ds):
    return torch.from_numpy(np.stack(ds["image"])).permute(0, 3, 1, 2).contiguous()


def test_filters_are_cudas_and_the_noise_sits_on_the_filtered_pixels(backbone_file):
    ds = _data()
    bank = ue.fit("cudatap", ds, backbone=backbone_file, steps=4, seed=5, blur_parameter=0.5)
    # cudatap's defaults are cuda's photo-size filters (7 x 7, reflect, taps spaced by the image size)
    filters = ue.fit("cuda", ds, seed=5, blur_parameter=0.5, **PHOTO).tensors["weight"]
    assert bank.kind == "convadd" and bank.keying == "sample"
    assert np.array_equal(bank.tensors["weight"], filters[ds["label"]])  # same seed, same key: cuda's filters
    x = _chw(ds)
    # 8-px images: dilation "auto" is 1 here
    filtered = kernels.convolve(x, torch.from_numpy(np.array(bank.tensors["weight"])), padding="reflect")
    d = bank.tensors["delta"].astype(np.float64)
    assert np.abs(d).max() <= 8 / 255 and np.allclose(np.rint(d * 255), d * 255, atol=1e-3)
    f01 = filtered.numpy() / 255
    assert (f01 + d).min() >= -1e-6 and (f01 + d).max() <= 1 + 1e-6  # crafted inside the filtered image's box
    out = ue.apply(bank, x, bank.keys.tolist())  # the sample keys, in the data's order
    assert torch.equal(out, kernels.add_delta(filtered, torch.from_numpy(d.astype(np.float32)) * 255))
    assert bank.params["blur_parameter"] == 0.5 and bank.params["backbone"] == backbone_file
    assert 0 <= bank.info["target_hit_rate"] <= 1


def test_cudas_padding_and_dilation_are_the_ones_crafted_on_and_applied(backbone_file):
    # The bank stores cuda's padding and dilation; the noise was crafted on images filtered that way,
    # and apply must filter the same way (it once applied every cudatap bank zero-padded).
    ds = _data(size=12)
    bank = ue.fit("cudatap", ds, backbone=backbone_file, mode="class", steps=2, seed=3, padding="reflect", dilation=2)
    assert bank.params["padding"] == "reflect" and bank.params["dilation"] == 2
    x = _chw(ds)
    w = torch.from_numpy(np.array(bank.tensors["weight"]))[ds["label"]]
    filtered = kernels.convolve(x, w, padding="reflect", dilation=2)
    d = torch.from_numpy(np.array(bank.tensors["delta"], dtype=np.float32))[ds["label"]] * 255
    out = ue.apply(bank, x, ds["label"])
    assert torch.equal(out, kernels.add_delta(filtered, d))
    assert not torch.equal(out, kernels.add_delta(kernels.convolve(x, w), d))


def test_class_mode_keys_filters_and_noise_by_class(backbone_file):
    ds = _data()
    bank = ue.fit("cudatap", ds, backbone=backbone_file, mode="class", steps=2, seed=2)
    assert bank.keying == "class" and bank.tensors["weight"].shape == (3, 3, 7, 7)
    assert bank.tensors["delta"].shape == (3, 3, 8, 8)
    filters = ue.fit("cuda", ds, seed=2, **PHOTO)
    assert np.array_equal(bank.tensors["weight"], filters.tensors["weight"])
    x = _chw(ds)
    out = ue.apply(bank, x, ds["label"])
    filtered = ue.apply(filters, x, ds["label"])
    assert 0 < int((out.int() - filtered.int()).abs().max()) <= 8


def test_unknown_parameter_names_both_families(backbone_file):
    with pytest.raises(Exception, match="blur_parameter.*steps|steps.*blur_parameter"):
        ue.fit("cudatap", _data(), backbone=backbone_file, strength=3, seed=0)


def test_defaults_are_cudas_and_taps_with_the_measured_shift():
    from uetransforms.algorithms import cuda, cudatap, tap

    d = cudatap.METHOD.defaults
    assert d["augment"] == "flip+crop" and tap.METHOD.defaults["augment"] == "flip"
    # cuda's parameters, with cuda's photo-size filters at every size (the setting measured for cudatap)
    assert all(d[n] == cuda.PHOTO_DEFAULTS.values.get(n, v) for n, v in cuda.METHOD.defaults.items())
    assert (d["kernel_size"], d["padding"], d["dilation"]) == (7, "reflect", "auto")
    assert all(d[n] == v for n, v in tap.METHOD.defaults.items() if n != "augment")


def test_grid_reaches_taps_pgd_and_the_filters_stay_cudas(backbone_file):
    # tap's grid is cudatap's too: the noise is crafted on coarse blocks, the filters are untouched
    rng = np.random.default_rng(5)
    ds = {"image": list(rng.integers(0, 256, (6, 12, 12, 3), dtype=np.uint8)), "label": [0, 1, 2] * 2}
    bank = ue.fit("cudatap", ds, backbone=backbone_file, grid=4, steps=2, seed=3)
    assert bank.info["grid"] == 4 and bank.params["grid"] == 4
    plain = ue.fit("cudatap", ds, backbone=backbone_file, steps=2, seed=3)
    assert plain.info["grid"] == 1
    assert np.array_equal(bank.tensors["weight"], plain.tensors["weight"])
