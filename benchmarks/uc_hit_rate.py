"""Cheap check of Unlearnable Clusters noise before a harness run: the target-hit rate.

Fits ``clusters`` (no labels) on the first ``--fit-rows`` CIFAR-10 train rows and reports how
often perturbed images land on their *target* centre (nearest K-means centre of the surrogate's
features == ``(cluster + target_offset) mod K``; chance 1/K):

* ``hit_fit``: on the fitted rows (what ``bank.info["target_hit_rate"]`` records, <= 64 per cluster);
* ``hit_heldout``: on the next ``--heldout`` rows, never seen by the fit, each perturbed with the
  noise of the cluster its clean features fall in (does the noise carry target features or only
  fit its own training images?);
* ``moved_off_own_heldout``: share of perturbed held-out rows no longer nearest their own centre;
* cluster purity against the CIFAR-10 labels, PSNR of the perturbed images and the fit time.

    OMP_NUM_THREADS=1 python benchmarks/uc_hit_rate.py --param clusters.mode=direct \\
        --param clusters.steps=300 --param clusters.per_cluster=32

The surrogate defaults to the offline small CNN of ``build_surrogate.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_protection import DEFAULT_DATA, parse_params  # noqa: E402

SURROGATE = "/tmp/uet-surrogate/small-cnn-w32.safetensors"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--param", action="append", default=[], metavar="clusters.NAME=VALUE")
    p.add_argument("--fit-rows", type=int, default=2000)
    p.add_argument("--heldout", type=int, default=1000)
    p.add_argument("--bank-seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--checkpoint", default=SURROGATE)
    p.add_argument("--out", default=None, help="also save the bank here")
    args = p.parse_args(argv)

    import datasets
    import numpy as np
    import torch

    import uetransforms as ue
    from uetransforms.models.assign import embed_images, normalise
    from uetransforms.core.data import FitData
    from uetransforms.models.kmeans import assign

    torch.set_num_threads(args.threads)
    params = {"surrogate": "small-cnn", "checkpoint": args.checkpoint, **parse_params(args.param).get("clusters", {})}
    train = datasets.Dataset.from_parquet(os.path.join(args.data, "train-00000-of-00001.parquet"))
    fit_ds = train.select(range(args.fit_rows))
    held_ds = train.select(range(args.fit_rows, args.fit_rows + args.heldout))
    t0 = time.perf_counter()
    bank = ue.fit("clusters", fit_ds, image_column="img", label_column=None, seed=args.bank_seed, **params)
    fit_s = time.perf_counter() - t0
    if args.out:
        bank.save(args.out)

    from uetransforms.algorithms.clusters import _surrogate

    enc = _surrogate(params["surrogate"], params.get("weights", "default"), params.get("checkpoint"),
                     params.get("encoder"), bool(params.get("allow_random_surrogate", False)), 0, torch.device("cpu"))
    norm = bank.info["feature_norm"]
    cent = torch.from_numpy(bank.tensors["centroid"])
    delta = torch.from_numpy(bank.tensors["delta"])
    targets = torch.tensor(bank.info["targets"])
    k = len(cent)

    def features(imgs: np.ndarray) -> torch.Tensor:
        return normalise(embed_images(enc, imgs, device=torch.device("cpu")), norm)

    held = FitData(held_ds, image_column="img", label_column=None).images()
    own, _ = assign(features(held), cent)
    xp = (torch.from_numpy(held).float() / 255 + delta[own]).clamp(0, 1)
    xq = (xp * 255).round().to(torch.uint8).numpy()
    moved, _ = assign(features(xq), cent)
    hit_held = float((moved == targets[own]).float().mean())
    mse = ((torch.from_numpy(xq).float() - torch.from_numpy(held).float()) ** 2).mean()
    psnr = float(10 * torch.log10(255.0 ** 2 / mse))

    fit_imgs = FitData(fit_ds, image_column="img", label_column=None).images()
    fit_own, _ = assign(features(fit_imgs), cent)
    labels = np.asarray(fit_ds["label"])
    purity = sum(np.bincount(labels[fit_own.numpy() == j], minlength=10).max() for j in range(k)
                 if (fit_own.numpy() == j).any()) / len(labels)
    print(json.dumps({
        "params": {n: v for n, v in params.items() if n not in ("checkpoint",)},
        "fit_rows": args.fit_rows, "heldout_rows": args.heldout, "fit_seconds": round(fit_s, 1),
        "load_average": [round(v, 1) for v in os.getloadavg()],
        "hit_fit": bank.info["target_hit_rate"], "hit_heldout": round(hit_held, 4), "chance": round(1 / k, 4),
        "moved_off_own_heldout": round(float((moved != own).float().mean()), 4),
        "loss_first_last": bank.info["loss_first_last"], "purity": round(float(purity), 4), "psnr_db": round(psnr, 2),
        "mean_abs_delta_255": round(float(delta.abs().mean()) * 255, 2),
    }, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
