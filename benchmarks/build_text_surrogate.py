"""Build the offline CLIP-style surrogate (image + text towers) the T2UE benchmark uses.

No pretrained CLIP can be downloaded here. The honest stand-in: ``uetransforms.models.clip``'s built-in
``uet-tiny-rn-ctx16`` CLIP (a small modified-ResNet image tower and a 3-layer text transformer
with a 16-token context, at 32 px), trained contrastively *here* on CIFAR-10 rows the harness never protects (train rows
``[30000, 50000)``), each image paired with a caption drawn from class-name templates
("a blurry photo of a dog."...). It knows ten concepts and a handful of phrasings, nothing like
OpenAI's CLIP; results with it must say so.

The loss is CLIP's symmetric InfoNCE with every image of the same caption counted as a positive
(with 10 classes, a batch repeats captions). The file is a plain state dict (safetensors) that
``uetransforms.models.clip.load("uet-tiny-rn-ctx16", PATH)`` loads offline.

    OMP_NUM_THREADS=1 python benchmarks/build_text_surrogate.py --out /tmp/uet-surrogate/tiny-clip.safetensors
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from build_surrogate import DEFAULT_DATA, _disjoint_rows, _load, _rows  # noqa: E402

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TEMPLATES = ["a photo of a {}.", "a blurry photo of a {}.", "a photo of the {}.", "a close-up photo of a {}.",
             "a low resolution photo of a {}.", "a bright photo of a {}.", "a cropped photo of a {}.",
             "a photo of a small {}.", "a dark photo of the {}.", "a picture of a {}."]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--train-rows", default="30000:50000")
    p.add_argument("--val-rows", default="5000:10000")
    p.add_argument("--model", default="uet-tiny-rn-ctx16")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    import open_clip
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file

    from uetransforms.models.clip import _OPENAI_MEAN, _OPENAI_STD, TINY_CONFIGS, file_sha256
    from uetransforms.algorithms.t2ue import _info_nce

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    tr, va = _disjoint_rows(args.train_rows, "--train-rows"), _rows(args.val_rows)
    xtr, ytr = _load(os.path.join(args.data, "train-00000-of-00001.parquet"), tr)
    xva, yva = _load(os.path.join(args.data, "test-00000-of-00001.parquet"), va)
    cfg = TINY_CONFIGS[args.model]
    net = open_clip.CLIP(embed_dim=cfg["embed_dim"], vision_cfg=dict(cfg["vision_cfg"]), text_cfg=dict(cfg["text_cfg"]))
    tok = open_clip.SimpleTokenizer(context_length=cfg["text_cfg"]["context_length"])
    captions = [t.format(c) for c in CIFAR10 for t in TEMPLATES]  # caption index = class * T + template
    tokens = tok(captions)
    mean = torch.tensor(_OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(_OPENAI_STD).view(1, 3, 1, 1)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.1)
    steps = args.epochs * ((len(xtr) + args.batch_size - 1) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(args.seed)
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    t0 = time.perf_counter()
    for ep in range(args.epochs):
        net.train()
        order = torch.randperm(len(xt), generator=gen)
        losses = []
        for s in range(0, len(order), args.batch_size):
            idx = order[s : s + args.batch_size]
            x = xt[idx].float().div_(255)
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            cap = yt[idx] * len(TEMPLATES) + torch.randint(len(TEMPLATES), (len(idx),), generator=gen)
            uniq, inv = torch.unique(cap, return_inverse=True)
            img = net.encode_image((x - mean) / std)
            txt = net.encode_text(tokens[uniq])
            full = torch.zeros(len(captions), txt.shape[1]).index_copy(0, uniq, txt)
            loss = _info_nce(img, full, cap, net.logit_scale.exp().clamp(max=100))  # learned temperature, as CLIP
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss))
        print(f"epoch {ep + 1}/{args.epochs}: loss {np.mean(losses):.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    net.eval()
    with torch.no_grad():
        t = F.normalize(net.encode_text(tok(["a photo of a {}.".format(c) for c in CIFAR10])), dim=-1)
        pred = torch.cat([(F.normalize(net.encode_image((torch.from_numpy(xva[s : s + 500]).float() / 255 - mean) / std),
                                       dim=-1) @ t.T).argmax(1) for s in range(0, len(xva), 500)])
    zs = float((pred.numpy() == yva).mean())
    print(f"zero-shot accuracy ('a photo of a {{}}.') on test rows {args.val_rows}: {zs:.4f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)) or ".", exist_ok=True)
    meta = {"trained_on": f"CIFAR-10 train rows [{tr.start}, {tr.stop}) with template captions",
            "zero_shot": f"{zs:.4f} on CIFAR-10 test rows [{va.start}, {va.stop})",
            "recipe": json.dumps({k: v for k, v in vars(args).items() if k not in ("out", "data")}),
            "templates": json.dumps(TEMPLATES)}
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, args.out, metadata=meta)
    print(f"wrote {args.out} (sha256 {file_sha256(args.out)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
