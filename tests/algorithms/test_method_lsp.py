"""lsp (additive bank): patch-wise class patterns, budget, determinism, save/load, errors."""

import math

import numpy as np
import pytest
import torch

import uetransforms as ue
from _toy import to_chw, toy_data
from uetransforms.algorithms import lsp


def _patch_constant(delta, ps):
    """True if every ps x ps grid cell of every [C, H, W] map holds one value."""
    _, _, h, w = delta.shape
    for r in range(0, h, ps):
        for c in range(0, w, ps):
            cell = delta[:, :, r : r + ps, c : c + ps]
            if not (cell == cell[:, :, :1, :1]).all():
                return False
    return True


def test_default_bank_is_patchwise_vertices_at_exactly_eps():
    ds, _, _ = toy_data(h=32, w=32, classes=4)
    bank = ue.fit("lsp", ds, seed=1)
    d = bank.tensors["delta"]
    assert bank.kind == "additive" and d.shape == (4, 3, 32, 32) and d.dtype == np.float32
    assert bank.params == {"epsilon": 6 / 255, "norm": "linf", "patch_size": 8, "pattern": "vertex", "seed": 1}
    assert _patch_constant(d, 8) and not _patch_constant(d, 16)
    assert np.allclose(np.abs(d), 6 / 255)  # every entry +-eps: L-inf = eps and L2 = eps * sqrt(d)
    l2 = np.linalg.norm(d.reshape(4, -1).astype(np.float64), axis=1)
    assert np.allclose(l2, 6 / 255 * math.sqrt(3 * 32 * 32), rtol=1e-6)
    signs = np.sign(d[:, :, ::8, ::8]).reshape(4, -1)
    assert len({row.tobytes() for row in signs}) == 4  # distinct class centres


def test_grid_covers_the_image_and_crops_the_last_patches():
    ds, _, _ = toy_data(h=10, w=7)
    d = ue.fit("lsp", ds, seed=2, patch_size=4).tensors["delta"]
    assert d.shape == (3, 3, 10, 7)
    assert _patch_constant(d, 4)
    # default patch size follows min(H, W) // 4
    assert ue.fit("lsp", ds, seed=2).params["patch_size"] == 1


def test_tiny_grid_still_gives_distinct_classes():
    ds, _, _ = toy_data(n=8, h=2, w=2, classes=8)  # 1 patch x 3 channels = 8 vertices for 8 classes
    d = ue.fit("lsp", ds, seed=0, patch_size=2).tensors["delta"]
    assert len({np.sign(x[:, 0, 0]).tobytes() for x in d}) == 8


def test_gaussian_pattern_and_l2_norm():
    ds, _, _ = toy_data(h=32, w=32)
    d = ue.fit("lsp", ds, seed=3, pattern="gaussian").tensors["delta"].astype(np.float64)
    assert np.allclose(np.abs(d).reshape(3, -1).max(axis=1), 6 / 255, rtol=1e-6)
    assert len(np.unique(np.abs(d))) > 3  # not a vertex pattern
    d2 = ue.fit("lsp", ds, seed=3, norm="l2", epsilon=1.0).tensors["delta"].astype(np.float64)
    assert np.allclose(np.linalg.norm(d2.reshape(3, -1), axis=1), 1.0, rtol=1e-5)


def test_budget_respected_after_apply():
    ds, imgs, labels = toy_data(h=32, w=32, n=4, classes=2, value=128)
    bank = ue.fit("lsp", ds, seed=4)
    x = to_chw(imgs)
    diff = ue.apply(bank, x, labels).int() - x.int()
    assert set(diff.flatten().tolist()) == {-6, 6}
    bank16 = ue.fit("lsp", ds, seed=4, epsilon=16 / 255, pattern="gaussian")
    diff16 = (ue.apply(bank16, x, labels).int() - x.int()).abs()
    assert int(diff16.max()) == 16


def test_same_seed_same_bank_other_seed_other_bank():
    ds, _, _ = toy_data(h=32, w=32)
    a, b, c = (ue.fit("lsp", ds, seed=s) for s in (5, 5, 6))
    assert a.sha256 == b.sha256 and a.tensors["delta"].tobytes() == b.tensors["delta"].tobytes()
    assert a.sha256 != c.sha256 and not np.array_equal(a.tensors["delta"], c.tensors["delta"])
    data = ue.FitData.from_arrays(np.stack(ds["image"]), ds["label"])
    cpu = torch.device("cpu")
    assert lsp.fit(data, seed=5, device=cpu).sha256 == lsp.fit(data, seed=5, device=cpu).sha256


def test_save_load_round_trip(tmp_path):
    ds, imgs, labels = toy_data(h=32, w=32)
    bank = ue.fit("lsp", ds, seed=9, pattern="gaussian")
    loaded = ue.NoiseBank.load(bank.save(tmp_path / "lsp.bank.arrow"))
    assert loaded.sha256 == bank.sha256 and loaded.params == bank.params
    x = to_chw(imgs)
    assert torch.equal(ue.apply(loaded, x, labels), ue.apply(bank, x, labels))


def test_reads_labels_only_not_images():
    img = np.zeros((8, 8, 3), np.uint8)
    ds = {"image": [img] + [None] * 3, "label": [0, 1, 0, 1]}
    assert ue.fit("lsp", ds, seed=0).tensors["delta"].shape == (2, 3, 8, 8)


@pytest.mark.parametrize(
    "params, name",
    [({"epsilon": 0}, "epsilon"), ({"epsilon": 2.0}, "epsilon"), ({"epsilon": float("inf")}, "epsilon"),
     ({"norm": "l1"}, "norm"), ({"patch_size": 0}, "patch_size"), ({"patch_size": 2.5}, "patch_size"),
     ({"pattern": "stripes"}, "pattern"), ({"patchsize": 8}, "patchsize")],
)
def test_bad_params_raise_value_error_naming_the_parameter(params, name):
    ds, _, _ = toy_data(h=32, w=32)
    with pytest.raises(ValueError, match=name):
        ue.fit("lsp", ds, seed=0, **params)


# ------------------------------------------------------------------ issue 23: nothing silently wrong
def test_a_patch_size_that_cannot_separate_the_classes_is_refused():
    import numpy as np

    import uetransforms as ue
    from uetransforms.algorithms import ParameterError

    data = {"image": list(np.zeros((20, 32, 32, 3), np.uint8)), "label": [i % 10 for i in range(20)]}
    with pytest.raises(ParameterError, match=r"patch_size=64 is larger than the 32x32 images.*patch_size <= 16"):
        ue.fit("lsp", data, patch_size=64, seed=0)
    small = {"image": list(np.zeros((20, 1, 1, 3), np.uint8)), "label": [i % 20 for i in range(20)]}
    with pytest.raises(ParameterError, match=r"3 values per pattern.*8 distinct vertex patterns for 20 classes"):
        ue.fit("lsp", small, patch_size=1, seed=0)
    bank = ue.fit("lsp", data, patch_size=16, seed=0)  # 3 x 2 x 2 = 12 values: 4096 patterns for 10 classes
    flat = bank.tensors["delta"].reshape(10, -1)
    assert len({row.tobytes() for row in flat}) == 10
