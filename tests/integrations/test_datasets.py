"""Protect as a datasets.map / set_transform / IterableDataset callable: columns kept, PNG out, caching, errors."""

from __future__ import annotations

import io
import pickle
import warnings

import datasets
import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Image, List, Value
from PIL import Image as PILImage

import uetransforms as ue
from uetransforms.core import apply as apply_mod
from uetransforms.core import kernels
from uetransforms.core.bank import BankError, NoiseBank
from uetransforms.core.data import DataError, FitData
from uetransforms.core.images import ImageModeError, content_id

from kind_banks import EPS, H, KIND_BANKS, W, _encode, _kind_banks, _options, _want, class_bank, mixed_ds, reference_kernel  # noqa: E402,F401,I001

N = 7


# ------------------------------------------------------------------ fixtures
def _pixels(n=N, c=3, h=H, w=W, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def make_ds(fmt: str = "PNG", n: int = N, seed: int = 0) -> Dataset:
    px = _pixels(n, seed=seed)
    rng = np.random.default_rng(seed + 100)
    return Dataset.from_dict(
        {
            "image": [{"bytes": _encode(p, fmt), "path": None} for p in px],
            "label": [int(v) for v in rng.integers(0, 3, n)],
            "uid": [f"id-{i:03d}" for i in range(n)],
            "count": list(range(100, 100 + n)),
            "score": [float(v) for v in rng.uniform(size=n)],
            "tags": [[i, i + 1][: i % 3] for i in range(n)],
        },
        features=Features({
            "image": Image(), "label": ClassLabel(names=["cat", "dog", "owl"]), "uid": Value("string"),
            "count": Value("int64"), "score": Value("float64"), "tags": List(Value("int32")),
        }),
    )


@pytest.fixture(scope="module")
def bank_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("bank") / "b.arrow"
    class_bank().save(path)
    return str(path)


@pytest.fixture(scope="module")
def disk_ds(tmp_path_factory):
    """A dataset backed by cache files, so map() results are cached and fingerprints matter."""
    where = tmp_path_factory.mktemp("ds") / "src"
    make_ds().save_to_disk(str(where))
    return datasets.load_from_disk(str(where))


def decoded(ds: Dataset, col: str = "image") -> list[np.ndarray]:
    return [np.asarray(im) for im in ds[col]]


def ref_protect(arr_hwc: np.ndarray, bank: NoiseBank, label: int) -> np.ndarray:
    d = bank.tensors["delta"][list(bank.keys).index(label)].transpose(1, 2, 0).astype(np.float32) * np.float32(255)
    return np.clip(np.round(arr_hwc.astype(np.float32) + d), 0, 255).astype(np.uint8)


def stored_bytes(ds: Dataset, col: str = "image") -> list[bytes]:
    return [r["bytes"] for r in ds.cast_column(col, Image(decode=False))[col]]


# ------------------------------------------------------------------ the main path
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_map_keeps_columns_and_writes_png(bank_path, fmt):
    bank = NoiseBank.load(bank_path)
    src = make_ds(fmt)
    out = src.map(ue.Protect(bank), batched=True, batch_size=3)
    assert len(out) == len(src)
    assert out.column_names == src.column_names
    assert out.features == src.features
    for col in ("label", "uid", "count", "score", "tags"):
        assert out[col] == src[col], col
    blobs = stored_bytes(out)
    assert all(b.startswith(b"\x89PNG") for b in blobs)
    if fmt == "JPEG":
        assert all(b.startswith(b"\xff\xd8") for b in stored_bytes(src))
    # The pixels are the source's decoded pixels plus the class's delta, exactly.
    for x, y, lab in zip(decoded(src), decoded(out), src["label"]):
        np.testing.assert_array_equal(y, ref_protect(x, bank, lab))


def test_map_is_byte_deterministic(bank_path):
    src = make_ds()
    a = src.map(ue.Protect(bank_path), batched=True, batch_size=3)
    b = src.map(ue.Protect(NoiseBank.load(bank_path)), batched=True, batch_size=2)
    assert stored_bytes(a) == stored_bytes(b)


def test_batch_size_does_not_matter(bank_path):
    src = make_ds()
    a = src.map(ue.Protect(bank_path), batched=True, batch_size=1)
    b = src.map(ue.Protect(bank_path), batched=True, batch_size=100)
    c = src.map(ue.Protect(bank_path))  # not batched: one LazyRow at a time
    assert stored_bytes(a) == stored_bytes(b) == stored_bytes(c)
    assert c["uid"] == src["uid"]


def test_output_stays_png_when_pil_format_is_jpeg(bank_path):
    src = make_ds("JPEG")
    assert all(im.format == "JPEG" for im in src["image"])
    batch = src[:3]
    res = ue.Protect(bank_path)(batch)
    # New images carry no format, so datasets encodes them as PNG instead of re-encoding JPEG.
    assert all(im.format is None for im in res["image"])
    out = src.map(ue.Protect(bank_path), batched=True)
    assert all(b.startswith(b"\x89PNG") for b in stored_bytes(out))


# ------------------------------------------------------------------ caching and pickling
def test_second_map_hits_the_cache(bank_path, disk_ds):
    assert disk_ds.cache_files
    a = disk_ds.map(ue.Protect(bank_path), batched=True, batch_size=3)
    b = disk_ds.map(ue.Protect(NoiseBank.load(bank_path)), batched=True, batch_size=3)
    assert a.cache_files == b.cache_files
    assert a._fingerprint == b._fingerprint
    c = disk_ds.map(ue.Protect(bank_path, image_column="image", label_column="label", size_mismatch="resize"),
                    batched=True, batch_size=3)
    assert c._fingerprint != a._fingerprint  # options are part of the hash


def test_fingerprint_stable_and_bank_sensitive(bank_path, tmp_path):
    from datasets.fingerprint import Hasher

    h1 = Hasher.hash(ue.Protect(bank_path))
    h2 = Hasher.hash(ue.Protect(NoiseBank.load(bank_path)))
    assert h1 == h2
    other = tmp_path / "other.arrow"
    class_bank(seed=9).save(other)
    assert Hasher.hash(ue.Protect(str(other))) != h1
    assert Hasher.hash(ue.Protect(bank_path, image_column="img")) != h1


def test_pickle_is_small_and_works(bank_path):
    p = ue.Protect(bank_path)
    blob = pickle.dumps(p)
    assert len(blob) < 2048
    q = pickle.loads(blob)
    batch = make_ds()[:4]
    a, b = p(dict(batch)), q(dict(batch))
    assert [np.asarray(i).tobytes() for i in a["image"]] == [np.asarray(i).tobytes() for i in b["image"]]


def test_pickle_of_unsaved_bank_uses_arrow_bytes():
    bank = class_bank()
    q = pickle.loads(pickle.dumps(ue.Protect(bank)))
    assert q.bank.sha256 == bank.sha256


def test_num_proc_equals_single_process(bank_path, disk_ds):
    a = disk_ds.map(ue.Protect(bank_path), batched=True, batch_size=2)
    b = disk_ds.map(ue.Protect(bank_path), batched=True, batch_size=2, num_proc=2, load_from_cache_file=False)
    assert stored_bytes(a) == stored_bytes(b)
    assert a["uid"] == b["uid"]


def test_with_rank_on_cpu(bank_path):
    src = make_ds()
    a = src.map(ue.Protect(bank_path), batched=True, batch_size=3)
    b = src.map(ue.Protect(bank_path), batched=True, batch_size=3, with_rank=True)
    c = src.map(ue.Protect(bank_path), batched=True, batch_size=3, with_indices=True, with_rank=True)
    assert stored_bytes(a) == stored_bytes(b) == stored_bytes(c)


# ------------------------------------------------------------------ other entry points
def test_set_transform_equals_map(bank_path):
    src = make_ds()
    mapped = src.map(ue.Protect(bank_path), batched=True, batch_size=3)
    view = make_ds()
    view.set_transform(ue.Protect(bank_path))
    rows = view[:]
    assert set(rows) == set(src.column_names)
    for col in ("label", "uid", "count", "score", "tags"):
        assert rows[col] == src[col]
    assert [np.asarray(i).tobytes() for i in rows["image"]] == [a.tobytes() for a in decoded(mapped)]
    one = view[2]
    np.testing.assert_array_equal(np.asarray(one["image"]), decoded(mapped)[2])
    assert one["uid"] == "id-002"


def test_iterable_dataset_equals_map(bank_path):
    src = make_ds()
    mapped = src.map(ue.Protect(bank_path), batched=True, batch_size=3)
    it = src.to_iterable_dataset().map(ue.Protect(bank_path), batched=True, batch_size=2)
    rows = list(it)
    assert [r["uid"] for r in rows] == src["uid"]
    assert [r["tags"] for r in rows] == src["tags"]
    for r, ref in zip(rows, decoded(mapped)):
        np.testing.assert_array_equal(np.asarray(r["image"]), ref)


def test_numpy_batch_returns_numpy(bank_path):
    bank = NoiseBank.load(bank_path)
    px = _pixels(4)
    labels = np.array([0, 2, 1, 1])
    res = ue.Protect(bank)({"image": px, "label": labels, "extra": np.arange(4)})
    assert isinstance(res["image"], np.ndarray)
    assert res["image"].shape == px.shape and res["image"].dtype == np.uint8
    # Array batches (formatted maps, Ray) get only the image column: their other columns may have been
    # converted on the way in, so the caller merges instead of taking back possibly-rounded values.
    assert set(res) == {"image"}
    for i in range(4):
        np.testing.assert_array_equal(res["image"][i], ref_protect(px[i], bank, int(labels[i])))


def test_single_example_call(bank_path):
    bank = NoiseBank.load(bank_path)
    px = _pixels(1)[0]
    res = ue.Protect(bank)({"image": PILImage.fromarray(px), "label": 2})
    assert isinstance(res["image"], PILImage.Image)
    np.testing.assert_array_equal(np.asarray(res["image"]), ref_protect(px, bank, 2))


# ------------------------------------------------------------------ sample-wise banks
def _sample_bank(ids, seed=3) -> NoiseBank:
    rng = np.random.default_rng(seed)
    delta = rng.uniform(-EPS, EPS, (len(ids), 3, H, W)).astype("float32")
    return NoiseBank(method="em", kind="additive", keying="sample", keys=ids, tensors={"delta": delta},
                     params={"epsilon": EPS})


def _by_uid(ds: Dataset) -> dict[str, bytes]:
    return dict(zip(ds["uid"], (a.tobytes() for a in decoded(ds))))


def test_sample_bank_with_id_column(tmp_path):
    src = make_ds()
    bank = _sample_bank(src["uid"])
    bank.save(tmp_path / "s.arrow")
    prot = ue.Protect(str(tmp_path / "s.arrow"), id_column="uid", label_column=None)
    out = src.map(prot, batched=True, batch_size=3)
    for x, y, uid in zip(decoded(src), decoded(out), src["uid"]):
        row = src["uid"].index(uid)
        d = bank.tensors["delta"][row].transpose(1, 2, 0) * np.float32(255)
        np.testing.assert_array_equal(y, np.clip(np.round(x.astype(np.float32) + d), 0, 255).astype(np.uint8))
    ref = _by_uid(out)
    shuffled = src.shuffle(seed=4).map(prot, batched=True, batch_size=2)
    assert shuffled["uid"] != src["uid"]
    assert _by_uid(shuffled) == ref
    sub = src.select([5, 1, 3]).map(prot, batched=True, batch_size=2)
    assert _by_uid(sub) == {k: ref[k] for k in sub["uid"]}


def test_sample_bank_with_content_hash():
    src = make_ds()
    ids = [content_id(a.transpose(2, 0, 1)) for a in decoded(src)]
    bank = _sample_bank(ids)
    out = src.map(ue.Protect(bank, label_column=None), batched=True, batch_size=3)
    ref = _by_uid(out)
    for x, y, i in zip(decoded(src), decoded(out), range(N)):
        d = bank.tensors["delta"][i].transpose(1, 2, 0) * np.float32(255)
        np.testing.assert_array_equal(y, np.clip(np.round(x.astype(np.float32) + d), 0, 255).astype(np.uint8))
    shuffled = src.shuffle(seed=1).map(ue.Protect(bank), batched=True, batch_size=2)  # label column is ignored
    assert _by_uid(shuffled) == ref
    sub = src.select([6, 0]).map(ue.Protect(bank), batched=True)
    assert _by_uid(sub) == {k: ref[k] for k in sub["uid"]}


def test_sample_bank_unknown_id():
    src = make_ds()
    bank = _sample_bank(src["uid"][:3])
    with pytest.raises(BankError, match="not in this sample-wise bank"):
        src.map(ue.Protect(bank, id_column="uid"), batched=True)


def test_synth_bank_uses_sample_ids():
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (3, 3, 8))
    coef = (a / np.abs(a).sum(-1, keepdims=True) * 0.9).astype("float32")
    bank = NoiseBank(method="ar", kind="synth", keying="class", keys=[0, 1, 2], tensors={"coef": coef},
                     image_shape=(3, H, W), params={"synth": "ar", "epsilon": EPS, "norm": "linf", "salt": 5})
    src = make_ds()
    by_id = src.map(ue.Protect(bank, id_column="uid"), batched=True, batch_size=3)
    again = src.shuffle(seed=2).map(ue.Protect(bank, id_column="uid"), batched=True, batch_size=2)
    assert _by_uid(again) == _by_uid(by_id)
    for x, y in zip(decoded(src), decoded(by_id)):
        assert np.abs(y.astype(int) - x.astype(int)).max() <= 8


