"""The one place images are decoded and encoded.

Publishing a dataset is decode -> noise -> lossless encode for every image, and the codecs,
not the noise, are nearly all of the cost. Everything in the library that turns stored bytes
into pixels calls :func:`decode`, and everything that turns pixels into stored bytes calls
:func:`encode_png`, so every path (``map``, transforms, streaming, Ray, ``publish``) gives the
same pixels and the same bytes for the same input.

**Decoding.** :func:`decode` takes what a pipeline holds (``datasets`` ``{"bytes", "path"}``
records, raw bytes, PIL images, uint8 arrays/tensors) and returns uint8 ``[C, H, W]`` pixels.
Protection is defined on 8-bit pixels: ``RGB``, and ``L`` for 1-channel banks, are taken as
they are; modes that need a lossy or ambiguous conversion (alpha, palettes, CMYK) are refused
with the fix named unless ``convert=True``; 16-bit and float images are always refused.
Encoded images are decoded the way ``datasets.Image`` decodes them (PIL, then the EXIF
orientation applied), so protecting raw bytes and protecting a decoded column agree.

*Which decoder defines the pixels:* **PIL** (Pillow, whose wheels decode JPEG with
libjpeg-turbo: accurate integer IDCT, fancy upsampling). Where ``simplejpeg`` is installed,
plain 8-bit grey/YCbCr JPEG bytes are decoded by its libjpeg-turbo decoder instead, with the
same settings (about 2-3x faster), but only after a self-check on first use has shown that it
returns PIL's pixels on this machine for every chroma subsampling and progressive coding; if it
does not, a warning says so and PIL decodes everything. Anything unusual (EXIF orientation,
Adobe/CMYK JPEGs, other formats) goes through PIL.

**Encoding.** :func:`encode_png` writes lossless PNG; the encoder and level are options and the
bytes are deterministic for a given encoder, its version and the level. Measured on 2 cores on
cuda-protected images (``benchmarks/RESULTS.md``): the default ``"isal"`` (PNG's "Up" filter, one
vectorised subtraction, then Intel ISA-L's deflate at level 1) is about 34x faster than PIL level
6 at 384 px with files about 1.11x (384 px) to 1.17x (32 px) PIL's, and writes 1-, 3- and
4-channel images. ``"fpng"`` (RGB/RGBA) is a little faster still (about 45x), but its files are
1.3x (32 px) to 1.6x (384 px) PIL's on smooth protected images: pass it where speed matters more
than size. zlib-ng at the same size was 2.5x slower than ISA-L; libpng/libspng/OpenCV were only
1.5-5x faster than PIL. PIL is the fallback; at its default level 6 it writes the very bytes
``datasets`` writes. ``pip install "uetransforms[fast]"`` installs isal, fpng and simplejpeg.

**Marker: the one rule of "already protected".** Every protected PNG the library writes
(``Protect``'s bytes in ``Dataset.map``, ``publish`` and ``publish_stream`` shards, Ray) carries a
non-secret "protected by uetransforms" ``tEXt`` chunk right after IHDR (library version and
method name only: no seed, key or bank hash; :func:`encode_png` ``marked=True``, or :func:`mark`),
and PIL images it returns carry the text in ``info``. :func:`is_marked` reads it from bytes,
records and PIL images, so protected data is recognised wherever its images go (loaded from a
shard, streamed, mapped twice). :func:`marked_where` reads what a dataset or table says of itself
(card text, Parquet schema metadata). What a marker cannot survive (images downloaded to a
folder and re-encoded) is left to the pixels: with the bank in hand, an additive bank's noise is
found in a batch by :func:`uetransforms.core.kernels.carried_score`; convolution, pixel-edit and
synthesised banks have no content test (only the marker tells their output).

Example:
    >>> import numpy as np
    >>> rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)   # H, W, C
    >>> png = encode_png(rgb)
    >>> decode(png).shape                                               # C, H, W
    (3, 2, 3)
    >>> bool((decode(png).transpose(1, 2, 0) == rgb).all())
    True
    >>> is_marked(png), is_marked(mark(png, method="cuda"))
    (False, True)
"""

from __future__ import annotations

import functools
import importlib
import io
import os
import struct
import threading
import warnings
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from .errors import ImageModeError

__all__ = [
    "ENCODERS", "ImageModeError", "MARKER", "MARK_KEYWORD", "SCHEMA_KEY", "check_png_options", "decode", "encode_png",
    "encode_png_batch", "info", "is_marked", "mark", "mark_pil", "marked_where", "marker_text",
]

# --------------------------------------------------------------------------------------------
# Optional fast packages: imported lazily and once; missing ones mean "use PIL".

