"""Which PNG filter and which deflate library, on protected photo-sized pixels.

``uetransforms.core.codecs.encode_png`` writes PNG with one fixed row filter and one deflate call; this
script is the measurement behind that choice. It protects CIFAR-10 images (upscaled to ``--size``
px with bicubic, stored as JPEG q90 and decoded, as ``bench_publish.py`` does) with a bank of
``--method`` and encodes them with every combination of a PNG row filter (Up, Sub, Average, Paeth;
each one vectorised over the image) and a deflate library at its fast levels (ISA-L through
``isal``, zlib-ng through ``zlib-ng``, the standard ``zlib``), next to PIL level 6 and fpng.
Reported: milliseconds per image (best of 3, CPU time of this process), size against PIL level 6 on
the same pixels, and whether PIL decodes the exact pixels back.

Run:
    OMP_NUM_THREADS=1 python benchmarks/bench_png_filters.py --size 384 --n 64
    OMP_NUM_THREADS=1 python benchmarks/bench_png_filters.py --size 32 --n 1000
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import struct
import time
import zlib

import numpy as np

DEFAULT_SRC = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10",
                           "train-00000-of-00001.parquet")


def protected_pixels(src: str, size: int, n: int, method: str) -> list[np.ndarray]:
    import datasets
    import pyarrow.parquet as pq
    import torch
    from PIL import Image

    import uetransforms as ue
    from uetransforms.core import apply as apply_mod

    table = pq.read_table(src).slice(0, n)
    pixels = []
    for b in table.column("img").combine_chunks().field("bytes").to_pylist():
        big = Image.open(io.BytesIO(b)).convert("RGB").resize((size, size), Image.BICUBIC)
        buf = io.BytesIO()
        big.save(buf, "JPEG", quality=90)
        pixels.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    labels = table.column("label").to_pylist()
    fit_on = datasets.Dataset.from_dict(
        {"img": [Image.fromarray(a) for a in pixels[:20]], "label": labels[:20]},
        features=datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)}))
    bank = ue.fit(method, fit_on, seed=1, image_column="img")
    chw = torch.from_numpy(np.stack(pixels).transpose(0, 3, 1, 2).copy())
    return [np.ascontiguousarray(a) for a in apply_mod.apply(bank, chw, labels).numpy().transpose(0, 2, 3, 1)]


def filtered(hwc: np.ndarray, name: str) -> bytes:
    """The PNG scanlines (filter byte + filtered row) of ``hwc`` with one filter on every row."""
    h, w, c = hwc.shape
    rows = hwc.reshape(h, w * c).astype(np.int16)
    up = np.zeros_like(rows)
    up[1:] = rows[:-1]
    left = np.zeros_like(rows)
    left[:, c:] = rows[:, :-c]
    if name == "up":
        pred, code = up, 2
    elif name == "sub":
        pred, code = left, 1
    elif name == "avg":
        pred, code = (up + left) >> 1, 3
    else:  # paeth
        diag = np.zeros_like(rows)
        diag[1:, c:] = rows[:-1, :-c]
        p = left + up - diag
        pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - diag)
        pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, diag))
        code = 4
    raw = np.empty((h, w * c + 1), np.uint8)
    raw[:, 0] = code
    raw[:, 1:] = (rows - pred).astype(np.uint8)
    return raw.tobytes()


def png(hwc: np.ndarray, scanlines: bytes, compress) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w, c = hwc.shape
    ihdr = struct.pack(">IIBBBBB", w, h, 8, {1: 0, 3: 2, 4: 6}[c], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", compress(scanlines)) + chunk(b"IEND", b"")


def main() -> None:
    from PIL import Image

    from uetransforms.core import codecs

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", default=DEFAULT_SRC)
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--method", default="cuda")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    images = protected_pixels(args.src, args.size, args.n, args.method)

    def pil6(a):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "PNG", compress_level=6)
        return buf.getvalue()

    candidates = {"PIL level 6": pil6, "codecs.encode_png (default)": codecs.encode_png}
    if codecs._optional("fpng") is not None:
        candidates["fpng"] = lambda a: codecs.encode_png(a, encoder="fpng")
    libs = {"zlib": (zlib, (1, 2, 6))}
    for mod, label, levels in (("isal.isal_zlib", "isal", (0, 1, 2)), ("zlib_ng.zlib_ng", "zlib-ng", (1, 2))):
        try:
            libs[label] = (importlib.import_module(mod), levels)
        except ImportError:
            print(f"({label} not installed: skipped)")
    for filt in ("up", "sub", "avg", "paeth"):
        for label, (lib, levels) in libs.items():
            for level in levels:
                candidates[f"{filt} + {label} {level}"] = (
                    lambda a, f=filt, lib=lib, level=level: png(a, filtered(a, f), lambda d: lib.compress(d, level)))
    print(f"{args.method}-protected CIFAR-10 at {args.size} px (JPEG q90 source), {len(images)} images, "
          f"best of 3, CPU time of this process")
    print("| encoder | ms/image | speed vs PIL-6 | size vs PIL-6 | exact |")
    print("|---|---:|---:|---:|---|")
    ref_ms = ref_bytes = None
    for name, enc in candidates.items():
        best = float("inf")
        for _ in range(3):
            start = time.process_time()
            out = [enc(a) for a in images]
            best = min(best, time.process_time() - start)
        ms, total = best / len(images) * 1000, sum(map(len, out))
        ref_ms, ref_bytes = ref_ms or ms, ref_bytes or total
        exact = all(np.array_equal(np.asarray(Image.open(io.BytesIO(o))), a) for o, a in zip(out, images))
        print(f"| {name} | {ms:.2f} | {ref_ms / ms:.1f}x | {total / ref_bytes:.3f}x | {exact} |", flush=True)


if __name__ == "__main__":
    main()