# ------------------------------------------------------------------ grayscale / modes
def _gray_bank() -> NoiseBank:
    return class_bank(channels=1)


def test_grayscale_with_one_channel_bank():
    bank = _gray_bank()
    px = _pixels(4, c=1)
    src = Dataset.from_dict({"image": [PILImage.fromarray(p[..., 0]) for p in px], "label": [0, 1, 2, 0]},
                            features=Features({"image": Image(), "label": ClassLabel(num_classes=3)}))
    out = src.map(ue.Protect(bank), batched=True)
    for x, y, lab in zip(px, decoded(out), src["label"]):
        assert y.ndim == 2
        np.testing.assert_array_equal(y, ref_protect(x, bank, lab)[..., 0])
    assert out[0]["image"].mode == "L"


def _mode_image(mode: str) -> PILImage.Image:
    rgb = PILImage.fromarray(_pixels(1)[0])
    if mode == "I;16":
        return PILImage.fromarray(np.arange(H * W, dtype=np.uint16).reshape(H, W) * 900)
    return rgb.convert(mode)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16"])
def test_unsupported_modes_are_refused(bank_path, mode):
    img = _mode_image(mode)
    assert img.mode == mode
    with pytest.raises(ImageModeError) as err:
        ue.Protect(bank_path)({"image": [img], "label": [0]})
    msg = str(err.value)
    assert mode in msg
    if mode == "I;16":
        assert "16-bit" in msg and "8-bit" in msg
    else:
        assert "convert=True" in msg and "Image(mode='RGB')" in msg