_OPTIONAL: dict[str, Any] = {}


def _optional(name: str):
    """The module ``name`` or None when it is not installed (looked up once per process)."""
    if name not in _OPTIONAL:
        try:
            _OPTIONAL[name] = importlib.import_module(name)
        except ImportError:
            _OPTIONAL[name] = None
    return _OPTIONAL[name]


# --------------------------------------------------------------------------------------------
# Decoding

# 8-bit modes that can be converted to RGB/L on request (the conversion is said out loud).
_CONVERTIBLE = {"RGBA", "RGBX", "LA", "P", "PA", "CMYK", "YCbCr", "1", "La", "RGBa", "LAB", "HSV"}
# Modes whose pixels do not fit 8 bits: protecting them at 8 bits would destroy data.
_REFUSED = {"I", "F", "I;16", "I;16B", "I;16L", "I;16N", "BGR;15", "BGR;16", "BGR;24"}
_GREYISH = {"L", "LA", "La", "1"}


_T = TypeVar("_T")
_R = TypeVar("_R")
_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def map_threads(fn: Callable[[_T], _R], items: Sequence[_T], threads: int) -> list[_R]:
    """``[fn(x) for x in items]`` on up to ``threads`` threads, results in input order.

    The codecs release the GIL while they work (ISA-L's deflate, simplejpeg's and PIL's
    decoders), so a batch's images decode and encode in parallel on threads; each thread takes
    one contiguous slice, so small images do not pay a future apiece. The bytes do not depend on
    ``threads``. An exception is raised as the serial loop would raise it (the first failing
    item in order).
    """
    return map_slices(lambda a, b: [fn(x) for x in items[a:b]], len(items), threads)


