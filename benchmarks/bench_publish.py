"""``ue.publish`` against the plain ``datasets`` identity map, at 32 px and at 384 px.

Both pipelines start from the same memory-mapped ``datasets.Dataset`` (images stored as encoded
bytes, decoded by ``datasets`` on access) and end with Parquet files on disk:

* ``identity`` -- what a user pays to re-publish a dataset losslessly without protection:
  ``ds.map(lambda b: {"img": [im.copy() ...]}, batched=True)`` (decode; the copies have no format,
  so ``datasets`` re-encodes them as PNG with PIL, its own ``Image`` encoding) then ``to_parquet``.
* ``publish``  -- ``ue.publish(ds, bank, out_dir)``: decode, noise, lossless encode, Parquet shards
  and the card.
* ``map(Protect) + to_parquet`` -- the README quickstart: ``ds.map(ue.Protect(bank), batched=True)``
  (Protect reads the undecoded bytes and hands ``datasets`` PNG records) then ``to_parquet``.

A fourth pipeline, ``bytes-map``, is a hand-written map over the *undecoded* column with the
public pieces: ``codecs.decode``, ``ue.apply`` and ``{"bytes": codecs.mark(codecs.encode_png(...))}``
(so ``datasets`` never re-encodes), then ``to_parquet``: what a user assembling their own pipeline
pays (one image at a time through ``mark``).

They run in the same process, alternated (identity, publish, publish, identity, ...), with
``datasets`` caching off so no run reuses another's output; each is reported by its best run,
in wall time and in CPU time of this process (the machine is shared: CPU time is what
contention distorts least). Reported: images/s, the time ratio
publish/identity (target <= 0.33 at 32 px, <= 0.10 at 384 px), PNG bytes per image against PIL
level 6 on the *same published pixels* (target <= 1.25x), and the codec floor: decode + encode
alone on the source bytes, with this installation's codecs (``uetransforms.core.codecs``) and with PIL.

Sources: CIFAR-10 train prefix (32 px, as stored: JPEG), and the same images upscaled to 384 px
(bicubic) and stored as JPEG q90 -- built in a temporary directory, never in the repository.

``--codecs`` instead compares the candidate codecs that are installed (PNG encoders on the
source protected by a ``--method`` bank, or with ``--method uniform`` the source plus uniform
integer noise in [-8, 8]; smooth protected images separate the encoders' sizes far more than
noise does -- and JPEG decoders
against PIL's pixels): best of 3 runs in images per wall and per CPU second, bytes against PIL level 6, lossless and deterministic checks.

Run:
    OMP_NUM_THREADS=1 python benchmarks/bench_publish.py --n32 4000 --n384 240 --repeats 2
    OMP_NUM_THREADS=1 python benchmarks/bench_publish.py --n32 4000 --n384 240 --repeats 3 --threads 1 --publish-threads 2
    OMP_NUM_THREADS=1 python benchmarks/bench_publish.py --codecs --n32 1000 --n384 40
    OMP_NUM_THREADS=1 python benchmarks/bench_publish.py --conv

``--conv`` times the conv kernel's two paths (shifted adds, library convolution on grid filters)
by image size, on the same images, and checks their bytes are equal.

``--conv-settings`` times what ``cuda``'s photo-size defaults cost against the paper's filters, by image size:
``ue.apply`` with a bank of each setting on the same images, and the PNG encode of its output (what
publishing adds per image after decoding), CPU time per image, best of the repeats:

    OMP_NUM_THREADS=1 python benchmarks/bench_publish.py --conv-settings
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import sys
import tempfile
import time

import numpy as np

DEFAULT_SRC = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10",
                           "train-00000-of-00001.parquet")


def build_sources(src: str, tmp: str, n32: int, n384: int) -> dict[str, str]:
    """The two source Parquet files (``img`` as a datasets Image column, ``label``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    table = pq.read_table(src)
    out = {}
    if n32:
        out["32px"] = os.path.join(tmp, "src32.parquet")
        pq.write_table(table.slice(0, n32), out["32px"])
    if n384:
        imgs = table.column("img").combine_chunks().field("bytes").to_pylist()[:n384]
        jpgs = []
        for b in imgs:
            buf = io.BytesIO()
            Image.open(io.BytesIO(b)).convert("RGB").resize((384, 384), Image.BICUBIC).save(buf, "JPEG", quality=90)
            jpgs.append(buf.getvalue())
        img_type = table.schema.field("img").type
        big = pa.table({"img": pa.array([{"bytes": j, "path": None} for j in jpgs], type=img_type),
                        "label": table.column("label").slice(0, n384)}).replace_schema_metadata(table.schema.metadata)
        out["384px"] = os.path.join(tmp, "src384.parquet")
        pq.write_table(big, out["384px"])
    return out


def parquet_image_bytes(files: list[str]) -> list[bytes]:
    import pyarrow.parquet as pq

    return [b for f in sorted(files) for b in pq.read_table(f).column("img").combine_chunks().field("bytes").to_pylist()]


def run_identity(ds, out: str) -> None:
    def identity(batch):
        # A copy has no format, so datasets encodes it as PNG (PIL, level 6), as it would any new image.
        return {"img": [im.copy() for im in batch["img"]]}

    ds.map(identity, batched=True, batch_size=256).to_parquet(out)


def run_publish(ds, bank, out: str, threads: int | None = None) -> None:
    import uetransforms as ue

    ue.publish(ds, bank, out, image_column="img", label_column="label", threads=threads)


def run_map(ds, bank, out: str, threads: int | None = None) -> None:
    """The README's quickstart: ``ds.map(Protect(bank), batched=True)`` then ``to_parquet``."""
    import uetransforms as ue

    ds.map(ue.Protect(bank, image_column="img", threads=threads), batched=True, batch_size=256).to_parquet(out)


def run_bytes_map(ds, bank, out: str) -> None:
    import datasets
    import torch

    import uetransforms as ue
    from uetransforms.core import codecs

    def protect(batch):
        chw = np.stack([codecs.decode(r, channels=bank.channels) for r in batch["img"]])
        noisy = ue.apply(bank, torch.from_numpy(chw), batch["label"]).numpy()
        return {"img": [{"bytes": codecs.mark(codecs.encode_png(a.transpose(1, 2, 0))), "path": None} for a in noisy]}

    raw = ds.cast_column("img", datasets.Image(decode=False))
    raw.map(protect, batched=True, batch_size=256).to_parquet(out)


def codec_floor(byte_rows: list[bytes]) -> dict[str, float]:
    """Images per CPU second (best of 3) of decode + lossless encode alone: our codecs, and PIL at level 6."""
    from PIL import Image

    from uetransforms.core import codecs

    def ours(b):
        return codecs.encode_png(codecs.decode(b, channels=3).transpose(1, 2, 0))

    def pil(b):
        buf = io.BytesIO()
        Image.open(io.BytesIO(b)).copy().save(buf, "PNG")
        return buf.getvalue()

    return {name: best_rate(lambda: [fn(b) for b in byte_rows], len(byte_rows))[1]
            for name, fn in (("codecs", ours), ("pil", pil))}


def pil6_ratio(png_rows: list[bytes]) -> tuple[float, float]:
    """Mean bytes per published image, and its ratio to PIL level 6 on the same pixels."""
    from PIL import Image

    ours = pil = 0
    for b in png_rows:
        buf = io.BytesIO()
        Image.open(io.BytesIO(b)).save(buf, "PNG", compress_level=6)
        ours += len(b)
        pil += len(buf.getvalue())
    return ours / len(png_rows), ours / pil


def _candidates() -> tuple[dict, dict]:
    """PNG encoders and JPEG decoders to compare: each one whose package is installed."""
    from PIL import Image

    def pil_png(level):
        def enc(a):
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, "PNG", compress_level=level)
            return buf.getvalue()
        return enc

    encoders = {"PIL level 6": pil_png(6), "PIL level 1": pil_png(1)}
    decoders = {"PIL": lambda b: np.asarray(Image.open(io.BytesIO(b)))}
    try:
        import fpng

        encoders["fpng"] = fpng.from_ndarray
    except ImportError:
        pass
    try:
        import imagecodecs as ic

        for lvl in (1, 6):
            encoders[f"imagecodecs png (libpng) level {lvl}"] = lambda a, lvl=lvl: ic.png_encode(a, level=lvl)
            encoders[f"imagecodecs spng level {lvl}"] = lambda a, lvl=lvl: ic.spng_encode(a, level=lvl)
        decoders["imagecodecs jpeg8 (libjpeg-turbo)"] = ic.jpeg8_decode
    except ImportError:
        pass
    try:
        import cv2

        cv2.setNumThreads(1)
        for lvl in (1, 3):
            encoders[f"opencv level {lvl}"] = lambda a, lvl=lvl: cv2.imencode(
                ".png", np.ascontiguousarray(a[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, lvl])[1].tobytes()
        decoders["opencv"] = lambda b: cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    except ImportError:
        pass
    try:
        import simplejpeg

        decoders["simplejpeg (accurate)"] = lambda b: simplejpeg.decode_jpeg(b, fastdct=False, fastupsample=False)
    except ImportError:
        pass
    try:
        import pyspng  # noqa: F401  (a decoder only: listed so its absence from the table is explained)
    except ImportError:
        pass
    return encoders, decoders


def best_rate(fn, n: int, repeats: int = 3):
    """Best images per wall second and per CPU second of ``repeats`` runs, and the last output.

    The machine is shared: the best run is the least disturbed, and CPU time (this process) is
    what contention distorts least for these single-threaded codecs.
    """
    wall = cpu = 0.0
    out = None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        wall = max(wall, n / (time.perf_counter() - start))
        cpu = max(cpu, n / max(time.process_time() - start_cpu, 1e-9))
    return wall, cpu, out


def compare_codecs(sources: dict[str, str], bank) -> list[dict]:
    """Every installed candidate on the same images: images/s, bytes vs PIL level 6, checks."""
    from PIL import Image

    from uetransforms.core import codecs

    encoders, decoders = _candidates()
    encoders["uetransforms.core.codecs.encode_png (default)"] = codecs.encode_png
    for name in ("isal", "fpng"):
        if codecs._optional(codecs._PACKAGE[name]) is not None:
            for level in ((0, 1, 2, 3) if name == "isal" else (None,)):
                encoders[f"codecs {name}" + (f" level {level}" if level else "")] = (
                    lambda a, name=name, level=level: codecs.encode_png(a, encoder=name, level=level))
    decoders["uetransforms.core.codecs.decode"] = lambda b: codecs.decode(b, channels=3).transpose(1, 2, 0)
    rng = np.random.default_rng(0)
    rows = []
    for size, src in sources.items():
        jpgs = parquet_image_bytes([src])
        pixels = [np.asarray(Image.open(io.BytesIO(b))) for b in jpgs]
        if bank is None:
            noisy = [np.clip(a.astype(np.int16) + rng.integers(-8, 9, a.shape), 0, 255).astype(np.uint8) for a in pixels]
        else:
            import pyarrow.parquet as pq
            import torch

            from uetransforms.core import apply as apply_mod

            labels = pq.read_table(src).column("label").to_pylist()
            chw = torch.from_numpy(np.stack(pixels).transpose(0, 3, 1, 2).copy())
            noisy = list(apply_mod.apply(bank, chw, labels).numpy().transpose(0, 2, 3, 1).copy())
        ref = None
        for name, enc in encoders.items():
            rate, cpu_rate, out = best_rate(lambda: [enc(a) for a in noisy], len(noisy))
            total = sum(map(len, out))
            ref = ref or total
            lossless = all(np.array_equal(np.asarray(Image.open(io.BytesIO(o))), a) for o, a in zip(out, noisy))
            rows.append({"size": size, "kind": "PNG encode", "codec": name, "img_s": rate, "img_cpu_s": cpu_rate,
                         "vs_pil6": total / ref,
                         "bytes_per_image": total / len(out), "exact": lossless,
                         "deterministic": enc(noisy[0].copy()) == out[0]})
        for name, dec in decoders.items():
            rate, cpu_rate, out = best_rate(lambda: [dec(b) for b in jpgs], len(jpgs))
            rows.append({"size": size, "kind": "JPEG decode", "codec": name, "img_s": rate, "img_cpu_s": cpu_rate,
                         "exact": all(np.array_equal(o, p) for o, p in zip(out, pixels))})
    return rows


def compare_conv(sizes: tuple[int, ...] = (32, 64, 96, 128, 256, 384, 512), repeats: int = 5) -> list[dict]:
    """The conv kernel's two paths on the same images and grid filters (as ``cuda`` fits them).

    ``shifted``: the fixed-order multiplies and adds (``kernels._convolve_shifted``); ``library``: one
    ``F.conv2d`` per channels-last image (``kernels._convolve_library``). Same bytes (checked here
    too); best of ``repeats`` CPU times. ``kernels._LIBRARY_CONV_MIN_PIXELS`` is set from this table.
    """
    import torch

    from uetransforms.core import kernels

    rng = np.random.default_rng(0)
    rows = []
    for side in sizes:
        n = max(4, 2_000_000 // (side * side * 3))
        x = torch.from_numpy(rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8)).permute(0, 3, 1, 2)
        w = rng.uniform(0, 0.3, (n, 3, 3, 3))
        w[..., 1, 1] = 1.0
        f = kernels.conv_grid_bits(np.abs(w).sum(axis=(-2, -1)).max())
        w = torch.from_numpy((np.floor(w * 2.0**f) / 2.0**f).astype(np.float32))
        per = {}
        for name, fn in (("shifted", kernels._convolve_shifted), ("library", kernels._convolve_library)):
            out = fn(x, w, "max")
            best = float("inf")
            for _ in range(repeats):
                start = time.process_time()
                fn(x, w, "max")
                best = min(best, time.process_time() - start)
            per[name] = (best / n * 1e3, out)
        same = bool(torch.equal(per["shifted"][1], per["library"][1]))
        rows.append({"side": side, "images": n, "shifted_ms": per["shifted"][0], "library_ms": per["library"][0],
                     "speedup": per["shifted"][0] / per["library"][0], "same_bytes": same})
    return rows


def compare_conv_settings(sizes: tuple[int, ...] = (64, 96, 224, 384, 1024), repeats: int = 3) -> list[dict]:
    """``cuda``'s photo-size defaults (7 x 7, reflect, dilation "auto") against the paper's 3 x 3 zero-padded
    filters: ``ue.apply`` and ``ue.apply`` + PNG encode per image, on the same random images (3 classes)."""
    import torch

    import uetransforms as ue
    from uetransforms.core import codecs

    rng = np.random.default_rng(0)
    settings = {"paper": {"kernel_size": 3, "padding": "zeros", "dilation": 1},
                "photo": {"kernel_size": 7, "padding": "reflect", "dilation": "auto"}}
    rows = []
    for side in sizes:
        n = max(4, 6_000_000 // (side * side * 3))
        imgs = rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8)
        labels = [i % 3 for i in range(n)]
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()
        row = {"side": side, "images": n}
        for name, params in settings.items():
            bank = ue.fit("cuda", {"image": list(imgs[:3]), "label": [0, 1, 2]}, seed=1, **params)
            best_apply = best_total = float("inf")
            for _ in range(repeats):
                start = time.process_time()
                out = ue.apply(bank, x, labels)
                mid = time.process_time()
                for o in out.permute(0, 2, 3, 1).contiguous().numpy():
                    codecs.encode_png(o)
                best_apply, best_total = min(best_apply, mid - start), min(best_total, time.process_time() - start)
            row[f"{name}_apply_ms"], row[f"{name}_total_ms"] = best_apply / n * 1e3, best_total / n * 1e3
        row["apply_ratio"] = row["photo_apply_ms"] / row["paper_apply_ms"]
        row["total_ratio"] = row["photo_total_ms"] / row["paper_total_ms"]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", default=DEFAULT_SRC, help="CIFAR-10 train Parquet (img, label)")
    p.add_argument("--n32", type=int, default=4000, help="32-px images (0 skips)")
    p.add_argument("--n384", type=int, default=240, help="384-px images (0 skips)")
    p.add_argument("--repeats", type=int, default=2, help="runs of each pipeline per size (alternated)")
    p.add_argument("--method", default="cuda", help="protection method of the bank ('uniform' with --codecs: "
                   "source + uniform integer noise in [-8, 8] instead of a bank)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    p.add_argument("--publish-threads", type=int, default=None,
                   help="publish(threads=N): batch slices protected in parallel (default: the library's, "
                        "torch's thread count)")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--codecs", action="store_true", help="compare the installed candidate codecs instead")
    p.add_argument("--conv", action="store_true", help="compare the conv kernel's two paths by image size instead")
    p.add_argument("--conv-settings", action="store_true",
                   help="time cuda's photo-size defaults against the paper's filters by image size instead")
    args = p.parse_args(argv)

    import datasets
    import torch

    import uetransforms as ue
    from uetransforms.core import codecs

    torch.set_num_threads(args.threads)
    if args.conv_settings:
        rows = compare_conv_settings()
        print(f"load avg {os.getloadavg()}")
        print("| side px | images | paper apply ms/img | photo apply ms/img | ratio | paper apply+PNG ms/img | "
              "photo apply+PNG ms/img | ratio |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['side']} | {r['images']} | {r['paper_apply_ms']:.2f} | {r['photo_apply_ms']:.2f} | "
                  f"{r['apply_ratio']:.2f}x | {r['paper_total_ms']:.2f} | {r['photo_total_ms']:.2f} | {r['total_ratio']:.2f}x |")
        return {"conv_settings": rows}
    if args.conv:
        rows = compare_conv()
        print(f"load avg {os.getloadavg()}")
        print("| side px | images | shifted adds ms/img (CPU) | library conv ms/img (CPU) | library speed-up | same bytes |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['side']} | {r['images']} | {r['shifted_ms']:.4f} | {r['library_ms']:.4f} | {r['speedup']:.2f}x | {r['same_bytes']} |")
        return {"conv": rows}
    datasets.disable_caching()  # no run may load another's map output from the cache
    datasets.disable_progress_bars()
    results: dict = {"codecs": codecs.info(), "load": os.getloadavg(), "sizes": {},
                     "torch_threads": args.threads, "publish_threads": args.publish_threads or args.threads}
    with tempfile.TemporaryDirectory(prefix="bench_publish_") as tmp:
        sources = build_sources(args.src, tmp, args.n32, args.n384)
        if args.codecs:
            bank = None
            if args.method != "uniform":
                fit_ds = datasets.Dataset.from_parquet(sources.get("32px") or sources["384px"], cache_dir=os.path.join(tmp, "c"))
                bank = ue.fit(args.method, fit_ds, image_column="img", seed=1)
            rows = compare_codecs(sources, bank)
            print(f"load avg before {results['load']}, after {os.getloadavg()}")
            print("| size | what | codec | images/s wall (per CPU-s) | bytes vs PIL-6 | exact | deterministic |")
            print("|---|---|---|---|---|---|---|")
            for r in rows:
                vs = f"{r['vs_pil6']:.3f}x" if "vs_pil6" in r else "-"
                print(f"| {r['size']} | {r['kind']} | {r['codec']} | {r['img_s']:.0f} ({r['img_cpu_s']:.0f}) | {vs} | {r['exact']} | "
                      f"{r.get('deterministic', '-')} |")
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(rows, f, indent=1)
            return {"codecs": rows}
        fit_ds = datasets.Dataset.from_parquet(sources.get("32px") or sources["384px"], cache_dir=os.path.join(tmp, "c"))
        bank = ue.fit(args.method, fit_ds.select(range(min(len(fit_ds), 1000))), image_column="img", seed=1)
        for size, src in sources.items():
            ds = datasets.Dataset.from_parquet(src, cache_dir=os.path.join(tmp, "c"))
            n = len(ds)
            names = ("identity", "publish", "map", "bytes-map")
            times: dict[str, list[float]] = {k: [] for k in names}
            cpu: dict[str, list[float]] = {k: [] for k in names}
            out_files: dict[str, list[str]] = {}
            order = []
            for r in range(args.repeats):
                order += list(names) if r % 2 == 0 else list(reversed(names))
            for i, name in enumerate(order):
                out = os.path.join(tmp, f"{size}-{name}-{i}")
                start, start_cpu = time.perf_counter(), time.process_time()
                if name == "identity":
                    os.makedirs(out)
                    run_identity(ds, os.path.join(out, "data.parquet"))
                elif name == "bytes-map":
                    os.makedirs(out)
                    run_bytes_map(ds, bank, os.path.join(out, "data.parquet"))
                elif name == "map":
                    os.makedirs(out)
                    run_map(ds, bank, os.path.join(out, "data.parquet"), args.publish_threads)
                else:
                    run_publish(ds, bank, out, args.publish_threads)
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
                out_files[name] = glob.glob(os.path.join(out, "**", "*.parquet"), recursive=True)
            src_bytes = parquet_image_bytes([src])
            pub = parquet_image_bytes(out_files["publish"])
            ident = parquet_image_bytes(out_files["identity"])
            per_img, ratio_pil6 = pil6_ratio(pub)
            floor = codec_floor(src_bytes)
            # Best run of each: on a shared machine the least disturbed run is the closest to the cost.
            t_id, t_pub = min(times["identity"]), min(times["publish"])
            c_id, c_pub = min(cpu["identity"]), min(cpu["publish"])
            t_bm, c_bm = min(times["bytes-map"]), min(cpu["bytes-map"])
            t_map, c_map = min(times["map"]), min(cpu["map"])
            map_bytes, map_pil6 = pil6_ratio(parquet_image_bytes(out_files["map"]))
            bm_bytes, bm_pil6 = pil6_ratio(parquet_image_bytes(out_files["bytes-map"]))
            results["sizes"][size] = {
                "images": n, "times_s": times, "cpu_s": cpu,
                "identity_img_s": n / t_id, "publish_img_s": n / t_pub, "ratio": t_pub / t_id,
                "identity_img_cpu_s": n / c_id, "publish_img_cpu_s": n / c_pub, "ratio_cpu": c_pub / c_id,
                "bytes_map_img_s": n / t_bm, "bytes_map_img_cpu_s": n / c_bm,
                "bytes_map_ratio": t_bm / t_id, "bytes_map_ratio_cpu": c_bm / c_id,
                "bytes_map_bytes_per_image": bm_bytes, "bytes_map_vs_pil6_same_pixels": bm_pil6,
                "map_img_s": n / t_map, "map_img_cpu_s": n / c_map, "map_ratio": t_map / t_id,
                "map_ratio_cpu": c_map / c_id, "map_bytes_per_image": map_bytes, "map_vs_pil6_same_pixels": map_pil6,
                "publish_bytes_per_image": per_img, "publish_vs_pil6_same_pixels": ratio_pil6,
                "identity_bytes_per_image": sum(map(len, ident)) / len(ident),
                "floor_img_s": floor, "png": pub[0][:8] == b"\x89PNG\r\n\x1a\n", "marked": codecs.is_marked(pub[0]),
            }
            print(f"[{size}] done: {json.dumps(results['sizes'][size])}", file=sys.stderr, flush=True)
    results["load_after"] = os.getloadavg()

    print(f"codecs: {results['codecs']}; torch threads {results['torch_threads']}, publish threads "
          f"{results['publish_threads']}; load avg before {results['load']}, after {results['load_after']}")
    print("| size | images | pipeline | img/s wall (CPU) | time vs identity wall (CPU) | target | bytes/img | "
          "vs PIL-6 same pixels |")
    print("|---|---|---|---|---|---|---|---|")
    for size, r in results["sizes"].items():
        target = 0.33 if size == "32px" else 0.10
        print(f"| {size} | {r['images']} | identity | {r['identity_img_s']:.0f} ({r['identity_img_cpu_s']:.0f}) | 1 | | "
              f"{r['identity_bytes_per_image']:.0f} | (clean pixels) |")
        for name, key in (("publish", "publish"), ("map(Protect) + to_parquet", "map"), ("bytes-map", "bytes_map")):
            ratio, ratio_cpu = r[f"{key}_ratio" if key != "publish" else "ratio"], r[f"{key}_ratio_cpu" if key != "publish" else "ratio_cpu"]
            met = "met" if max(ratio, ratio_cpu) <= target else "MISSED"
            print(f"| {size} | {r['images']} | {name} | {r[f'{key}_img_s']:.0f} ({r[f'{key}_img_cpu_s']:.0f}) | "
                  f"{ratio:.2f}x ({ratio_cpu:.2f}x) | <= {target:.2f}x {met} | {r[f'{key}_bytes_per_image']:.0f} | "
                  f"{r[f'{key}_vs_pil6_same_pixels']:.3f}x |")
        print(f"| {size} | {r['images']} | codec floor: decode + encode (ours / PIL-6), per CPU-s | "
              f"{r['floor_img_s']['codecs']:.0f} / {r['floor_img_s']['pil']:.0f} | | | | |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
