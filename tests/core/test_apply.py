"""Kernels against slow per-image numpy references, size/channel policies, and property tests."""

from __future__ import annotations

import functools

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from uetransforms.core import apply as apply_mod
from uetransforms.core import kernels
from uetransforms.core import kinds
from uetransforms.core.bank import BankError, NoiseBank
from uetransforms.core.apply import Applier, apply
from uetransforms.core.errors import SizeMismatchError

EPS = 8 / 255


# ------------------------------------------------------------------ bank builders
def additive_bank(keys, shape, *, eps=EPS, seed=0, dtype="float32") -> NoiseBank:
    rng = np.random.default_rng(seed)
    delta = rng.uniform(-eps, eps, (len(keys), *shape)).astype(dtype)
    return NoiseBank(method="random", kind="additive", keying="class", keys=keys, tensors={"delta": delta},
                     params={"epsilon": eps, "norm": "linf"})


def conv_bank(keys, channels, k=3, seed=0, image_hw=(8, 8)) -> NoiseBank:
    rng = np.random.default_rng(seed)
    weight = rng.uniform(0, 1, (len(keys), channels, k, k)).astype("float32")
    return NoiseBank(method="cuda", kind="conv", keying="class", keys=keys, tensors={"weight": weight},
                     image_shape=(channels, *image_hw))


def pixel_bank(keys, shape, seed=0, mask_channels=1) -> NoiseBank:
    rng = np.random.default_rng(seed)
    c, h, w = shape
    mask = rng.uniform(size=(len(keys), mask_channels, h, w)) < 0.2
    value = rng.integers(0, 256, (len(keys), c, h, w), dtype=np.uint8)
    return NoiseBank(method="ops", kind="pixel", keying="class", keys=keys,
                     tensors={"mask": mask, "value": value})


def stable_coef(rng, n, c):
    # |a| summing to < 1 keeps the causal AR recursion bounded.
    a = rng.uniform(-1, 1, (n, c, 8))
    return (a / np.abs(a).sum(-1, keepdims=True) * 0.9).astype("float32")


def synth_bank(keys, shape, *, eps=1.0, norm="l2", salt=11, seed=0) -> NoiseBank:
    rng = np.random.default_rng(seed)
    return NoiseBank(method="ar", kind="synth", keying="class", keys=keys,
                     tensors={"coef": stable_coef(rng, len(keys), shape[0])}, image_shape=shape,
                     params={"synth": "ar", "epsilon": eps, "norm": norm, "salt": salt})


def images(b, c, h, w, seed=0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (b, c, h, w), dtype=np.uint8))


# ------------------------------------------------------------------ slow references
def ref_additive(x: np.ndarray, bank: NoiseBank, labels) -> np.ndarray:
    out = np.empty_like(x)
    for i, lab in enumerate(labels):
        row = list(bank.keys).index(lab)
        d = bank.tensors["delta"][row].astype(np.float32) * np.float32(255)
        out[i] = np.clip(np.round(x[i].astype(np.float32) + d), 0, 255).astype(np.uint8)  # np.round: half-even
    return out


def ref_conv(x: np.ndarray, bank: NoiseBank, labels) -> np.ndarray:
    """Per image, per channel, per tap: the float32 operations the kernel promises, in its order."""
    out = np.empty_like(x)
    for i, lab in enumerate(labels):
        w = bank.tensors["weight"][list(bank.keys).index(lab)].astype(np.float32)
        k = w.shape[-1]
        p = k // 2
        img = x[i].astype(np.float32)
        c, h, wd = img.shape
        padded = np.zeros((c, h + 2 * p, wd + 2 * p), np.float32)
        padded[:, p : p + h, p : p + wd] = img
        y = np.zeros((c, h, wd), np.float32)
        for ch in range(c):
            for u in range(k):
                for v in range(k):
                    y[ch] += w[ch, u, v] * padded[ch, u : u + h, v : v + wd]
        y = (y / max(y.max(), np.float32(1e-12))) * np.float32(255)
        out[i] = np.clip(np.round(y), 0, 255).astype(np.uint8)
    return out


def ref_pixel(x: np.ndarray, bank: NoiseBank, labels) -> np.ndarray:
    out = np.empty_like(x)
    for i, lab in enumerate(labels):
        row = list(bank.keys).index(lab)
        m = bank.tensors["mask"][row].astype(bool)
        out[i] = np.where(m, bank.tensors["value"][row], x[i])
    return out


# ------------------------------------------------------------------ kernels vs references
def test_additive_matches_reference():
    bank = additive_bank([0, 1, 2], (3, 8, 8))
    x = images(6, 3, 8, 8)
    labels = [2, 0, 1, 1, 0, 2]
    out = apply(bank, x, labels)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    np.testing.assert_array_equal(out.numpy(), ref_additive(x.numpy(), bank, labels))
    assert (out.to(torch.int16) - x.to(torch.int16)).abs().max() <= 8


def test_additive_rounds_half_to_even_and_clips():
    # 0.5 and 1.5 in 0..255 units: half-to-even sends 100.5 -> 100 and 100+1.5 -> 102.
    delta = np.array([0.5, 1.5, -0.5, -300, 300, 2.5], np.float32).reshape(1, 1, 1, 6) / np.float32(255)
    bank = NoiseBank(method="m", kind="additive", keying="class", keys=[0], tensors={"delta": delta})
    x = torch.full((1, 1, 1, 6), 100, dtype=torch.uint8)
    x[0, 0, 0, 3] = 10
    x[0, 0, 0, 4] = 200
    out = apply(bank, x, [0])[0, 0, 0].tolist()
    expected = ref_additive(x.numpy(), bank, [0])[0, 0, 0].tolist()
    assert out == expected
    assert out[3] == 0 and out[4] == 255  # clipped, not wrapped


def test_conv_matches_reference():
    bank = conv_bank([0, 1], 3, k=3)
    x = images(4, 3, 9, 7)  # conv is size-agnostic: any H, W
    labels = [1, 0, 0, 1]
    out = apply(bank, x, labels)
    np.testing.assert_array_equal(out.numpy(), ref_conv(x.numpy(), bank, labels))
    assert out.reshape(4, -1).max(1).values.tolist() == [255] * 4  # each image renormalised to full range


