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

``--arch resnet18 --data fractals`` builds the 224-px "other data" attacker instead: a torchvision
ResNet-18 (its ImageNet stem, so it reads 224-px images natively) trained from random weights to
tell apart ``--classes`` procedural fractals (iterated function systems, the idea of FractalDB:
Kataoka et al., "Pre-training without Natural Images", ACCV 2020; written here from the paper's
description). Each class is one random IFS of 2-4 contractive affine maps whose attractor fills
enough of the square; each image jitters the maps, rotates, scales and places the attractor, and
paints each map's points in a random colour on a random background, at ``--size`` px. The file is a
torchvision state dict in safetensors (head included; the loader drops it), loaded with
``backbone="tv:resnet18@PATH"``:

    OMP_NUM_THREADS=1 python benchmarks/build_backbone.py --arch resnet18 --data fractals --size 64 \\
        --classes 32 --per-class 256 --epochs 2 --batch-size 64 --lr 0.1 --out /tmp/pt/fractal-resnet18-s64.safetensors

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


def fractal_systems(classes: int, rng: np.random.Generator, min_fill: float = 0.1,
                    max_tries: int = 500) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``classes`` iterated function systems ``(A [n, 2, 2], b [n, 2], p [n])``, n in 2..4.

    Each map is rescaled to a spectral norm in [0.35, 0.9] (contractive, so the chaos game
    converges); map probabilities follow ``|det A|`` as in FractalDB; a system is kept only if its
    attractor covers at least ``min_fill`` of a 48-px square (FractalDB's filling-rate test:
    thin, line-like attractors are dropped).
    """
    out = []
    while len(out) < classes:
        for _ in range(max_tries):
            n = int(rng.integers(2, 5))
            a = rng.uniform(-1, 1, (n, 2, 2))
            a *= (rng.uniform(0.35, 0.9, n) / np.linalg.svd(a, compute_uv=False)[:, 0])[:, None, None]
            b = rng.uniform(-1, 1, (n, 2))
            p = np.abs(np.linalg.det(a)) + 0.02
            p /= p.sum()
            pts, _ = _chaos_game(a[None], b[None], p, rng, chains=256, steps=24)
            q = _to_pixels(pts[0], 48, np.zeros(2) + 24, 48)
            img = np.zeros((48, 48), bool)
            img[q[:, 1], q[:, 0]] = True
            if img.mean() >= min_fill:
                out.append((a, b, p))
                break
        else:
            raise RuntimeError(f"no IFS with filling rate >= {min_fill} in {max_tries} tries")
    return out


def _chaos_game(a: np.ndarray, b: np.ndarray, p: np.ndarray, rng: np.random.Generator, *, chains: int,
                steps: int, burn: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Points ``[B, chains * steps, 2]`` of B jittered copies (``a [B, n, 2, 2]``, ``b [B, n, 2]``) of one
    IFS, and which map made each point; many short chains in parallel instead of one long one."""
    batch = len(a)
    x = rng.uniform(-1, 1, (batch, chains, 2))
    cum = np.cumsum(p)
    rows = np.arange(batch)[:, None]
    pts, maps = [], []
    for t in range(burn + steps):
        k = np.minimum(np.searchsorted(cum, rng.uniform(0, 1, (batch, chains))), len(p) - 1)
        x = np.einsum("bcij,bcj->bci", a[rows, k], x) + b[rows, k]
        if t >= burn:
            pts.append(x)
            maps.append(k)
    return np.concatenate(pts, 1), np.concatenate(maps, 1)


def _to_pixels(pts: np.ndarray, extent: float, centre: np.ndarray, size: int) -> np.ndarray:
    """Points -> integer pixel coordinates: the 1-99 percentile box scaled to ``extent`` px around ``centre``
    (the percentiles, not min/max, so a few stray chain points do not shrink the shape)."""
    lo, hi = np.percentile(pts, 1, 0), np.percentile(pts, 99, 0)
    xy = ((pts - (lo + hi) / 2) * (extent / max(float((hi - lo).max()), 1e-6)) + centre).round().astype(int)
    return xy[((xy >= 0) & (xy < size - 1)).all(1)] if len(xy) else xy


