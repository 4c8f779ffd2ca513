"""Train the T2UE generator for the zero-contact benchmark on a corpus disjoint from the protected set.

The "public image-caption corpus" is CIFAR-10 train rows ``[10000, 30000)`` (the harness protects
rows ``[0, 10000)``; the CLIP surrogate of ``build_text_surrogate.py`` was trained on rows
``[30000, 50000)``), each image captioned with every class-name template of that script (one is
drawn per image, as the paper draws one of MSCOCO's captions). The protected set's bank is then
made from the class prompts alone:

    OMP_NUM_THREADS=1 python benchmarks/build_t2ue_generator.py \\
        --clip /tmp/uet-surrogate/tiny-clip.safetensors --out /tmp/uet-surrogate/t2ue-generator.safetensors
    python benchmarks/bench_protection.py --methods clean t2ue --defences none \\
        --param t2ue.generator=/tmp/uet-surrogate/t2ue-generator.safetensors
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from build_surrogate import DEFAULT_DATA, _disjoint_rows, _load  # noqa: E402
from build_text_surrogate import CIFAR10, TEMPLATES  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--rows", default="10000:30000", help="CIFAR-10 train rows START:STOP (never protected)")
    p.add_argument("--clip", required=True, help="tiny CLIP checkpoint from build_text_surrogate.py")
    p.add_argument("--clip-model", default="uet-tiny-rn-ctx16")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--channels", type=int, default=128)
    p.add_argument("--epsilon", type=float, default=8 / 255)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from uetransforms.algorithms import t2ue

    torch.set_num_threads(1)
    rows = _disjoint_rows(args.rows, "--rows")
    x, y = _load(os.path.join(args.data, "train-00000-of-00001.parquet"), rows)
    corpus = {"image": list(x.transpose(0, 2, 3, 1)),
              "caption": [[t.format(CIFAR10[int(c)]) for t in TEMPLATES] for c in y]}
    t0 = time.perf_counter()
    _, info = t2ue.train_generator(corpus, caption_column="caption", surrogate=f"clip:{args.clip_model}",
                                   checkpoint=args.clip, epsilon=args.epsilon, epochs=args.epochs,
                                   batch_size=args.batch_size, lr=args.lr, channels=args.channels, seed=args.seed,
                                   path=args.out)
    print(f"trained in {time.perf_counter() - t0:.0f} s: {info}")
    # how far the objective got: InfoNCE trace ends, and the class prompts' noise
    bank = t2ue.text_bank(args.out, ["a photo of a {}.".format(c) for c in CIFAR10], seed=1234)
    d = bank.tensors["delta"]
    print(f"class-wise noise: mean |delta| {np.abs(d).mean() * 255:.2f}/255, mean pairwise |d_i - d_j| "
          f"{np.mean([np.abs(d[i] - d[j]).mean() for i in range(10) for j in range(i + 1, 10)]) * 255:.2f}/255")
    return 0


if __name__ == "__main__":
    sys.exit(main())
