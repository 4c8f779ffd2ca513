"""The ``convadd`` kind: the conv kind's filter, then the additive kind's delta, on every path the Applier serves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import uetransforms as ue
from uetransforms.core import kernels, kinds
from uetransforms.core.bank import NoiseBank
from uetransforms.core.errors import BankError, SizeMismatchError

EPS = 8 / 255


def _bank(keying="class", n=3, hw=(8, 8), info=None, seed=0) -> NoiseBank:
    rng = np.random.default_rng(seed)
    keys = [f"s{i}" for i in range(n)] if keying == "sample" else list(range(n))
    return NoiseBank(method="cudatap", kind="convadd", keying=keying, keys=keys, info=info or {},
                     params={"normalise": "max"},
                     tensors={"weight": rng.uniform(0, 0.5, (n, 3, 3, 3)).astype("float32"),
                              "delta": np.rint(rng.uniform(-8, 8, (n, 3, *hw))).astype("float32") / 255})


def _images(n, h=8, w=8, seed=1):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 3, h, w), dtype=np.uint8))


def test_registered_with_both_tensors_and_a_shape_from_the_delta():
    kind = kinds.bank_kind("convadd")
    assert kind.required_tensors == ("weight", "delta") and kind.carried is None
    assert "convadd" in kinds.kinds() and _bank().image_shape == (3, 8, 8)
    with pytest.raises(BankError, match=r"needs tensors \['delta'\]"):
        NoiseBank(method="m", kind="convadd", keying="class", keys=[0], tensors={"weight": np.ones((1, 3, 3, 3), "f4")},
                  image_shape=(3, 8, 8))


def test_apply_is_the_conv_kernel_then_the_additive_kernel():
    bank = _bank()
    x, labels = _images(6), [0, 1, 2, 2, 1, 0]
    out = ue.apply(bank, x, labels)
    w = torch.from_numpy(np.array(bank.tensors["weight"]))[labels]
    d = torch.from_numpy(np.array(bank.tensors["delta"]))[labels] * 255
    want = kernels.add_delta(kernels.convolve(x, w), d)
    assert torch.equal(out, want)
    filtered = kernels.convolve(x, w)
    assert 0 < int((out.int() - filtered.int()).abs().max()) <= 8  # the delta is added on the filtered pixels
    # normalise="none" is read from the bank's params, as the conv kind does
    plain = bank.replace(params={"normalise": "none"})
    assert torch.equal(ue.apply(plain, x, labels), kernels.add_delta(kernels.convolve(x, w, normalise="none"), d))


def test_sample_keyed_and_saved_banks_give_the_same_bytes(tmp_path):
    bank = _bank("sample", n=4)
    x = _images(4)
    ids = ["s2", "s0", "s3", "s1"]
    rows = [2, 0, 3, 1]
    out = ue.apply(bank, x, ids)
    want = kernels.add_delta(kernels.convolve(x, torch.from_numpy(np.array(bank.tensors["weight"]))[rows]),
                             torch.from_numpy(np.array(bank.tensors["delta"]))[rows] * 255)
    assert torch.equal(out, want)
    again = NoiseBank.load(bank.save(tmp_path / "b.arrow"))
    assert again.kind == "convadd" and torch.equal(ue.apply(again, x, ids), out)


def test_other_sizes_need_the_resize_policy_and_then_resize_only_the_delta():
    x, labels = _images(2, 10, 6), [0, 1]
    with pytest.raises(SizeMismatchError, match="size_mismatch='resize'"):
        ue.apply(_bank(), x, labels)
    out = ue.apply(_bank(info={"size_mismatch": "resize"}), x, labels)
    assert out.shape == (2, 3, 10, 6)


def test_measure_reads_the_filter_size_and_the_delta():
    m = _bank().measure()
    assert m["kernel_size"] == 3 and m["linf"] == pytest.approx(8 / 255, abs=1e-6) and m["l2"] > 0