def map_slices(fn: Callable[[int, int], Sequence[_R]], n: int, threads: int) -> list[_R]:
    """``fn(a, b)`` for ``threads`` contiguous slices ``a:b`` of ``range(n)``, on threads; the
    slices' results concatenated in order (a whole-slice step, e.g. one filter pass per slice)."""
    threads = min(int(threads), n)
    if threads <= 1:
        return list(fn(0, n)) if n else []
    # One pool per process and size: a pool inherited through fork has no threads in the child.
    key = (os.getpid(), threads - 1)
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = ThreadPoolExecutor(threads - 1, thread_name_prefix="uet-codec")
    cuts = [n * t // threads for t in range(threads + 1)]

    def part(t: int) -> Sequence[_R]:
        return fn(cuts[t], cuts[t + 1])

    # The calling thread takes the first slice itself instead of waiting idle.
    rest = [pool.submit(part, t) for t in range(1, threads)]
    try:
        first = part(0)
    except BaseException:
        for f in rest:  # the slices still queued need not run; running ones end on their own
            f.cancel()
        raise
    return [y for p in [first, *(f.result() for f in rest)] for y in p]


def _mode_name(channels: int) -> str:
    return {1: "L", 3: "RGB"}.get(channels, f"{channels}-channel")


def decode(value: Any, *, channels: int | None = None, convert: bool = False, column: str = "image") -> np.ndarray:
    """Decode one image to uint8 ``[C, H, W]`` pixels (possibly a strided view).

    Args:
        value: a ``datasets`` ``{"bytes", "path"}`` record, encoded bytes, a PIL image, a uint8
            numpy array (HW or HWC; CHW when clearly so), or a torch tensor (CHW; floats in [0, 1]
            are rounded to 8 bits).
        channels: 1 (``L``) or 3 (``RGB``), the bank's channels; None keeps the image's own (``L``
            stays 1 channel, every other decoded mode is 3).
        convert: convert 8-bit modes that are not ``L``/``RGB`` (alpha and palettes are
            flattened); without it they are refused with the fix named.
        column: the column name used in error messages.

    Raises:
        ImageModeError: the value is not an image, or its mode or layout cannot be protected
            faithfully (the message names the fix).
    """
    if _is_record(value):
        data = _record_bytes(value, column)
        value = _remote_image(value, column) if data is None else data
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _decode_bytes(bytes(value), channels=channels, convert=convert, column=column)
    from PIL import Image

    if isinstance(value, Image.Image):
        return _pil_to_chw(value, channels=channels, convert=convert, column=column)
    if value is None:
        raise ImageModeError(f"column {column!r} holds a missing image (None); drop or fill those rows first")
    torch = _optional("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        if value.is_floating_point():
            value = _float_to_uint8(value.detach().cpu(), column)
        return _array_to_chw(value.detach().cpu().numpy(), channels=channels, chw=True, column=column)
    if isinstance(value, np.ndarray):
        return _array_to_chw(value, channels=channels, chw=False, column=column)
    raise ImageModeError(
        f"column {column!r} holds {type(value).__name__}, not an image; pass the image column "
        "(PIL images, datasets Image() feature, or uint8 arrays) as image_column"
    )


def _float_to_uint8(t: Any, column: str) -> Any:
    """A float image tensor in [0, 1] (torchvision's convention) as the uint8 pixels it stands for.

    ``round(x * 255)`` is exact for every tensor that came from uint8 pixels (``v2.ToDtype(torch.float32,
    scale=True)``), so the float path protects the very pixels the uint8 path does. Anything outside
    [0, 1] (0-255 floats, normalised tensors) is refused: clamping it would silently destroy the image.
    """
    import torch

    if t.numel() and not bool(torch.isfinite(t).all()):
        raise ImageModeError(f"column {column!r} holds a float image with NaN or infinite values; pass uint8 pixels")
    lo, hi = (float(t.min()), float(t.max())) if t.numel() else (0.0, 0.0)
    if lo < 0 or hi > 1:
        raise ImageModeError(
            f"column {column!r} holds a float image with values in [{lo:g}, {hi:g}], outside [0, 1]: protection "
            "works on 8-bit pixels, and float images are read as torchvision reads them (0..1). Pass uint8 pixels "
            "(e.g. torch.from_numpy(np.asarray(pil)).permute(2, 0, 1) without .float()), or put ProtectTransform "
            "before v2.ToDtype(torch.float32, scale=True) and v2.Normalize in the pipeline."
        )
    return t.to(torch.float32).mul(255).round_().to(torch.uint8)


def _png_bit_depth(data: bytes) -> int | None:
    """A PNG's bits per channel from its IHDR (PIL opens 16-bit RGB PNGs as 8-bit RGB, silently)."""
    if data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) >= 25:
        return data[24]
    return None


def _is_record(value: Any) -> bool:
    return isinstance(value, dict) and ("bytes" in value or "path" in value)


def _record_bytes(record: dict, column: str) -> bytes | None:
    """The encoded bytes of a ``datasets`` ``{"bytes", "path"}`` record (read from a local path).

    None for a remote path (``hf://``, ``https://``, fsspec chains such as ``zip://...::https://...``,
    as streamed image folders yield): ``datasets`` opens those (:func:`_remote_image`).
    """
    if record.get("bytes") is not None:
        return record["bytes"]
    if record.get("path"):
        path = str(record["path"])
        if "://" in path and not os.path.exists(path):
            return None
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            raise ImageModeError(
                f"column {column!r} points to {record['path']!r}, which cannot be read here ({e}); "
                "load the dataset where its files are, or embed the bytes"
            ) from None
    raise ImageModeError(f"column {column!r} holds an empty image record (no bytes, no path)")


def _remote_image(record: dict, column: str) -> Any:
    """A remote image record opened by ``datasets`` (its file systems and Hub credentials), as PIL."""
    import datasets

    try:
        return datasets.Image().decode_example({"path": record["path"], "bytes": None})
    except Exception as e:  # network, credentials, a missing file: say which image and why
        raise ImageModeError(
            f"column {column!r} points to {record['path']!r}, which datasets could not open "
            f"({type(e).__name__}: {e}); check the path and your Hub login, or embed the bytes"
        ) from None


def _decode_bytes(data: bytes, *, channels: int | None, convert: bool, column: str) -> np.ndarray:
    if _png_bit_depth(data) == 16:
        raise ImageModeError(
            f"column {column!r} holds a 16-bit-per-channel PNG: PIL would read it as 8 bits and protection would "
            "throw the low byte away. Convert it yourself to 8-bit (e.g. (arr >> 8).astype('uint8'), or "
            "Image.fromarray(...) of 8-bit pixels) if that loss is acceptable, then protect that."
        )
    if data[:3] == b"\xff\xd8\xff":
        fast = _fast_jpeg()
        if fast is not None:
            hwc = _decode_plain_jpeg(data, fast, channels)
            if hwc is not None:
                return hwc[None] if hwc.ndim == 2 else hwc.transpose(2, 0, 1)
    from PIL import Image, ImageOps

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as e:  # PIL raises several types for broken/unknown data
        raise ImageModeError(
            f"column {column!r} holds bytes that are not a readable image ({type(e).__name__}: {e}); "
            "check that the column holds encoded images (PNG, JPEG, ...)"
        ) from None
    # The rule ``datasets.Image.decode_example`` applies, so raw bytes and a decoded column agree.
    if img.getexif().get(0x0112) is not None:
        img = ImageOps.exif_transpose(img)
    return _pil_to_chw(img, channels=channels, convert=convert, column=column)


def _jpeg_layout(data: bytes) -> tuple[int, int, int] | None:
    """``(height, width, components)`` of a plain 8-bit JPEG, or None when PIL must decide.

    Walks the marker segments up to the frame header. "Not plain": EXIF (it may carry an
    orientation), Adobe APP14 (CMYK/YCCK/RGB transforms), arithmetic/lossless/12-bit frames.
    """
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        seg = pos + 4
        if marker == 0xE1 and data[seg:seg + 6] == b"Exif\x00\x00":
            return None
        if marker == 0xEE and data[seg:seg + 5] == b"Adobe":
            return None
        if marker in (0xC0, 0xC1, 0xC2):  # baseline, extended and progressive Huffman frames
            if seg + 6 > n or data[seg] != 8:
                return None
            height, width = struct.unpack_from(">HH", data, seg + 1)
            return height, width, data[seg + 5]
        if 0xC3 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) or 0xD0 <= marker <= 0xDA or marker == 0x01:
            return None  # lossless/arithmetic/hierarchical frames, or markers that cannot come before a frame
        pos += 2 + length
    return None


