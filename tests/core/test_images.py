"""Image conversion at the edges: layouts, modes, content ids (codecs themselves: test_codecs.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from uetransforms.core.codecs import encode_png
from uetransforms.core.images import ImageModeError, content_id, from_chw, to_chw


def _hwc(h=5, w=7, c=3, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def test_pil_rgb_and_l():
    a = _hwc()
    chw = to_chw(Image.fromarray(a), channels=3)
    assert chw.shape == (3, 5, 7) and chw.dtype == np.uint8
    np.testing.assert_array_equal(chw, a.transpose(2, 0, 1))
    g = a[..., 0]
    np.testing.assert_array_equal(to_chw(Image.fromarray(g), channels=1), g[None])


def test_numpy_layouts():
    a = _hwc()
    np.testing.assert_array_equal(to_chw(a, channels=3), a.transpose(2, 0, 1))  # HWC
    chw = a.transpose(2, 0, 1).copy()
    np.testing.assert_array_equal(to_chw(chw, channels=3), chw)  # clearly CHW (last dim 7)
    np.testing.assert_array_equal(to_chw(a[..., 0], channels=1), a[None, ..., 0])  # HW
    np.testing.assert_array_equal(to_chw(a[..., :1], channels=1), a[..., :1].transpose(2, 0, 1))


def test_tensor_layouts():
    a = _hwc()
    t = torch.from_numpy(a.transpose(2, 0, 1).copy())
    np.testing.assert_array_equal(to_chw(t, channels=3), t.numpy())
    f = t.float() / 255
    np.testing.assert_array_equal(to_chw(f, channels=3), t.numpy())  # [0, 1] floats round back exactly
    with pytest.raises(ImageModeError, match=r"outside \[0, 1\]"):  # was clamped to white (issue 23)
        to_chw(torch.full((3, 2, 2), 2.0), channels=3)


def test_datasets_records():
    a = _hwc()
    png = encode_png(a)
    np.testing.assert_array_equal(to_chw({"bytes": png, "path": None}, channels=3), a.transpose(2, 0, 1))
    with pytest.raises(ImageModeError, match="empty image record"):
        to_chw({"bytes": None, "path": None}, channels=3)


def test_round_trip_from_chw():
    a = _hwc().transpose(2, 0, 1).copy()
    img = from_chw(a)
    assert img.mode == "RGB" and img.format is None
    np.testing.assert_array_equal(to_chw(img, channels=3), a)
    g = from_chw(a[:1])
    assert g.mode == "L"
    np.testing.assert_array_equal(to_chw(g, channels=1), a[:1])


def test_content_id():
    a = _hwc().transpose(2, 0, 1).copy()
    cid = content_id(a)
    assert len(cid) == 32 and cid == content_id(a.copy())
    assert cid == content_id(np.asfortranarray(a))  # memory layout does not matter
    b = a.copy()
    b[0, 0, 0] ^= 1
    assert content_id(b) != cid
    assert content_id(a.reshape(3, 7, 5)) != cid  # same bytes, other shape


@pytest.mark.parametrize("bad, phrase", [
    (None, "missing image"),
    (3, "holds int, not an image"),
    ("x.png", "holds str"),
    (np.zeros((4, 4, 3), np.float32), "float array"),
    (np.zeros((4, 4, 3), np.uint16), "uint16 pixels"),
    (np.zeros((2, 4, 4, 3), np.uint8), "shape"),
    (np.zeros((4, 4, 4), np.uint8), "4-channel"),
])
def test_bad_inputs(bad, phrase):
    with pytest.raises(ImageModeError, match=phrase):
        to_chw(bad, channels=3)


def test_modes():
    rgb = Image.fromarray(_hwc())
    with pytest.raises(ImageModeError, match="convert=True"):
        to_chw(rgb.convert("RGBA"), channels=3)
    with pytest.warns(UserWarning, match="RGBA"):
        np.testing.assert_array_equal(to_chw(rgb.convert("RGBA"), channels=3, convert=True), to_chw(rgb, channels=3))
    with pytest.raises(ImageModeError, match="Image\\(mode='L'\\)"):
        to_chw(rgb, channels=1)
    with pytest.warns(UserWarning):
        assert to_chw(rgb, channels=1, convert=True).shape == (1, 5, 7)
    with pytest.raises(ImageModeError, match="only 1 \\(L\\) and 3 \\(RGB\\)"):
        to_chw(rgb, channels=4, convert=True)
    for mode in ("I", "F"):
        with pytest.raises(ImageModeError, match="32-bit"):
            to_chw(rgb.convert("L").convert(mode), channels=1, convert=True)


def test_encoded_bytes_only_when_every_row_has_them():
    import pyarrow as pa

    from uetransforms.core.images import encoded_bytes

    typ = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    full = pa.chunked_array([pa.array([{"bytes": b"a", "path": None}], typ), pa.array([{"bytes": b"b", "path": "x"}], typ)])
    assert encoded_bytes(full) == [b"a", b"b"]
    assert encoded_bytes(pa.array([{"bytes": b"a", "path": None}, {"bytes": None, "path": "p.png"}], typ)) is None
    assert encoded_bytes(pa.array([{"bytes": b"a", "path": None}, None], typ)) is None
    assert encoded_bytes(pa.array([b"a"])) is None  # not an Image() struct
