"""ProtectTransform inside torchvision v2 pipelines: same bytes as Protect, passthrough, errors, pickling."""

from __future__ import annotations

import pickle

import datasets
import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from torchvision import tv_tensors
from torchvision.transforms import v2

import uetransforms as ue
from uetransforms.core.bank import BankError, NoiseBank
from uetransforms.integrations.transforms import ProtectTransform, default_labels_getter

H, W, N = 8, 8, 5
EPS = 8 / 255


def _pixels(n=N, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, H, W, 3), dtype=np.uint8)


LABELS = [0, 2, 1, 1, 0]


@pytest.fixture(scope="module")
def bank_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    bank = NoiseBank(method="random", kind="additive", keying="class", keys=[0, 1, 2],
                     tensors={"delta": rng.uniform(-EPS, EPS, (3, 3, H, W)).astype("float32")},
                     params={"epsilon": EPS, "norm": "linf"})
    path = tmp_path_factory.mktemp("bank") / "b.arrow"
    bank.save(path)
    return str(path)


@pytest.fixture(scope="module")
def mapped(bank_path) -> list[np.ndarray]:
    """What Protect writes for the same images: the reference for every transform test."""
    ds = datasets.Dataset.from_dict(
        {"image": [PILImage.fromarray(p) for p in _pixels()], "label": LABELS},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=3)}),
    )
    out = ds.map(ue.Protect(bank_path), batched=True, batch_size=2)
    return [np.asarray(im) for im in out["image"]]


def _chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.transpose(2, 0, 1).copy())


def pipeline(bank_path, **kw) -> v2.Compose:
    return v2.Compose([ProtectTransform(bank_path, **kw), v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])


def test_compose_with_tuple_samples(bank_path, mapped):
    tf_uint8 = v2.Compose([ProtectTransform(bank_path), v2.ToImage()])
    tf = pipeline(bank_path)
    for px, lab, ref in zip(_pixels(), LABELS, mapped):
        img, label = tf_uint8(PILImage.fromarray(px), lab)
        assert label == lab
        assert isinstance(img, tv_tensors.Image) and img.dtype == torch.uint8
        assert torch.equal(img.as_subclass(torch.Tensor), _chw(ref))
        f, _ = tf(PILImage.fromarray(px), lab)
        assert f.dtype == torch.float32
        torch.testing.assert_close(f.as_subclass(torch.Tensor), _chw(ref).float() / 255, rtol=0, atol=1e-7)


def test_dict_samples(bank_path, mapped):
    tf = v2.Compose([ProtectTransform(bank_path), v2.ToImage()])
    for px, lab, ref in zip(_pixels(), LABELS, mapped):
        out = tf({"image": PILImage.fromarray(px), "label": lab, "name": "x", "index": 7})
        assert out["label"] == lab and out["name"] == "x" and out["index"] == 7
        assert torch.equal(out["image"].as_subclass(torch.Tensor), _chw(ref))


def test_tensor_label(bank_path, mapped):
    tf = ProtectTransform(bank_path)
    img, label = tf(PILImage.fromarray(_pixels()[1]), torch.tensor(2))
    assert isinstance(label, torch.Tensor) and label.item() == 2
    np.testing.assert_array_equal(np.asarray(img), mapped[1])


def test_tv_tensor_in_tv_tensor_out(bank_path, mapped):
    tf = ProtectTransform(bank_path)
    x = tv_tensors.Image(_chw(_pixels()[2]))
    out, _ = tf(x, LABELS[2])
    assert type(out) is tv_tensors.Image and out.dtype == torch.uint8
    assert torch.equal(out.as_subclass(torch.Tensor), _chw(mapped[2]))


def test_plain_uint8_tensor(bank_path, mapped):
    out, _ = ProtectTransform(bank_path)(_chw(_pixels()[3]), LABELS[3])
    assert type(out) is torch.Tensor and out.dtype == torch.uint8
    assert torch.equal(out, _chw(mapped[3]))


def test_float_tensor_in_float_out(bank_path, mapped):
    x = _chw(_pixels()[0]).float() / 255
    out, _ = ProtectTransform(bank_path)(x, LABELS[0])
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, _chw(mapped[0]).float() / 255, rtol=0, atol=0)
    x64 = tv_tensors.Image(_chw(_pixels()[0]).double() / 255)
    out64, _ = ProtectTransform(bank_path)(x64, LABELS[0])
    assert type(out64) is tv_tensors.Image and out64.dtype == torch.float64


