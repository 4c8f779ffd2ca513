"""Clean accuracy vs cost of ``cnn-small``'s stem stride at photo-like size (the choice behind
:func:`uetransforms.models.networks.cnn_small_stem_stride`).

Runs ``bench_protection.py --methods clean`` once per ``--stride``, with the stride rule replaced
by that stride for every image size; every other flag goes to bench_protection unchanged. Example
(the session-8 measurement, benchmarks/RESULTS.md "96 px from scratch at a learning budget"):

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/cnn_small_stem.py --stride 2 3 -- \\
        --threads 1 --defences none --resolution 96 --train-size 2000 --test-size 1000 --epochs 4 \\
        --out benchmarks/results/res96s8-stem.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stride", type=int, nargs="+", required=True, help="first-convolution strides to compare")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="after --: bench_protection.py flags (--out included)")
    args = p.parse_args(argv)
    rest = [a for a in args.rest if a != "--"]
    if "--out" not in rest:
        raise SystemExit("pass bench_protection's --out after --; one file per stride is written beside it")
    out = rest[rest.index("--out") + 1]

    import bench_protection

    from uetransforms.models import networks

    rows = []
    for stride in args.stride:
        networks.cnn_small_stem_stride = lambda image_size, s=stride: s  # build_model reads the module global
        path = f"{os.path.splitext(out)[0]}-stride{stride}.json"
        flags = list(rest)
        flags[flags.index("--out") + 1] = path
        bench_protection.main(["--methods", "clean", *flags])
        with open(path) as fh:
            row = json.load(fh)["results"][0]
        rows.append({"stride": stride, "test_accuracy": row["test_accuracy"], "peak_accuracy": row["peak_accuracy"],
                     "train_accuracy": row["train_accuracy"], "train_seconds": row["train_seconds"], "curve": row["curve"]})
    for r in rows:
        print(f"stride {r['stride']}: clean {r['test_accuracy']:.3f} (peak {r['peak_accuracy']:.3f}), "
              f"train acc {r['train_accuracy']:.3f}, {r['train_seconds']:.0f} s")
    with open(out, "w") as fh:
        json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