def _decode_plain_jpeg(data: bytes, fast, channels: int | None) -> np.ndarray | None:
    layout = _jpeg_layout(data)
    if layout is None or layout[2] not in (1, 3):
        return None
    if channels is not None and channels != layout[2]:
        return None  # a conversion is asked for: PIL's path says it and does it
    try:
        hwc = fast(data, layout[2] == 1)
    except Exception:  # the fast decoder refuses something PIL may read: let PIL decide
        return None
    want = layout[:2] if layout[2] == 1 else (*layout[:2], 3)
    return hwc if hwc.shape == want and hwc.dtype == np.uint8 else None


_FAST_JPEG: list = []  # [decoder or None], filled on first use


def _fast_jpeg():
    """simplejpeg's libjpeg-turbo decoder when it is installed *and* returns PIL's pixels here."""
    if not _FAST_JPEG:
        _FAST_JPEG.append(_checked_fast_jpeg())
    return _FAST_JPEG[0]


def _checked_fast_jpeg():
    sj = _optional("simplejpeg")
    if sj is None:
        return None
    from PIL import Image

    def fast(data: bytes, grey: bool) -> np.ndarray:
        # Accurate IDCT and fancy upsampling: libjpeg's defaults, the settings PIL decodes with.
        out = sj.decode_jpeg(data, colorspace="GRAY" if grey else "RGB", fastdct=False, fastupsample=False)
        return out[..., 0] if grey else out

    rng = np.random.default_rng(0)
    # Smooth content plus noise exercises the IDCT and the chroma upsampling; odd sizes the edges.
    yy, xx = np.mgrid[0:37, 0:29]
    base = np.stack([yy * 6, xx * 8, (yy + xx) * 3], -1) + rng.integers(0, 40, (37, 29, 3))
    rgb = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    cases = [(rgb, {"subsampling": s}) for s in (0, 1, 2)] + [
        (rgb, {"progressive": True}), (rgb.convert("L"), {}), (rgb.convert("L"), {"progressive": True})]
    for img, opts in cases:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85, **opts)
        data = buf.getvalue()
        try:
            same = np.array_equal(fast(data, img.mode == "L"), np.asarray(Image.open(io.BytesIO(data))))
        except Exception:
            same = False
        if not same:
            warnings.warn(
                "simplejpeg's JPEG decoder does not return PIL's pixels on this machine; decoding JPEG "
                "with PIL everywhere so that every path gives the same pixels (slower)",
                RuntimeWarning, stacklevel=2,
            )
            return None
    return fast


def _target_mode(mode: str, channels: int | None) -> str:
    if channels is None:
        return "L" if mode in _GREYISH else "RGB"
    return _mode_name(channels)


