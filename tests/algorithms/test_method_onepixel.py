"""ops (pixel bank): the one-pixel search, exactness of the streamed sums, apply, errors."""

import numpy as np
import pytest
import torch

import uetransforms as ue
from _toy import to_chw
from uetransforms.algorithms import onepixel as ops_method


def _random(n=12, h=6, w=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    labels = [i % classes for i in range(n)]
    return {"image": list(imgs), "label": labels}, imgs, labels


def _brute_force(imgs_k, objective, std_eps=1e-3):
    """Direct score [H*W, 8] as in the authors' search (channel 0 is the most significant bit)."""
    x = imgs_k.astype(np.float64) / 255  # [n, H, W, C]
    n, h, w, c = x.shape
    out = np.zeros((h * w, 2**c))
    for pos in range(h * w):
        px = x[:, pos // w, pos % w, :]
        for v in range(2**c):
            colour = np.array([(v >> (c - 1 - ch)) & 1 for ch in range(c)], dtype=np.float64)
            d = np.abs(colour - px)
            if objective == "channel_mean":
                d = d.mean(axis=1)
            out[pos, v] = d.mean() / (d.std() + std_eps)
    return out


@pytest.mark.parametrize("objective", ["official", "channel_mean"])
def test_scores_equal_the_direct_computation(objective):
    _, imgs, labels = _random()
    data = ue.FitData.from_arrays(imgs, labels)
    counts, s1, s2 = ops_method.class_sums(data, 3, torch.device("cpu"))
    for k in range(3):
        sc = ops_method.scores(int(counts[k]), s1[k], s2[k], objective=objective, std_eps=1e-3)
        np.testing.assert_allclose(sc, _brute_force(imgs[np.array(labels) == k], objective), rtol=1e-9)


def test_streamed_sums_are_exact_across_batches():
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (600, 2, 2, 3), dtype=np.uint8)  # more rows than one batch
    labels = rng.integers(0, 4, 600)
    counts, s1, s2 = ops_method.class_sums(ue.FitData.from_arrays(imgs, labels), 4, torch.device("cpu"))
    x = imgs.transpose(0, 3, 1, 2).reshape(600, 3, 4).astype(np.int64)
    for k in range(4):
        xk = x[labels == k]
        assert counts[k] == len(xk)
        np.testing.assert_array_equal(s1[k], xk.sum(0))
        np.testing.assert_array_equal(s2[k, 1], (xk[:, 0] * xk[:, 1]).sum(0))  # pair (0, 1)
        np.testing.assert_array_equal(s2[k, 5], (xk[:, 2] ** 2).sum(0))  # pair (2, 2)


def test_exactly_one_pixel_per_class_changes():
    ds, imgs, labels = _random(classes=4)
    bank = ue.fit("ops", ds, seed=0)
    mask, value = bank.tensors["mask"], bank.tensors["value"]
    assert bank.kind == "pixel" and mask.shape == (4, 1, 6, 5) and value.shape == (4, 3, 6, 5)
    assert mask.dtype == np.uint8 and value.dtype == np.uint8
    assert (mask.reshape(4, -1).sum(axis=1) == 1).all()
    assert ((value != 0).any(axis=1) <= mask[:, 0].astype(bool)).all()  # colour only under the mask
    assert set(np.unique(value).tolist()) <= {0, 255}
    x = to_chw(imgs)
    out = ue.apply(bank, x, labels)
    changed = (out != x).any(dim=1)  # [B, H, W]
    assert (changed.sum(dim=(1, 2)) <= 1).all()
    for i, y in enumerate(labels):
        r, c = np.argwhere(mask[y, 0])[0]
        assert torch.equal(out[i, :, r, c], torch.from_numpy(value[y, :, r, c]))
        if changed[i].any():
            assert changed[i, r, c]
    assert bank.params == {"objective": "official", "std_eps": 1e-3, "norm": "l0", "epsilon": 1, "seed": 0}


def test_a_constant_pixel_is_found():
    ds, imgs, labels = _random(n=12, h=6, w=6, classes=2, seed=3)
    imgs = imgs.copy()
    lab = np.array(labels)
    imgs[lab == 0, 2, 3, :] = 0  # class 0: always black at (2, 3) -> white there is a big, constant change
    imgs[lab == 1, 5, 1, :] = 255  # class 1: always white at (5, 1) -> black there
    ds = {"image": list(imgs), "label": labels}
    for objective in ("official", "channel_mean"):
        bank = ue.fit("ops", ds, seed=0, objective=objective)
        assert np.argwhere(bank.tensors["mask"][0, 0]).tolist() == [[2, 3]]
        assert bank.tensors["value"][0, :, 2, 3].tolist() == [255, 255, 255]
        assert np.argwhere(bank.tensors["mask"][1, 0]).tolist() == [[5, 1]]
        assert bank.tensors["value"][1, :, 5, 1].tolist() == [0, 0, 0]
        sel = bank.info["selection"]
        assert (sel[0]["row"], sel[0]["col"], sel[0]["colour"]) == (2, 3, [255, 255, 255])
        assert sel[0]["score"] == pytest.approx(1 / 1e-3)


def test_classes_never_share_a_pair_when_avoidable():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (4, 3, 3, 3), dtype=np.uint8)
    imgs = np.concatenate([base] * 3)  # three classes with identical images: identical scores
    labels = [0] * 4 + [1] * 4 + [2] * 4
    bank = ue.fit("ops", {"image": list(imgs), "label": labels}, seed=0)
    pairs = {(s["row"], s["col"], tuple(s["colour"])) for s in bank.info["selection"]}
    assert len(pairs) == 3 and "shared_pairs" not in bank.info
    # more classes than (position, colour) pairs: reuse is unavoidable and said so
    tiny = rng.integers(0, 256, (10, 1, 1, 3), dtype=np.uint8)  # 1 pixel x 8 colours < 10 classes
    many = ue.fit("ops", {"image": list(tiny), "label": list(range(10))}, seed=0)
    assert many.info.get("shared_pairs") is True and many.tensors["value"].shape == (10, 3, 1, 1)
    assert len({tuple(s["colour"]) for s in many.info["selection"]}) == 8  # every pair used first


