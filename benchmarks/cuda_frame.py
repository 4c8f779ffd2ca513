"""cuda's border frame and image quality at photo-like size, per setting (zero vs reflect padding, k).

CIFAR-10 train rows, upscaled and stored as JPEG exactly as ``bench_protection.py --resolution``
does (its ``upscale_jpeg``), protected by a ``cuda`` bank fitted at that size; prints the mean grey
level of each pixel ring at distance 0, 1, ... from the border (a zero-padded filter darkens the
outer ``k // 2`` rings: the frame an edge-pixel detector sees), the interior's, and PSNR (SSIM of
the same banks is in ``bench_protection.py``'s JSON).

    python benchmarks/cuda_frame.py --resolution 96 --rows 500
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SETTINGS = {
    "k3 zeros (paper CIFAR)": {},
    "k3 reflect": {"padding": "reflect"},
    "k9 pb0.06 zeros (ImageNet-100)": {"kernel_size": 9, "blur_parameter": 0.06},
    "k9 pb0.06 reflect": {"kernel_size": 9, "blur_parameter": 0.06, "padding": "reflect"},
}


def rings(y, count: int) -> list[float]:
    """Mean value of the pixels at distance ``d`` from the border, ``d = 0 .. count - 1``."""
    import torch

    h, w = y.shape[-2:]
    out = []
    for d in range(count):
        m = torch.zeros((h, w), dtype=torch.bool)
        m[d:h - d, d:w - d] = True
        m[d + 1:h - d - 1, d + 1:w - d - 1] = False
        out.append(round(y.float()[..., m].mean().item(), 1))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--resolution", type=int, default=96)
    p.add_argument("--rows", type=int, default=500)
    p.add_argument("--jpeg-quality", type=int, default=95)
    p.add_argument("--bank-seed", type=int, default=1234)
    p.add_argument("--data", default=os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "cifar10")))
    p.add_argument("--out", default=None, help="optional JSON with every number")
    args = p.parse_args(argv)

    import datasets
    import torch

    import uetransforms as ue
    from uetransforms.evaluation.quality import psnr

    sys.path.insert(0, HERE)
    from bench_protection import upscale_jpeg

    ds = datasets.Dataset.from_parquet(os.path.join(args.data, "train-00000-of-00001.parquet")).select(range(args.rows))
    ds = upscale_jpeg(ds, "img", args.resolution, args.jpeg_quality)
    imgs = [np.asarray(im.convert("RGB")) for im in ds["img"]]
    labels = ds["label"]
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
    data = {"image": imgs, "label": labels}
    rows = {"clean": {"rings": rings(x, 6), "interior": round(x.float()[..., 8:-8, 8:-8].mean().item(), 1)}}
    print(f"clean: rings {rows['clean']['rings']} interior {rows['clean']['interior']}", flush=True)
    for name, params in SETTINGS.items():
        y = ue.apply(ue.fit("cuda", data, seed=args.bank_seed, **params), x, labels)
        row = {"params": params, "rings": rings(y, 6), "interior": round(y.float()[..., 8:-8, 8:-8].mean().item(), 1),
               "psnr_db": round(psnr(x, y).mean().item(), 2)}
        rows[name] = row
        print(f"{name}: rings {row['rings']} interior {row['interior']} PSNR {row['psnr_db']} dB", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"command": "python benchmarks/cuda_frame.py " + " ".join(sys.argv[1:] if argv is None else argv),
                       "rows": args.rows, "resolution": args.resolution, "stored_as": f"JPEG q{args.jpeg_quality}",
                       "results": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