@pytest.mark.parametrize("mode", ["RGBA", "P", "LA"])
def test_convert_true_converts_with_a_warning(bank_path, mode):
    bank = NoiseBank.load(bank_path)
    img = _mode_image(mode)
    with pytest.warns(UserWarning, match=f"converting {mode} images to RGB"):
        res = ue.Protect(bank_path, convert=True)({"image": [img], "label": [1]})
    out = res["image"][0]
    assert out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out), ref_protect(np.asarray(img.convert("RGB")), bank, 1))


def test_convert_true_through_map(bank_path):
    imgs = [_mode_image("RGBA") for _ in range(3)]
    src = Dataset.from_dict({"image": imgs, "label": [0, 1, 2]},
                            features=Features({"image": Image(), "label": ClassLabel(num_classes=3)}))
    with pytest.raises(ImageModeError, match="RGBA"):
        src.map(ue.Protect(bank_path), batched=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = src.map(ue.Protect(bank_path, convert=True), batched=True)
    assert all(b.startswith(b"\x89PNG") for b in stored_bytes(out))
    assert out[0]["image"].mode == "RGB"


@pytest.mark.parametrize("channels", [3, 1], ids=["rgb-bank", "grey-bank"])
def test_one_bit_images_through_map_with_convert_true(channels):
    # Mode "1" reads as 0/1 bools in numpy: converted it must be protected as 0/255 pixels.
    bank = class_bank(channels=channels)
    bits = _pixels(3)[..., 0] > 127
    src = Dataset.from_dict({"image": [PILImage.fromarray(b) for b in bits], "label": [0, 1, 2]},
                            features=Features({"image": Image(), "label": ClassLabel(num_classes=3)}))
    assert src[0]["image"].mode == "1"  # stored and read back as a 1-bit image
    want = "RGB" if channels == 3 else "L"
    with pytest.raises(ImageModeError, match=f"1 image but the bank is for {want} images.*convert=True"):
        src.map(ue.Protect(bank), batched=True)
    with pytest.warns(UserWarning, match=f"converting 1 images to {want}"):
        out = src.map(ue.Protect(bank, convert=True), batched=True, batch_size=2)
    assert all(b.startswith(b"\x89PNG") for b in stored_bytes(out))
    for bit, img, lab in zip(bits, out["image"], src["label"]):
        assert img.mode == want
        full = np.repeat(np.where(bit, 255, 0).astype(np.uint8)[..., None], channels, axis=-1)
        np.testing.assert_array_equal(np.asarray(img).reshape(H, W, channels), ref_protect(full, bank, lab))


def test_sixteen_bit_refused_even_with_convert(bank_path):
    with pytest.raises(ImageModeError, match="16-bit"):
        ue.Protect(bank_path, convert=True)({"image": [_mode_image("I;16")], "label": [0]})


# ------------------------------------------------------------------ bad input
def test_missing_image_column(bank_path):
    with pytest.raises(KeyError, match="image_column='img'"):
        make_ds().map(ue.Protect(bank_path, image_column="img"), batched=True)


def test_missing_label_column(bank_path):
    with pytest.raises(KeyError, match="'y' is not in the batch"):
        make_ds().map(ue.Protect(bank_path, label_column="y"), batched=True)


def test_class_bank_without_label_column(bank_path):
    with pytest.raises(BankError, match="label_column"):
        make_ds().map(ue.Protect(bank_path, label_column=None), batched=True)


def test_label_outside_the_bank(tmp_path):
    bank = class_bank(keys=(0, 1))
    with pytest.raises(BankError, match=r"\[2\] not in the bank.*0\.\.1"):
        make_ds().map(ue.Protect(bank), batched=True)


def test_string_labels(bank_path):
    with pytest.raises(BankError, match="integer class ids"):
        ue.Protect(bank_path)({"image": [PILImage.fromarray(_pixels(1)[0])], "label": ["cat"]})


def test_non_image_column_as_image_column(bank_path):
    with pytest.raises(ImageModeError, match="'count' holds int, not an image"):
        make_ds().map(ue.Protect(bank_path, image_column="count"), batched=True)


def test_size_mismatch(bank_path):
    src = make_ds()
    big = Dataset.from_dict({"image": [PILImage.fromarray(a) for a in _pixels(2, h=12, w=10)], "label": [0, 1]},
                            features=Features({"image": Image(), "label": ClassLabel(num_classes=3)}))
    with pytest.raises(ue.SizeMismatchError, match="size_mismatch='resize'"):
        big.map(ue.Protect(bank_path), batched=True)
    out = big.map(ue.Protect(bank_path, size_mismatch="resize"), batched=True)
    assert [np.asarray(i).shape for i in out["image"]] == [(12, 10, 3)] * 2
    assert len(src) == N


def test_bad_size_policy(bank_path):
    with pytest.raises(ValueError, match="size_mismatch"):
        ue.Protect(bank_path, size_mismatch="crop")


def test_tampered_bank_path(tmp_path):
    path = tmp_path / "b.arrow"
    bank = class_bank()
    bank.save(path)
    raw = bytearray(path.read_bytes())
    raw[raw.find(bank.tensors["delta"].tobytes()[:32]) + 3] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(BankError, match="sha256"):
        ue.Protect(str(path))


def test_bank_of_wrong_type():
    with pytest.raises(TypeError, match="NoiseBank or a bank file path"):
        ue.Protect({"delta": 1})


def test_empty_dataset_to_fit():
    empty = make_ds().select([])
    with pytest.raises(DataError, match="empty"):
        FitData(empty)
    if "random" in [m["key"] for m in ue.methods()]:
        with pytest.raises(DataError, match="empty"):
            ue.fit("random", empty)


def test_map_on_empty_dataset_is_empty(bank_path):
    out = make_ds().select([]).map(ue.Protect(bank_path), batched=True)
    assert len(out) == 0


def test_protect_repr(bank_path):
    assert "random" in repr(ue.Protect(bank_path))


def test_kernel_output_matches_ops(bank_path):
    bank = NoiseBank.load(bank_path)
    src = make_ds()
    out = src.map(ue.Protect(bank), batched=True)
    import torch

    x = torch.from_numpy(np.stack(decoded(src)).transpose(0, 3, 1, 2).copy())
    ref = apply_mod.apply(bank, x, src["label"]).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(np.stack(decoded(out)), ref)


def test_empty_batch_call(bank_path):
    assert ue.Protect(bank_path)({"image": [], "label": []}) == {"image": [], "label": []}


@pytest.mark.parametrize("fmt", ["numpy", "torch"])
def test_formatted_datasets_map(bank_path, fmt):
    src = make_ds()
    ref = decoded(src.map(ue.Protect(bank_path), batched=True, batch_size=3))
    out = src.with_format(fmt).map(ue.Protect(bank_path), batched=True, batch_size=3).with_format(None)
    # Formatted maps hand back arrays / PIL images, which datasets encodes (PIL's PNG): same pixels.
    assert all(b.startswith(b"\x89PNG") for b in stored_bytes(out))
    assert [a.tobytes() for a in decoded(out)] == [a.tobytes() for a in ref]
    assert out.features == src.features
    for col in ("label", "uid", "count", "tags"):
        assert out[col] == src[col], col
    one = src.with_format(fmt).map(ue.Protect(bank_path)).with_format(None)  # LazyRow: one CHW/HWC image
    assert [a.tobytes() for a in decoded(one)] == [a.tobytes() for a in ref]


def test_torch_batch(bank_path):
    import torch

    bank = NoiseBank.load(bank_path)
    px = _pixels(3)
    res = ue.Protect(bank)({"image": torch.from_numpy(px.transpose(0, 3, 1, 2).copy()), "label": torch.tensor([0, 1, 2])})
    # PIL out: datasets cannot encode tensors a torch-formatted map would hand back.
    assert len(res["image"]) == 3 and all(isinstance(im, PILImage.Image) for im in res["image"])
    for i in range(3):
        np.testing.assert_array_equal(np.asarray(res["image"][i]), ref_protect(px[i], bank, i))


def test_grayscale_numpy_batch():
    bank = _gray_bank()
    px = _pixels(3, c=1)[..., 0]  # [B, H, W], what numpy-formatted datasets give for L images
    res = ue.Protect(bank)({"image": px, "label": np.array([2, 0, 1])})
    assert len(res["image"]) == 3
    for i, lab in enumerate([2, 0, 1]):
        assert res["image"][i].mode == "L"
        np.testing.assert_array_equal(np.asarray(res["image"][i]), ref_protect(px[i][..., None], bank, lab)[..., 0])
    src = Dataset.from_dict({"image": [PILImage.fromarray(p) for p in px], "label": [2, 0, 1]},
                            features=Features({"image": Image(), "label": ClassLabel(num_classes=3)}))
    a = src.map(ue.Protect(bank), batched=True)
    b = src.with_format("numpy").map(ue.Protect(bank), batched=True).with_format(None)
    assert [x.tobytes() for x in decoded(a)] == [x.tobytes() for x in decoded(b)]
    assert PILImage.open(io.BytesIO(stored_bytes(b)[0])).mode == "L"  # not widened to a 32-bit TIFF


@pytest.mark.parametrize("fmt", ["numpy", "torch"])
def test_formatted_map_keeps_float64_columns(bank_path, fmt):
    src = make_ds()
    out = src.with_format(fmt).map(ue.Protect(bank_path), batched=True, batch_size=3).with_format(None)
    assert out["score"] == src["score"]


def test_cluster_bank_assigns_clusters_unless_a_column_is_named():
    bank = NoiseBank(method="clusters", kind="additive", keying="cluster", keys=[0, 1],
                     tensors={"delta": np.zeros((2, 3, 4, 4), np.float32), "centroid": np.eye(2, dtype=np.float32)})
    assert ue.Protect(bank).label_column is None  # the default "label" is a class, not a cluster id
    assert ue.Protect(bank, label_column="label").label_column == "label"  # named explicitly: used
    assert ue.Protect(bank, label_column="cluster").label_column == "cluster"
    class_bank = NoiseBank(method="random", kind="additive", keying="class", keys=[0, 1],
                           tensors={"delta": np.zeros((2, 3, 4, 4), np.float32)})
    assert ue.Protect(class_bank).label_column == "label"


# ------------------------------------------------------------------ every bank kind, every path, mixed sizes


@pytest.fixture(scope="module")
def kind_banks(tmp_path_factory) -> dict[str, str]:
    where = tmp_path_factory.mktemp("kinds")
    return {name: str(b.save(where / f"{name}.arrow")) for name, b in _kind_banks().items()}


@pytest.mark.parametrize("name", KIND_BANKS)
def test_every_kind_through_map_as_png(kind_banks, name):
    bank = NoiseBank.load(kind_banks[name])
    src = mixed_ds()
    want = _want(bank, src)
    fn = ue.Protect(kind_banks[name], **_options(name))
    returned = []
    out = src.map(lambda b: returned.append(fn(b)) or returned[-1], batched=True, batch_size=3)
    # Protect hands datasets PNG records for an Image() column, which datasets stores as they are.
    records = [r for batch in returned for r in batch["image"]]
    assert all(set(r) == {"bytes", "path"} and r["path"] is None for r in records)
    assert stored_bytes(out) == [r["bytes"] for r in records]
    assert out.features == src.features and out["uid"] == src["uid"]
    for blob, ref in zip(stored_bytes(out), want):
        assert blob.startswith(b"\x89PNG\r\n\x1a\n")
        pil = PILImage.open(io.BytesIO(blob))
        assert pil.format == "PNG" and pil.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(pil), ref)
    for got, ref in zip(decoded(out), want):  # datasets' Image feature decodes them too
        np.testing.assert_array_equal(got, ref)
    unbatched = src.map(ue.Protect(kind_banks[name], **_options(name)))
    assert stored_bytes(unbatched) == stored_bytes(out)


