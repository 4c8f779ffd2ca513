"""Throughput of each publishing path on the same images and bank, and a check that they agree byte for byte.

Paths (each one: read the source, protect, write Parquet with PNG images):

* ``in-memory``  -- ``Dataset.map(Protect(bank), batched=True)`` then ``to_parquet``
* ``num_proc=N`` -- the same with ``num_proc=N`` worker processes
* ``streaming``  -- ``load_dataset("parquet", streaming=True)`` into ``publish_stream``
* ``ray``        -- ``ray.data.read_parquet`` -> ``integrations.ray.protect`` -> ``write_parquet``
  (local cluster, ``num_cpus=N``; its start-up is timed separately)

plus the bare kernel (``Applier`` on a uint8 batch already in memory) on CPU and, when there is
one, on the GPU, in images/s and GB/s of uint8 traffic (read + write).

Run:
    python benchmarks/bench_paths.py --n 10000            # CIFAR-10 train prefix (class-balanced)
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np
import torch

DEFAULT_SRC = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10",
                           "train-00000-of-00001.parquet")


def digest(byte_rows: list[bytes]) -> str:
    h = hashlib.sha256()
    for b in byte_rows:
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()[:16]


def png_digest_of_parquet(files: list[str], image_column: str) -> str:
    import pyarrow.parquet as pq
    import pyarrow as pa

    table = pa.concat_tables([pq.read_table(f) for f in sorted(files)]).sort_by("idx")
    return digest(table.column(image_column).combine_chunks().field("bytes").to_pylist())


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def kernel_throughput(bank, device: str, batch: int, repeats: int) -> dict:
    from uetransforms.core.apply import Applier

    c, h, w = bank.image_shape
    app = Applier(bank, device)
    x = torch.randint(0, 256, (batch, c, h, w), dtype=torch.uint8)
    rows = np.arange(batch) % bank.num_keys
    if device.startswith("cuda"):
        x = x.to(device)
        sync = torch.cuda.synchronize
    else:
        def sync():
            return None
    for _ in range(3):  # warm-up: bank upload, allocator, kernel selection
        app(x, rows)
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        app(x, rows)
    sync()
    secs = (time.perf_counter() - start) / repeats
    nbytes = 2 * x.numel()  # uint8 read + uint8 written (the delta rows are extra, cached on device)
    row = {"device": device, "batch": batch, "images_per_s": batch / secs, "GB_per_s": nbytes / secs / 1e9}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        clock_khz = getattr(props, "memory_clock_rate", None)
        bus_bits = getattr(props, "memory_bus_width", None)
        if clock_khz and bus_bits:
            peak = 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9  # DDR: two transfers per clock
            row["peak_GB_per_s"] = peak
            row["fraction_of_peak"] = row["GB_per_s"] / peak
        row["name"] = props.name
    return row


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", default=DEFAULT_SRC, help="CIFAR-10 style Parquet (img: Image, label: ClassLabel)")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=2, help="num_proc workers and Ray CPUs")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="intra-op threads per process (1 avoids oversubscribing with several workers)")
    p.add_argument("--paths", default="in-memory,num_proc,streaming,ray")
    p.add_argument("--json", help="write the results here as JSON")
    args = p.parse_args(argv)

    import datasets
    import pyarrow.parquet as pq

    import uetransforms as ue
    from uetransforms.publishing.streaming import publish_stream

    if not os.path.exists(args.src):
        sys.exit(f"source {args.src!r} not found; pass --src <parquet with img/label columns>")
    torch.set_num_threads(args.torch_threads)
    datasets.disable_progress_bars()
    paths = args.paths.split(",")
    work = tempfile.mkdtemp(prefix="bench_paths_")
    cache = os.path.join(work, "cache")

    # The same n rows for every path, with an idx column so unordered outputs can be compared.
    src = datasets.load_dataset("parquet", data_files=args.src, split=f"train[:{args.n}]", cache_dir=cache)
    src = src.add_column("idx", list(range(len(src))))
    src_file = os.path.join(work, "src.parquet")
    src.to_parquet(src_file)
    src = datasets.Dataset.from_parquet(src_file, cache_dir=cache)
    bank = ue.fit("random", src, image_column="img", label_column="label", seed=0)
    bank_path = os.path.join(work, "random.bank.arrow")
    bank.save(bank_path)
    bank = ue.NoiseBank.load(bank_path)
    protect = ue.Protect(bank, image_column="img", label_column="label")

    results: dict = {"n": len(src), "batch_size": args.batch_size, "workers": args.workers,
                     "torch_threads": args.torch_threads, "cpus": os.cpu_count(),
                     "machine": platform.processor() or platform.machine(),
                     "load_before": os.getloadavg(), "paths": {}}

    def record(name: str, secs: float, dig: str, **extra):
        results["paths"][name] = {"seconds": secs, "images_per_s": len(src) / secs, "png_sha256_16": dig, **extra}
        print(f"{name:>12}: {secs:7.2f} s  {len(src) / secs:8.0f} img/s  digest {dig}", flush=True)

    if "in-memory" in paths:
        out = os.path.join(work, "inmem.parquet")
        secs, _ = timed(lambda: src.map(protect, batched=True, batch_size=args.batch_size,
                                        load_from_cache_file=False).to_parquet(out))
        record("in-memory", secs, png_digest_of_parquet([out], "img"))
    if "num_proc" in paths:
        out = os.path.join(work, "numproc.parquet")
        secs, _ = timed(lambda: src.map(protect, batched=True, batch_size=args.batch_size, num_proc=args.workers,
                                        load_from_cache_file=False).to_parquet(out))
        record(f"num_proc={args.workers}", secs, png_digest_of_parquet([out], "img"))
    if "streaming" in paths:
        out = os.path.join(work, "stream")
        stream = datasets.load_dataset("parquet", data_files=src_file, split="train", streaming=True)
        secs, info = timed(lambda: publish_stream(stream, bank, out, image_column="img", label_column="label",
                                                  batch_size=args.batch_size, shard_rows=5000))
        record("streaming", secs, png_digest_of_parquet(info["shards"], "img"))
    if "ray" in paths:
        import ray

        from uetransforms.integrations import ray as ue_ray

        start_s, _ = timed(lambda: ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False,
                                            configure_logging=False))
        ray.data.DataContext.get_current().enable_progress_bars = False
        out = os.path.join(work, "ray")

        def run_ray():
            # One source file reads as one block by default; split it so every CPU gets work.
            rd = ray.data.read_parquet(src_file, override_num_blocks=4 * args.workers)
            ue_ray.protect(rd, bank, image_column="img", label_column="label", batch_size=args.batch_size,
                           features=src.features).write_parquet(out)

        secs, _ = timed(run_ray)
        ray.shutdown()
        record(f"ray ({args.workers} CPUs)", secs, png_digest_of_parquet(glob.glob(os.path.join(out, "*.parquet")),
                                                                        "img"), ray_start_seconds=start_s)

    digests = {v["png_sha256_16"] for v in results["paths"].values()}
    results["byte_identical"] = len(digests) == 1
    base = results["paths"].get("in-memory", {}).get("images_per_s")
    for v in results["paths"].values():
        v["ratio_to_in_memory"] = v["images_per_s"] / base if base else None

    kernels = [kernel_throughput(bank, "cpu", args.batch_size, 20)]
    if torch.cuda.is_available():
        kernels.append(kernel_throughput(bank, "cuda", 4096, 50))
    results["kernel"] = kernels
    for k in kernels:
        print(f"kernel {k['device']}: {k['images_per_s']:.0f} img/s, {k['GB_per_s']:.2f} GB/s", flush=True)
    results["load_after"] = os.getloadavg()
    results["rows_written"] = pq.ParquetFile(os.path.join(work, "inmem.parquet")).metadata.num_rows \
        if "in-memory" in paths else None
    print("byte-identical across paths:", results["byte_identical"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=float)
    return results


if __name__ == "__main__":
    main()