def test_other_items_pass_through(bank_path, mapped):
    boxes = tv_tensors.BoundingBoxes([[0, 0, 4, 4]], format="XYXY", canvas_size=(H, W))
    mask = tv_tensors.Mask(torch.ones(H, W, dtype=torch.uint8))
    sample = {"image": PILImage.fromarray(_pixels()[4]), "label": LABELS[4], "boxes": boxes, "mask": mask,
              "caption": "a photo", "meta": {"id": 12, "score": 0.5}}
    out = ProtectTransform(bank_path)(sample)
    assert out["boxes"] is boxes and out["mask"] is mask
    assert out["caption"] == "a photo" and out["meta"] == {"id": 12, "score": 0.5}
    np.testing.assert_array_equal(np.asarray(out["image"]), mapped[4])


def test_labels_getter_callable(bank_path, mapped):
    tf = ProtectTransform(bank_path, labels_getter=lambda s: s[1]["y"])
    img, target = tf(PILImage.fromarray(_pixels()[1]), {"y": LABELS[1], "boxes": None})
    assert target == {"y": LABELS[1], "boxes": None}
    np.testing.assert_array_equal(np.asarray(img), mapped[1])


def test_labels_getter_none_with_class_bank(bank_path):
    tf = ProtectTransform(bank_path, labels_getter=None)
    with pytest.raises(BankError, match="label"):
        tf(PILImage.fromarray(_pixels()[0]), 0)


def test_bad_labels_getter(bank_path):
    with pytest.raises(ValueError, match="labels_getter"):
        ProtectTransform(bank_path, labels_getter="label")


def test_missing_label(bank_path):
    with pytest.raises(BankError, match="label"):
        ProtectTransform(bank_path)(PILImage.fromarray(_pixels()[0]))


def test_label_outside_bank(bank_path):
    with pytest.raises(BankError, match="not in the bank"):
        ProtectTransform(bank_path)(PILImage.fromarray(_pixels()[0]), 9)


def test_batched_tensor_is_refused(bank_path):
    with pytest.raises(TypeError, match="per sample"):
        ProtectTransform(bank_path)(torch.zeros(2, 3, H, W, dtype=torch.uint8), 0)


def test_default_labels_getter():
    assert default_labels_getter((1, 2)) == 2
    assert default_labels_getter((1, {"labels": 4})) == 4
    assert default_labels_getter({"img": 0, "Label": 3}) == 3
    assert default_labels_getter({"img": 0, "class_label": 5}) == 5
    assert default_labels_getter({"img": 0}) is None
    assert default_labels_getter((1,)) is None


def test_pickle_round_trip(bank_path, mapped):
    tf = pipeline(bank_path)
    blob = pickle.dumps(tf)
    assert len(blob) < 4096
    tf2 = pickle.loads(blob)
    a, _ = tf(PILImage.fromarray(_pixels()[2]), LABELS[2])
    b, _ = tf2(PILImage.fromarray(_pixels()[2]), LABELS[2])
    assert torch.equal(a, b)
    assert "random" in repr(tf2)


def test_pickle_of_unsaved_bank():
    bank = NoiseBank(method="random", kind="additive", keying="class", keys=[0],
                     tensors={"delta": np.full((1, 3, H, W), 2 / 255, "float32")})
    tf = pickle.loads(pickle.dumps(ProtectTransform(bank)))
    out, _ = tf(torch.full((3, H, W), 10, dtype=torch.uint8), 0)
    assert (out == 12).all()


class _Samples(torch.utils.data.Dataset):
    def __init__(self, transform):
        self.transform = transform

    def __len__(self):
        return N

    def __getitem__(self, i):
        return self.transform(PILImage.fromarray(_pixels()[i]), LABELS[i])


def test_dataloader(bank_path, mapped):
    loader = torch.utils.data.DataLoader(_Samples(pipeline(bank_path)), batch_size=2, num_workers=0)
    xs, ys = zip(*loader)
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.shape == (N, 3, H, W) and y.tolist() == LABELS
    ref = torch.stack([_chw(m) for m in mapped]).float() / 255
    torch.testing.assert_close(x.as_subclass(torch.Tensor), ref, rtol=0, atol=1e-7)