@pytest.mark.parametrize("name", KIND_BANKS)
def test_every_kind_through_set_transform_transform_and_stream(kind_banks, name):
    from uetransforms.integrations.transforms import ProtectTransform

    bank = NoiseBank.load(kind_banks[name])
    src = mixed_ds()
    want = _want(bank, src)
    view = mixed_ds()
    view.set_transform(ue.Protect(kind_banks[name], **_options(name)))
    for got, ref in zip(view[:]["image"], want):
        np.testing.assert_array_equal(np.asarray(got), ref)
    streamed = list(src.to_iterable_dataset().map(ue.Protect(kind_banks[name], **_options(name)),
                                                  batched=True, batch_size=4))
    assert [r["uid"] for r in streamed] == src["uid"]
    for r, ref in zip(streamed, want):
        np.testing.assert_array_equal(np.asarray(r["image"]), ref)
    getter = {"additive-cluster": lambda s: s[1]["cluster"]}.get(name, "default")
    ids = (lambda s: s[1]["uid"]) if name == "additive-sample" else None
    tf = ProtectTransform(kind_banks[name], labels_getter=getter, sample_id_getter=ids)
    for row, ref in zip(src, want):
        img, _ = tf(row["image"], {"label": row["label"], "cluster": row["cluster"], "uid": row["uid"]})
        np.testing.assert_array_equal(np.asarray(img), ref)


