"""Lossless WebP against the PNG the writer stores, on the same protected pixels (issue 24, point 10).

A protected copy is stored losslessly, and noise does not compress: 1.3 MB of JPEG photos became
9.1 MB of PNG. ``datasets.Image`` also reads WebP, which is often smaller than PNG, so this script
measures, image set by image set, the file size and the encode time of

* ``png``: what the writer stores today, :func:`uetransforms.core.codecs.encode_png` with its
  defaults (marked; ISA-L where ``uetransforms[fast]`` is installed, else PIL level 6),
* ``png-pil6``: PIL's PNG at level 6 (the writer's fallback without ``[fast]``, and ``datasets``' own),
* ``webp-m0`` / ``webp-m4`` / ``webp-m6``: PIL's lossless WebP (libwebp) at method 0 (fastest),
  4 (PIL's default) and 6 (smallest),

and checks that ``datasets.Image().decode_example`` gives back exactly the protected pixels from
every WebP (lossless is the whole point). Image sets, each protected with a ``cuda`` and a
``random`` bank (seed 1, fitted on the set's first 20 images):

* ``cifar32``: CIFAR-10 training rows as stored (32 px PNG), ``--n32`` rows;
* ``cifar384-jpeg``: CIFAR-10 rows upscaled to 384 px (bicubic), stored as JPEG q90 and decoded,
  as ``bench_publish.py`` does (``--n384`` rows);
* ``photos``: generated photo-like images (smooth gradients, texture, a tint per class; the
  generator of ``tests/test_readme.py``) at 400x300, 300x400, 640x480 and 1024x768, stored as JPEG
  q90 and decoded (``--nphotos`` images); ``cuda`` only (its bank fits any size).

Times are wall milliseconds per image on one thread (best of ``--repeat``); ratios are against
``png`` on the same pixels.

Run:
    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_webp.py --n32 1000 --n384 48 --nphotos 12 \\
        --out benchmarks/results/webp-s7.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_png_filters import DEFAULT_SRC  # noqa: E402 - the one CIFAR path of the codec benchmarks


def _jpeg_round_trip(hwc: np.ndarray) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(hwc).save(buf, "JPEG", quality=90)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def cifar(src: str, n: int, size: int | None) -> tuple[list[np.ndarray], list[int]]:
    import pyarrow.parquet as pq
    from PIL import Image

    table = pq.read_table(src).slice(0, n)
    pixels = []
    for b in table.column("img").combine_chunks().field("bytes").to_pylist():
        im = Image.open(io.BytesIO(b)).convert("RGB")
        if size is None:
            pixels.append(np.asarray(im))
        else:
            pixels.append(_jpeg_round_trip(np.asarray(im.resize((size, size), Image.BICUBIC))))
    return pixels, table.column("label").to_pylist()


def photos(n: int) -> tuple[list[np.ndarray], list[int]]:
    """Photo-like JPEGs of four sizes, decoded (the generator of tests/test_readme.py::make_photos)."""
    rng = np.random.default_rng(1)
    sizes = [(400, 300), (300, 400), (640, 480), (1024, 768)]  # (width, height)
    pixels, labels = [], []
    for i in range(n):
        c = i % 2
        w, h = sizes[(i // 2 + c) % len(sizes)]
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 / w, yy * 255 / h, np.full((h, w), 80 + 90 * c)], -1)
        img = (base * 0.8 + rng.normal(0, 12, (h, w, 3))).clip(0, 255).astype(np.uint8)
        pixels.append(_jpeg_round_trip(img))
        labels.append(c)
    return pixels, labels


def protect(method: str, pixels: list[np.ndarray], labels: list[int]) -> list[np.ndarray]:
    """``pixels`` protected by a ``method`` bank fitted on the first 20 (same-size groups applied at once)."""
    import datasets
    import torch
    from PIL import Image

    import uetransforms as ue
    from uetransforms.core import apply as apply_mod

    fit_on = datasets.Dataset.from_dict(
        {"img": [Image.fromarray(a) for a in pixels[:20]], "label": labels[:20]},
        features=datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)}))
    bank = ue.fit(method, fit_on, seed=1, image_column="img", size_mismatch="resize")
    out: list[np.ndarray | None] = [None] * len(pixels)
    for shape in {a.shape for a in pixels}:
        idx = [i for i, a in enumerate(pixels) if a.shape == shape]
        chw = torch.from_numpy(np.stack([pixels[i] for i in idx]).transpose(0, 3, 1, 2).copy())
        done = apply_mod.apply(bank, chw, [labels[i] for i in idx], size_mismatch="resize")
        for i, a in zip(idx, done.numpy().transpose(0, 2, 3, 1)):
            out[i] = np.ascontiguousarray(a)
    return out  # type: ignore[return-value]


def encoders(method: str) -> dict:
    from PIL import Image

    from uetransforms.core.codecs import encode_png

    def webp(k: int):
        def enc(hwc: np.ndarray) -> bytes:
            buf = io.BytesIO()
            Image.fromarray(hwc).save(buf, "WEBP", lossless=True, method=k)
            return buf.getvalue()
        return enc

    return {
        "png": lambda a: encode_png(a, marked=True, method=method),
        "png-pil6": lambda a: encode_png(a, encoder="pil", marked=True, method=method),
        "webp-m0": webp(0), "webp-m4": webp(4), "webp-m6": webp(6),
    }


def measure(pixels: list[np.ndarray], method: str, repeat: int) -> dict:
    import datasets

    image = datasets.Image()
    rows = {}
    for name, enc in encoders(method).items():
        best, data = float("inf"), []
        for _ in range(repeat):
            t = time.perf_counter()
            data = [enc(a) for a in pixels]
            best = min(best, time.perf_counter() - t)
        exact = all(np.array_equal(np.asarray(image.decode_example({"bytes": b, "path": None})), a)
                    for b, a in zip(data, pixels))
        rows[name] = {"bytes": sum(map(len, data)), "ms_per_image": 1000 * best / len(pixels), "exact": exact}
    base = rows["png"]
    for r in rows.values():
        r["size_vs_png"] = r["bytes"] / base["bytes"]
        r["time_vs_png"] = r["ms_per_image"] / base["ms_per_image"]
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", default=DEFAULT_SRC, help="CIFAR-10 train parquet")
    p.add_argument("--n32", type=int, default=1000, help="32-px CIFAR rows")
    p.add_argument("--n384", type=int, default=48, help="CIFAR rows upscaled to 384 px")
    p.add_argument("--nphotos", type=int, default=12, help="generated photo-like images")
    p.add_argument("--repeat", type=int, default=2, help="timing: best of this many encodes of each set")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the encoders run on one)")
    p.add_argument("--out", help="write the rows as JSON here")
    args = p.parse_args(argv)
    import torch

    from uetransforms.core.codecs import info

    torch.set_num_threads(args.threads)
    sets = [("cifar32", *cifar(args.src, args.n32, None), ("cuda", "random")),
            ("cifar384-jpeg", *cifar(args.src, args.n384, 384), ("cuda", "random")),
            ("photos", *photos(args.nphotos), ("cuda",))]
    results = []
    print("| images | bank | n | " + " | ".join(
        f"{e} MB (x png) ms/img (x png)" for e in encoders("cuda")) + " | WebP exact |")
    for name, pixels, labels, methods in sets:
        for method in methods:
            prot = protect(method, pixels, labels)
            rows = measure(prot, method, args.repeat)
            results.append({"images": name, "bank": method, "n": len(prot), "rows": rows})
            cells = [f"{r['bytes'] / 1e6:.2f} ({r['size_vs_png']:.2f}x) {r['ms_per_image']:.2f} ({r['time_vs_png']:.2f}x)"
                     for r in rows.values()]
            exact = all(r["exact"] for k, r in rows.items() if k.startswith("webp"))
            print(f"| {name} | {method} | {len(prot)} | " + " | ".join(cells) + f" | {exact} |", flush=True)
    doc = {"script": "benchmarks/bench_webp.py", "argv": sys.argv[1:], "codecs": info(),
           "pillow": __import__("PIL").__version__, "machine": platform.machine(),
           "load_average": os.getloadavg(), "results": results}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