@pytest.mark.parametrize("chunk_bytes", [1, 3 * 9 * 7 * 4 * 2, 1 << 30])
@pytest.mark.parametrize("normalise", ["max", "none"])
def test_conv_bytes_do_not_depend_on_the_chunking(monkeypatch, chunk_bytes, normalise):
    # One image per chunk, two per chunk (5 images: a short last chunk), the whole batch at once.
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.integers(0, 256, (5, 3, 9, 7), dtype=np.uint8))
    w = torch.from_numpy(rng.uniform(0, 1, (5, 3, 3, 3)).astype("float32"))
    whole = kernels.convolve(x, w, normalise=normalise)
    monkeypatch.setattr(kernels, "_CONV_CHUNK_BYTES", chunk_bytes)
    assert torch.equal(kernels.convolve(x, w, normalise=normalise), whole)
    assert kernels.convolve(x[:0], w[:0]).shape == (0, 3, 9, 7)


def _grid_filters(rng, b, c, k, *, signed=False):
    """Random filters on the exact grid of ``kernels.conv_grid_bits`` (as ``cuda`` fits them)."""
    w = rng.uniform(-0.5 if signed else 0.0, 0.5, (b, c, k, k))
    w[..., k // 2, k // 2] = 1.0
    f = kernels.conv_grid_bits(np.abs(w).sum(axis=(-2, -1)).max())
    return torch.from_numpy((np.floor(w * 2.0**f) / 2.0**f).astype(np.float32))


@pytest.mark.parametrize("hw", [(9, 7), (96, 96), (131, 100)])
@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("normalise", ["max", "none"])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("padding", kernels.CONV_PADDINGS)
@pytest.mark.parametrize("dilation", [1, 3])
def test_library_conv_gives_the_shifted_adds_bytes(monkeypatch, hw, k, normalise, signed, padding, dilation):
    # Grid filters may take F.conv2d (exact in any order); the bytes must be the reference's.
    rng = np.random.default_rng(k * 100 + hw[0])
    x = torch.from_numpy(rng.integers(0, 256, (3, 3, *hw), dtype=np.uint8))
    x[1] = 0  # an all-black image: normalised by the clamped peak, stays black
    w = _grid_filters(rng, 3, 3, k, signed=signed)
    ref = kernels._convolve_shifted(x, w, normalise, padding, dilation=dilation)
    exact = kernels._library_conv_exact()  # checked once per process, before the spy counts calls
    calls = []
    real = kernels._convolve_library
    monkeypatch.setattr(kernels, "_convolve_library", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    for layout in (torch.contiguous_format, torch.channels_last):
        got = kernels.convolve(x.contiguous(memory_format=layout), w, normalise=normalise, padding=padding,
                               dilation=dilation)
        assert torch.equal(got, ref)
    # Where this torch build's convolution rounds even on the grid, every call keeps the shifted adds.
    assert len(calls) == (2 if exact and hw[0] * hw[1] >= kernels._LIBRARY_CONV_MIN_PIXELS else 0)


@pytest.mark.parametrize("padding", kernels.CONV_PADDINGS)
@pytest.mark.parametrize("hw", [(12, 11), (100, 97)])
def test_a_dilated_filter_is_the_contiguous_filter_with_zeros_between_its_taps(hw, padding):
    # The reference for dilation: a k x k filter spaced d apart is the (d(k-1)+1)-wide filter holding the
    # same entries every d pixels and zeros between them, with the same padding width.
    rng = np.random.default_rng(hw[0])
    x = torch.from_numpy(rng.integers(0, 256, (2, 3, *hw), dtype=np.uint8))
    w = _grid_filters(rng, 2, 3, 3)
    for d in (2, 3):
        wide = torch.zeros((2, 3, 2 * d + 1, 2 * d + 1))
        wide[:, :, ::d, ::d] = w
        assert torch.equal(kernels.convolve(x, w, padding=padding, dilation=d), kernels.convolve(x, wide, padding=padding))
        assert not torch.equal(kernels.convolve(x, w, padding=padding, dilation=d), kernels.convolve(x, w, padding=padding))


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_conv_dilation_must_be_a_positive_integer(bad):
    x = torch.zeros((1, 3, 8, 8), dtype=torch.uint8)
    with pytest.raises(BankError, match="dilation must be an integer >= 1"):
        kernels.convolve(x, torch.ones((1, 3, 3, 3)), dilation=bad)


def test_reflect_padding_names_the_dilation_when_the_image_is_too_small():
    x = torch.zeros((1, 3, 8, 8), dtype=torch.uint8)
    with pytest.raises(BankError, match="dilation 4 needs images larger than 8x8.*smaller dilation"):
        kernels.convolve(x, torch.ones((1, 3, 5, 5)), padding="reflect", dilation=4)


def test_off_grid_filters_keep_the_shifted_adds(monkeypatch):
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 256, (2, 3, 100, 100), dtype=np.uint8))
    w = _grid_filters(rng, 2, 3, 3)
    w[0, 0, 0, 0] += 2.0**-20  # one entry off the grid: a library convolution could round differently
    monkeypatch.setattr(kernels, "_convolve_library", lambda *a, **kw: pytest.fail("off-grid filters must not take F.conv2d"))
    assert torch.equal(kernels.convolve(x, w), kernels._convolve_shifted(x, w, "max"))


@pytest.mark.parametrize("off_grid", [False, True])
def test_fused_adds_only_for_grid_filters(monkeypatch, off_grid):
    # Fused multiply-adds round once instead of twice: the same bits only where nothing rounds.
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.integers(0, 256, (2, 3, 16, 16), dtype=np.uint8))
    w = _grid_filters(rng, 2, 3, 3)
    if off_grid:
        w[1, 2, 1, 1] += 2.0**-20
    exact = kernels._library_conv_exact()  # checked once per process, before the spy counts calls
    seen = []
    real = kernels._convolve_shifted
    monkeypatch.setattr(kernels, "_convolve_shifted", lambda *a, fused=False, **kw: seen.append(fused) or real(*a, fused=fused, **kw))
    out = kernels.convolve(x, w)
    assert seen == [not off_grid and exact]
    assert torch.equal(out, real(x, w, "max"))
    assert out.is_contiguous(memory_format=torch.channels_last)  # HWC for the encoder without a copy