def fractal_images(systems: list, labels: np.ndarray, rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """``[N, 3, size, size]`` uint8: image i shows class ``labels[i]``'s IFS with maps jittered (x0.9-1.1,
    shifts sd 0.05), rotated at random, 60-95% of the side, placed near the centre, each map's points
    (2x2 px) in a random colour, on a random dark-to-bright background colour."""
    out = np.empty((len(labels), size, size, 3), np.float32)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        a, b, p = systems[c]
        n = len(idx)
        aj = a[None] * rng.uniform(0.9, 1.1, (n, len(p), 1, 1))
        bj = b[None] + rng.normal(0, 0.05, (n, len(p), 2))
        pts, maps = _chaos_game(aj, bj, p, rng, chains=64, steps=80)
        th = rng.uniform(0, 2 * np.pi, n)
        rot = np.stack([np.cos(th), -np.sin(th), np.sin(th), np.cos(th)], 1).reshape(n, 2, 2)
        pts = np.einsum("bij,bnj->bni", rot, pts)
        for j, i in enumerate(idx):
            lo, hi = np.percentile(pts[j], 1, 0), np.percentile(pts[j], 99, 0)
            xy = ((pts[j] - (lo + hi) / 2) * (rng.uniform(0.6, 0.95) * size / max(float((hi - lo).max()), 1e-6))
                  + rng.uniform(0.4, 0.6, 2) * size).round().astype(int)
            keep = ((xy >= 0) & (xy < size - 1)).all(1)
            colours = rng.uniform(0, 1, (len(p), 3))
            img = np.broadcast_to(rng.uniform(0, 1, 3) * rng.uniform(0, 1), (size, size, 3)).copy()
            for dy in (0, 1):
                for dx in (0, 1):
                    img[xy[keep, 1] + dy, xy[keep, 0] + dx] = colours[maps[j][keep]]
            out[i] = img
    return (out * 255).round().clip(0, 255).astype(np.uint8).transpose(0, 3, 1, 2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=["small-cnn", "resnet18"], default="small-cnn",
                   help="small-cnn (32-px 4-conv CNN) or resnet18 (torchvision, ImageNet stem; load with tv:resnet18@OUT)")
    p.add_argument("--data", choices=["digits", "fractals"], default="digits")
    p.add_argument("--size", type=int, default=32, help="side of the pretraining images")
    p.add_argument("--width", type=int, default=32, help="small-cnn width")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--copies", type=int, default=2, help="digits: coloured copies of each digit per epoch")
    p.add_argument("--classes", type=int, default=32, help="fractals: number of IFS classes")
    p.add_argument("--per-class", type=int, default=256, help="fractals: training images per class (rendered once)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    import torch
    import torch.nn.functional as F

    from uetransforms.models.encoders import _IMAGENET_MEAN, _IMAGENET_STD, file_sha256, save_small_cnn
    from uetransforms.models.networks import Normalise, SmallCNN

    if args.arch == "small-cnn" and args.size != 32:
        raise SystemExit("--arch small-cnn is saved as a 32-px encoder: use --size 32 (or --arch resnet18)")
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    if args.data == "digits":
        d = np.load(DIGITS)
        x_all, y_all = d["images"], d["labels"].astype(np.int64)
        order = rng.permutation(len(x_all))
        val, tr = order[:300], order[300:]
        x_val = torch.from_numpy(coloured_digits(x_all[val], np.random.default_rng(99), args.size))
        y_val = torch.from_numpy(y_all[val])
        classes, n_train = 10, len(tr) * args.copies

        def epoch_data() -> tuple:  # fresh colours and shifts every epoch
            idx = np.repeat(tr, args.copies)
            return torch.from_numpy(coloured_digits(x_all[idx], rng, args.size)), torch.from_numpy(y_all[idx])

        trained_on = (f"1,497 of the 1,797 bundled 8x8 digits (uetransforms/assets/digits.npz), upscaled to "
                      f"{args.size} px, random colours and shifts: no CIFAR-10 image or class")
        held_out = "300 held-out digits"
    else:
        classes = args.classes
        systems = fractal_systems(classes, rng)
        y_tr = np.repeat(np.arange(classes), args.per_class)
        x_tr, y_tr_t = torch.from_numpy(fractal_images(systems, y_tr, rng, args.size)), torch.from_numpy(y_tr)
        y_va = np.repeat(np.arange(classes), 25)
        x_val = torch.from_numpy(fractal_images(systems, y_va, np.random.default_rng(args.seed + 99), args.size))
        y_val, n_train = torch.from_numpy(y_va), len(y_tr)
        print(f"rendered {n_train} + {len(y_va)} fractal images at {args.size} px ({time.perf_counter() - t0:.0f} s)",
              flush=True)

        def epoch_data() -> tuple:  # the same renders; a random horizontal flip per image and epoch
            flip = torch.from_numpy(rng.random(n_train) < 0.5)
            return torch.where(flip[:, None, None, None], x_tr.flip(-1), x_tr), y_tr_t

        trained_on = (f"{n_train} procedural fractal images ({classes} random iterated function systems, "
                      f"FractalDB-style, {args.per_class} renders each) at {args.size} px: no natural image, "
                      "no CIFAR-10 image or class")
        held_out = f"{len(y_va)} held-out renders (25 per class, other jitter, pose and colours)"

    if args.arch == "small-cnn":
        net = SmallCNN(classes, 3, width=args.width)
        model = torch.nn.Sequential(Normalise(), net)
    else:
        from torchvision import models as tvm
        from torchvision.transforms import Normalize

        net = tvm.resnet18(num_classes=classes)
        # the tv: backbone loader normalises with ImageNet statistics, so train in that same space
        model = torch.nn.Sequential(Normalize(_IMAGENET_MEAN, _IMAGENET_STD), net)
    per_epoch = n_train // args.batch_size
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * per_epoch)
    t_train = time.perf_counter()
    acc = 0.0
    for ep in range(args.epochs):
        model.train()
        x, y = epoch_data()
        perm = torch.from_numpy(rng.permutation(n_train))
        for s in range(per_epoch):
            b = perm[s * args.batch_size : (s + 1) * args.batch_size]
            loss = F.cross_entropy(model(x[b].float().div(255)), y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            acc = float(torch.cat([model(x_val[k : k + 200].float().div(255)).argmax(1)
                                   for k in range(0, len(x_val), 200)]).eq(y_val).float().mean())
        print(f"epoch {ep + 1}/{args.epochs}: held-out accuracy {acc:.3f} (chance {1 / classes:.3f}; "
              f"{time.perf_counter() - t_train:.0f} s training)", flush=True)
    meta = {"trained_on": trained_on, "validation": f"{held_out}: accuracy {acc:.4f} (chance {1 / classes:.4f})",
            "train_seconds": f"{time.perf_counter() - t_train:.0f}",
            "recipe": json.dumps({k: v for k, v in vars(args).items() if k != "out"})}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)) or ".", exist_ok=True)
    if args.arch == "small-cnn":
        sha = save_small_cnn(net, args.out, extra=meta)
    else:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, args.out,
                  metadata={"arch": "torchvision:resnet18", **meta})
        sha = file_sha256(args.out)
    print(f"wrote {args.out} (sha256 {sha}; load with backbone="
          f"{'tv:resnet18@' + args.out if args.arch == 'resnet18' else args.out!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
