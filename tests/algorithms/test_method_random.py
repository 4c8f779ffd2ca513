"""random (additive bank): U(-eps, eps) per class, budget, determinism, save/load, errors."""

import numpy as np
import pytest
import torch

import uetransforms as ue
from _toy import to_chw, toy_data
from uetransforms.algorithms import random as random_method


def test_bank_shape_range_and_params():
    ds, _, _ = toy_data(classes=3)
    bank = ue.fit("random", ds, seed=1)
    d = bank.tensors["delta"]
    assert bank.kind == "additive" and d.shape == (3, 3, 8, 8) and d.dtype == np.float32
    assert np.abs(d).max() <= np.float32(8 / 255)
    assert np.abs(d).max() > 0.9 * 8 / 255  # actually spans the range
    assert bank.params == {"epsilon": 8 / 255, "norm": "linf", "seed": 1}
    assert not np.array_equal(d[0], d[1])  # one pattern per class


@pytest.mark.parametrize("eps", [8 / 255, 4 / 255, 16 / 255])
def test_budget_respected_after_apply(eps):
    ds, imgs, labels = toy_data(n=4, h=16, w=16, classes=2, value=128)  # mid-grey: no clipping
    bank = ue.fit("random", ds, seed=3, epsilon=eps)
    x = to_chw(imgs)
    out = ue.apply(bank, x, labels)
    diff = (out.int() - x.int()).abs()
    assert int(diff.max()) <= round(255 * eps)
    assert int(diff.max()) >= round(255 * eps) - 1
    # same class, same noise
    assert torch.equal(out[0], out[2])


def test_same_seed_same_bank_other_seed_other_bank():
    ds, _, _ = toy_data()
    a, b, c = (ue.fit("random", ds, seed=s) for s in (5, 5, 6))
    assert a.sha256 == b.sha256 and a.tensors["delta"].tobytes() == b.tensors["delta"].tobytes()
    assert a.sha256 != c.sha256 and not np.array_equal(a.tensors["delta"], c.tensors["delta"])
    data = ue.FitData.from_arrays(np.stack(ds["image"]), ds["label"])
    cpu = torch.device("cpu")
    assert random_method.fit(data, seed=5, device=cpu).sha256 == random_method.fit(data, seed=5, device=cpu).sha256


def test_save_load_round_trip(tmp_path):
    ds, imgs, labels = toy_data()
    bank = ue.fit("random", ds, seed=9)
    loaded = ue.NoiseBank.load(bank.save(tmp_path / "random.bank.arrow"))
    assert loaded.sha256 == bank.sha256
    x = to_chw(imgs)
    assert torch.equal(ue.apply(loaded, x, labels), ue.apply(bank, x, labels))


def test_reads_labels_only_not_images():
    img = np.zeros((8, 8, 3), np.uint8)
    ds = {"image": [img] + [None] * 3, "label": [0, 1, 0, 1]}
    assert ue.fit("random", ds, seed=0).tensors["delta"].shape == (2, 3, 8, 8)


@pytest.mark.parametrize(
    "params, name",
    [({"epsilon": 0}, "epsilon"), ({"epsilon": -0.1}, "epsilon"), ({"epsilon": 1.5}, "epsilon"),
     ({"epsilon": "8/255"}, "epsilon"), ({"eps": 0.1}, "eps")],
)
def test_bad_params_raise_value_error_naming_the_parameter(params, name):
    ds, _, _ = toy_data()
    with pytest.raises(ValueError, match=name):
        ue.fit("random", ds, seed=0, **params)