def test_class_without_images_gets_a_free_random_pair():
    ds, imgs, _ = _random(n=6, classes=3)
    labels = [0, 2, 0, 2, 0, 2]  # class 1 has no images
    ds = {"image": list(imgs), "label": labels}
    a, b = ue.fit("ops", ds, seed=1), ue.fit("ops", ds, seed=1)
    sel = a.info["selection"]
    assert sel[1]["images"] == 0 and sel[1]["score"] is None
    assert len({(s["row"], s["col"], tuple(s["colour"])) for s in sel}) == 3
    assert a.tensors["mask"][1].sum() == 1
    assert a.sha256 == b.sha256


def test_same_seed_same_bank(tmp_path):
    ds, imgs, labels = _random()
    a, b = ue.fit("ops", ds, seed=5), ue.fit("ops", ds, seed=5)
    assert a.sha256 == b.sha256
    assert a.tensors["mask"].tobytes() == b.tensors["mask"].tobytes()
    data = ue.FitData.from_arrays(imgs, labels)
    cpu = torch.device("cpu")
    assert ops_method.fit(data, seed=5, device=cpu).sha256 == ops_method.fit(data, seed=5, device=cpu).sha256


def test_save_load_round_trip(tmp_path):
    ds, imgs, labels = _random()
    bank = ue.fit("ops", ds, seed=2)
    loaded = ue.NoiseBank.load(bank.save(tmp_path / "ops.bank.arrow"))
    assert loaded.sha256 == bank.sha256 and loaded.info == bank.info
    x = to_chw(imgs)
    assert torch.equal(ue.apply(loaded, x, labels), ue.apply(bank, x, labels))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_search_gives_the_same_bank():
    ds, imgs, labels = _random(n=40, h=16, w=16, classes=5)
    data = ue.FitData.from_arrays(imgs, labels)
    cpu = ops_method.fit(data, seed=0, device=torch.device("cpu"))
    gpu = ops_method.fit(data, seed=0, device=torch.device("cuda"))
    assert cpu.sha256 == gpu.sha256


@pytest.mark.parametrize(
    "params, name",
    [({"objective": "variance"}, "objective"), ({"std_eps": 0}, "std_eps"), ({"std_eps": -1e-3}, "std_eps"),
     ({"std_eps": "small"}, "std_eps"), ({"epsilon": 1}, "epsilon")],
)
def test_bad_params_raise_value_error_naming_the_parameter(params, name):
    ds, _, _ = _random()
    with pytest.raises(ValueError, match=name):
        ue.fit("ops", ds, seed=0, **params)