def _pil_to_chw(img, *, channels: int | None, convert: bool, column: str) -> np.ndarray:
    want = _target_mode(img.mode, channels)
    mode = img.mode
    if mode in _REFUSED:
        raise ImageModeError(
            f"column {column!r} has a {mode} image ({'16-bit' if '16' in mode else '32-bit'} pixels): "
            "8-bit protection would throw information away. Convert it yourself to 8-bit "
            "(e.g. scale to 0..255 and Image.fromarray(arr.astype('uint8'))) if that loss is acceptable."
        )
    if mode != want:
        if channels not in (None, 1, 3):
            raise ImageModeError(f"the bank expects {channels} channels; only 1 (L) and 3 (RGB) are supported")
        if not convert or (mode not in _CONVERTIBLE and mode not in ("L", "RGB")):
            raise ImageModeError(
                f"column {column!r} has a {mode} image but the bank is for {want} images. Convert explicitly, "
                f"e.g. dataset.cast_column({column!r}, datasets.Image(mode={want!r})), or pass convert=True "
                f"to convert {mode}->{want} (alpha and palette are flattened; the output is {want})."
            )
        warnings.warn(f"converting {mode} images to {want} before protecting them (convert=True)", stacklevel=4)
        img = img.convert(want)
    if 0 in img.size:
        raise ImageModeError(f"column {column!r} holds an empty {img.size[0]}x{img.size[1]} image; drop those rows first")
    arr = np.asarray(img, dtype=np.uint8)
    # A CHW *view* of PIL's HWC pixels: batching (np.stack) makes the one copy that is needed.
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _array_to_chw(arr: np.ndarray, *, channels: int | None, chw: bool, column: str) -> np.ndarray:
    if arr.dtype != np.uint8:
        if arr.dtype.kind == "f":
            raise ImageModeError(
                f"column {column!r} holds a float array; pass uint8 pixels (0..255) or a float torch tensor in [0, 1]"
            )
        fits = arr.dtype.kind in "iu" and (arr.size == 0 or (int(arr.min()) >= 0 and int(arr.max()) <= 255))
        raise ImageModeError(
            f"column {column!r} holds {arr.dtype} pixels; only 8-bit images can be protected. "
            + ("Its values are all 0..255, so it was probably uint8 pixels widened on the way (datasets gives "
               "nested lists as int64 under with_format('numpy')): store the column as images "
               f"(dataset.cast_column({column!r}, datasets.Image())) or as uint8 arrays "
               "(datasets.Array3D(shape, 'uint8')), or pass arr.astype(np.uint8)."
               if fits else "Convert them to 8-bit yourself if that loss is acceptable.")
        )
    if 0 in arr.shape:
        raise ImageModeError(f"column {column!r} holds an empty image (shape {arr.shape}); drop those rows first")
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 3:
        # A tensor is CHW (torchvision); an array is HWC (PIL/numpy) unless it is clearly CHW.
        if not chw and arr.shape[-1] not in (1, 3, 4) and arr.shape[0] in (1, 3, 4):
            chw = True
        if not chw:
            arr = arr.transpose(2, 0, 1)
    else:
        raise ImageModeError(f"column {column!r} holds an array of shape {arr.shape}; expected HxW or HxWxC")
    hint = ""
    if arr.ndim == 3 and arr.shape[0] not in (1, 3) and arr.shape[-1] in (1, 3, 4):
        hint = (f"; its shape {tuple(arr.shape)} looks like height x width x channels, but "
                + ("a tensor is read as channels first (CHW, torchvision's order): pass tensor.permute(2, 0, 1)"
                   if chw else "it was taken as CHW: pass arr.transpose(2, 0, 1) or a PIL image"))
    if channels is None and arr.shape[0] not in (1, 3):
        raise ImageModeError(
            f"column {column!r} has {arr.shape[0]}-channel images; only 1 and 3 channels are supported{hint}")
    if channels is not None and arr.shape[0] != channels:
        raise ImageModeError(
            f"column {column!r} has {arr.shape[0]}-channel images but the bank is for {channels} channels; "
            + (hint[2:] if hint else "convert them first")
        )
    return np.ascontiguousarray(arr)


# --------------------------------------------------------------------------------------------
# Encoding

#: Encoder names :func:`encode_png` accepts (None: the first installed of isal, fpng, PIL).
ENCODERS = ("isal", "fpng", "pil")
_PACKAGE = {"isal": "isal.isal_zlib", "fpng": "fpng", "pil": "PIL"}
# isal at 1: measured as small as its level 2 at the same speed (1.11x PIL-6 at 384 px); level 0
# was 1.3-1.7x PIL's size. PIL at 6: its own and ``datasets``' default, so the fallback writes
# exactly the bytes ``datasets`` would.
_DEFAULT_LEVEL = {"isal": 1, "pil": 6}
_LEVELS = {"isal": range(0, 4), "pil": range(0, 10)}


