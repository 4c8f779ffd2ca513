"""codecs: lossless PNG round trips, decoding equal to PIL, the fallback, the marker, errors."""

from __future__ import annotations

import doctest
import glob
import io
import os
import struct
import sys
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from uetransforms.core import codecs, images
import uetransforms as ue
from uetransforms.core.codecs import ImageModeError, decode, encode_png, is_marked, mark

HAVE_FPNG = codecs._optional("fpng") is not None
HAVE_ISAL = codecs._optional("isal.isal_zlib") is not None
HAVE_SJ = codecs._optional("simplejpeg") is not None
CIFAR = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "cifar10")


@pytest.fixture
def no_fast(monkeypatch):
    """As if neither fast package were installed: ``import`` of either fails."""
    monkeypatch.setitem(sys.modules, "fpng", None)
    monkeypatch.setitem(sys.modules, "simplejpeg", None)
    monkeypatch.setitem(sys.modules, "isal", None)
    monkeypatch.setitem(sys.modules, "isal.isal_zlib", None)
    monkeypatch.setattr(codecs, "_OPTIONAL", {})
    monkeypatch.setattr(codecs, "_FAST_JPEG", [])


def _pil_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def _jpeg(arr: np.ndarray, **opts) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", **opts)
    return buf.getvalue()


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus noise: the IDCT and chroma upsampling both matter on it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([yy * 255 // max(h, 1), xx * 255 // max(w, 1), (yy + xx) % 256], -1)
    return np.clip(base + rng.integers(-30, 31, (h, w, 3)), 0, 255).astype(np.uint8)


def _available_encoders(channels: int) -> list[str]:
    out = ["pil"] + (["isal"] if HAVE_ISAL else [])
    return out + (["fpng"] if HAVE_FPNG and channels in (3, 4) else [])


# ---------------------------------------------------------------------------------------------
# PNG round trip


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 37), w=st.integers(1, 37), channels=st.sampled_from([1, 3]),
       kind=st.sampled_from(["random", "flat", "gradient"]), seed=st.integers(0, 2**32 - 1))
def test_png_round_trip_is_lossless_and_deterministic(h, w, channels, kind, seed):
    rng = np.random.default_rng(seed)
    if kind == "random":
        hwc = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    elif kind == "flat":
        hwc = np.full((h, w, channels), rng.integers(0, 256), np.uint8)
    else:
        hwc = (np.add.outer(np.arange(h), np.arange(w))[..., None] * (1 + np.arange(channels))).astype(np.uint8)
    for enc in [None, *_available_encoders(channels)]:
        png = encode_png(hwc, encoder=enc)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        pil = _pil_pixels(png)
        assert pil.shape == ((h, w) if channels == 1 else (h, w, 3)), enc
        np.testing.assert_array_equal(pil.reshape(h, w, channels), hwc, err_msg=str(enc))
        np.testing.assert_array_equal(decode(png).transpose(1, 2, 0), hwc, err_msg=str(enc))
        # Same pixels -> same bytes, whatever the memory layout they come in.
        assert encode_png(np.asfortranarray(hwc), encoder=enc) == png, enc
    assert encode_png(hwc[..., 0] if channels == 1 else hwc) == encode_png(hwc)  # [H, W] == [H, W, 1]


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 5), h=st.integers(1, 19), w=st.integers(1, 19), channels=st.sampled_from([1, 3, 4]),
       choice=st.sampled_from([(None, None), ("isal", 0), ("isal", 3), ("pil", 1), ("pil", 6), ("fpng", None)]),
       threads=st.integers(1, 4), seed=st.integers(0, 999))
def test_batch_encode_gives_each_images_bytes(b, h, w, channels, choice, threads, seed):
    # One row-filter pass over the batch and slices on threads: the bytes of encode_png, image by image.
    encoder, level = choice
    if encoder == "fpng" and (not HAVE_FPNG or channels == 1):
        return
    batch = np.random.default_rng(seed).integers(0, 256, (b, h, w, channels), dtype=np.uint8)
    got = codecs.encode_png_batch(batch, encoder=encoder, level=level, threads=threads)
    assert got == [codecs.encode_png(a, encoder=encoder, level=level) for a in batch]


