"""Several processes (and GPUs) on one machine: num_proc and with_rank give the single-process bytes."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch

import uetransforms as ue
from uetransforms.core.bank import NoiseBank

FEATURES = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=3)})


def make_ds(n: int = 12, seed: int = 0) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    return datasets.Dataset.from_dict(
        {"image": list(rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)), "label": [i % 3 for i in range(n)]},
        features=FEATURES)


def saved_bank(tmp_path, kind: str) -> NoiseBank:
    rng = np.random.default_rng(3)
    if kind == "additive":
        bank = NoiseBank(method="random", kind="additive", keying="class", keys=[0, 1, 2],
                         tensors={"delta": rng.uniform(-8 / 255, 8 / 255, (3, 3, 8, 8)).astype("float32")},
                         params={"epsilon": 8 / 255, "norm": "linf"})
    else:
        bank = NoiseBank(method="cuda", kind="conv", keying="class", keys=[0, 1, 2],
                         tensors={"weight": rng.uniform(0, 1, (3, 3, 3, 3)).astype("float32")}, image_shape=(3, 8, 8))
    path = tmp_path / f"{kind}.bank.arrow"
    bank.save(path)
    return NoiseBank.load(path)


def png_bytes(ds) -> list[bytes]:
    return [r["bytes"] for r in ds.cast_column("image", datasets.Image(decode=False))["image"]]


@pytest.mark.parametrize("kind", ["additive", "conv"])
def test_num_proc_2_equals_num_proc_1(tmp_path, kind):
    ds, bank = make_ds(), saved_bank(tmp_path, kind)
    one = ds.map(ue.Protect(bank), batched=True, batch_size=4, num_proc=1, load_from_cache_file=False)
    two = ds.map(ue.Protect(bank), batched=True, batch_size=4, num_proc=2, load_from_cache_file=False)
    assert one["label"] == two["label"] == ds["label"]
    assert png_bytes(one) == png_bytes(two)
    assert png_bytes(one) != png_bytes(ds.cast_column("image", datasets.Image()))  # something was protected


def test_with_rank_num_proc_2_equals_single_process(tmp_path):
    # with_rank passes each worker's rank; on CPU every rank uses the CPU and must agree.
    ds, bank = make_ds(), saved_bank(tmp_path, "additive")
    ref = png_bytes(ds.map(ue.Protect(bank), batched=True, batch_size=4, load_from_cache_file=False))
    ranked = ds.map(ue.Protect(bank), batched=True, batch_size=4, num_proc=2, with_rank=True,
                    load_from_cache_file=False)
    assert png_bytes(ranked) == ref


def test_unsaved_bank_travels_to_workers():
    # An in-memory bank is shipped as Arrow bytes; workers must still produce the same output.
    ds = make_ds()
    bank = ue.fit("random", ds, seed=5)
    one = ds.map(ue.Protect(bank), batched=True, batch_size=4, load_from_cache_file=False)
    two = ds.map(ue.Protect(bank), batched=True, batch_size=4, num_proc=2, load_from_cache_file=False)
    assert png_bytes(one) == png_bytes(two)


def test_rank_maps_to_gpu_round_robin(tmp_path, monkeypatch):
    """device='cuda' + rank r -> cuda:{r % n_gpus}; CPU stays CPU whatever the rank."""
    bank = saved_bank(tmp_path, "additive")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    fn = ue.Protect(bank, device="cuda")
    assert [fn._device_for(r) for r in range(5)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert ue.Protect(bank)._device_for(3) == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_bytes_equal_cpu_bytes(tmp_path):
    ds = make_ds()
    for kind in ("additive", "conv"):
        bank = saved_bank(tmp_path, kind)
        cpu = png_bytes(ds.map(ue.Protect(bank), batched=True, batch_size=4, load_from_cache_file=False))
        gpu = png_bytes(ds.map(ue.Protect(bank, device="cuda"), batched=True, batch_size=4,
                               load_from_cache_file=False))
        assert gpu == cpu, kind
