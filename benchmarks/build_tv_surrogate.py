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

Same arguments, same bytes (seeded, single-threaded CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from build_surrogate import DEFAULT_DATA, _disjoint_rows, _load, _rows, cifar_meta, train_cifar  # noqa: E402


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
    p.add_argument("--init", help="an encoder file written by this script (same --arch and --image-size) to "
                                  "continue training from, instead of a random init")
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
    net = tvm.get_model(args.arch, weights=None, num_classes=10)
    started_from = _load_init(net, args) if args.init else None
    # The encoder's own preprocessing (resize + ImageNet normalisation), so training sees what it will.
    prep = torchvision_encoder(args.arch, None, allow_random_surrogate=True, image_size=args.image_size).preprocess
    val_acc, seconds = train_cifar(net, lambda x: net(prep(x)), xtr, ytr, xva, yva, args)
    meta = cifar_meta(tr_rows, va_rows, val_acc, seconds, args)
    if started_from is not None:
        meta["continued_from"] = json.dumps(started_from)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)) or ".", exist_ok=True)
    sha = save_torchvision(net, args.out, arch=args.arch, image_size=args.image_size, extra=meta)
    print(f"wrote {args.out} (sha256 {sha})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