def test_a_convolution_that_rounds_is_caught_by_the_self_check(monkeypatch):
    # A build or precision switch (bf16/tf32, Winograd) that rounds must not change the bytes.
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.integers(0, 256, (2, 3, 100, 100), dtype=np.uint8))
    w = _grid_filters(rng, 2, 3, 3)
    real = kernels._convolve_library
    monkeypatch.setattr(kernels, "_convolve_library", lambda *a, **kw: real(*a, **kw) // 2 * 2)  # drops the low bit
    monkeypatch.setattr(kernels, "_LIBRARY_CONV_EXACT", {})
    assert torch.equal(kernels.convolve(x, w), kernels._convolve_shifted(x, w, "max"))
    assert kernels._LIBRARY_CONV_EXACT == {kernels._conv_precision(): False}


@pytest.mark.parametrize("l1", [1e-3, 1.0, 3.4, 9.0, 300.0, 1e6])
def test_conv_grid_bits_is_the_finest_exact_grid(l1):
    f = kernels.conv_grid_bits(l1)
    assert 255 * l1 * 2.0**f < 2**24  # every partial sum is an integer multiple of 2**-f below 2**24
    assert f == 23 or 255 * l1 * 2.0 ** (f + 1) >= 2**24


def test_conv_black_image_stays_black():
    bank = conv_bank([0], 3)
    out = apply(bank, torch.zeros((1, 3, 5, 5), dtype=torch.uint8), [0])
    assert out.sum() == 0


def test_conv_even_kernel_is_refused():
    bank = conv_bank([0], 3, k=2)
    with pytest.raises(BankError, match="odd"):
        apply(bank, images(1, 3, 6, 6), [0])


def test_conv_unknown_normalisation():
    bank = conv_bank([0], 3)
    bank = bank.replace(params={**bank.params, "normalise": "mean"})
    with pytest.raises(BankError, match="normalisation"):
        apply(bank, images(1, 3, 6, 6), [0])


@pytest.mark.parametrize("mask_channels", [1, 3])
def test_pixel_matches_reference(mask_channels):
    bank = pixel_bank([3, 7], (3, 6, 6), mask_channels=mask_channels)
    x = images(5, 3, 6, 6)
    labels = [7, 3, 3, 7, 7]
    out = apply(bank, x, labels)
    np.testing.assert_array_equal(out.numpy(), ref_pixel(x.numpy(), bank, labels))


# ------------------------------------------------------------------ synth
def test_synth_ar_deterministic_and_scaled():
    rng = np.random.default_rng(0)
    coef = stable_coef(rng, 3, 3)
    a = kernels.synth_ar(coef, [1, 2, 3], (3, 10, 10), epsilon=0.5, norm="l2")
    b = kernels.synth_ar(coef, [1, 2, 3], (3, 10, 10), epsilon=0.5, norm="l2")
    assert a.dtype == np.float32 and a.shape == (3, 3, 10, 10)
    np.testing.assert_array_equal(a, b)
    c = kernels.synth_ar(coef, [1, 2, 4], (3, 10, 10), epsilon=0.5, norm="l2")
    np.testing.assert_array_equal(a[:2], c[:2])  # each sample depends on its own seed only
    assert not np.allclose(a[2], c[2])
    norms = np.linalg.norm(a.reshape(3, -1).astype(np.float64), axis=1)
    np.testing.assert_allclose(norms, 0.5, atol=1e-5)
    linf = kernels.synth_ar(coef, [1, 2, 3], (3, 10, 10), epsilon=EPS, norm="linf")
    np.testing.assert_allclose(np.abs(linf).reshape(3, -1).max(1), EPS, atol=1e-6)


def test_synth_ar_uses_its_coefficients():
    rng = np.random.default_rng(0)
    coef = stable_coef(rng, 2, 1)
    a = kernels.synth_ar(coef, [5, 5], (1, 8, 8), epsilon=1.0, norm="l2")
    assert not np.allclose(a[0], a[1])  # same seed, different coefficients


def test_synth_ar_unstable_coefficients_refused():
    coef = np.full((1, 1, 8), 1e6, np.float32)
    with pytest.raises(BankError, match="unstable"), np.errstate(all="ignore"):
        kernels.synth_ar(coef, [0], (1, 32, 32), epsilon=1.0, norm="l2")


def test_synth_unknown_norm():
    with pytest.raises(BankError, match="norm"):
        kernels.synth_ar(np.zeros((1, 1, 8), np.float32), [0], (1, 4, 4), epsilon=1.0, norm="l1")


def test_sample_seed_stable():
    assert kernels.sample_seed(1, "a") == kernels.sample_seed(1, "a")
    assert kernels.sample_seed(1, "a") != kernels.sample_seed(2, "a") != kernels.sample_seed(1, "b")
    assert 0 <= kernels.sample_seed(0, "x") < 2**63


def test_synth_apply_reproducible_per_sample_id():
    bank = synth_bank([0, 1], (3, 8, 8), eps=2.0)
    x = images(3, 3, 8, 8)
    ids = ["a", "b", "c"]
    out1 = apply(bank, x, [0, 1, 0], sample_ids=ids)
    out2 = apply(bank, x, [0, 1, 0], sample_ids=ids)
    assert torch.equal(out1, out2)
    # Row order does not matter: noise follows the id, not the position.
    out3 = apply(bank, x[[2, 0, 1]], [0, 0, 1], sample_ids=["c", "a", "b"])
    assert torch.equal(out3, out1[[2, 0, 1]])
    out4 = apply(bank, x, [0, 1, 0], sample_ids=["a", "b", "z"])
    assert torch.equal(out4[:2], out1[:2]) and not torch.equal(out4[2], out1[2])
    # Matches the pieces: delta synthesised for the sample's seed, then added.
    seeds = [kernels.sample_seed(11, s) for s in ids]
    rows = bank.rows_for([0, 1, 0])
    delta = kernels.synth_ar(bank.tensors["coef"][rows], seeds, (3, 8, 8), epsilon=2.0, norm="l2")
    ref = np.clip(np.round(x.numpy().astype(np.float32) + delta * np.float32(255)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out1.numpy(), ref)


def test_synth_needs_ids():
    bank = synth_bank([0], (1, 4, 4))
    with pytest.raises(ValueError, match="sample ids"):
        apply(bank, images(2, 1, 4, 4), [0, 0], sample_ids=["a"])
    with pytest.raises(ValueError, match="seed"):
        Applier(bank)(images(1, 1, 4, 4), [0])


def test_synth_unknown_synthesiser():
    bank = synth_bank([0], (1, 4, 4))
    bank = bank.replace(params={**bank.params, "synth": "perlin"})
    with pytest.raises(BankError, match="perlin"):
        apply(bank, images(1, 1, 4, 4), [0], sample_ids=["a"])


# ------------------------------------------------------------------ size and channel policies
def test_size_mismatch_error_names_resize():
    bank = additive_bank([0], (3, 8, 8))
    with pytest.raises(SizeMismatchError, match="resize") as err:
        apply(bank, images(1, 3, 10, 12), [0])
    assert "10x12" in str(err.value) and "8x8" in str(err.value)


def test_size_mismatch_policy_from_bank_info():
    bank = additive_bank([0], (3, 8, 8)).replace(info={"size_mismatch": "resize"})
    assert apply(bank, images(1, 3, 5, 5), [0]).shape == (1, 3, 5, 5)
    with pytest.raises(SizeMismatchError):
        apply(bank, images(1, 3, 5, 5), [0], size_mismatch="error")


def test_unknown_size_policy():
    with pytest.raises(ValueError, match="size_mismatch='crop'"):
        Applier(additive_bank([0], (3, 4, 4)), size_mismatch="crop")


@pytest.mark.parametrize("hw", [(10, 12), (4, 4), (8, 3)])
def test_size_mismatch_resize_keeps_budget(hw):
    bank = additive_bank([0, 1], (3, 8, 8))
    x = images(2, 3, *hw)
    out = apply(bank, x, [1, 0], size_mismatch="resize")
    assert out.shape == x.shape
    diff = (out.to(torch.int16) - x.to(torch.int16)).abs()
    assert diff.max() <= math.ceil(255 * EPS - 1e-6)
    assert diff.max() > 0


def test_pixel_resize_keeps_values_from_the_bank():
    bank = pixel_bank([0], (3, 8, 8))
    x = images(1, 3, 16, 16)
    out = apply(bank, x, [0], size_mismatch="resize")
    assert out.shape == x.shape
    changed = (out != x).any(1)[0]
    vals = set(map(tuple, bank.tensors["value"][0].reshape(3, -1).T.tolist()))
    assert changed.any()
    for i, j in zip(*torch.nonzero(changed, as_tuple=True)):
        assert tuple(out[0, :, i, j].tolist()) in vals  # nearest: no invented pixel values


def test_synth_resize():
    bank = synth_bank([0], (3, 8, 8), eps=EPS, norm="linf")
    x = images(1, 3, 11, 9)
    with pytest.raises(SizeMismatchError):
        apply(bank, x, [0], sample_ids=["s"])
    out = apply(bank, x, [0], sample_ids=["s"], size_mismatch="resize")
    assert out.shape == x.shape
    assert (out.to(torch.int16) - x.to(torch.int16)).abs().max() <= 8


@pytest.mark.parametrize("make", [
    lambda: additive_bank([0], (3, 4, 4)), lambda: conv_bank([0], 3), lambda: pixel_bank([0], (3, 4, 4)),
])
def test_channel_mismatch(make):
    with pytest.raises(BankError, match="channels"):
        apply(make(), images(1, 1, 4, 4), [0])


def test_bad_input_tensor():
    bank = additive_bank([0], (3, 4, 4))
    with pytest.raises(TypeError, match="uint8"):
        apply(bank, images(1, 3, 4, 4).float(), [0])
    with pytest.raises(TypeError, match="uint8"):
        apply(bank, images(1, 3, 4, 4)[0], [0])
    with pytest.raises(ValueError, match="2 images but 1 keys"):
        Applier(bank)(images(2, 3, 4, 4), [0])
    with pytest.raises(BankError, match="5"):
        apply(bank, images(1, 3, 4, 4), [5])


# ------------------------------------------------------------------ memory-mapped gather path
@pytest.mark.parametrize("make", [
    lambda: additive_bank([0, 1, 2], (3, 6, 6)),
    lambda: additive_bank([0, 1, 2], (3, 6, 6), dtype="float16"),
    lambda: pixel_bank([0, 1, 2], (3, 6, 6)),
    lambda: conv_bank([0, 1, 2], 3, image_hw=(6, 6)),
    lambda: synth_bank([0, 1, 2], (3, 6, 6)),
])
def test_mapped_gather_path_equals_resident(tmp_path, monkeypatch, make):
    bank = make()
    bank.save(tmp_path / "b.arrow")
    mapped = NoiseBank.load(tmp_path / "b.arrow")
    x = images(5, 3, 6, 6)
    labels = [2, 0, 1, 2, 2]
    ids = [f"s{i}" for i in range(5)]
    resident = apply(mapped, x, labels, sample_ids=ids)
    monkeypatch.setattr(Applier, "RESIDENT_BYTES", 0)
    app = Applier(mapped)
    assert not app._resident
    rows = mapped.rows_for(labels)
    seeds = [kernels.sample_seed(11, s) for s in ids] if bank.kind == "synth" else None
    assert torch.equal(app(x, rows, seeds), resident)
    assert torch.equal(apply(mapped, x, labels, sample_ids=ids), resident)


def _reference(bank: NoiseBank, x: torch.Tensor, labels: list[int], ids: list[str]) -> torch.Tensor:
    """The primitive kernels on the CPU, one image at a time, with the key rule written out."""
    out = []
    for img, label, uid in zip(x, labels, ids):
        row = list(bank.keys).index(label)
        one = img[None]
        if bank.kind == "additive":
            one = kernels.add_delta(one, torch.from_numpy(bank.tensors["delta"][row : row + 1].astype(np.float32)) * 255)
        elif bank.kind == "conv":
            one = kernels.convolve(one, torch.from_numpy(bank.tensors["weight"][row : row + 1].copy()))
        elif bank.kind == "pixel":
            one = kernels.blend_pixels(one, torch.from_numpy(bank.tensors["mask"][row : row + 1].copy()),
                                       torch.from_numpy(bank.tensors["value"][row : row + 1].copy()))
        else:
            seed = kernels.sample_seed(bank.params.get("salt", 0), uid)
            d = kernels.synth_ar(bank.tensors["coef"][row : row + 1], [seed], bank.image_shape,
                                 epsilon=bank.params["epsilon"], norm=bank.params.get("norm", "l2"))
            one = kernels.add_delta(one, torch.from_numpy(d) * 255)
        out.append(one[0])
    return torch.stack(out)


@pytest.mark.parametrize("make", [
    lambda: additive_bank([0, 1], (3, 8, 8)), lambda: pixel_bank([0, 1], (3, 8, 8)),
    lambda: conv_bank([0, 1], 3), lambda: synth_bank([0, 1], (3, 8, 8)),
], ids=["additive", "pixel", "conv", "synth"])
def test_every_device_gives_the_reference_bytes(make, device):
    """The kernels' promise: the same uint8 output on every device, equal to the reference loop."""
    bank = make()
    x = images(4, 3, 8, 8)
    labels, ids = [0, 1, 1, 0], list("abcd")
    out = apply(bank, x.to(device), labels, sample_ids=ids)
    assert out.device.type == device.type and out.dtype == torch.uint8
    assert torch.equal(out.cpu(), _reference(bank, x, labels, ids))


@pytest.mark.parametrize("shape", [(3, 8, 8), (1, 5, 7)])
def test_additive_kernel_is_exact_for_every_bank_dtype(device, bank_dtype, shape):
    """A delta stored as float16 or float32 gives round(x + 255 * delta) clipped, exactly, on any device."""
    rng = np.random.default_rng(0)
    delta = (rng.integers(-8, 9, (2, *shape)) / 255).astype(bank_dtype)
    bank = NoiseBank(method="random", kind="additive", keying="class", keys=[0, 1], tensors={"delta": delta},
                     params={"epsilon": 8 / 255})
    x = images(3, *shape)
    labels = [1, 0, 1]
    want = (x.double() + torch.round(255 * torch.from_numpy(delta.astype(np.float64)))[labels]).clamp(0, 255)
    assert torch.equal(apply(bank, x.to(device), labels).cpu(), want.to(torch.uint8))


# ------------------------------------------------------------------ properties
@st.composite
def batches(draw):
    b = draw(st.integers(1, 4))
    c = draw(st.sampled_from([1, 3]))
    h = draw(st.integers(1, 12))
    w = draw(st.integers(1, 12))
    k = draw(st.integers(1, 5))
    keys = draw(st.lists(st.integers(0, 50), min_size=k, max_size=k, unique=True))
    labels = draw(st.lists(st.sampled_from(keys), min_size=b, max_size=b))
    seed = draw(st.integers(0, 2**16))
    eps = draw(st.sampled_from([1 / 255, 4 / 255, 8 / 255, 16 / 255, 0.3]))
    return b, c, h, w, keys, labels, seed, eps


@settings(max_examples=25, deadline=None)
@given(batches())
def test_property_additive(params):
    b, c, h, w, keys, labels, seed, eps = params
    bank = additive_bank(keys, (c, h, w), eps=eps, seed=seed)
    x = images(b, c, h, w, seed=seed + 1)
    out = apply(bank, x, labels)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    np.testing.assert_array_equal(out.numpy(), ref_additive(x.numpy(), bank, labels))
    assert (out.to(torch.int16) - x.to(torch.int16)).abs().max() <= math.ceil(255 * eps)
    assert apply(bank, x, labels).numpy().tobytes() == out.numpy().tobytes()


@settings(max_examples=25, deadline=None)
@given(batches(), st.sampled_from([1, 3, 5]))
def test_property_conv(params, ksize):
    b, c, h, w, keys, labels, seed, _ = params
    bank = conv_bank(keys, c, k=ksize, seed=seed, image_hw=(h, w))
    x = images(b, c, h, w, seed=seed + 1)
    out = apply(bank, x, labels)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    np.testing.assert_array_equal(out.numpy(), ref_conv(x.numpy(), bank, labels))
    assert apply(bank, x, labels).numpy().tobytes() == out.numpy().tobytes()


@settings(max_examples=25, deadline=None)
@given(batches())
def test_property_pixel(params):
    b, c, h, w, keys, labels, seed, _ = params
    bank = pixel_bank(keys, (c, h, w), seed=seed)
    x = images(b, c, h, w, seed=seed + 1)
    out = apply(bank, x, labels)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    np.testing.assert_array_equal(out.numpy(), ref_pixel(x.numpy(), bank, labels))
    assert apply(bank, x, labels).numpy().tobytes() == out.numpy().tobytes()


@settings(max_examples=25, deadline=None)
@given(batches())
def test_property_synth_linf_budget(params):
    b, c, h, w, keys, labels, seed, eps = params
    bank = synth_bank(keys, (c, h, w), eps=eps, norm="linf", seed=seed)
    x = images(b, c, h, w, seed=seed + 1)
    ids = [f"{seed}-{i}" for i in range(b)]
    out = apply(bank, x, labels, sample_ids=ids)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert (out.to(torch.int16) - x.to(torch.int16)).abs().max() <= math.ceil(255 * eps)
    assert torch.equal(apply(bank, x, labels, sample_ids=ids), out)


def test_empty_batch():
    bank = additive_bank([0, 1], (3, 4, 4))
    out = apply(bank, torch.zeros((0, 3, 4, 4), dtype=torch.uint8), [])
    assert out.shape == (0, 3, 4, 4) and out.dtype == torch.uint8


# ------------------------------------------------------------------ the AR recursion: same bytes as the raster loop
def _raster_synth_ar(coef, seeds, shape, *, epsilon, norm, innovation=0.0, warmup=4):
    """The pre-vectorisation synthesiser, kept verbatim as the reference: a Python loop per pixel."""
    c, h, w = (int(s) for s in shape)
    b = len(seeds)
    pad = max(int(warmup), 2)
    canvas = np.empty((b, c, h + pad, w + pad), dtype=np.float64)
    for i, s in enumerate(seeds):
        canvas[i] = np.random.default_rng(int(s)).standard_normal((c, h + pad, w + pad))
    a = coef.astype(np.float64).reshape(b, c, 8)
    offsets = [(di, dj) for di in (-2, -1, 0) for dj in (-2, -1, 0)][:-1]
    for i in range(2, h + pad):
        for j in range(2, w + pad):
            acc = canvas[:, :, i, j] * innovation
            for n, (di, dj) in enumerate(offsets):
                acc += a[:, :, n] * canvas[:, :, i + di, j + dj]
            canvas[:, :, i, j] = acc
    delta = canvas[:, :, pad:, pad:]
    delta = delta - delta.mean(axis=(1, 2, 3), keepdims=True)
    flat = delta.reshape(len(delta), -1)
    size = np.linalg.norm(flat, axis=1) if norm == "l2" else np.abs(flat).max(axis=1)
    size = np.maximum(size, 1e-12)
    return (delta * (epsilon / size).reshape(-1, 1, 1, 1)).astype(np.float32)


@pytest.mark.parametrize("b, c, h, w, innovation, norm", [
    (3, 3, 10, 10, 0.0, "l2"), (2, 1, 7, 13, 0.3, "linf"), (1, 3, 1, 1, 0.0, "l2"), (2, 3, 2, 5, 0.0, "linf"),
    (4, 3, 32, 32, 0.0, "l2"), (1, 3, 40, 9, 0.5, "l2"),
])
def test_synth_ar_same_bytes_as_raster_loop(b, c, h, w, innovation, norm):
    coef = stable_coef(np.random.default_rng(h * w + b), b, c)
    seeds = [kernels.sample_seed(3, f"s{i}") for i in range(b)]
    want = _raster_synth_ar(coef, seeds, (c, h, w), epsilon=0.5, norm=norm, innovation=innovation)
    got = kernels.synth_ar(coef, seeds, (c, h, w), epsilon=0.5, norm=norm, innovation=innovation)
    assert got.tobytes() == want.tobytes()


def test_ar_recursion_prunes_only_what_it_is_told():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 11, 4))
    a = np.ascontiguousarray(np.concatenate([stable_coef(rng, 3, 1)[:, 0].T, np.full((8, 1), 1.0)], axis=1))
    full, alive = kernels.ar_recursion(x.copy(), a)
    assert alive.tolist() == [0, 1, 2, 3]
    seen = []

    def prune(sq):
        seen.append(sq.copy())
        return np.isfinite(sq) & (sq < 1e6)

    kept, alive = kernels.ar_recursion(x.copy(), a, prune=prune, crop=4, prune_every=2)
    assert alive.tolist() == [0, 1, 2]  # the fourth process (coefficients summing to 8) explodes
    np.testing.assert_array_equal(kept, full[:, :, :3])
    # The final call sees every finished pixel of the crop: the exact sum of squares.
    np.testing.assert_allclose(seen[-1], (full[4:, 4:, :3] ** 2).sum(axis=(0, 1)), rtol=1e-12)


