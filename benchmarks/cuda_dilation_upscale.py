"""Is ``cuda`` with ``dilation=s`` on an image upscaled ``s`` times the upscaled 32-px ``cuda`` image?

Bicubic upscaling by an integer factor ``s`` computes each output pixel from the input pixels around
it with weights that depend only on its phase (position mod ``s``), so it commutes with a filter
whose taps are ``s`` pixels apart: up to the border, the max normalisation and the uint8 rounding,
``cuda(dilation=s)`` at ``s * 32`` px gives the 32-px ``cuda`` image, upscaled. This script measures
how close (PSNR over the whole image and away from the border), beside contiguous filters at the
large size, on CIFAR-10 training rows (the images of the 96-px rows in ``RESULTS.md``, "96 px with
dilated filters (session 9)"):

    OMP_NUM_THREADS=1 python benchmarks/cuda_dilation_upscale.py --rows 200 --scale 3
"""

from __future__ import annotations

import argparse
import io
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "cifar10"))


def psnr(a: np.ndarray, b: np.ndarray, margin: int = 0) -> float:
    """Mean over images of the PSNR between uint8 ``[N, H, W, C]`` arrays, ``margin`` px in from each side."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    if margin:
        a, b = a[:, margin:-margin, margin:-margin], b[:, margin:-margin, margin:-margin]
    mse = ((a - b) ** 2).mean(axis=(1, 2, 3))
    return float(np.mean(10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=DEFAULT_DATA, help="folder with CIFAR-10's train-00000-of-00001.parquet")
    p.add_argument("--rows", type=int, default=200, help="first N training rows")
    p.add_argument("--scale", type=int, default=3, help="integer upscale factor = the dilation tested")
    p.add_argument("--kernel-sizes", type=int, nargs="+", default=[3, 5])
    p.add_argument("--bank-seed", type=int, default=1234)
    p.add_argument("--margin", type=int, default=12, help="pixels left out at each side for the interior PSNR")
    args = p.parse_args(argv)

    import pyarrow.parquet as pq
    import torch
    from PIL import Image

    import uetransforms as ue
    from uetransforms.core import kernels

    table = pq.read_table(os.path.join(args.data, "train-00000-of-00001.parquet")).slice(0, args.rows)
    small = np.stack([np.asarray(Image.open(io.BytesIO(v["bytes"])).convert("RGB")) for v in table.column("img").to_pylist()])
    labels = table.column("label").to_pylist()
    side = small.shape[1] * args.scale

    def up(a: np.ndarray) -> np.ndarray:
        return np.stack([np.asarray(Image.fromarray(i).resize((side, side), Image.BICUBIC)) for i in a])

    def conv(a: np.ndarray, w: torch.Tensor, padding: str, dilation: int) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).contiguous()
        return kernels.convolve(x, w, padding=padding, dilation=dilation).permute(0, 2, 3, 1).numpy()

    large = up(small)
    print(f"{args.rows} CIFAR-10 training rows, {small.shape[1]} -> {side} px (bicubic), bank seed {args.bank_seed}; "
          f"PSNR to 'cuda at {small.shape[1]} px, then upscaled' (whole image / {args.margin} px in)")
    for k in args.kernel_sizes:
        bank = ue.fit("cuda", {"image": list(small), "label": labels}, seed=args.bank_seed, kernel_size=k)
        w = torch.from_numpy(np.array(bank.tensors["weight"]))[labels]
        for padding in ("reflect", "zeros"):
            ref = up(conv(small, w, padding, 1))
            dil, con = conv(large, w, padding, args.scale), conv(large, w, padding, 1)
            print(f"k={k} {padding:7s}: dilation {args.scale} at {side} px {psnr(dil, ref):.1f} / "
                  f"{psnr(dil, ref, args.margin):.1f} dB; contiguous at {side} px {psnr(con, ref):.1f} / "
                  f"{psnr(con, ref, args.margin):.1f} dB")


if __name__ == "__main__":
    main()