@pytest.mark.parametrize("name", ["additive-class", "additive-cluster", "pixel-class", "synth-class",
                                  "additive-sample"])
def test_every_kind_num_proc_equals_single_process(kind_banks, name):
    src = mixed_ds()
    one = src.map(ue.Protect(kind_banks[name], **_options(name)), batched=True, batch_size=2)
    two = src.map(ue.Protect(kind_banks[name], **_options(name)), batched=True, batch_size=2, num_proc=2)
    assert stored_bytes(two) == stored_bytes(one) and two["uid"] == src["uid"]
    for got, ref in zip(decoded(two), _want(NoiseBank.load(kind_banks[name]), src)):
        np.testing.assert_array_equal(got, ref)


def test_protect_and_transform_with_an_encoder_equal_the_cluster_column():
    import torch

    from uetransforms.models.assign import ClusterAssigner
    from uetransforms.integrations.transforms import ProtectTransform

    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * H * W, 5))
    src = make_ds()
    chws = [np.asarray(im).transpose(2, 0, 1) for im in src["image"]]
    with torch.no_grad():  # three images' own features as centroids: assignments differ
        feats = torch.nn.functional.normalize(encoder(torch.from_numpy(np.stack(chws[:3])).float() / 255), dim=-1)
    bank = NoiseBank(method="clusters", kind="additive", keying="cluster", keys=[0, 1, 2],
                     info={"surrogate": {"kind": "module", "class": "toy"}},
                     tensors={"delta": np.random.default_rng(1).uniform(-EPS, EPS, (3, 3, H, W)).astype("float32"),
                              "centroid": feats.numpy()})
    clusters = ClusterAssigner(bank, encoder=encoder)(chws)
    assert clusters[:3].tolist() == [0, 1, 2]
    by_column = src.add_column("cluster", clusters.tolist()).map(
        ue.Protect(bank, label_column="cluster"), batched=True, batch_size=3)
    by_encoder = src.map(ue.Protect(bank, encoder=encoder), batched=True, batch_size=3)
    assert stored_bytes(by_encoder) == stored_bytes(by_column)
    tf = ProtectTransform(bank, encoder=encoder)
    for im, ref in zip(src["image"], decoded(by_column)):
        img, _ = tf(im, 0)  # the class label is ignored: clusters come from the encoder
        np.testing.assert_array_equal(np.asarray(img), ref)
    back = pickle.loads(pickle.dumps(tf))
    np.testing.assert_array_equal(np.asarray(back(src["image"][4], 0)[0]), decoded(by_column)[4])
    with pytest.raises(BankError, match="custom encoder"):
        src.map(ue.Protect(bank), batched=True)