def encode_png(image: np.ndarray, *, level: int | None = None, encoder: str | None = None,
               marked: bool = False, method: str | None = None) -> bytes:
    """Lossless PNG bytes of uint8 HWC pixels (``[H, W]``, ``[H, W, 1]``, ``[H, W, 3]`` or ``[H, W, 4]``).

    Args:
        image: the pixels, height first (transpose ``[C, H, W]`` arrays with ``.transpose(1, 2, 0)``).
        level: deflate level, 0-3 for ``"isal"`` (default 1) and 0-9 for ``"pil"`` (default 6);
            fpng has a single level and takes None.
        encoder: ``"isal"`` (fast, files ~1.1-1.2x PIL's), ``"fpng"`` (RGB/RGBA only; fastest,
            files up to 1.6x PIL's) or ``"pil"``; None picks the first one installed in that
            order that can write the image.
        marked / method: write the "protected by uetransforms" marker (:func:`mark`, naming
            ``method``) into the PNG: every protected image the library writes carries it.

    The bytes are the same for the same pixels, encoder (and its version), level and marker.
    """
    hwc = _check_hwc(image)
    name, level = _encoder_and_level(encoder, level, hwc.shape[2])
    chunk = _marker_chunk(method) if marked else b""
    if name == "isal":
        return _isal_png(_up_filtered(hwc[None])[0], hwc.shape, level, chunk)
    return _spliced(_library_png(hwc, name, level), chunk)


def encode_png_batch(images: np.ndarray, *, level: int | None = None, encoder: str | None = None,
                     threads: int = 1, marked: bool = False, method: str | None = None) -> list[bytes]:
    """:func:`encode_png` of every image of a uint8 ``[B, H, W, C]`` batch, the same bytes.

    The PNG row filter runs once over the whole batch (numpy's per-call cost was a sixth of a
    32-px image's encode), and the batch is cut into ``threads`` contiguous slices encoded in
    parallel (the deflate releases the GIL).

    >>> import numpy as np
    >>> batch = np.arange(2 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 4, 5, 3)
    >>> encode_png_batch(batch) == [encode_png(batch[0]), encode_png(batch[1])]
    True
    """
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        what = f"shape {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise ValueError(f"encode_png_batch takes a uint8 [B, H, W, C] array, got {what}; "
                         "encode single images with encode_png")
    if len(images) == 0:
        return []
    _check_hwc(images[0])  # dtype and shape rules, said as encode_png says them
    name, level = _encoder_and_level(encoder, level, images.shape[3])
    chunk = _marker_chunk(method) if marked else b""

    def part(a: int, b: int) -> list[bytes]:
        piece = images[a:b]
        if name != "isal":
            return [_spliced(_library_png(x, name, level), chunk) for x in piece]
        return [_isal_png(raw, images.shape[1:], level, chunk) for raw in _up_filtered(piece)]

    return map_slices(part, len(images), threads)


def check_png_options(encoder: str | None, level: int | None, *, channels: int | None = None) -> None:
    """Raise the error :func:`encode_png` would raise for ``encoder``/``level``, before any image is read.

    ``channels`` (1 or 3; None: both must work) is the images' channel count, which decides
    whether fpng can write them.
    """
    for c in (1, 3) if channels is None else (channels,):
        _encoder_and_level(encoder, level, c)


def _encoder_and_level(encoder: str | None, level: int | None, channels: int) -> tuple[str, int | None]:
    name = _choose(encoder, channels)
    if name == "fpng":
        if level is not None:
            raise ValueError("encoder='fpng' has a single compression level: pass level=None")
        return name, None
    if level is None:
        level = _DEFAULT_LEVEL[name]
    levels = _LEVELS[name]
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or int(level) not in levels:
        raise ValueError(f"level must be an integer {levels.start}..{levels.stop - 1} for encoder={name!r}, "
                         f"got {level!r}")
    return name, int(level)


def _library_png(hwc: np.ndarray, name: str, level: int | None) -> bytes:
    """PNG bytes from fpng or PIL (the encoders that filter and deflate themselves)."""
    if name == "fpng":
        return _optional("fpng").from_ndarray(np.ascontiguousarray(hwc))
    pixels = hwc[..., 0] if hwc.shape[2] == 1 else hwc
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


def _up_filtered(batch: np.ndarray) -> np.ndarray:
    """PNG's filtered rows of a ``[B, H, W, C]`` batch: "Up" on every row but the first ("None").

    "Up" is one vectorised subtraction (uint8 wraps modulo 256, as PNG defines it) and on
    protected images it compressed better than "Sub", "Average" and "Paeth" at ISA-L's speed
    (``benchmarks/RESULTS.md``); adaptive per-row filtering would cost more than the deflate.
    Returns ``[B, H, 1 + W * C]``: each row's filter byte, then its bytes.
    """
    b, h, w, c = batch.shape
    rows = batch.reshape(b, h, w * c)
    raw = np.empty((b, h, w * c + 1), np.uint8)
    raw[:, :, 0] = 2
    raw[:, 0, 0] = 0
    raw[:, 0, 1:] = rows[:, 0]
    np.subtract(rows[:, 1:], rows[:, :-1], out=raw[:, 1:, 1:])
    return raw