# ------------------------------------------------------------------ kind and synthesiser registries
def test_kind_registry_drives_bank_dispatch_and_required_tensors(monkeypatch):

    monkeypatch.setattr(kinds, "_KINDS", dict(kinds._KINDS))
    calls = []

    def invert(app, x, rows, seeds):
        calls.append(rows.tolist())
        return torch.where(app.rows_of("mask", rows).bool(), 255 - x, x)

    kinds.register_kind("invert", required_tensors=("mask",), kernel=invert, shape_tensor="mask")
    assert "invert" in kinds.kinds() and kinds.bank_kind("invert").required_tensors == ("mask",)
    with pytest.raises(BankError, match=r"needs tensors \['mask'\]"):
        NoiseBank(method="toy", kind="invert", keying="class", keys=[0], tensors={"delta": np.zeros((1, 1, 2, 2))})
    bank = NoiseBank(method="toy", kind="invert", keying="class", keys=[4, 5],
                     tensors={"mask": np.stack([np.zeros((1, 2, 2)), np.ones((1, 2, 2))]).astype(np.uint8)},
                     params={"fraction": 1.0, "seed": 3})
    assert bank.image_shape == (1, 2, 2)
    x = images(2, 1, 2, 2)
    out = apply(bank, x, [5, 4])
    assert calls == [[1, 0]]
    assert torch.equal(out[0], 255 - x[0]) and torch.equal(out[1], x[1])
    with pytest.raises(ValueError, match="already registered"):
        kinds.register_kind("invert", required_tensors=("mask",), kernel=invert)
    with pytest.raises(BankError, match="unknown bank kind 'warp'"):
        NoiseBank(method="toy", kind="warp", keying="class", keys=[0], tensors={"mask": np.zeros((1, 1, 2, 2))})