# ------------------------------------------------------------------ the protection marker
def test_marked_images_are_not_protected_twice(bank_path):
    from uetransforms.core import codecs
    from uetransforms.integrations.datasets import DoubleProtectionError
    from uetransforms.integrations.transforms import ProtectTransform

    src = make_ds()
    once = src.map(ue.Protect(bank_path), batched=True, batch_size=3)
    # map output carries the non-secret marker, as everything the library writes does (issue 23).
    assert all(codecs.is_marked(b) for b in stored_bytes(once))
    assert all(codecs.mark(b, method="random") == b for b in stored_bytes(once))  # mark()'s very bytes
    published = once
    with pytest.raises(DoubleProtectionError, match="allow_double=True"):
        published.map(ue.Protect(bank_path), batched=True)
    with pytest.raises(DoubleProtectionError):
        published.map(ue.Protect(bank_path))  # one example at a time: decoded PIL images keep the marker
    with pytest.raises(DoubleProtectionError):
        published.cast_column("image", Image(decode=False)).map(ue.Protect(bank_path), batched=True)  # records
    with pytest.raises(DoubleProtectionError):
        ProtectTransform(bank_path)(published[0]["image"], published[0]["label"])
    # Opting in protects twice: the second noise lands on the first.
    twice = published.map(ue.Protect(bank_path, allow_double=True), batched=True, batch_size=3)
    bank = NoiseBank.load(bank_path)
    for x, y, lab in zip(decoded(once), decoded(twice), src["label"]):
        np.testing.assert_array_equal(y, ref_protect(x, bank, lab))
    img, _ = ProtectTransform(bank_path, allow_double=True)(published[0]["image"], published[0]["label"])
    np.testing.assert_array_equal(np.asarray(img), decoded(twice)[0])


