"""Throughput of protection inside ``datasets.map``, against the cost of the map itself.

Side by side, on the first N images of CIFAR-10 (JPEG in the source Parquet):

* identity map: a batched function that decodes and returns new PIL images, so ``datasets``
  re-encodes them as PNG, exactly what a protected map has to do anyway;
* protect map: ``ds.map(Protect(bank), batched=True)`` for a ``cuda`` (convolution) bank and a
  ``random`` (additive) bank, same batch size;
* per-example: ``ds.map(Protect(bank))`` without batching, and a Python loop calling
  ``ue.apply`` once per pre-decoded image;
* the kernel alone: ``uetransforms.core.apply.Applier`` on a pre-decoded uint8 ``[N, 3, 32, 32]`` tensor.

Every map runs with ``load_from_cache_file=False, keep_in_memory=True``; each timing is the best
of ``--repeats``. Run from the repository root:

    python benchmarks/bench_protect.py --data ../shared/data/cifar10/train-00000-of-00001.parquet
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.join(REPO, "..", "shared", "data", "cifar10", "train-00000-of-00001.parquet")


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for one call. On a shared machine CPU time
    is the steadier measure: it does not count time spent waiting for a core."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def best_interleaved(repeats: int, fns: dict) -> dict[str, tuple[float, float]]:
    """Best wall and best CPU time of each function; repeats are interleaved (a, b, c, a, b, c...)
    so a change in background load hits every variant alike."""
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            runs[key].append(timed(fn))
    return {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in runs.items()}


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("-n", type=int, default=10_000, help="images (first N rows)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--per-example-n", type=int, default=None,
                    help="rows for the non-batched map (default: all N)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's own, = cores); "
                         "1 avoids oversubscription on a busy machine")
    ap.add_argument("--profile", default=None, metavar="FILE", help="cProfile one protect map (cuda) into FILE")
    args = ap.parse_args()

    import datasets
    from PIL import Image

    import uetransforms as ue
    from uetransforms.core.apply import Applier
    from uetransforms.core.images import to_chw

    datasets.disable_progress_bars()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"load before: {load_avg()}  cpus: {os.cpu_count()}  torch threads: {torch.get_num_threads()}  "
          f"{platform.processor() or platform.machine()}")
    src = datasets.Dataset.from_parquet(args.data)
    ds = src.select(range(min(args.n, len(src)))).flatten_indices(keep_in_memory=True)
    n = len(ds)
    img, lab = "img", "label"
    banks = {
        "cuda": ue.fit("cuda", ds, image_column=img, label_column=lab, seed=1),
        "random": ue.fit("random", ds, image_column=img, label_column=lab, seed=1),
    }
    mapkw = dict(load_from_cache_file=False, keep_in_memory=True)

    def identity(batch):
        # Decode (datasets already did) and hand back *new* images: datasets must PNG-encode them.
        return {img: [Image.fromarray(np.asarray(im)) for im in batch[img]]}

    batched = {"identity": lambda: ds.map(identity, batched=True, batch_size=args.batch_size, **mapkw)}
    for key, bank in banks.items():
        fn = ue.Protect(bank, image_column=img, label_column=lab)
        batched[key] = lambda fn=fn: ds.map(fn, batched=True, batch_size=args.batch_size, **mapkw)
    tb = best_interleaved(args.repeats, batched)

    ne = min(args.per_example_n or n, n)
    small = ds.select(range(ne)) if ne < n else ds
    each = {key: (lambda fn=ue.Protect(bank, image_column=img, label_column=lab): small.map(fn, **mapkw))
            for key, bank in banks.items()}
    te = best_interleaved(max(1, args.repeats - 1), each)

    # Pre-decoded pixels for the kernel-only timings.
    labels = np.asarray(ds[lab], dtype=np.int64)
    x = torch.from_numpy(np.stack([to_chw(im, channels=3) for im in ds[img]]))
    loops, kernels = {}, {}
    for key, bank in banks.items():
        def loop(bank=bank):
            for i in range(ne):
                ue.apply(bank, x[i:i + 1], labels[i:i + 1])
        loops[key] = loop
        app = Applier(bank, "cpu")
        rows = bank.rows_for(labels)

        def kernel(app=app, rows=rows):
            for s in range(0, n, args.batch_size):
                app(x[s:s + args.batch_size], rows[s:s + args.batch_size])
        kernel()  # warm-up: moves the bank to the device once
        kernels[key] = kernel
    tl = best_interleaved(max(1, args.repeats - 1), loops)
    tk = best_interleaved(args.repeats, kernels)

    results = [("identity map (decode + new PIL, PNG re-encode), batched", tb["identity"], n)]
    results += [(f"protect map, {k} bank, batched", tb[k], n) for k in banks]
    results += [(f"protect map, {k} bank, per example (batched=False)", te[k], ne) for k in banks]
    results += [(f"Python loop, ue.apply per image, {k} bank (pre-decoded)", tl[k], ne) for k in banks]
    results += [(f"kernel only, Applier, {k} bank, batch {args.batch_size} (pre-decoded uint8)", tk[k], n)
                for k in banks]

    print(f"load after:  {load_avg()}")
    print(f"\n{n} images (per-example rows: {ne}), batch_size={args.batch_size}, torch threads "
          f"{torch.get_num_threads()}; best of {args.repeats} interleaved runs (per-example and loop rows: "
          f"best of {max(1, args.repeats - 1)})\n")
    print("| what | images | wall s | CPU s | images/s (wall) | images/s (CPU) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (w, c), count in results:
        print(f"| {name} | {count} | {w:.2f} | {c:.2f} | {count / w:,.0f} | {count / c:,.0f} |")
    print()
    for key in banks:
        parts = []
        for label, i in (("wall", 0), ("CPU", 1)):
            parts.append(
                f"{label}: protect/identity = {tb[key][i] / tb['identity'][i]:.3f}x, "
                f"per-example/batched map = {(te[key][i] / ne) / (tb[key][i] / n):.2f}x, "
                f"per-image apply loop/batched kernel = {(tl[key][i] / ne) / (tk[key][i] / n):.1f}x, "
                f"kernel share of protect map = {tk[key][i] / tb[key][i]:.1%}")
        print(f"- {key}: " + "; ".join(parts))

    if args.profile:
        import cProfile

        fn = ue.Protect(banks["cuda"], image_column=img, label_column=lab)
        cProfile.runctx("ds.map(fn, batched=True, batch_size=bs, **mapkw)", globals(),
                        {"ds": ds, "fn": fn, "bs": args.batch_size, "mapkw": mapkw}, args.profile)
        print(f"\nprofile written to {args.profile} (python -m pstats {args.profile})")


if __name__ == "__main__":
    main()