def test_register_synth_by_name(monkeypatch):
    monkeypatch.setattr(kinds, "_SYNTHS", dict(kinds._SYNTHS))

    def flat(coef, seeds, shape, *, epsilon, norm, innovation=0.0):
        return np.full((len(seeds), *shape), epsilon, np.float32) * coef[:, :1, :1, None].astype(np.float32)

    kinds.register_synth("flat", flat)
    bank = NoiseBank(method="toy", kind="synth", keying="class", keys=[0, 1], image_shape=(1, 3, 3),
                     tensors={"coef": np.array([[[1.0] * 8], [[-1.0] * 8]], np.float32)},
                     params={"synth": "flat", "epsilon": 4 / 255})
    out = apply(bank, torch.full((2, 1, 3, 3), 100, dtype=torch.uint8), [0, 1], sample_ids=["a", "b"])
    assert out[0].unique().tolist() == [104] and out[1].unique().tolist() == [96]
    with pytest.raises(ValueError, match="already registered"):
        kinds.register_synth("flat", lambda *a, **k: None)


# ------------------------------------------------------------------ Applier.protect: the one front door
def _chws(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, s, dtype=np.uint8) for s in shapes]


@pytest.mark.parametrize("make", [
    lambda: additive_bank([0, 1, 2], (3, 8, 8)),
    lambda: pixel_bank([0, 1, 2], (3, 8, 8)),
    lambda: conv_bank([0, 1, 2], 3),
    lambda: synth_bank([0, 1, 2], (3, 8, 8)),
])
@pytest.mark.parametrize("chunk_bytes", [1, 3 * 8 * 8 * 4 * 2, 1 << 30])  # 1 image, 2 images, all per chunk
@pytest.mark.parametrize("layout", ["chw", "hwc-view"])
def test_protect_mixed_sizes_in_input_order(make, chunk_bytes, layout, monkeypatch):
    monkeypatch.setattr(apply_mod, "_APPLY_CHUNK_BYTES", chunk_bytes)
    bank = make()
    shapes = [(3, 8, 8), (3, 5, 7), (3, 8, 8), (3, 12, 6), (3, 5, 7), (3, 8, 8)]
    chws = _chws(shapes)
    if layout == "hwc-view":  # what decoders return: CHW views of contiguous HWC pixels
        chws = [np.ascontiguousarray(c.transpose(1, 2, 0)).transpose(2, 0, 1) for c in chws]
    labels = [2, 0, 1, 1, 2, 0]
    ids = [f"s{i}" for i in range(6)]
    out = Applier(bank, size_mismatch="resize").protect(chws, labels=labels, sample_ids=ids)
    assert [o.shape for o in out] == shapes and all(o.dtype == np.uint8 for o in out)
    for i, (c, lab, sid) in enumerate(zip(chws, labels, ids)):  # one image at a time: the same bytes
        one = apply(bank, torch.from_numpy(c[None]), [lab], sample_ids=[sid], size_mismatch="resize")[0]
        np.testing.assert_array_equal(out[i], one.numpy(), err_msg=str(i))


