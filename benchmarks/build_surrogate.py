"""Build the offline *semantic* surrogate the CLIP/UC benchmarks use: a small CNN trained on
CIFAR-10 rows the protection harness never touches.

Why: no pretrained weights can be downloaded on this machine, and a random-init surrogate clusters
by colour, so it measures nothing about Unlearnable Clusters. The honest stand-in for "a model
pretrained elsewhere" is a model trained on *disjoint* data. The harness
(``bench_protection.py``) protects train rows ``[0, 10000)`` and tests on test rows ``[0, 2000)``;
this script trains on train rows ``[30000, 50000)`` (with their labels, as an ImageNet model was
trained on ImageNet's) and validates on test rows ``[5000, 10000)``.

The output is a safetensors file (weights + JSON metadata, nothing pickled) that
``uetransforms.models.encoders.load("small-cnn", checkpoint=PATH)`` turns into a frozen encoder whose
features are the classifier's penultimate layer (global-average-pooled conv features, the input
of its linear head), as UC's code uses ResNet-50's input to ``fc``.

    OMP_NUM_THREADS=1 python benchmarks/build_surrogate.py --out /tmp/uet-surrogate/small-cnn-w64.safetensors

``--resolution 96`` trains on the rows upscaled to 96 px (Pillow bicubic, as ``bench_protection.py
--resolution``) with the strided stem the harness's ``cnn-small`` has at that side, and records the side,
so a bank fitted through it (``cudatap``, ``tap``) reads photo-size images at their own size.

Same arguments, same bytes (seeded, single-threaded, deterministic CPU kernels).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "cifar10"))


def _rows(spec: str) -> range:
    a, _, b = spec.partition(":")
    return range(int(a), int(b))


#: The harness protects CIFAR-10 train rows [0, 10000): a surrogate trained "elsewhere" never sees them.
HARNESS_ROWS = 10_000


def _disjoint_rows(spec: str, flag: str) -> range:
    """Train rows ``START:STOP`` that do not overlap the rows the harness protects."""
    rows = _rows(spec)
    if rows.start < HARNESS_ROWS:
        raise SystemExit(f"{flag} overlaps the harness's protected rows [0, {HARNESS_ROWS}); pick rows >= {HARNESS_ROWS}")
    return rows


#: CIFAR-10's class names, in label order (the parquet files' ClassLabel).
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def parse_classes(spec: str, flag: str = "--classes", num_classes: int = len(CIFAR10_CLASSES)) -> list[int]:
    """``"0-4"``, ``"5,7,9"`` or ``"0-2,8"`` -> the sorted class ids; a clear error for anything else.

    The one reader of a class-subset spec: ``bench_protection.py --classes`` uses it too, so a
    backbone's classes and the protected task's are spelled, and checked, the same way.
    """
    out: list[int] = []
    for part in spec.split(","):
        a, dash, b = part.strip().partition("-")
        try:
            lo, hi = int(a), int(b) if dash else int(a)
        except ValueError:
            raise SystemExit(f"{flag} {spec!r}: expected class ids and ranges such as 0-4 or 5,7,9") from None
        if lo > hi:
            raise SystemExit(f"{flag} {spec!r}: range {part.strip()!r} runs backwards; write {hi}-{lo}")
        out.extend(range(lo, hi + 1))
    bad = [c for c in out if not 0 <= c < num_classes]
    if bad:
        raise SystemExit(f"{flag} {spec!r}: class ids must be in 0..{num_classes - 1}, got {bad}")
    if len(set(out)) != len(out):
        raise SystemExit(f"{flag} {spec!r}: a class is named twice")
    if len(out) < 2:
        raise SystemExit(f"{flag} {spec!r}: name at least two classes (a one-class task has nothing to learn)")
    return sorted(out)


def class_rows(y: np.ndarray, classes: list[int], what: str) -> tuple[np.ndarray, np.ndarray]:
    """The indices of the labels ``y`` that are in ``classes`` (order kept) and those rows' labels
    renumbered 0..k-1 in ``classes``' order; a clear error when a class has no row in ``what``.
    The one rule for a class subset: this script's training rows and bench_protection's both use it."""
    y = np.asarray(y, dtype=np.int64)
    missing = [c for c in classes if not (y == c).any()]
    if missing:
        raise SystemExit(f"{what} hold no row of class(es) {missing}: pick more or other rows, or other --classes")
    idx = np.flatnonzero(np.isin(y, classes))
    new = np.full(max(int(y.max()), max(classes)) + 1, -1, dtype=np.int64)
    new[classes] = np.arange(len(classes))
    return idx, new[y[idx]]


def keep_classes(x: np.ndarray, y: np.ndarray, classes: list[int], what: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``x``/``y`` of ``classes`` (see :func:`class_rows`), labels renumbered 0..k-1."""
    idx, labels = class_rows(y, classes, what)
    return x[idx], labels


