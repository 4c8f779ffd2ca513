"""Fit one method on the harness's protected rows and save its bank, so that several evaluations
(``bench_protection.py --bank METHOD=PATH``, e.g. with and without ``--label-map``) share one fit.

    python benchmarks/fit_bank.py clusters --no-labels --param clusters.surrogate=small-cnn \\
        --param clusters.checkpoint=/tmp/uet-surrogate/small-cnn-w32.safetensors --out /tmp/uc.bank.arrow

On the photo-size task of the GPU rows (a class subset, upscaled and stored as JPEG exactly as
``bench_protection.py`` does with the same flags, so ``--bank`` finds the same rows):

    python benchmarks/fit_bank.py cudatap --classes 5-9 --resolution 224 --device cuda \
        --param cudatap.backbone=tv:resnet34@/tmp/gpu224/fit224-resnet34.safetensors --out /tmp/ct224.bank.arrow

Prints the fit time (with ``uptime``'s load: 2 cores are shared) and the bank's ``info``; for a
cluster bank also the purity of its clusters against the CIFAR-10 labels and the animal/vehicle
split (labels read only for this report, after the fit).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_protection import DEFAULT_DATA, parse_classes, parse_params, select_classes, upscale_jpeg  # noqa: E402


def cluster_purity(bank, train) -> dict[str, float]:
    """Share of rows whose label is their cluster's majority label (CIFAR-10 and animal/vehicle)."""
    import numpy as np

    from uetransforms.models.assign import ClusterAssigner
    from uetransforms.core.data import FitData

    ids = ClusterAssigner(bank)(list(FitData(train, image_column="img", label_column=None).images()))
    labels = np.asarray(train["label"])
    vehicle = np.isin(labels, (0, 1, 8, 9)).astype(np.int64)  # airplane, automobile, ship, truck
    out = {}
    for name, lab in (("cifar10", labels), ("animal_vehicle", vehicle)):
        hits = sum(np.bincount(lab[ids == c]).max() for c in np.unique(ids))
        out[name] = round(float(hits / len(lab)), 4)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("method")
    p.add_argument("--param", action="append", default=[], metavar="METHOD.NAME=VALUE")
    p.add_argument("--no-labels", action="store_true", help="fit with label_column=None (label-agnostic methods)")
    p.add_argument("--train-size", type=int, default=10_000)
    p.add_argument("--bank-seed", type=int, default=1234)
    p.add_argument("--classes", default=None, metavar="SPEC",
                   help="keep only the --train-size rows of these CIFAR-10 classes, relabelled 0..k-1 "
                        "(bench_protection.py --classes)")
    p.add_argument("--resolution", type=int, default=None,
                   help="upscale to this side and store as JPEG first (bench_protection.py --resolution)")
    p.add_argument("--jpeg-quality", type=int, default=95, help="--resolution: quality of the stored JPEGs")
    p.add_argument("--device", default="cpu", help="where the fit runs (cpu, cuda)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    import datasets
    import torch

    import uetransforms as ue

    torch.set_num_threads(args.threads)
    params = parse_params(args.param).get(args.method, {})
    train = datasets.Dataset.from_parquet(os.path.join(args.data, "train-00000-of-00001.parquet"))
    train = train.select(range(args.train_size))
    if args.classes is not None:
        train = select_classes(train, "label", parse_classes(args.classes), f"train rows [0, {args.train_size}) "
                               "(--train-size)")
    if args.resolution:
        train = upscale_jpeg(train, "img", args.resolution, args.jpeg_quality)
    t0 = time.perf_counter()
    bank = ue.fit(args.method, train, image_column="img", label_column=None if args.no_labels else "label",
                  seed=args.bank_seed, device=args.device, **params)
    fit_s = time.perf_counter() - t0
    bank.save(args.out)
    load = os.getloadavg()
    report = {"fit_seconds": round(fit_s, 1), "load_average": [round(v, 1) for v in load],
              "params": bank.params, "info": bank.info}
    if bank.keying == "cluster" and not isinstance(params.get("encoder"), torch.nn.Module):
        report["purity"] = cluster_purity(bank, train)
    print(json.dumps(report, indent=1, default=str))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