def test_protect_tensor_batch_equals_list():
    bank = synth_bank([0, 1], (3, 8, 8))
    x = images(4, 3, 8, 8)
    app = Applier(bank)
    as_tensor = app.protect(x, labels=torch.tensor([0, 1, 1, 0]))
    as_list = app.protect(list(x.numpy()), labels=np.array([0, 1, 1, 0]))
    np.testing.assert_array_equal(as_tensor.numpy(), np.stack(as_list))
    # Synth banks without ids seed each image by its content: same image, same noise, anywhere.
    again = app.protect(x[[3, 0]], labels=[0, 0])
    assert torch.equal(again, as_tensor[[3, 0]])


@pytest.mark.parametrize("kind, tensors", [
    ("additive", [(3, "bilinear")]),  # delta: [K, 3, h, w]
    ("pixel", [(1, "nearest"), (3, "nearest")]),  # mask [K, 1, h, w] and value [K, 3, h, w]: both, once each
])
def test_noise_is_resized_once_per_size(monkeypatch, kind, tensors):
    bank = {"additive": additive_bank, "pixel": pixel_bank}[kind]([0, 1, 2], (3, 8, 8))
    app = Applier(bank, size_mismatch="resize")
    sizes = []
    real = Applier.fit_size

    def counting(self, t, hw, *, mode):
        if self is app and tuple(t.shape[-2:]) != hw:  # not the one-image references below
            sizes.append((hw, t.shape[0], t.shape[1], mode))
        return real(self, t, hw, mode=mode)

    monkeypatch.setattr(Applier, "fit_size", counting)
    shapes = [(3, 5, 7), (3, 9, 9), (3, 5, 7)]
    for seed in range(3):
        chws = _chws(shapes, seed=seed)
        out = app.protect(chws, labels=[0, 1, 2])
        for i, (c, lab) in enumerate(zip(chws, [0, 1, 2])):  # the cached sizes give per-image bytes
            one = apply(bank, torch.from_numpy(c[None]), [lab], size_mismatch="resize")[0]
            np.testing.assert_array_equal(out[i], one.numpy(), err_msg=f"{seed} {i}")
    # The whole bank (3 rows), once per size and payload tensor, over 3 batches of repeated sizes.
    assert sorted(sizes) == sorted((hw, 3, c, mode) for hw in [(5, 7), (9, 9)] for c, mode in tensors)


