"""ar (synth bank): the coefficient search, per-sample synthesis, budget, determinism, errors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import uetransforms as ue
from uetransforms.core import kernels
from _toy import to_chw, toy_data
from uetransforms.algorithms import ar


@pytest.fixture(scope="module")
def fitted():
    ds, imgs, labels = toy_data()
    return ds, imgs, labels, ue.fit("ar", ds, seed=21)


def test_bank_structure_and_params(fitted):
    _, _, _, bank = fitted
    coef = bank.tensors["coef"]
    assert bank.kind == "synth" and coef.shape == (3, 3, 8) and coef.dtype == np.float32
    assert np.allclose(coef.sum(axis=-1), 1.0, atol=1e-5)  # the authors' normalisation
    p = bank.params
    assert p["synth"] == "ar" and p["epsilon"] == 1.0 and p["norm"] == "l2" and p["seed"] == 21
    assert p["min_response"] == 3.0 and p["max_norm"] == 50.0 and p["max_candidates"] == 10_000
    assert isinstance(p["salt"], int) and 0 <= p["salt"] < 2**53
    assert "size_mismatch" not in bank.info


def _reference_generate(b, start):
    """The authors' loop (one candidate, one trial) without innovations, cropped by 4."""
    x = start.copy()
    c, s, _ = x.shape
    for ch in range(c):
        for i in range(s - 2):
            for j in range(s - 2):
                window = np.concatenate([x[ch, i, j : j + 3], x[ch, i + 1, j : j + 3], x[ch, i + 2, j : j + 2]])
                x[ch, i + 2, j + 2] = window @ b[ch]
    return x[:, 4:, 4:]


def test_generator_matches_the_reference_loop():
    rng = np.random.default_rng(0)
    raw = rng.standard_normal((5, 3, 8))
    coef = raw / raw.sum(-1, keepdims=True)
    start = rng.standard_normal((2, 5, 3, 12, 12))
    gen, mask = ar._generate(coef, start, None)
    assert mask.all()
    for t in range(2):
        for m in range(5):
            np.testing.assert_allclose(gen[t, m], _reference_generate(coef[m], start[t, m]), rtol=1e-9, atol=1e-12)
    # with a bound, exactly the candidates whose every trial stays within it survive
    norms = np.sqrt((gen**2).sum(axis=(2, 3, 4)))
    bound = float(np.median(norms))
    gen_b, mask_b = ar._generate(coef, start, bound)
    np.testing.assert_array_equal(mask_b, (norms <= bound).all(axis=0))
    np.testing.assert_array_equal(gen_b[:, mask_b], gen[:, mask_b])


def test_responses_match_conv2d():
    rng = np.random.default_rng(1)
    coef = rng.standard_normal((4, 3, 8))
    pattern = rng.standard_normal((3, 10, 10))
    filters = ar._filters(coef)
    ref = F.conv2d(torch.from_numpy(pattern)[None], torch.from_numpy(filters).reshape(4, 3, 3, 3)).relu().sum((0, 2, 3))
    np.testing.assert_allclose(ar._responses(filters, pattern), ref.numpy(), rtol=1e-10)
    assert (filters[:, :, 8] == -1).all()


def test_search_finds_the_requested_number_or_fails_loudly():
    rng = np.random.default_rng(2)
    coef = ar.find_coefficients(rng, 4, 3, min_response=3.0, max_norm=50.0, max_candidates=100_000)
    assert coef.shape == (4, 3, 8) and np.isfinite(coef).all()
    # impossible thresholds fail loudly instead of looping forever
    with pytest.raises(RuntimeError, match="min_response"):
        ar.find_coefficients(rng, 3, 3, min_response=1e9, max_norm=50.0, max_candidates=300)


def test_larger_images_use_the_image_sized_stability_check():
    ds, _, _ = toy_data(n=2, h=40, w=36, classes=2)
    a, b = ue.fit("ar", ds, seed=4), ue.fit("ar", ds, seed=4)
    assert a.tensors["coef"].shape == (2, 3, 8) and a.sha256 == b.sha256


def test_l2_budget_after_apply():
    ds, imgs, labels = toy_data(n=4, h=16, w=16, classes=2, value=128)  # mid-grey: no clipping
    for eps in (1.0, 0.5):
        bank = ue.fit("ar", ds, seed=3, epsilon=eps)
        ids = ["a", "b", "c", "d"]
        seeds = [kernels.sample_seed(bank.params["salt"], i) for i in ids]
        delta = kernels.synth_ar(bank.gather("coef", bank.rows_for(labels)), seeds, bank.image_shape,
                                epsilon=eps, norm="l2")
        np.testing.assert_allclose(np.linalg.norm(delta.reshape(4, -1).astype(np.float64), axis=1), eps, rtol=1e-5)
        x = to_chw(imgs)
        diff = (ue.apply(bank, x, labels, sample_ids=ids).double() - x.double()) / 255
        l2 = diff.reshape(4, -1).norm(dim=1).numpy()
        rounding = 0.5 * np.sqrt(3 * 16 * 16) / 255  # each entry is rounded by at most half a level
        assert (np.abs(l2 - eps) <= rounding).all()
        np.testing.assert_allclose(diff.numpy(), np.round(delta * 255) / 255, atol=1e-12)