def _isal_png(raw: np.ndarray, shape: tuple[int, ...], level: int, marker: bytes = b"") -> bytes:
    """8-bit PNG of one image's filtered rows (:func:`_up_filtered`): one ISA-L deflate IDAT chunk
    (after ``marker``, the marker's ``tEXt`` chunk or nothing, right after IHDR as :func:`mark` puts it)."""
    h, w, c = shape
    idat = _optional("isal.isal_zlib").compress(raw, level)  # reads the buffer: no copy to bytes
    return b"".join((_png_head(w, h, c), marker, _chunk(b"IDAT", idat), _IEND))


def _spliced(png: bytes, marker: bytes) -> bytes:
    """``png`` with the ``marker`` chunk right after IHDR (where :func:`mark` and the isal path put it)."""
    return png[:_IHDR_END] + marker + png[_IHDR_END:] if marker else png


@functools.lru_cache(maxsize=64)
def _png_head(w: int, h: int, c: int) -> bytes:
    """Signature + IHDR of an 8-bit image: the same for every image of one size (a dataset has few)."""
    return PNG_SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, {1: 0, 3: 2, 4: 6}[c], 0, 0, 0))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return b"".join((struct.pack(">I", len(data)), kind, data, struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))))


_IEND = _chunk(b"IEND", b"")


def _check_hwc(image: Any) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"encode_png takes a uint8 numpy array [H, W(, C)], got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"encode_png takes uint8 pixels, got {image.dtype}; round and clip to 0..255 first")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or 0 in image.shape:
        hint = ""
        if image.ndim == 3 and image.shape[0] in (1, 3, 4):
            hint = "; this looks like [C, H, W]: pass arr.transpose(1, 2, 0)"
        raise ValueError(f"encode_png takes [H, W] or [H, W, 1|3|4] pixels, got shape {image.shape}{hint}")
    return image


def _choose(encoder: str | None, channels: int) -> str:
    if encoder is None:
        if _optional(_PACKAGE["isal"]) is not None:
            return "isal"
        return "fpng" if channels in (3, 4) and _optional("fpng") is not None else "pil"
    if encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r}; choose one of {', '.join(ENCODERS)} (or None for the fastest)")
    if encoder == "fpng" and channels not in (3, 4):
        raise ValueError("encoder='fpng' writes RGB/RGBA PNGs only; use encoder='isal' or 'pil' (or None) "
                         "for 1-channel images")
    if _optional(_PACKAGE[encoder]) is None:
        raise ImportError(f"encoder={encoder!r} needs the {encoder} package: pip install 'uetransforms[fast]' "
                          "(or encoder=None to use the fastest installed one)")
    return encoder


def info() -> dict[str, str]:
    """Which codecs this installation uses: ``{"jpeg_decoder", "png_encoder_rgb", "png_encoder_l"}``."""
    def label(name):
        mod = _optional(_PACKAGE[name].split(".")[0])
        return f"{name} {getattr(mod, '__version__', '?')}"

    fast = _fast_jpeg()
    jpeg = f"simplejpeg {_optional('simplejpeg').__version__} (libjpeg-turbo)" if fast else label("pil")
    return {"jpeg_decoder": jpeg, "png_encoder_rgb": label(_choose(None, 3)), "png_encoder_l": label(_choose(None, 1))}


# --------------------------------------------------------------------------------------------
# The "protected by uetransforms" marker

#: Non-secret text that marks what uetransforms wrote as protected: in every PNG's ``tEXt`` chunk
#: (:func:`mark`), in the Parquet schema metadata under :data:`SCHEMA_KEY`, and in copies published
#: before the card kept to the Hub's documented fields, the card's ``dataset_info.description``
#: (``load_dataset`` puts it in ``ds.info``). Publishing refuses marked input unless told it is
#: protected (``protected=True``) or that protecting twice is meant.
MARKER = "protected by uetransforms"
SCHEMA_KEY = b"uetransforms"
#: The PNG tEXt keyword of :func:`mark`.
MARK_KEYWORD = "uetransforms"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IHDR_END = 8 + 4 + 4 + 13 + 4  # signature, then IHDR's length, type, 13 data bytes and CRC
_KEY = MARK_KEYWORD.encode("latin-1") + b"\x00"