def test_resized_cache_equals_resizing_the_rows(tmp_path, monkeypatch):
    bank = additive_bank([0, 1, 2], (3, 8, 8))
    bank.save(tmp_path / "b.arrow")
    chws = _chws([(3, 5, 7), (3, 11, 9), (3, 5, 7)])
    cached = Applier(bank, size_mismatch="resize").protect(chws, labels=[2, 0, 1])
    monkeypatch.setattr(Applier, "RESIDENT_BYTES", 0)  # mapped: rows gathered and resized per batch
    mapped = Applier(NoiseBank.load(tmp_path / "b.arrow"), size_mismatch="resize")
    assert not mapped._resident
    for a, b in zip(cached, mapped.protect(chws, labels=[2, 0, 1])):
        np.testing.assert_array_equal(a, b)


def test_size_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(Applier, "SIZE_CACHE_BYTES", 3 * 3 * 10 * 10 * 4 * 2)  # two 10x10 copies of the bank
    app = Applier(additive_bank([0, 1, 2], (3, 8, 8)), size_mismatch="resize")
    for hw in [(10, 10), (10, 9), (9, 10), (10, 10)]:
        app.protect(_chws([(3, *hw)]), labels=[1])
    assert list(app._sized) == [("delta", (9, 10)), ("delta", (10, 10))]


