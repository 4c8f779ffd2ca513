"""Build an "other data" backbone offline: a small CNN pretrained on data that holds none of CIFAR-10's
classes (the 1,797 handwritten 8x8 digits bundled in ``uetransforms/assets/digits.npz``), for the
pretrained attackers of ``ue.evaluate(..., attacker="linear-probe" | "finetune", backbone=PATH)``.

No pretrained photo model can be downloaded here, so this stands in for "a backbone pretrained
elsewhere": other images (digits, not objects), other labels (0-9 digits), other statistics. The
digits are upscaled to 32 px and painted with a random foreground and background colour per image
(so the network learns edges and shapes in colour images, not one grey level), with random
shifts; the output file is the safetensors format of
:func:`uetransforms.models.encoders.save_small_cnn` (load it with ``backbone=PATH``).

    OMP_NUM_THREADS=1 python benchmarks/build_backbone.py --out /tmp/pt/digits-cnn-w32.safetensors

A backbone "of the same kind of images" is ``benchmarks/build_surrogate.py`` (CIFAR-10 rows that
the harness never protects).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DIGITS = os.path.join(HERE, "..", "uetransforms", "assets", "digits.npz")


def coloured_digits(images: np.ndarray, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """``[N, 8, 8]`` 0..16 digits -> ``[N, 3, size, size]`` uint8: random fore/background colours, shifted."""
    import torch
    import torch.nn.functional as F

    ink = torch.from_numpy(images.astype(np.float32) / 16.0)[:, None]
    inner = size - 8
    ink = F.interpolate(ink, size=(inner, inner), mode="bilinear", align_corners=False).clamp(0, 1)
    canvas = torch.zeros(len(images), 1, size, size)
    offs = rng.integers(0, size - inner + 1, (len(images), 2))
    for i, (dy, dx) in enumerate(offs):
        canvas[i, :, dy : dy + inner, dx : dx + inner] = ink[i]
    fg = torch.from_numpy(rng.uniform(0, 1, (len(images), 3, 1, 1)).astype(np.float32))
    bg = torch.from_numpy(rng.uniform(0, 1, (len(images), 3, 1, 1)).astype(np.float32))
    out = canvas * fg + (1 - canvas) * bg
    return (out * 255).round().clamp(0, 255).to(torch.uint8).numpy()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--copies", type=int, default=2, help="coloured copies of each digit per epoch")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    import torch
    import torch.nn.functional as F

    from uetransforms.models.encoders import save_small_cnn
    from uetransforms.models.networks import Normalise, SmallCNN

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    d = np.load(DIGITS)
    x_all, y_all = d["images"], d["labels"].astype(np.int64)
    order = rng.permutation(len(x_all))
    val, tr = order[:300], order[300:]
    x_val = torch.from_numpy(coloured_digits(x_all[val], np.random.default_rng(99)))
    y_val = torch.from_numpy(y_all[val])
    net = SmallCNN(10, 3, width=args.width)
    model = torch.nn.Sequential(Normalise(), net)
    per_epoch = (len(tr) * args.copies) // args.batch_size
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * per_epoch)
    t0 = time.perf_counter()
    for ep in range(args.epochs):
        model.train()
        idx = np.repeat(tr, args.copies)
        x = torch.from_numpy(coloured_digits(x_all[idx], rng))  # fresh colours and shifts every epoch
        y = torch.from_numpy(y_all[idx])
        perm = torch.from_numpy(rng.permutation(len(idx)))
        for s in range(per_epoch):
            b = perm[s * args.batch_size : (s + 1) * args.batch_size]
            loss = F.cross_entropy(model(x[b].float().div(255)), y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            acc = float((model(x_val.float().div(255)).argmax(1) == y_val).float().mean())
        print(f"epoch {ep + 1}/{args.epochs}: held-out digit accuracy {acc:.3f} ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    meta = {"trained_on": "1,497 of the 1,797 bundled 8x8 digits (uetransforms/assets/digits.npz), upscaled to 32 px, "
                          "random colours and shifts: no CIFAR-10 image or class",
            "validation": f"300 held-out digits: accuracy {acc:.4f}",
            "recipe": json.dumps({k: v for k, v in vars(args).items() if k != "out"})}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)) or ".", exist_ok=True)
    sha = save_small_cnn(net, args.out, extra=meta)
    print(f"wrote {args.out} (sha256 {sha})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