def describe_classes(classes: list[int]) -> str:
    """``"classes 0-4 only (airplane, automobile, bird, cat, deer)"``: what a file or a row says about its label set."""
    names = ", ".join(CIFAR10_CLASSES[c] for c in classes)
    ids = (f"{classes[0]}-{classes[-1]}" if classes == list(range(classes[0], classes[-1] + 1))
           else ",".join(map(str, classes)))
    return f"classes {ids} only ({names})"


def _load(path: str, rows: range) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow.parquet as pq
    from PIL import Image

    table = pq.read_table(path).slice(rows.start, len(rows))
    imgs = table.column("img").to_pylist()
    labels = np.asarray(table.column("label").to_pylist(), dtype=np.int64)
    x = np.stack([np.asarray(Image.open(io.BytesIO(v["bytes"])).convert("RGB")) for v in imgs])
    return x.transpose(0, 3, 1, 2).copy(), labels


def upscale_rows(x: np.ndarray, side: int) -> np.ndarray:
    """uint8 ``[N, 3, H, W]`` -> ``[N, 3, side, side]``, Pillow bicubic: the resampler ``bench_protection.py
    --resolution`` upscales the protected rows with, so a backbone trained at ``side`` saw images made the same
    way (without the harness's JPEG step: these rows are training data, not a stored dataset)."""
    from PIL import Image

    if x.shape[-1] == side and x.shape[-2] == side:
        return x
    out = np.empty((len(x), 3, side, side), np.uint8)
    for i, im in enumerate(x):
        out[i] = np.asarray(Image.fromarray(im.transpose(1, 2, 0)).resize((side, side), Image.BICUBIC)).transpose(2, 0, 1)
    return out


def accuracy(forward, x: np.ndarray, y: np.ndarray, batch: int = 500, device=None) -> float:
    """Accuracy of ``forward`` on uint8 rows ``x`` (eval mode is the caller's; ``device``: where the
    batches go, the model's device; ``None`` is the CPU)."""
    import torch

    with torch.no_grad():
        pred = torch.cat([forward(torch.from_numpy(x[s : s + batch]).to(device).float().div(255)).argmax(1).cpu()
                          for s in range(0, len(x), batch)])
    return float((pred.numpy() == y).mean())


