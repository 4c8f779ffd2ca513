"""Cluster purity of an encoder on the protected rows: the cheap proxy for label-free keying (issue 25).

Embeds CIFAR-10 train rows [0, 10000) once with ``--encoder`` (as ``ue.fit(..., encoder=)`` does),
runs K-means (:func:`uetransforms.models.assign.fit_clusters`, the keying's own clustering) for
each K and feature normalisation, and prints the purity against the true labels and the 5 pairs
of :data:`uetransforms.evaluation.labelfree.CIFAR10_PAIRS` (the share of images whose cluster's
most common label is their own). No training: seconds, not minutes.

When the encoder file keeps its classifier head (``fc.weight``/``fc.bias``, as
build_tv_surrogate.py writes it), the purity of the head's own argmax ("encoder prediction") is
printed beside K-means: the reference a clustering of those features is judged against.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 nice -n 5 python benchmarks/labelfree_purity.py \\
        --encoder /tmp/uet-surrogate/resnet18-c10.safetensors --k 10 20 50 --out benchmarks/results/labelfree-purity.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_labelfree import DEFAULT_DATA, purity  # noqa: E402


def _head(path: str):
    """``(weight, bias)`` of the ``fc`` classifier an encoder file keeps, else None."""
    if not (os.path.isfile(path) and path.endswith(".safetensors")):
        return None
    from safetensors import safe_open

    with safe_open(path, framework="pt") as fh:
        if not {"fc.weight", "fc.bias"} <= set(fh.keys()):
            return None
        return fh.get_tensor("fc.weight").float(), fh.get_tensor("fc.bias").float()


def load_rows(data: str, rows: int):
    """CIFAR-10 train rows [0, rows) as uint8 CHW images and their labels (the protected rows)."""
    import numpy as np
    import pyarrow.parquet as pq
    from PIL import Image

    table = pq.read_table(os.path.join(data, "train-00000-of-00001.parquet")).slice(0, rows)
    imgs = np.stack([np.asarray(Image.open(io.BytesIO(v["bytes"])).convert("RGB")).transpose(2, 0, 1)
                     for v in table.column("img").to_pylist()])
    return imgs, np.asarray(table.column("label").to_pylist())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encoder", required=True)
    p.add_argument("--k", type=int, nargs="+", default=[10, 20, 50])
    p.add_argument("--norm", nargs="+", default=["l2", "none"], choices=["l2", "none"])
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from uetransforms.evaluation.labelfree import CIFAR10_PAIRS
    from uetransforms.models import encoders
    from uetransforms.models.assign import embed_images, normalise
    from uetransforms.models.kmeans import kmeans

    torch.set_num_threads(1)
    imgs, y = load_rows(args.data, args.rows)
    pairs = np.asarray(CIFAR10_PAIRS.label_map)[y]
    enc = encoders.resolve(args.encoder)
    t0 = time.perf_counter()
    feats = embed_images(enc, imgs, device=torch.device("cpu"))
    embed_s = time.perf_counter() - t0
    rows = []
    head = _head(args.encoder)
    if head is not None:
        pred = (feats @ head[0].T + head[1]).argmax(1).numpy()
        rows.append({"norm": "head-argmax", "k": int(head[0].shape[0]), "purity_true": purity(pred, y),
                     "purity_pairs": purity(pred, pairs)})
        print(f"encoder's class head (argmax), {rows[-1]['k']} classes: purity true {rows[-1]['purity_true']:.3f}  "
              f"pairs {rows[-1]['purity_pairs']:.3f}", flush=True)
    for norm in args.norm:
        f = normalise(feats, norm)
        for k in args.k:
            # the same call fit_clusters makes (seed = the bank seed)
            labels = kmeans(f, k, seed=args.seed).labels.numpy()
            rows.append({"norm": norm, "k": k, "purity_true": purity(labels, y), "purity_pairs": purity(labels, pairs)})
            print(f"norm {norm:<4} K={k:<3} purity true {rows[-1]['purity_true']:.3f}  pairs "
                  f"{rows[-1]['purity_pairs']:.3f}", flush=True)
    out = {"command": "python benchmarks/labelfree_purity.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "encoder": enc.identity() if hasattr(enc, "identity") else str(enc), "rows_embedded": len(imgs),
           "embed_seconds": round(embed_s, 1), "results": rows}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=2)
    print(f"embedded {len(imgs)} rows in {embed_s:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