def test_protect_sample_bank_and_key_errors():
    ids = ["a", "b", "c"]
    delta = np.random.default_rng(0).uniform(-EPS, EPS, (3, 3, 4, 4)).astype("float32")
    bank = NoiseBank(method="em", kind="additive", keying="sample", keys=ids, tensors={"delta": delta})
    chws = _chws([(3, 4, 4)] * 2)
    out = Applier(bank).protect(chws, sample_ids=["c", "a"])
    ref = ref_additive(np.stack(chws), bank, ["c", "a"])
    np.testing.assert_array_equal(np.stack(out), ref)
    with pytest.raises(BankError, match="not in this sample-wise bank"):
        Applier(bank).protect(chws)  # content hashes are not the fitted ids
    with pytest.raises(ValueError, match="sample ids"):
        Applier(bank).protect(chws, sample_ids=["a"])
    cls = additive_bank([0, 1], (3, 4, 4))
    with pytest.raises(BankError, match="needs each image's label"):
        Applier(cls).protect(chws)
    with pytest.raises(BankError, match="integer class ids"):
        Applier(cls).protect(chws, labels=["cat", "dog"])
    with pytest.raises(ValueError, match="2 images but 1 keys"):
        Applier(cls).protect(chws, labels=[0])


def test_applier_pickles_small_and_equal(tmp_path):
    import pickle

    bank = additive_bank([0, 1], (3, 4, 4))
    bank.save(tmp_path / "b.arrow")
    app = Applier(NoiseBank.load(tmp_path / "b.arrow"), size_mismatch="resize")
    blob = pickle.dumps(app)
    assert len(blob) < 1000  # the bank travels as its path and sha256
    back = pickle.loads(blob)
    assert back.size_mismatch == "resize" and back.bank.sha256 == app.bank.sha256
    chws = _chws([(3, 4, 4), (3, 6, 6)])
    for a, b in zip(app.protect(chws, labels=[1, 0]), back.protect(chws, labels=[1, 0])):
        np.testing.assert_array_equal(a, b)


def test_cluster_bank_with_an_encoder_equals_the_cluster_column():
    from uetransforms.models.assign import ClusterAssigner

    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 6 * 6, 4))
    chws = _chws([(3, 6, 6)] * 9)
    with torch.no_grad():  # three of the images' own (L2-normalised) features as centroids
        feats = torch.nn.functional.normalize(encoder(torch.from_numpy(np.stack(chws[:3])).float() / 255), dim=-1)
    centroids = feats.numpy()
    bank = NoiseBank(method="clusters", kind="additive", keying="cluster", keys=[0, 1, 2],
                     tensors={"delta": np.random.default_rng(2).uniform(-EPS, EPS, (3, 3, 6, 6)).astype("float32"),
                              "centroid": centroids}, info={"surrogate": {"kind": "module", "class": "toy"}})
    clusters = ClusterAssigner(bank, encoder=encoder)(chws)
    assert clusters[:3].tolist() == [0, 1, 2]  # the test means something only if clusters differ
    by_column = Applier(bank).protect(chws, labels=clusters)
    by_encoder = Applier(bank, assigner=functools.partial(ClusterAssigner, bank, encoder=encoder)).protect(chws)
    for a, b in zip(by_column, by_encoder):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(BankError, match="custom encoder"):
        Applier(bank, assigner=functools.partial(ClusterAssigner, bank)).protect(chws)  # nothing to rebuild it from
    with pytest.raises(BankError, match="cluster id"):
        Applier(bank).protect(chws)  # the core layer alone has no surrogate


# ------------------------------------------------------------------ issue 23: bounded memory
def test_resize_makes_only_the_rows_a_batch_uses_and_refuses_giant_images(monkeypatch):
    """A 12000x12000 photo resized every class row at once (17 GB); now only the rows used, and
    images above MAX_RESIZE_PIXELS are refused with the fix."""
    import numpy as np
    import torch

    import uetransforms as ue
    from uetransforms.core import apply as apply_mod
    from uetransforms.core.apply import Applier

    bank = ue.NoiseBank(method="random", kind="additive", keying="class", keys=np.arange(10),
                        tensors={"delta": np.random.default_rng(0).uniform(-8 / 255, 8 / 255, (10, 3, 8, 8))
                                 .astype(np.float32)}, params={"epsilon": 8 / 255})
    app = Applier(bank, size_mismatch="resize")
    monkeypatch.setattr(Applier, "SIZE_CACHE_BYTES", 10_000)  # the whole bank at 40x40 (192 kB) is "too big"
    sizes = []
    real = Applier.fit_size

    def spy(self, t, hw, *, mode):
        sizes.append(int(t.shape[0]))
        return real(self, t, hw, mode=mode)

    monkeypatch.setattr(Applier, "fit_size", spy)
    imgs = [np.full((3, 40, 40), 100, np.uint8)] * 3
    out = app.protect(imgs, labels=[4, 7, 4])
    assert sizes == [2]  # two distinct rows resized, not ten
    want = Applier(bank, size_mismatch="resize").fit_size(
        torch.from_numpy(np.asarray(bank.tensors["delta"])[[4, 7]]) * 255, (40, 40), mode="bilinear")
    np.testing.assert_array_equal(out[1], torch.clamp(torch.round(100 + want[1]), 0, 255).to(torch.uint8).numpy())
    np.testing.assert_array_equal(out[0], out[2])
    monkeypatch.setattr(apply_mod, "MAX_RESIZE_PIXELS", 40 * 39)
    with pytest.raises(ue.SizeMismatchError, match=r"40x40 .*megapixel limit.*Downscale"):
        app.protect(imgs[:1], labels=[4])