def train_cifar(module, forward, xtr, ytr, xva, yva, args, on_epoch=None, device=None) -> tuple[float, float]:
    """Train ``module`` (called through ``forward``, e.g. with its own preprocessing) on uint8 CIFAR rows
    with the harness's augmentation (reflect-pad crop, one offset per batch, per-image flip), SGD
    Nesterov + one-cycle at ``args.lr``; returns (validation accuracy, seconds). Shared by every
    build_*_surrogate script so their recipes cannot drift apart.

    The crop pads by 1/8 of the rows' side (4 px at 32 px, as the harness; 8 px on rows upscaled to 64)
    so upscaled rows get the same augmentation relative to their content. ``on_epoch(epoch, seconds)``,
    if given, runs after every epoch (in eval mode; e.g. to write a checkpoint, so a stopped run keeps
    what it has). ``device``: where ``module`` lives; the rows go there once (uint8) and the
    augmentation runs there, drawn from the same CPU generator, so the recipe is the same on a GPU
    (its float arithmetic is not bit-identical to the CPU's)."""
    import torch
    import torch.nn.functional as F

    opt = torch.optim.SGD(module.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = args.epochs * ((len(xtr) + args.batch_size - 1) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    gen = torch.Generator().manual_seed(args.seed)
    xt, yt = torch.from_numpy(xtr).to(device), torch.from_numpy(ytr).to(device)
    side = xt.shape[-1]
    pad = side // 8
    t0 = time.perf_counter()
    for ep in range(args.epochs):
        module.train()
        order = torch.randperm(len(xt), generator=gen)
        tot = correct = 0
        for s in range(0, len(order), args.batch_size):
            idx = order[s : s + args.batch_size].to(device)
            x = xt[idx].float().div_(255)
            dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
            x = F.pad(x, (pad, pad, pad, pad), mode="reflect")[:, :, dy : dy + side, dx : dx + side]
            flip = (torch.rand(len(idx), generator=gen) < 0.5).to(device)
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            out = forward(x)
            loss = F.cross_entropy(out, yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += len(idx)
            correct += int((out.argmax(1) == yt[idx]).sum())
        print(f"epoch {ep + 1}/{args.epochs}: train acc {correct / tot:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        if on_epoch is not None:
            module.eval()
            on_epoch(ep + 1, time.perf_counter() - t0)
    module.eval()
    val_acc = accuracy(forward, xva, yva, device=device)
    print(f"validation accuracy on test rows {args.val_rows}: {val_acc:.4f}")
    return val_acc, time.perf_counter() - t0


def cifar_meta(tr_rows: range, va_rows: range, val_acc: float, seconds: float, args,
               classes: list[int] | None = None, *, side: int | None = None,
               epochs_done: int | None = None) -> dict[str, str]:
    """What an encoder file built from CIFAR rows records about its training (``classes``: the label
    subset it saw, ``None`` for all ten; a subset is also written as a JSON list under ``classes``;
    ``side``: the rows were upscaled to it before training; ``epochs_done``: how many of ``args.epochs``
    the weights have, said in ``trained_on`` so a checkpoint of a stopped run cannot pass for the full recipe)."""
    only = f", {describe_classes(classes)}" if classes is not None else ""
    size = f", upscaled to {side} px (Pillow bicubic)" if side is not None and side != 32 else ""
    done = f", {epochs_done} of {args.epochs} epochs" if epochs_done is not None else ""
    meta = {
        "trained_on": f"CIFAR-10 train rows [{tr_rows.start}, {tr_rows.stop}) with labels{only}{size}{done} (disjoint "
                      "from the harness's protected rows [0, 10000) and test rows [0, 2000))",
        "validation": f"CIFAR-10 test rows [{va_rows.start}, {va_rows.stop}){only}: accuracy {val_acc:.4f}",
        "recipe": json.dumps({k: v for k, v in vars(args).items()
                              if k not in ("out", "data") and not (k == "classes" and v is None)
                              and not (k == "resolution" and v == 32)}),  # a 32-px file's recipe as before
        "train_seconds": f"{seconds:.0f}",
    }
    if classes is not None:
        meta["classes"] = json.dumps(classes)
    if epochs_done is not None:
        meta["epochs_done"] = str(epochs_done)
    return meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--train-rows", default="30000:50000", help="CIFAR-10 train rows START:STOP (never protected)")
    p.add_argument("--val-rows", default="5000:10000", help="CIFAR-10 test rows START:STOP (never used by the harness)")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", default=None,
                   help="train on these CIFAR-10 classes only, e.g. 0-4 or 0,2,5 (default: all ten); the head "
                        "has one output per class and the validation rows are filtered the same way")
    p.add_argument("--resolution", type=int, default=32,
                   help="upscale the rows once to this side (Pillow bicubic, as bench_protection --resolution) and "
                        "train there, with the strided stem build_model('cnn-small', image_size=SIDE) uses at that "
                        "side; the file records the side, so its readers resize inputs to it (default 32: as is)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.resolution < 32:
        p.error(f"--resolution {args.resolution}: the rows are 32 px; pick 32 or more (they are upscaled, never shrunk)")

    import torch

    from uetransforms.models.encoders import save_small_cnn
    from uetransforms.models.networks import Normalise, SmallCNN, cnn_small_stem_stride

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    tr_rows, va_rows = _disjoint_rows(args.train_rows, "--train-rows"), _rows(args.val_rows)
    classes = parse_classes(args.classes) if args.classes is not None else None
    xtr, ytr = _load(os.path.join(args.data, "train-00000-of-00001.parquet"), tr_rows)
    xva, yva = _load(os.path.join(args.data, "test-00000-of-00001.parquet"), va_rows)
    if classes is not None:
        xtr, ytr = keep_classes(xtr, ytr, classes, f"--train-rows {args.train_rows}")
        xva, yva = keep_classes(xva, yva, classes, f"--val-rows {args.val_rows}")
        print(f"{describe_classes(classes)}: {len(ytr)} train rows, {len(yva)} validation rows", flush=True)
    xtr, xva = upscale_rows(xtr, args.resolution), upscale_rows(xva, args.resolution)
    # the stem the harness's from-scratch cnn-small has at this side (1 up to 64 px: the 32-px network)
    net = SmallCNN(len(classes) if classes is not None else 10, 3, width=args.width,
                   stem_stride=cnn_small_stem_stride(args.resolution))
    model = torch.nn.Sequential(Normalise(), net)
    val_acc, seconds = train_cifar(model, model, xtr, ytr, xva, yva, args)
    meta = cifar_meta(tr_rows, va_rows, val_acc, seconds, args, classes, side=args.resolution)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)) or ".", exist_ok=True)
    sha = save_small_cnn(net, args.out, image_size=args.resolution, extra=meta)
    print(f"wrote {args.out} (sha256 {sha})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