def test_batch_encode_errors():
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        codecs.encode_png_batch(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        codecs.encode_png_batch(np.zeros((2, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="level"):
        codecs.encode_png_batch(np.zeros((2, 4, 4, 3), np.uint8), encoder="pil", level=12)
    assert codecs.encode_png_batch(np.zeros((0, 4, 4, 3), np.uint8)) == []


@pytest.mark.parametrize("encoder", ["pil", "isal", "fpng"])
def test_each_encoder_is_readable_by_datasets(encoder):
    if codecs._optional(codecs._PACKAGE[encoder]) is None:
        pytest.skip(f"{encoder} not installed")
    import datasets

    hwc = _photo(21, 34)
    png = encode_png(hwc, encoder=encoder)
    decoded = datasets.Image().decode_example({"bytes": png, "path": None})
    assert decoded.format == "PNG"
    np.testing.assert_array_equal(np.asarray(decoded), hwc)


def test_levels_change_size_not_pixels():
    hwc = _photo(40, 40)
    for enc, levels in [("pil", (0, 1, 9))] + ([("isal", (0, 1, 3))] if HAVE_ISAL else []):
        sizes = {}
        for level in levels:
            png = encode_png(hwc, encoder=enc, level=level)
            np.testing.assert_array_equal(_pil_pixels(png), hwc)
            sizes[level] = len(png)
        # The lowest level compresses least, the highest hardest (a middle level may use fixed
        # Huffman codes and exceed the lowest on noise, so only the ends are ordered).
        assert sizes[levels[0]] > sizes[levels[-1]] and len(set(sizes.values())) == 3, (enc, sizes)


def test_pil_default_writes_the_bytes_datasets_writes():
    from datasets.features.image import image_to_bytes

    for hwc in (_photo(19, 23), _photo(19, 23)[..., :1]):
        ours = encode_png(hwc, encoder="pil")
        assert ours == image_to_bytes(Image.fromarray(hwc.squeeze(-1) if hwc.shape[2] == 1 else hwc))


@pytest.mark.skipif(not HAVE_ISAL, reason="isal not installed")
def test_auto_picks_isal_and_isal_writes_every_channel_count():
    hwc = _photo(16, 16)
    assert encode_png(hwc) == encode_png(hwc, encoder="isal") != encode_png(hwc, encoder="pil")
    grey = hwc[..., 0]
    assert encode_png(grey) == encode_png(grey, encoder="isal")
    assert _pil_pixels(encode_png(grey)).ndim == 2  # stays a 1-channel (L) PNG
    np.testing.assert_array_equal(_pil_pixels(encode_png(grey)), grey)
    rgba = np.dstack([hwc, hwc[..., :1]])
    np.testing.assert_array_equal(_pil_pixels(encode_png(rgba)), rgba)
    assert codecs.info()["png_encoder_rgb"].startswith("isal")


@pytest.mark.skipif(not HAVE_FPNG, reason="fpng not installed")
def test_without_isal_auto_picks_fpng_for_rgb_and_pil_for_l(monkeypatch):
    monkeypatch.setitem(sys.modules, "isal", None)
    monkeypatch.setitem(sys.modules, "isal.isal_zlib", None)
    monkeypatch.setattr(codecs, "_OPTIONAL", {})
    hwc = _photo(16, 16)
    assert encode_png(hwc) == encode_png(hwc, encoder="fpng") != encode_png(hwc, encoder="pil")
    assert encode_png(hwc[..., 0]) == encode_png(hwc[..., 0], encoder="pil")


def test_fallback_without_fast_packages(no_fast):
    hwc = _photo(13, 17)
    png = encode_png(hwc)
    assert png == encode_png(hwc, encoder="pil", level=6)
    np.testing.assert_array_equal(_pil_pixels(png), hwc)
    assert codecs.info()["png_encoder_rgb"].startswith("pil")
    assert codecs.info()["jpeg_decoder"].startswith("pil")
    jpg = _jpeg(_photo(30, 30), quality=90)
    np.testing.assert_array_equal(decode(jpg).transpose(1, 2, 0), _pil_pixels(jpg))
    for enc in ("fpng", "isal"):
        with pytest.raises(ImportError, match=r"uetransforms\[fast\]"):
            encode_png(hwc, encoder=enc)


# ---------------------------------------------------------------------------------------------
# Decoding


@pytest.mark.parametrize("size", [(1, 1), (7, 5), (32, 32), (37, 29), (64, 48)])
@pytest.mark.parametrize("opts", [
    {"quality": 90}, {"quality": 75, "subsampling": 0}, {"quality": 95, "subsampling": 1},
    {"quality": 50, "subsampling": 2}, {"quality": 90, "progressive": True}, {"quality": 100, "optimize": True},
])
def test_jpeg_decode_equals_pil(size, opts):
    rgb = _photo(*size, seed=size[0])
    for arr in (rgb, np.asarray(Image.fromarray(rgb).convert("L"))):
        data = _jpeg(arr, **opts)
        want = _pil_pixels(data)
        got = decode(data)
        assert got.dtype == np.uint8 and got.shape[0] == (1 if arr.ndim == 2 else 3)
        np.testing.assert_array_equal(got[0] if arr.ndim == 2 else got.transpose(1, 2, 0), want)
        np.testing.assert_array_equal(decode({"bytes": data, "path": None}, channels=got.shape[0]), got)


@pytest.mark.skipif(not HAVE_SJ, reason="simplejpeg not installed")
def test_fast_jpeg_path_is_used_and_checked(monkeypatch):
    assert codecs._fast_jpeg() is not None  # the self-check passed on this machine
    calls = []
    real = codecs._FAST_JPEG[0]
    monkeypatch.setattr(codecs, "_FAST_JPEG", [lambda b, grey: calls.append(grey) or real(b, grey)])
    decode(_jpeg(_photo(20, 20), quality=90))
    decode(_jpeg(_photo(20, 20)[..., 0], quality=90))
    assert calls == [False, True]
    # A fast decoder that disagreed with PIL is refused at the self-check, with a warning.
    sj = codecs._optional("simplejpeg")
    monkeypatch.setattr(codecs, "_FAST_JPEG", [])
    real_sj = sj.decode_jpeg
    monkeypatch.setattr(sj, "decode_jpeg", lambda b, **k: real_sj(b, **k) // 2)
    with pytest.warns(RuntimeWarning, match="does not return PIL's pixels"):
        assert codecs._fast_jpeg() is None
    data = _jpeg(_photo(20, 20), quality=90)
    np.testing.assert_array_equal(decode(data).transpose(1, 2, 0), _pil_pixels(data))


@pytest.mark.skipif(not glob.glob(os.path.join(CIFAR, "test-*.parquet")), reason="no local CIFAR-10")
def test_cifar_jpeg_bytes_decode_like_datasets():
    import datasets
    import pyarrow.parquet as pq

    table = pq.read_table(glob.glob(os.path.join(CIFAR, "test-*.parquet"))[0]).slice(0, 300)
    feature = datasets.Image()
    for rec in table.column(0).to_pylist():
        want = np.asarray(feature.decode_example(rec))
        np.testing.assert_array_equal(decode(rec, channels=3).transpose(1, 2, 0), want)


def test_exif_orientation_is_applied_like_datasets():
    import datasets

    img = Image.fromarray(_photo(12, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    data = buf.getvalue()
    want = np.asarray(datasets.Image().decode_example({"bytes": data, "path": None}))
    assert want.shape == (20, 12, 3)
    np.testing.assert_array_equal(decode(data).transpose(1, 2, 0), want)


def test_modes_through_bytes():
    rgb = _photo(9, 11)
    cmyk = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(cmyk, format="JPEG", quality=90)
    with pytest.raises(ImageModeError, match="CMYK image.*convert=True"):
        decode(cmyk.getvalue(), channels=3)
    with pytest.warns(UserWarning, match="CMYK"):
        got = decode(cmyk.getvalue(), channels=3, convert=True)
    np.testing.assert_array_equal(got.transpose(1, 2, 0), np.asarray(Image.open(cmyk).convert("RGB")))
    grey = _jpeg(rgb[..., 0], quality=90)
    with pytest.raises(ImageModeError, match="L image but the bank is for RGB"):
        decode(grey, channels=3)
    with pytest.warns(UserWarning):
        np.testing.assert_array_equal(decode(grey, channels=3, convert=True).transpose(1, 2, 0),
                                      np.asarray(Image.open(io.BytesIO(grey)).convert("RGB")))
    rgba = io.BytesIO()
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(rgba, format="PNG")
    with pytest.raises(ImageModeError, match="RGBA"):
        decode(rgba.getvalue())
    p16 = io.BytesIO()
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(p16, format="PNG")
    with pytest.raises(ImageModeError, match="16-bit"):
        decode(p16.getvalue(), channels=1, convert=True)
    assert decode(encode_png(rgb[..., 0])).shape == (1, 9, 11)  # channels=None keeps L as one channel


@pytest.mark.parametrize("as_bytes", [True, False], ids=["png-bytes", "pil-image"])
def test_one_bit_images_convert_to_full_range_pixels(as_bytes):
    # Mode "1" is one bit per pixel: numpy reads it as bools (0/1), so an unconverted 1-bit image
    # would be protected as near-black 0/1 pixels. It must be refused, or converted to 0/255.
    bits = _photo(9, 11)[..., 0] > 127  # 11 px wide: rows do not fill whole bytes in the file
    img = Image.fromarray(bits)
    assert img.mode == "1"
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    assert Image.open(io.BytesIO(buf.getvalue())).mode == "1"  # stored as a 1-bit PNG, read back as "1"
    value = buf.getvalue() if as_bytes else img
    for channels, want in ((None, "L"), (1, "L"), (3, "RGB")):
        with pytest.raises(ImageModeError, match=f"1 image but the bank is for {want} images.*convert=True"):
            decode(value, channels=channels)
        with pytest.warns(UserWarning, match=f"converting 1 images to {want}"):
            got = decode(value, channels=channels, convert=True)
        assert got.dtype == np.uint8 and got.shape == (1 if want == "L" else 3, 9, 11)
        for plane in got:
            np.testing.assert_array_equal(plane, np.where(bits, 255, 0))


def test_decode_reads_paths(tmp_path):
    hwc = _photo(6, 8)
    path = tmp_path / "x.png"
    path.write_bytes(encode_png(hwc))
    np.testing.assert_array_equal(decode({"bytes": None, "path": str(path)}).transpose(1, 2, 0), hwc)
    with pytest.raises(ImageModeError, match="cannot be read here"):
        decode({"bytes": None, "path": str(tmp_path / "missing.png")})


@pytest.mark.parametrize("bad, phrase", [
    (b"not an image at all", "not a readable image"),
    (b"\xff\xd8\xff\xe0 truncated jpeg", "not a readable image"),
    ({"bytes": None, "path": None}, "empty image record"),
    (None, "missing image"),
    (1.5, "holds float, not an image"),
])
def test_decode_errors(bad, phrase):
    with pytest.raises(ImageModeError, match=phrase):
        decode(bad, channels=3)


@pytest.mark.parametrize("bad, err, phrase", [
    (np.zeros((4, 4, 3), np.float32), ValueError, "uint8"),
    (np.zeros((3, 8, 9), np.uint8), ValueError, r"looks like \[C, H, W\]"),
    (np.zeros((2, 4, 4, 3), np.uint8), ValueError, "shape"),
    (np.zeros((0, 4, 3), np.uint8), ValueError, "shape"),
    ([[0, 1]], TypeError, "numpy array"),
])
def test_encode_errors(bad, err, phrase):
    with pytest.raises(err, match=phrase):
        encode_png(bad)


def test_encoder_option_errors():
    hwc = _photo(4, 4)
    with pytest.raises(ValueError, match="unknown encoder 'png'"):
        encode_png(hwc, encoder="png")
    for level in (-1, 10, 2.5, True):
        with pytest.raises(ValueError, match="level must be an integer 0..9 for encoder='pil'"):
            encode_png(hwc, encoder="pil", level=level)
    if HAVE_ISAL:
        with pytest.raises(ValueError, match="level must be an integer 0..3 for encoder='isal'"):
            encode_png(hwc, encoder="isal", level=4)
    if HAVE_FPNG:
        with pytest.raises(ValueError, match="single compression level"):
            encode_png(hwc, encoder="fpng", level=3)
        with pytest.raises(ValueError, match="RGB/RGBA PNGs only"):
            encode_png(hwc[..., 0], encoder="fpng")


# ---------------------------------------------------------------------------------------------
# The "protected by uetransforms" marker


def _chunks(png: bytes) -> list[tuple[bytes, bytes, int]]:
    out, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack_from(">I", png, pos)
        kind, body = png[pos + 4:pos + 8], png[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack_from(">I", png, pos + 8 + length)
        out.append((kind, body, crc))
        pos += 12 + length
    return out


@settings(max_examples=20, deadline=None)
@given(h=st.integers(1, 20), w=st.integers(1, 20), channels=st.sampled_from([1, 3]), seed=st.integers(0, 999))
def test_mark_round_trip(h, w, channels, seed):
    hwc = np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)
    png = encode_png(hwc)
    marked = mark(png, method="cuda")
    assert not is_marked(png) and is_marked(marked)
    assert mark(marked, method="other") == marked  # marking twice changes nothing
    chunks = _chunks(marked)
    assert [c[0] for c in chunks[:2]] == [b"IHDR", b"tEXt"]  # right after IHDR
    for kind, body, crc in chunks:
        assert zlib.crc32(kind + body) == crc
    assert [c for c in chunks if c[0] != b"tEXt"] == _chunks(png)  # nothing else changed
    img = Image.open(io.BytesIO(marked))
    img.verify()  # PIL checks every chunk's CRC
    img = Image.open(io.BytesIO(marked))
    np.testing.assert_array_equal(np.asarray(img).reshape(h, w, channels), hwc)
    assert is_marked(img) and is_marked({"bytes": marked, "path": None})


def test_marker_text_is_public_and_readable_by_datasets():
    import datasets

    marked = mark(encode_png(_photo(8, 8)), method="cuda")
    text = Image.open(io.BytesIO(marked)).info[codecs.MARK_KEYWORD]
    assert text == f"protected by uetransforms {ue.__version__}; method=cuda"
    assert mark(encode_png(_photo(8, 8))) != marked  # only the method name and version vary it
    decoded = datasets.Image().decode_example({"bytes": marked, "path": None})
    np.testing.assert_array_equal(np.asarray(decoded), _photo(8, 8))


def test_is_marked_on_other_things(tmp_path):
    png = encode_png(_photo(5, 5))
    path = tmp_path / "m.png"
    path.write_bytes(mark(png))
    assert is_marked({"bytes": None, "path": str(path)})
    assert not is_marked({"bytes": None, "path": str(tmp_path / "none.png")})
    for other in (png, _jpeg(_photo(5, 5)), b"", b"garbage", np.zeros((5, 5, 3), np.uint8), None,
                  Image.fromarray(_photo(5, 5)), {"bytes": None, "path": None}):
        assert not is_marked(other)
    # A text chunk with another keyword is not the marker.
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "protected by uetransforms")
    buf = io.BytesIO()
    Image.fromarray(_photo(5, 5)).save(buf, format="PNG", pnginfo=info)
    assert not is_marked(buf.getvalue())


def test_mark_errors():
    with pytest.raises(ValueError, match="not a PNG"):
        mark(_jpeg(_photo(4, 4)))
    with pytest.raises(ValueError, match="Latin-1"):
        mark(encode_png(_photo(4, 4)), method="ключ")


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [codecs, images])
def test_docstring_examples_run(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


# ------------------------------------------------------------------ threads
@pytest.mark.parametrize("threads", [1, 2, 3, 8])
@pytest.mark.parametrize("n", [0, 1, 5, 17])
def test_map_threads_keeps_order_and_bytes(threads, n):
    rng = np.random.default_rng(n)
    arrays = [rng.integers(0, 256, (int(rng.integers(1, 20)), int(rng.integers(1, 20)), 3), dtype=np.uint8) for _ in range(n)]
    assert codecs.map_threads(encode_png, arrays, threads) == [encode_png(a) for a in arrays]


def test_map_threads_raises_the_first_failure_in_order():
    items = [np.zeros((2, 2, 3), np.uint8)] * 6 + ["not an image", np.zeros((2, 2, 3), np.float32)]
    with pytest.raises(TypeError, match="numpy array"):  # item 6 fails before item 7
        codecs.map_threads(encode_png, items, 4)


def test_map_threads_really_uses_threads():
    import threading

    seen = codecs.map_threads(lambda _: threading.current_thread().name, list(range(8)), 2)
    assert seen[:4] == [threading.current_thread().name] * 4  # the caller takes the first slice
    assert len(set(seen[4:])) == 1 and seen[4].startswith("uet-codec")


def test_remote_path_records_are_opened_by_datasets(tmp_path):
    """A record with only a URL (streamed image folders yield them) is opened by datasets' own file
    systems; one that cannot be opened says which image and why."""
    import fsspec

    arr = _photo(9, 7)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    fsspec.filesystem("memory").pipe("/uet-test/x.png", buf.getvalue())  # an fsspec URL, not a local file
    chw = decode({"bytes": None, "path": "memory://uet-test/x.png"}, channels=3)
    np.testing.assert_array_equal(chw.transpose(1, 2, 0), arr)
    with pytest.raises(ImageModeError, match="could not open"):
        decode({"bytes": None, "path": "memory://uet-test/missing.png"}, channels=3)


# ------------------------------------------------------------------ issue 23: images in, images out exactly
def _png16(h: int = 4, w: int = 5) -> bytes:
    """A 16-bit-per-channel RGB PNG written by hand (PIL cannot write one, and reads it as 8-bit RGB)."""
    import struct

    a = (np.random.default_rng(0).random((h, w, 3)) * 65535).astype(">u2")
    raw = b"".join(b"\x00" + a[i].tobytes() for i in range(h))
    return (codecs.PNG_SIGNATURE + codecs._chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + codecs._chunk(b"IDAT", zlib.compress(raw)) + codecs._chunk(b"IEND", b""))


def test_sixteen_bit_png_bytes_are_refused_not_read_as_8_bits(tmp_path):
    png = _png16()
    assert Image.open(io.BytesIO(png)).mode == "RGB"  # what PIL makes of it: 8 bits, silently
    for value in (png, {"bytes": png, "path": None}):
        with pytest.raises(ImageModeError, match=r"16-bit-per-channel PNG.*>> 8"):
            decode(value)
    path = tmp_path / "deep.png"
    path.write_bytes(png)
    with pytest.raises(ImageModeError, match="16-bit"):
        decode({"bytes": None, "path": str(path)})
    with pytest.raises(ImageModeError, match="16-bit"):
        decode(png, convert=True)
    # Through map (the bytes are read before datasets decodes them) the row is named as well.
    import datasets

    bank = ue.NoiseBank(method="random", kind="additive", keying="class", keys=[0],
                        tensors={"delta": np.zeros((1, 3, 4, 5), np.float32)}, params={"epsilon": 8 / 255})
    ds = datasets.Dataset.from_dict({"image": [{"bytes": encode_png(_photo(4, 5)), "path": None},
                                               {"bytes": png, "path": None}], "label": [0, 0]},
                                    features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}))
    with pytest.raises(ImageModeError, match=r"row 1\b.*16-bit"):
        ds.map(ue.Protect(bank), batched=True, with_indices=True)


def test_widened_integer_pixels_name_the_fix():
    """Nested-list uint8 pixels come back int64 under with_format('numpy'): say how to fix it."""
    with pytest.raises(ImageModeError, match=r"int64 pixels.*all 0..255.*cast_column"):
        decode(np.zeros((4, 4, 3), np.int64) + 200)
    with pytest.raises(ImageModeError, match=r"int64 pixels.*8-bit yourself"):
        decode(np.full((4, 4, 3), 4000, np.int64))