@pytest.mark.parametrize("mode", [None, "L"])
def test_map_reads_undecoded_bytes_with_the_package_decoders(monkeypatch, mode):
    """map(Protect) on an Image() column: the encoded bytes go to uetransforms.core.codecs (datasets'
    PIL decode was two thirds of the cost), with datasets' pixels: EXIF orientation applied, and
    a feature mode to convert to left to datasets."""
    rng = np.random.default_rng(4)
    rows = []
    for i in range(6):
        img = PILImage.fromarray(rng.integers(0, 256, (9, 13, 3), dtype=np.uint8))
        buf = io.BytesIO()
        if i % 2:
            exif = PILImage.Exif()
            exif[0x0112] = 6  # displayed rotated: datasets transposes, so must we
            img.save(buf, format="JPEG", quality=90, exif=exif.tobytes())
        else:
            img.save(buf, format="JPEG", quality=90)
        rows.append({"bytes": buf.getvalue(), "path": None})
    feats = Features({"image": Image(mode=mode), "label": ClassLabel(num_classes=3)})
    ds = Dataset.from_dict({"image": rows, "label": [i % 3 for i in range(6)]}, features=feats)
    channels = 1 if mode == "L" else 3
    rng2 = np.random.default_rng(5)
    bank = NoiseBank(method="random", kind="additive", keying="class", keys=[0, 1, 2], info={"size_mismatch": "resize"},
                     tensors={"delta": rng2.uniform(-EPS, EPS, (3, channels, 4, 4)).astype("float32")})
    want = [np.asarray(im) for im in ds["image"]]  # datasets' own decode
    calls = []
    real = Image.decode_example
    monkeypatch.setattr(Image, "decode_example", lambda self, *a, **kw: calls.append(1) or real(self, *a, **kw))
    out = ds.map(ue.Protect(bank), batched=True, batch_size=4)
    assert (len(calls) > 0) == (mode is not None)  # no PIL decode unless a mode must be applied
    monkeypatch.setattr(Image, "decode_example", real)
    applier = apply_mod.Applier(bank)
    for got, src, lab in zip(out["image"], want, ds["label"]):
        chw = src[None] if src.ndim == 2 else src.transpose(2, 0, 1)
        ref = applier.protect([chw], labels=[lab])[0]
        np.testing.assert_array_equal(np.asarray(got), ref[0] if channels == 1 else ref.transpose(1, 2, 0))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_bytes_do_not_depend_on_the_codec_threads(fmt):
    # Decodes and encodes fan out over torch.get_num_threads() threads; the stored bytes must not change.
    import torch

    ds = make_ds(fmt, n=11)
    bank = class_bank()

    def run():
        mapped = ds.map(ue.Protect(bank), batched=True, batch_size=11, load_from_cache_file=False)
        stored = [r["bytes"] for r in mapped.cast_column("image", Image(decode=False))["image"]]
        return stored, ue.Protect(bank).encoded(ds[:11])

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = run()
        torch.set_num_threads(3)
        threaded = run()
    finally:
        torch.set_num_threads(before)
    assert serial == threaded and len(serial[0]) == 11


