"""What atomic, resumable publishing costs: the one writer against the previous publish path.

Same process, alternated (previous, writer, writer, previous, ...), ``datasets`` caching off:

* ``previous`` -- the publish path before the one writer (kept here as the baseline, as it was):
  ``ds.map(Protect(bank), batched=True)`` into a cache file, then ``shard.to_parquet`` per shard
  straight into ``data/`` and the card last (no temp dir, no fsync, no manifest).
* ``writer``   -- ``ue.publish(ds, bank, out)``: Arrow batches -> Protect -> PNG -> Parquet shards
  in a temp sibling, sha256 + fsync of every shard, manifest, atomic move; then the protected
  dataset is read back from the shards (``datasets.load_dataset``) as publish's return value.

Inside ``writer`` the time spent hashing + fsyncing and reading back is measured separately.

Run:
    OMP_NUM_THREADS=1 python benchmarks/bench_writer.py --n 4000 --repeats 2 --shard-size 2MB
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

DEFAULT_SRC = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10",
                           "train-00000-of-00001.parquet")


def previous_publish(ds, bank, out, *, image_column, max_shard_size, batch_size=256):
    """The pre-writer ``publish`` body (map, then to_parquet per shard, card last)."""
    from datasets.utils.py_utils import convert_file_size_to_int

    import uetransforms as ue
    from uetransforms.publishing.card import dataset_card
    from uetransforms.publishing.pipeline import num_shards_for

    prot = ds.map(ue.Protect(bank, image_column=image_column), batched=True, batch_size=batch_size)
    card = dataset_card({"train": prot}, bank, image_column=image_column)
    os.makedirs(os.path.join(out, "data"))
    n = num_shards_for(prot, convert_file_size_to_int(max_shard_size))
    for i in range(n):
        prot.shard(num_shards=n, index=i, contiguous=True).to_parquet(
            os.path.join(out, "data", f"train-{i:05d}-of-{n:05d}.parquet"))
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
        f.write(card)
    return prot


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default=DEFAULT_SRC)
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--shard-size", default="2MB")
    args = ap.parse_args(argv)

    import datasets
    import torch

    import uetransforms as ue
    import importlib

    publish_mod = importlib.import_module("uetransforms.publishing.pipeline")  # ue.publish is the function
    from uetransforms.publishing import writer

    torch.set_num_threads(1)
    datasets.disable_caching()
    datasets.disable_progress_bars()
    ds = datasets.load_dataset("parquet", data_files=args.src, split="train").select(range(args.n))
    bank = ue.fit("random", ds, image_column="img", seed=1)

    spent = {"hash+fsync": 0.0, "read back": 0.0}

    def timed(name, fn):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[name] += time.perf_counter() - t
        return wrapper

    writer._sha256 = timed("hash+fsync", writer._sha256)
    writer._fsync_file = timed("hash+fsync", writer._fsync_file)
    writer._fsync_dir = timed("hash+fsync", writer._fsync_dir)
    publish_mod._load_back = timed("read back", publish_mod._load_back)

    times: dict[str, list[float]] = {"previous": [], "writer": []}
    parts: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for name in (("previous", "writer") if r % 2 == 0 else ("writer", "previous")):
                out = os.path.join(tmp, f"{name}-{r}")
                for k in spent:
                    spent[k] = 0.0
                t = time.perf_counter()
                if name == "previous":
                    previous_publish(ds, bank, out, image_column="img", max_shard_size=args.shard_size)
                else:
                    ue.publish(ds, bank, out, image_column="img", max_shard_size=args.shard_size)
                    parts.append(dict(spent))
                times[name].append(time.perf_counter() - t)
                shards = len(os.listdir(os.path.join(out, "data")))
                print(f"  {name:8s} run {r}: {times[name][-1]:6.2f} s ({shards} shards)", file=sys.stderr)
    prev, new = statistics.median(times["previous"]), statistics.median(times["writer"])
    print(f"{args.n} CIFAR-10 images (32 px), shards of {args.shard_size}, median of {args.repeats}:")
    print(f"  previous publish : {prev:6.2f} s  {args.n / prev:7.0f} img/s")
    print(f"  one writer       : {new:6.2f} s  {args.n / new:7.0f} img/s  (ratio writer/previous {new / prev:.2f})")
    for k in spent:
        share = statistics.median(p[k] for p in parts)
        print(f"    of which {k:10s}: {share:5.2f} s ({share / new:.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