def test_linf_budget_after_apply():
    ds, imgs, labels = toy_data(n=2, h=16, w=16, classes=2, value=128)
    bank = ue.fit("ar", ds, seed=3, norm="linf")
    assert bank.params["epsilon"] == 8 / 255
    x = to_chw(imgs)
    diff = (ue.apply(bank, x, labels, sample_ids=["p", "q"]).int() - x.int()).abs()
    assert diff.reshape(2, -1).max(dim=1).values.tolist() == [8, 8]


def test_noise_is_per_sample_and_per_class(fitted):
    _, imgs, labels, bank = fitted
    x = to_chw(imgs[:1]).repeat(3, 1, 1, 1)
    out = ue.apply(bank, x, [0, 0, 0], sample_ids=["s1", "s1", "s2"])
    assert torch.equal(out[0], out[1]) and not torch.equal(out[0], out[2])
    other = ue.apply(bank, x[:1], [1], sample_ids=["s1"])
    assert not torch.equal(out[0], other[0])


def test_same_seed_same_bank_other_seed_other_bank(fitted):
    ds, _, _, bank = fitted
    again, other = ue.fit("ar", ds, seed=21), ue.fit("ar", ds, seed=22)
    assert again.sha256 == bank.sha256 and again.tensors["coef"].tobytes() == bank.tensors["coef"].tobytes()
    assert other.sha256 != bank.sha256 and not np.array_equal(other.tensors["coef"], bank.tensors["coef"])
    assert other.params["salt"] != bank.params["salt"]
    data = ue.FitData.from_arrays(np.stack(ds["image"]), ds["label"])
    cpu = torch.device("cpu")
    assert ar.fit(data, seed=21, device=cpu).sha256 == ar.fit(data, seed=21, device=cpu).sha256


def test_save_load_round_trip(fitted, tmp_path):
    _, imgs, labels, bank = fitted
    loaded = ue.NoiseBank.load(bank.save(tmp_path / "ar.bank.arrow"))
    assert loaded.sha256 == bank.sha256 and loaded.params == bank.params
    x = to_chw(imgs)
    ids = [f"id{i}" for i in range(len(labels))]
    assert torch.equal(ue.apply(loaded, x, labels, sample_ids=ids), ue.apply(bank, x, labels, sample_ids=ids))


def test_reads_labels_only_not_images():
    img = np.zeros((8, 8, 3), np.uint8)
    ds = {"image": [img] + [None] * 3, "label": [0, 1, 0, 1]}
    assert ue.fit("ar", ds, seed=0).tensors["coef"].shape == (2, 3, 8)


@pytest.mark.parametrize(
    "params, name",
    [({"epsilon": 0}, "epsilon"), ({"epsilon": -1.0}, "epsilon"), ({"norm": "linf", "epsilon": 2.0}, "epsilon"),
     ({"norm": "l1"}, "norm"), ({"min_response": -1}, "min_response"), ({"max_norm": 0}, "max_norm"),
     ({"max_candidates": 1}, "max_candidates"), ({"max_candidates": 10.5}, "max_candidates"), ({"order": 2}, "order")],
)
def test_bad_params_raise_value_error_naming_the_parameter(params, name):
    ds, _, _ = toy_data()
    with pytest.raises(ValueError, match=name):
        ue.fit("ar", ds, seed=0, **params)


def test_applied_noise_is_predicted_exactly_by_its_class_filter(fitted):
    """The shortcut AR relies on: without innovations, each pixel is the AR combination of its
    causal neighbours, so the class's own filter leaves no residual and another class's does."""
    bank = fitted[-1]
    coef = bank.tensors["coef"]
    c, h, w = bank.image_shape
    offsets = [(di, dj) for di in (-2, -1, 0) for dj in (-2, -1, 0)][:-1]

    def residual(noise, a):
        pred = np.zeros_like(noise[:, 2:, 2:])
        for n, (di, dj) in enumerate(offsets):
            pred += a[:, n, None, None] * noise[:, 2 + di : h + di, 2 + dj : w + dj]
        return np.abs(noise[:, 2:, 2:] - pred).max() / np.abs(noise).max()

    noise = kernels.synth_ar(coef[:1], [12345], (c, h, w), epsilon=1.0, norm="l2")[0].astype(np.float64)
    assert residual(noise, coef[0].astype(np.float64)) < 1e-4  # float32 output rounding only
    assert residual(noise, coef[1].astype(np.float64)) > 1e-2
