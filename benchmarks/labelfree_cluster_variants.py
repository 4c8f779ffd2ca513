"""Other ways to cluster an encoder's features, against the keying's K-means (issue 25).

Embeds CIFAR-10 train rows [0, 10000) with ``--encoder`` (as ``ue.fit(..., encoder=)`` does) and
prints the purity against the true labels (K = 10) of: the encoder's own class head (argmax),
nearest mean of the head's predicted classes, K-means of L2-normalised features for several seeds
(the default keying; the spread is the seed noise), PCA-whitened / PCA-projected features,
K-means of the head's softmax, and agglomerative (Ward) / spectral clustering of a 3000-row
subsample extended to all rows by nearest centroid. Exploration only: nothing here is a library
option unless it won (only the head did: ``cluster_by="head"``).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 nice -n 5 python benchmarks/labelfree_cluster_variants.py \\
        --encoder /tmp/uet-surrogate/resnet18-c10.safetensors --out benchmarks/results/labelfree-variants-s7.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_labelfree import DEFAULT_DATA, purity  # noqa: E402
from labelfree_purity import _head, load_rows  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encoder", required=True, help="an encoder file that keeps its classifier head")
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from uetransforms.models import encoders
    from uetransforms.models.assign import embed_images
    from uetransforms.models.kmeans import assign, kmeans

    torch.set_num_threads(1)
    imgs, y = load_rows(args.data, args.rows)
    f = embed_images(encoders.resolve(args.encoder), imgs, device=torch.device("cpu")).numpy()
    head = _head(args.encoder)
    if head is None:
        raise SystemExit(f"{args.encoder} keeps no classifier head (fc.weight/fc.bias)")
    logits = f @ head[0].numpy().T + head[1].numpy()

    def km(x: np.ndarray, seed: int = args.seed) -> np.ndarray:
        return kmeans(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), 10, seed=seed).labels.numpy()

    def nearest(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
        cen = np.stack([x[groups == k].mean(0) for k in np.unique(groups)])
        x32 = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        return assign(x32, torch.from_numpy(cen).float())[0].numpy()

    def l2(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    fl, mean = l2(f), f.mean(0)
    _, s, vt = np.linalg.svd(f - mean, full_matrices=False)
    pred = logits.argmax(1)
    res: dict[str, float] = {"head argmax": purity(pred, y),
                             "nearest mean of head classes (l2)": purity(nearest(fl, pred), y)}
    for seed in range(args.seed, args.seed + 5):
        res[f"kmeans l2, seed {seed}"] = purity(km(fl, seed), y)
    for dims in (10, 64):
        proj = (f - mean) @ vt[:dims].T
        res[f"pca{dims} whitened, kmeans"] = purity(km(proj / s[:dims]), y)
        res[f"pca{dims} whitened + l2, kmeans"] = purity(km(l2(proj / s[:dims])), y)
        res[f"pca{dims} (not whitened) + l2, kmeans"] = purity(km(l2(proj)), y)
    res["kmeans of the head's softmax"] = purity(km(torch.softmax(torch.from_numpy(logits), 1).numpy()), y)
    from sklearn.cluster import AgglomerativeClustering, SpectralClustering

    sub = np.random.default_rng(0).choice(len(fl), 3000, replace=False)
    for name, model in [("agglomerative (ward) on 3000, nearest centroid", AgglomerativeClustering(10, linkage="ward")),
                        ("spectral (15-nn graph) on 3000, nearest centroid",
                         SpectralClustering(10, affinity="nearest_neighbors", n_neighbors=15, random_state=0))]:
        lab = model.fit_predict(fl[sub])
        cen = np.stack([fl[sub][lab == k].mean(0) for k in range(10)])
        res[name] = purity(assign(torch.from_numpy(fl), torch.from_numpy(cen).float())[0].numpy(), y)
    for k, v in res.items():
        print(f"{k:52s} {v:.3f}")
    cmd = " ".join(sys.argv[1:] if argv is None else argv)
    out = {"command": f"python benchmarks/labelfree_cluster_variants.py {cmd}",
           "rows": len(y), "k": 10, "purity_true": res}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
