"""Build an offline surrogate of ANOTHER architecture family than the harness's victim: a
torchvision classifier (ResNet-18 by default) trained from scratch on CIFAR-10 rows the
protection harness never protects or tests on.

Why: the label-free benchmarks (issue 25) must not use a surrogate of the victim's own family
(``cnn-small``, :class:`uetransforms.models.networks.SmallCNN`), which favours transfer. No
pretrained weights can be downloaded on this machine, so "a backbone trained elsewhere" is a
torchvision ResNet trained here on disjoint rows (train rows ``[30000, 50000)`` by default; the
harness protects ``[0, 10000)`` and tests on test rows ``[0, 2000)``).

The output is a safetensors state dict of the full torchvision classifier (its 10-way ``fc``
included) that ``uetransforms.models.encoders.load(ARCH, checkpoint=PATH, image_size=SIZE)`` turns
into a frozen encoder (penultimate features, the input of ``fc``); ``ue.fit(..., encoder=...)``
and cluster banks record it by sha256 and rebuild it offline.

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/build_tv_surrogate.py --arch resnet18 --epochs 8 \\
        --out /tmp/uet-surrogate/resnet18-c10.safetensors

Continue training an encoder file (more epochs, a lower peak lr, the same rows) with ``--init``;
the new file records the file it started from (its sha256 and recipe):

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/build_tv_surrogate.py --init /tmp/uet-surrogate/resnet18-c10.safetensors \\
        --epochs 3 --lr 0.02 --out /tmp/uet-surrogate/resnet18-c10-e9.safetensors

A strided-stem backbone from a disjoint label set (issue 22's "other data" at photo size): the
torchvision ResNet-18 (ImageNet stem: 7x7 stride-2 conv + max-pool) trained on CIFAR-10 classes 0-4
only, rows upscaled once to 64 px (``--upscale``: Pillow bicubic, as the harness's ``--resolution``;
crops then pad by 1/8 of the side), 5-way head; load it as ``tv:resnet18@OUT``:

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/build_tv_surrogate.py --arch resnet18 --classes 0-4 \
        --train-rows 10000:50000 --image-size 64 --upscale --epochs 5 --batch-size 64 --lr 0.1 \
        --out /tmp/rn11/rn04-resnet18-s64.safetensors

The file is rewritten after every epoch (its ``trained_on`` and ``epochs_done`` say how many of the
``--epochs`` it holds), so a run stopped early leaves its last finished epoch, not nothing.

Same arguments, same bytes (seeded, single-threaded CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from build_surrogate import (  # noqa: E402
    DEFAULT_DATA,
    _disjoint_rows,
    _load,
    _rows,
    accuracy,
    cifar_meta,
    describe_classes,
    keep_classes,
    parse_classes,
    train_cifar,
    upscale_rows,
)


def _load_init(net, args) -> dict[str, str]:
    """Load ``--init`` into ``net`` (refusing another architecture or input side); what the new file records of it."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from uetransforms.models.encoders import file_sha256

    if os.path.abspath(args.init) == os.path.abspath(args.out):
        raise SystemExit("--init and --out are the same file; write the continued encoder to a new --out")
    with safe_open(args.init, framework="pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("arch") != args.arch or meta.get("image_size") != str(args.image_size):
        raise SystemExit(f"--init {args.init} is a {meta.get('arch')!r} encoder at {meta.get('image_size')} px, not "
                         f"--arch {args.arch} --image-size {args.image_size}: pass the matching --arch/--image-size")
    net.load_state_dict(load_file(args.init))
    return {"file": os.path.basename(args.init), "sha256": file_sha256(args.init),
            "recipe": meta.get("recipe", "unknown"), "validation": meta.get("validation", "unknown")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--arch", default="resnet18", help="a torchvision model with an fc head")
    p.add_argument("--image-size", type=int, default=32, help="input side the encoder resizes to")
    p.add_argument("--train-rows", default="30000:50000", help="CIFAR-10 train rows START:STOP (never protected)")
    p.add_argument("--val-rows", default="5000:10000", help="CIFAR-10 test rows START:STOP (never used by the harness)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", default=None,
                   help="train on these CIFAR-10 classes only, e.g. 0-4 (default: all ten); the head has one output "
                        "per class and the validation rows are filtered the same way")
    p.add_argument("--upscale", action="store_true",
                   help="upscale the rows once to --image-size (Pillow bicubic, as bench_protection --resolution) and "
                        "crop at that size, instead of cropping at 32 px and resizing (bilinear) on the fly")
    p.add_argument("--init", help="an encoder file written by this script (same --arch and --image-size) to "
                                  "continue training from, instead of a random init")
    p.add_argument("--device", default=None, help="train there, e.g. cuda (default: the CPU, one thread)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    import torch
    from torchvision import models as tvm

    from uetransforms.models.encoders import save_torchvision, torchvision_encoder

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    tr_rows, va_rows = _disjoint_rows(args.train_rows, "--train-rows"), _rows(args.val_rows)
    xtr, ytr = _load(os.path.join(args.data, "train-00000-of-00001.parquet"), tr_rows)
    xva, yva = _load(os.path.join(args.data, "test-00000-of-00001.parquet"), va_rows)
    classes = parse_classes(args.classes) if args.classes is not None else None
    if classes is not None:
        xtr, ytr = keep_classes(xtr, ytr, classes, f"--train-rows {args.train_rows}")
        xva, yva = keep_classes(xva, yva, classes, f"--val-rows {args.val_rows}")
        print(f"{describe_classes(classes)}: {len(ytr)} train rows, {len(yva)} validation rows", flush=True)
    if args.upscale:
        xtr, xva = upscale_rows(xtr, args.image_size), upscale_rows(xva, args.image_size)
    net = tvm.get_model(args.arch, weights=None, num_classes=len(classes) if classes is not None else 10)
    started_from = _load_init(net, args) if args.init else None
    net.to(args.device)
    # The encoder's own preprocessing (resize + ImageNet normalisation), so training sees what it will.
    # (on --device, since preprocess() moves the batch to where the encoder's normalisation lives)
    prep = torchvision_encoder(args.arch, None, allow_random_surrogate=True,
                               image_size=args.image_size).to(args.device).preprocess

    def forward(x):
        return net(prep(x))

    def save(epochs_done: int, seconds: float, val_acc: float) -> str:
        meta = cifar_meta(tr_rows, va_rows, val_acc, seconds, args, classes,
                          side=args.image_size if args.upscale else None, epochs_done=epochs_done)
        if started_from is not None:
            meta["continued_from"] = json.dumps(started_from)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)) or ".", exist_ok=True)
        # write beside, then rename: a run killed mid-write still leaves the previous epoch's whole file
        tmp = args.out + ".partial"
        sha = save_torchvision(net, tmp, arch=args.arch, image_size=args.image_size, extra=meta)
        os.replace(tmp, args.out)
        return sha

    def checkpoint(epoch: int, seconds: float) -> None:
        if epoch < args.epochs:  # the last epoch is written below, with the final validation
            acc = accuracy(forward, xva, yva, device=args.device)
            save(epoch, seconds, acc)
            print(f"  checkpoint {args.out}: epoch {epoch}, validation accuracy {acc:.4f}", flush=True)

    val_acc, seconds = train_cifar(net, forward, xtr, ytr, xva, yva, args, on_epoch=checkpoint, device=args.device)
    sha = save(args.epochs, seconds, val_acc)
    print(f"wrote {args.out} (sha256 {sha})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
