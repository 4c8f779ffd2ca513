"""AR noise synthesis at photo size: the per-pixel raster loop it replaced vs the anti-diagonal recursion.

Both run in this process, alternated, on the same coefficients and seeds; the script also checks
that the two give the same bytes (the bank format did not change). The raster loop is the
library's synthesiser before the vectorisation, kept verbatim in ``tests/test_ops.py``.

Run:
    OMP_NUM_THREADS=1 python benchmarks/bench_ar.py --size 384 --batch 1 8 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

from uetransforms.core import kernels

# The baseline is the test suite's reference copy of the old synthesiser (one copy in the repo).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from test_ops import _raster_synth_ar as raster_synth_ar  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    raw = rng.uniform(-1, 1, (max(args.batch), 3, 8))
    coef = (raw / np.abs(raw).sum(-1, keepdims=True) * 0.9).astype(np.float32)  # stable processes
    shape = (3, args.size, args.size)
    rows = []
    for b in args.batch:
        seeds = [kernels.sample_seed(1, f"img-{i}") for i in range(b)]
        times = {"raster": [], "diagonal": []}
        outs = {}
        for _ in range(args.repeats):  # alternated, so machine load hits both alike
            for name, fn in (("raster", raster_synth_ar), ("diagonal", kernels.synth_ar)):
                t = time.perf_counter()
                outs[name] = fn(coef[:b], seeds, shape, epsilon=1.0, norm="l2")
                times[name].append(time.perf_counter() - t)
        same = outs["raster"].tobytes() == outs["diagonal"].tobytes()
        best = {k: min(v) for k, v in times.items()}
        rows.append({"size": args.size, "batch": b, "raster_s": round(best["raster"], 3),
                     "diagonal_s": round(best["diagonal"], 3), "speedup": round(best["raster"] / best["diagonal"], 1),
                     "diagonal_images_per_s": round(b / best["diagonal"], 1), "same_bytes": same})
        print(json.dumps(rows[-1]))
    meta = {"python": platform.python_version(), "numpy": np.__version__, "load": os.getloadavg(),
            "omp_threads": os.environ.get("OMP_NUM_THREADS")}
    print(json.dumps(meta))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"rows": rows, "meta": meta}, f, indent=1)


if __name__ == "__main__":
    main()