def test_sample_wise_bank_with_id_getter():
    ids = ["a", "b"]
    rng = np.random.default_rng(0)
    bank = NoiseBank(method="em", kind="additive", keying="sample", keys=ids,
                     tensors={"delta": rng.uniform(-EPS, EPS, (2, 3, H, W)).astype("float32")})
    tf = ProtectTransform(bank, labels_getter=None, sample_id_getter=lambda s: s["id"])
    px = _pixels(1)[0]
    out = tf({"image": PILImage.fromarray(px), "id": "b"})
    d = bank.tensors["delta"][1].transpose(1, 2, 0) * np.float32(255)
    np.testing.assert_array_equal(np.asarray(out["image"]),
                                  np.clip(np.round(px.astype(np.float32) + d), 0, 255).astype(np.uint8))
    with pytest.raises(BankError, match="not in this sample-wise bank"):
        tf({"image": PILImage.fromarray(px), "id": "zzz"})


def test_cluster_bank_ignores_the_class_label(monkeypatch):
    """The default getter reads the class label; a cluster bank must assign the cluster itself."""
    from uetransforms.core.apply import Applier

    rng = np.random.default_rng(0)
    bank = NoiseBank(method="clusters", kind="additive", keying="cluster", keys=[0, 1],
                     tensors={"delta": rng.uniform(-EPS, EPS, (2, 3, H, W)).astype("float32")})
    monkeypatch.setattr(Applier, "_assign", lambda self, chws: np.ones(len(chws), np.int64))
    px = _pixels(1)[0]
    d1 = bank.tensors["delta"][1].transpose(1, 2, 0) * np.float32(255)
    want = np.clip(np.round(px.astype(np.float32) + d1), 0, 255).astype(np.uint8)
    img, label = ProtectTransform(bank)(PILImage.fromarray(px), 0)  # class 0, assigned cluster 1
    assert label == 0
    np.testing.assert_array_equal(np.asarray(img), want)
    # A custom getter is taken to return cluster ids.
    img, _ = ProtectTransform(bank, labels_getter=lambda s: s[1]["cluster"])(PILImage.fromarray(px), {"cluster": 1})
    np.testing.assert_array_equal(np.asarray(img), want)


# ------------------------------------------------------------------ issue 23: images in, images out exactly
def test_float_tensors_in_0_1_give_the_uint8_pixels_over_255():
    import numpy as np
    import torch

    import uetransforms as ue
    from uetransforms.integrations.transforms import ProtectTransform

    rng = np.random.default_rng(0)
    bank = ue.NoiseBank(method="random", kind="additive", keying="class", keys=[0, 1],
                        tensors={"delta": rng.uniform(-8 / 255, 8 / 255, (2, 3, 6, 5)).astype(np.float32)},
                        params={"epsilon": 8 / 255})
    tf = ProtectTransform(bank)
    u8 = torch.from_numpy(rng.integers(0, 256, (3, 6, 5), dtype=np.uint8))
    want, _ = tf(u8, 1)
    for dtype in (torch.float32, torch.float64, torch.float16):
        got, _ = tf(u8.to(dtype) / 255, 1)
        assert got.dtype == dtype
        assert torch.equal((got.double() * 255).round().to(torch.uint8), want)
    # 0-255 floats were clamped to [0, 1] (52% white in issue 23): refused, with the fix.
    with pytest.raises(ue.ImageModeError, match=r"outside \[0, 1\].*ToDtype\(torch.float32, scale=True\)"):
        tf(u8.float(), 1)
    with pytest.raises(ue.ImageModeError, match=r"outside \[0, 1\]"):
        tf((u8.float() / 255 - 0.5) / 0.25, 1)  # a normalised tensor
    with pytest.raises(ue.ImageModeError, match="NaN"):
        tf(torch.full((3, 6, 5), float("nan")), 1)


def test_hwc_tensor_and_empty_images_get_clear_errors():
    import numpy as np
    import torch

    import uetransforms as ue
    from uetransforms.integrations.transforms import ProtectTransform

    bank = ue.NoiseBank(method="random", kind="additive", keying="class", keys=[0],
                        tensors={"delta": np.zeros((1, 3, 32, 32), np.float32)}, params={"epsilon": 8 / 255})
    tf = ProtectTransform(bank)
    with pytest.raises(ue.ImageModeError, match=r"height x width x channels.*permute\(2, 0, 1\)"):
        tf(torch.zeros(32, 32, 3, dtype=torch.uint8), 0)
    for empty in (torch.zeros(3, 0, 0, dtype=torch.uint8), torch.zeros(3, 0, 0)):
        with pytest.raises(ue.ImageModeError, match="empty"):
            tf(empty, 0)  # was ZeroDivisionError in the apply entry
    with pytest.raises(ValueError, match="empty"):
        ue.apply(bank, torch.zeros(1, 3, 0, 0, dtype=torch.uint8), [0])