def _version() -> str:
    # The package's own constant: importlib.metadata parsed the installed METADATA on every call
    # (0.5 ms, 2x the cost of protecting a 32-px image), and a source checkout has none.
    from .version import __version__

    return __version__


def source_name(path: Any) -> str | None:
    """What an output image record keeps of its source's ``path``: the file name, not the folder
    (``/home/me/photos/cats/a.jpg`` -> ``a.jpg``), so a protected image can be traced back to its
    source without publishing where the source lives. The bytes are PNG whatever the name says."""
    if not path:
        return None
    return os.path.basename(str(path).replace("\\", "/").rstrip("/")) or None


def mark(png: bytes, *, method: str | None = None) -> bytes:
    """``png`` with a ``tEXt`` chunk saying "protected by uetransforms" placed right after IHDR.

    The text holds the library version and, if given, the method name: nothing secret. Marking
    a marked image returns it unchanged. Pixels are untouched; every PNG decoder skips the chunk.
    """
    data = bytes(png)
    if data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise ValueError("mark() takes PNG bytes (e.g. from encode_png), got data that is not a PNG")
    if is_marked(data):
        return data
    return _spliced(data, _marker_chunk(method))


def marker_text(method: str | None = None) -> str:
    """The marker's text: the library version and, if given, the method name (nothing secret)."""
    return f"{MARKER} {_version()}" + (f"; method={method}" if method else "")


@functools.lru_cache(maxsize=64)
def _marker_chunk(method: str | None) -> bytes:
    """The marker's ``tEXt`` chunk (the same bytes for every image of one method: cached)."""
    try:
        return _chunk(b"tEXt", _KEY + marker_text(method).encode("latin-1"))
    except UnicodeEncodeError:
        raise ValueError(f"method name {method!r} must be Latin-1 text for a PNG tEXt chunk") from None


def mark_pil(img: Any, method: str | None = None) -> Any:
    """``img`` (a new PIL image) marked in its ``info``, where PIL keeps a PNG's text: :func:`is_marked`
    then knows it was protected, in memory (a ``set_transform`` or streamed ``map`` output)."""
    img.info[MARK_KEYWORD] = marker_text(method)
    return img


def is_marked(data: Any) -> bool:
    """Whether ``data`` carries the uetransforms marker.

    Takes PNG bytes, a ``datasets`` ``{"bytes", "path"}`` record, or a PIL image (whose ``info``
    keeps PNG text). Decoded pixels (arrays, tensors) carry no marker: False. Other formats: False.
    """
    if _is_record(data):
        try:
            data = _record_bytes(data, "image")
        except ImageModeError:  # an empty record or an unreadable path shows no marker
            return False
    if isinstance(data, (bytes, bytearray, memoryview)):
        return _png_has_mark(bytes(data) if isinstance(data, memoryview) else data)
    text = getattr(data, "info", None)  # a PIL image keeps a PNG's text chunks here
    return isinstance(text, dict) and MARK_KEYWORD in text


def marked_where(data: Any) -> str | None:
    """Where a dataset or table says of itself that uetransforms protected it, or None.

    Reads what survives loading a published copy without its card: the Parquet/Arrow schema
    metadata under :data:`SCHEMA_KEY` (``Dataset.from_parquet`` of a shard, ``pq.read_table``)
    and the ``info`` text a published folder's card gives ``load_dataset`` (:data:`MARKER`).
    Takes a ``datasets`` (Iterable)Dataset, a ``pyarrow`` Table or Schema; anything else: None.
    """
    info = getattr(data, "info", None)
    text = " ".join(str(getattr(info, k, "") or "") for k in ("description", "citation"))
    if MARKER in text:
        return f"its dataset info says {MARKER!r} (it was loaded from a uetransforms publish)"
    schema = data if hasattr(data, "metadata") and hasattr(data, "names") else None
    if schema is None:
        table = getattr(data, "data", None)  # a datasets.Dataset's Arrow table
        table = data if table is None and hasattr(data, "schema") else table
        schema = getattr(table, "schema", None)
    if SCHEMA_KEY in (getattr(schema, "metadata", None) or {}):
        return f"its Arrow/Parquet schema metadata carries the {SCHEMA_KEY.decode()!r} marker a uetransforms publish writes"
    return None


def _png_has_mark(data: bytes) -> bool:
    if data[:8] != PNG_SIGNATURE:
        return False
    pos, n = 8, len(data)
    while pos + 8 <= n:  # walk the chunk headers; our own marker is the first one after IHDR
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        if kind == b"tEXt" and data[pos + 8:pos + 8 + len(_KEY)] == _KEY:
            return True
        if kind == b"IEND":
            return False
        pos += 12 + length
    return False