# ------------------------------------------------------------------ issue 23: one marker that survives
def test_map_of_a_map_is_refused(bank_path):
    """ds.map(p).map(p) added the noise twice: map's PNGs now carry the marker."""
    p = ue.Protect(bank_path)
    once = make_ds().map(p, batched=True, batch_size=3)
    with pytest.raises(ue.DoubleProtectionError, match="row"):
        once.map(p, batched=True, batch_size=3)
    with pytest.raises(ue.DoubleProtectionError):
        once.map(p, batched=True, num_proc=2)
    # set_transform output (PIL) says it is protected too.
    shown = make_ds()
    shown.set_transform(p)
    assert codecs_is_marked(shown[0]["image"])


def codecs_is_marked(x) -> bool:
    from uetransforms.core.codecs import is_marked

    return is_marked(x)


# ------------------------------------------------------------------ issue 23: clear errors at the door
def test_bad_device_is_refused_at_construction(bank_path):
    import torch

    from uetransforms.integrations.transforms import ProtectTransform

    with pytest.raises(ValueError, match="device='foo' is not a torch device"):
        ue.Protect(bank_path, device="foo")
    with pytest.raises(ValueError, match="device='foo'"):
        ProtectTransform(bank_path, device="foo")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU is available; use device='cpu'"):
            ue.Protect(bank_path, device="cuda")


# ------------------------------------------------------------------ source file names (issue 24, point 9)
def _with_paths(tmp_path, *, on_disk: bool) -> tuple[Dataset, Dataset]:
    """The same images with source paths (bytes + a path, or path-only files on disk as an image
    folder stores them) and without any."""
    plain = make_ds()
    raw = stored_bytes(plain)
    records = []
    for i, b in enumerate(raw):
        path = tmp_path / "photos" / ("cats" if i % 2 else "dogs") / f"IMG_{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b)
        records.append({"bytes": None, "path": str(path)} if on_disk else {"bytes": b, "path": str(path)})
    named = Dataset.from_dict({**plain.remove_columns("image").to_dict(), "image": records},
                              features=plain.features)
    return named, plain


@pytest.mark.parametrize("on_disk", [False, True], ids=["bytes+path", "path-only"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "per-example"])
def test_map_keeps_the_source_file_name_not_its_folder(tmp_path, bank_path, on_disk, batched):
    named, plain = _with_paths(tmp_path, on_disk=on_disk)
    prot = named.map(ue.Protect(bank_path), batched=batched, batch_size=3)
    records = prot.cast_column("image", Image(decode=False))["image"]
    assert [r["path"] for r in records] == [f"IMG_{i:04d}.png" for i in range(len(named))]
    assert not any("photos" in r["path"] for r in records)  # the folder is not published
    # The name is all that differs: the same PNG bytes as the same images without paths.
    assert [r["bytes"] for r in records] == stored_bytes(plain.map(ue.Protect(bank_path), batched=batched,
                                                                   batch_size=3))
    assert all(r["path"] is None for r in plain.map(ue.Protect(bank_path), batched=True)
               .cast_column("image", Image(decode=False))["image"])


def test_source_paths_of_every_image_form(tmp_path):
    import pyarrow as pa

    from uetransforms.integrations.datasets import png_records, source_paths

    png = _encode(_pixels(1)[0], "PNG")
    (tmp_path / "a.png").write_bytes(png)
    opened = PILImage.open(tmp_path / "a.png")
    arrow = pa.array([{"bytes": png, "path": "/x/b.jpg"}, {"bytes": png, "path": None}])
    assert source_paths(arrow) == ["/x/b.jpg", None]
    assert source_paths([{"bytes": png, "path": "C:\\x\\c.jpg"}, opened, PILImage.open(io.BytesIO(png)),
                         _pixels(1)[0]]) == ["C:\\x\\c.jpg", str(tmp_path / "a.png"), None, None]
    assert source_paths(_pixels(2)) == [None, None]
    assert png_records([b"1", b"2"], ["C:\\x\\c.jpg", None]) == [{"bytes": b"1", "path": "c.jpg"},
                                                               {"bytes": b"2", "path": None}]


def test_auto_dilation_filters_photos_of_mixed_sizes_each_at_its_own_scale():
    # cuda's photo defaults space the taps by each image's size (dilation "auto"): one bank, photos of several
    # sizes in one map, each filtered as if the bank had been fitted at its size.
    import torch

    from uetransforms.core.kinds.conv import scaled_dilation

    rng = np.random.default_rng(3)
    sizes = [(64, 64), (130, 100), (64, 64), (224, 160)]
    src = Dataset.from_dict(
        {"image": [{"bytes": _encode(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "PNG"), "path": None}
                   for h, w in sizes], "label": [0, 1, 2, 1]},
        features=Features({"image": Image(), "label": ClassLabel(num_classes=3)}))
    bank = ue.fit("cuda", src, seed=11)
    assert bank.params["dilation"] == "auto" and bank.params["padding"] == "reflect"
    out = src.map(ue.Protect(bank), batched=True, batch_size=3)
    for x, y, lab, (h, w) in zip(decoded(src), decoded(out), src["label"], sizes):
        chw = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))[None])
        want = kernels.convolve(chw, torch.from_numpy(bank.tensors["weight"][lab : lab + 1].copy()), padding="reflect",
                                dilation=scaled_dilation(h, w))
        np.testing.assert_array_equal(y, want[0].numpy().transpose(1, 2, 0))
    assert [scaled_dilation(h, w) for h, w in sizes] == [2, 3, 2, 5]
