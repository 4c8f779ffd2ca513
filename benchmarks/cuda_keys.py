"""Which cuda keys are weak? Candidate key scores against the measured ratios (issue 22, session 11).

A cuda bank key (the seed) draws one random filter per class. With ``kernel_size=5, padding=reflect``
the same setting gave 0.33x ... 0.62x clean at 96 px over seven keys (benchmarks/RESULTS.md, "One cuda
setting at three sizes (session 10)"). This script scores keys without an attacker and checks, by
Spearman rank correlation, whether a score orders the keys as the measured rows do.

Scores (each: higher = the key should protect more):

* ``spec_*``: model-free. Each class filter's *magnitude* frequency response ``|H_c(f)|`` (the filter,
  with its dilation, zero-padded to the image size), normalised by its DC gain (cuda's max
  normalisation removes the overall gain), compared between classes as
  ``sum_f P(f) (log|H_a(f)| - log|H_b(f)|)^2``; ``P`` the images' mean power spectrum (``_w``) or
  flat (``_u``); the least (``min``) or mean (``mean``) over class pairs. Magnitudes only: a CNN that
  pools is nearly blind to a filter's shift, which is what the 1.0 entry's position mostly is.
  ``spec_blur``: the opposite hypothesis (not learnability, just damage): one minus the mean share of
  the images' power the filters keep.
* ``tiny_*``: a ``cnn-tiny`` trained from scratch on the filtered sample (true labels), a few epochs;
  ``tiny_clean`` = 1 - its accuracy on held-out *clean* images of the sample; ``tiny_train`` = its
  accuracy on the filtered training images (how much it learned, key included).
* ``decode``: the same images filtered with every class's filter, a ``cnn-tiny`` trained to tell which
  filter was applied (the content says nothing about it); held-out accuracy after a fixed budget.

Measured ratios are read from ``benchmarks/results/*.json`` (cuda rows with ``kernel_size=5,
padding=reflect``), grouped by setting (size, attacker, backbone, dilation, training seed, rows,
classes); a group with at least three bank keys becomes a column. The Spearman correlation of each
score with each column's test accuracy is printed (accuracy, not ratio: within a column the clean
baseline is one number, so the ranks are the same), with its two-sided p-value; a good score
correlates *negatively* with accuracy.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 nice -n 5 python benchmarks/cuda_keys.py --out /tmp/keysel11/scores.json
    PYTHONPATH=$PWD ... python benchmarks/cuda_keys.py --no-tiny --seeds 1 2 3   # spectral scores only
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = "/work/shared/data/cifar10"
MEASURED_KEYS = (1, 2, 3, 4, 1234, 4321, 777, 99)


def load_images(n: int, data: str, split: str = "train", classes: list[int] | None = None):
    """The first ``n`` rows (of ``classes``, relabelled 0..) as uint8 [N, 3, 32, 32] and labels."""
    import datasets

    ds = datasets.Dataset.from_parquet(os.path.join(data, f"{split}-00000-of-00001.parquet"))
    imgs, labels = [], []
    for row in ds:
        y = row["label"]
        if classes is not None:
            if y not in classes:
                continue
            y = classes.index(y)
        imgs.append(np.asarray(row["img"].convert("RGB"), dtype=np.uint8).transpose(2, 0, 1))
        labels.append(y)
        if len(imgs) == n:
            break
    return np.stack(imgs), np.asarray(labels)


def bank_weight(seed: int, num_classes: int, params: dict, image_shape=(3, 32, 32)) -> np.ndarray:
    """The filters ``ue.fit("cuda", ..., seed=seed, **params)`` draws for ``num_classes`` classes."""
    import uetransforms as ue

    ds = {"image": [np.zeros(image_shape[1:] + (image_shape[0],), np.uint8)] * num_classes,
          "label": list(range(num_classes))}
    return ue.fit("cuda", ds, seed=seed, **params).tensors["weight"]


def filtered(images: np.ndarray, weight: np.ndarray, which: np.ndarray, params: dict) -> np.ndarray:
    from uetransforms.core import kernels
    from uetransforms.core.kinds.conv import conv_options

    out = kernels.convolve(torch.from_numpy(images), torch.from_numpy(weight[which]),
                           **conv_options(params, images.shape))
    return out.numpy() if isinstance(out, torch.Tensor) else np.asarray(out)


def log_response(weight: np.ndarray, size: tuple[int, int], dilation: int) -> np.ndarray:
    """log |H_c(f)| / |H_c(0)| of channel 0 of every class filter, on the image's frequency grid."""
    k = weight.shape[-1]
    h, w = size
    grid = np.zeros((weight.shape[0], h, w))
    for i in range(k):
        for j in range(k):
            grid[:, (i * dilation) % h, (j * dilation) % w] += weight[:, 0, i, j]
    mag = np.abs(np.fft.fft2(grid))
    return np.log(np.maximum(mag, 1e-8) / np.maximum(mag[:, :1, :1], 1e-12))


def power_spectrum(images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float64).mean(axis=1)
    x = x - x.mean(axis=(1, 2), keepdims=True)
    p = (np.abs(np.fft.fft2(x)) ** 2).mean(axis=0)
    return p / p.sum()


def spectral_scores(weight: np.ndarray, power: np.ndarray, dilation: int) -> dict[str, float]:
    lr = log_response(weight, power.shape, dilation)
    flat = np.full(power.shape, 1.0 / power.size)
    out = {}
    for tag, p in (("w", power), ("u", flat)):
        d = [float((p * (lr[a] - lr[b]) ** 2).sum()) for a, b in itertools.combinations(range(len(lr)), 2)]
        out[f"spec_min_{tag}"] = min(d)
        out[f"spec_mean_{tag}"] = float(np.mean(d))
    out["spec_blur"] = float(1.0 - (power * np.exp(2 * lr)).sum(axis=(1, 2)).mean())
    return out


def _train_tiny(x: np.ndarray, y: np.ndarray, num_classes: int, epochs: int, seed: int) -> torch.nn.Module:
    from uetransforms.models import surrogates

    torch.manual_seed(seed)
    model = surrogates.build("cnn-tiny", num_classes=num_classes, image_shape=x.shape[1:], seed=seed)
    trainer = surrogates.Trainer(model, lr=0.05)
    gen = torch.Generator().manual_seed(seed)
    xt = torch.from_numpy(x).float().div_(255)
    yt = torch.from_numpy(y).long()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            trainer.step(xt[idx], yt[idx])
    return model.eval()


@torch.no_grad()
def _accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    logits = torch.cat([model(torch.from_numpy(b).float().div_(255)) for b in np.array_split(x, max(1, len(x) // 256))])
    return float((logits.argmax(1).numpy() == y).mean())


def tiny_scores(images, labels, weight, params, n_train: int, epochs: int, seeds=(0, 1)) -> dict[str, float]:
    """cnn-tiny trained on the filtered sample (true labels), averaged over training seeds."""
    num_classes = weight.shape[0]
    xf = filtered(images, weight, labels, params)
    out: dict[str, list[float]] = {"tiny_clean": [], "tiny_train": [], "tiny_heldout": [], "tiny_gap": []}
    for seed in seeds:
        model = _train_tiny(xf[:n_train], labels[:n_train], num_classes, epochs, seed=seed)
        clean = _accuracy(model, images[n_train:], labels[n_train:])
        held = _accuracy(model, xf[n_train:], labels[n_train:])
        out["tiny_clean"].append(1.0 - clean)
        out["tiny_train"].append(_accuracy(model, xf[:n_train], labels[:n_train]))
        out["tiny_heldout"].append(held)  # key + content, on images it never saw
        out["tiny_gap"].append(held - clean)  # what the key adds
    return {k: float(np.mean(v)) for k, v in out.items()}


def decode_score(images, weight, params, n_img: int, epochs: int) -> dict[str, float]:
    k = weight.shape[0]
    sel = images[:n_img]
    which = np.repeat(np.arange(k), len(sel))
    x = filtered(np.tile(sel, (k, 1, 1, 1)), weight, which, params)
    test = np.arange(len(x)) % len(sel) >= int(0.8 * len(sel))  # held-out images, every filter
    model = _train_tiny(x[~test], which[~test], k, epochs, seed=0)
    return {"decode": _accuracy(model, x[test], which[test])}


def image_features(x: np.ndarray, radial: int = 8, angular: int = 4) -> np.ndarray:
    """Per-image global statistics a pooling network reads easily: mean, log contrast, and the log power in
    ``radial x angular`` frequency bins of the grey image (magnitudes only: blind to shifts)."""
    g = x.astype(np.float64).mean(axis=1)
    m = g.mean(axis=(1, 2))
    g = g - m[:, None, None]
    p = np.abs(np.fft.fft2(g)) ** 2
    fy = np.fft.fftfreq(g.shape[1])[:, None]
    fx = np.fft.fftfreq(g.shape[2])[None, :]
    r = np.minimum((np.hypot(fy, fx) / 0.5 * radial).astype(int), radial - 1)
    a = ((np.arctan2(fy, fx) % np.pi) / np.pi * angular).astype(int) % angular
    b = (r * angular + a).ravel()
    dc = np.zeros(g.shape[1:], bool)
    dc[0, 0] = True
    keep = ~dc.ravel()
    flat = p.reshape(len(p), -1)[:, keep]
    nb = radial * angular
    sums = np.zeros((len(p), nb))
    np.add.at(sums.T, b[keep], flat.T)
    cnt = np.bincount(b[keep], minlength=nb)
    logp = np.log(sums[:, cnt > 0] / cnt[cnt > 0] + 1e-6)
    return np.column_stack([m, np.log(g.std(axis=(1, 2)) + 1e-6), logp])


def decode_linear(images, weight, params, n_img: int) -> dict[str, float]:
    """Which filter was applied, told by a linear classifier on :func:`image_features` (held-out images)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    k = weight.shape[0]
    sel = images[:n_img]
    which = np.repeat(np.arange(k), len(sel))
    f = image_features(filtered(np.tile(sel, (k, 1, 1, 1)), weight, which, params))
    test = np.arange(len(f)) % len(sel) >= int(0.8 * len(sel))
    sc = StandardScaler().fit(f[~test])
    clf = LogisticRegression(max_iter=2000).fit(sc.transform(f[~test]), which[~test])
    return {"decode_lin": float(clf.score(sc.transform(f[test]), which[test]))}


def measured_columns(results: str, min_keys: int = 3) -> dict[str, dict[int, float]]:
    """{setting: {bank seed: test accuracy}} for cuda k5 reflect rows, settings with >= min_keys keys."""
    cols: dict[str, dict[int, float]] = {}
    for path in sorted(glob.glob(os.path.join(results, "*.json"))):
        try:
            doc = json.load(open(path))
        except (OSError, ValueError):
            continue
        cfg = doc.get("config", {}) if isinstance(doc, dict) else {}
        rows = doc.get("results") if isinstance(doc, dict) else None
        cfg = cfg if isinstance(cfg, dict) else {}
        for row in rows if isinstance(rows, list) else []:
            if not isinstance(row, dict) or "bank_seed" not in cfg:
                continue
            p = row.get("params") or {}
            if row.get("method") != "cuda" or p.get("kernel_size") != 5 or p.get("padding") != "reflect":
                continue
            if row.get("defence") != "none" or p.get("key_trials", 1) != 1 or set(p) - {"kernel_size", "padding", "dilation"}:
                continue
            bb = row.get("backbone") or {}
            name = (f"{row.get('resolution', 32)}px d{p.get('dilation', 1)} {row['attacker']}"
                    f"{' ' + str(bb.get('checkpoint', '')).split('-')[0] if bb else ''}"
                    f" seed{cfg.get('seed')} n{cfg.get('train_size')} ep{cfg.get('epochs')}"
                    f"{' cls' + ''.join(map(str, cfg['classes'])) if cfg.get('classes') else ''}")
            cols.setdefault(name, {})[int(cfg["bank_seed"])] = float(row["test_accuracy"])
    return {k: v for k, v in cols.items() if len(v) >= min_keys}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=list(MEASURED_KEYS))
    ap.add_argument("--n-images", type=int, default=2000, help="user images the scores read (train rows [0, n))")
    ap.add_argument("--tiny-epochs", type=int, default=6)
    ap.add_argument("--decode-images", type=int, default=400)
    ap.add_argument("--decode-epochs", type=int, default=2)
    ap.add_argument("--decode-cnn", action="store_true",
                    help="also the cnn-tiny filter decoder (at 400 images x 2 epochs it stayed at chance, session 11)")
    ap.add_argument("--tiny-seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--explore", action="store_true",
                    help="also the exploratory cnn-tiny columns (tiny_clean/train/heldout/gap, two training seeds)")
    ap.add_argument("--candidates", type=int, nargs="*", default=[],
                    help="after the check: for each seed, ue.fit('cuda', key_trials=--trials) on train rows [0, --fit-rows) "
                         "(32 px), and print its candidates' scores, the kept and the worst-ranked candidate")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--score-seeds", type=int, nargs="+", default=None,
                    help="--candidates with other training seeds of the score's cnn-tiny (cuda.SCORE_SEEDS; default "
                         "the package's): its test-retest check")
    ap.add_argument("--classes", default=None, help="--candidates on these classes only, e.g. 5,6,7,8,9 (CLS04's task)")
    ap.add_argument("--fit-rows", type=int, default=5000, help="train rows [0, n) --candidates fits on (the bench's)")
    ap.add_argument("--time-fit", type=int, default=0, metavar="ROWS",
                    help="time ue.fit('cuda', key_trials=--trials) on the first ROWS train rows (32 px)")
    ap.add_argument("--skip-check", action="store_true", help="skip the scores of the measured keys")
    ap.add_argument("--no-tiny", action="store_true", help="spectral scores only (no training)")
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from scipy.stats import spearmanr

    params = {"kernel_size": 5, "padding": "reflect"}
    sets = {"10": None, "5": [5, 6, 7, 8, 9]}  # the CLS04 rows protect classes 5-9 only (5 filters)
    scores: dict[str, dict[int, dict[str, float]]] = {}
    table: dict = {}
    if not args.skip_check:
        for tag, classes in sets.items():
            images, labels = load_images(args.n_images, args.data, classes=classes)
            power = power_spectrum(images)
            scores[tag] = {}
            for seed in args.seeds:
                t0 = time.perf_counter()
                w = bank_weight(seed, len(classes or range(10)), params)
                s = spectral_scores(w, power, 1)
                s.update(decode_linear(images, w, params, args.decode_images))
                if not args.no_tiny:
                    from uetransforms.algorithms import cuda

                    # the score key_trials ranks by (one owner: cuda.key_score): lower = stronger key
                    s["key_score"] = cuda.key_score(cuda.score_images(images[: cuda.SCORE_IMAGES]),
                                                    labels[: cuda.SCORE_IMAGES], w, normalise="max", padding="reflect")
                if args.explore:
                    s.update(tiny_scores(images, labels, w, params, int(0.75 * len(images)), args.tiny_epochs,
                                          tuple(args.tiny_seeds)))
                    if args.decode_cnn:
                        s.update(decode_score(images, w, params, args.decode_images, args.decode_epochs))
                s["seconds"] = round(time.perf_counter() - t0, 2)
                scores[tag][seed] = s
                print(f"[{tag} classes] seed {seed}: " + ", ".join(f"{k} {v:.4g}" for k, v in s.items()), flush=True)
        cols = measured_columns(args.results)
        names = [k for k in next(iter(scores["10"].values())) if k != "seconds"]
        print("\nSpearman rho (p) of score vs measured test accuracy (negative = the score predicts protection):")
        for col, accs in cols.items():
            tag = "5" if "cls56789" in col else "10"
            keys = [k for k in accs if k in scores[tag]]
            if len(keys) < 3:
                continue
            acc = [accs[k] for k in keys]
            table[col] = {"keys": keys, "accuracy": acc}
            cells = []
            for n in names:
                rho, pval = spearmanr([scores[tag][k][n] for k in keys], acc)
                table[col][n] = [float(rho), float(pval)]
                cells.append(f"{n} {rho:+.2f} ({pval:.2f})")
            print(f"{col} [{len(keys)} keys]: " + "; ".join(cells))
    chosen = {}
    if args.candidates:
        import datasets

        import uetransforms as ue
        from uetransforms.algorithms import cuda

        if args.score_seeds:
            cuda.SCORE_SEEDS = tuple(args.score_seeds)
        # exactly the bench's fit: train rows [0, --fit-rows), key_trials candidates scored on the fit's own sample
        ds = datasets.Dataset.from_parquet(os.path.join(args.data, "train-00000-of-00001.parquet")).select(range(args.fit_rows))
        if args.classes:
            # as bench_protection.py --classes: those classes' rows of [0, --fit-rows), relabelled 0.. in order
            keep = [int(c) for c in args.classes.split(",")]
            ds = ds.filter(lambda y: y in keep, input_columns="label")
            ds = ds.map(lambda y: {"label": keep.index(y)}, input_columns="label").cast_column(
                "label", datasets.ClassLabel(num_classes=len(keep)))
        for seed in args.candidates:
            t0 = time.perf_counter()
            bank = ue.fit("cuda", ds, image_column="img", label_column="label", seed=seed, key_trials=args.trials, **params)
            cands, sc = cuda.candidate_seeds(seed, args.trials), bank.info["key_scores"]
            kept, worst = bank.info["key_kept"], int(np.argmax(sc))
            chosen[seed] = {"candidates": cands, "scores": sc, "kept": kept, "worst": worst,
                            "fit_seconds": round(time.perf_counter() - t0, 1)}
            print(f"seed {seed}, {args.trials} candidates: scores " + " ".join(f"{v:.3f}" for v in sc)
                  + f"; kept #{kept} (bank seed {cands[kept]}), worst #{worst} (bank seed {cands[worst]}); "
                  f"fit {chosen[seed]['fit_seconds']} s", flush=True)
    timing = {}
    if args.time_fit:
        import datasets

        import uetransforms as ue

        ds = datasets.Dataset.from_parquet(os.path.join(args.data, "train-00000-of-00001.parquet")).select(range(args.time_fit))
        for trials in (1, args.trials):
            t0 = time.perf_counter()
            bank = ue.fit("cuda", ds, image_column="img", label_column="label", seed=2026, key_trials=trials, **params)
            timing[trials] = round(time.perf_counter() - t0, 1)
            print(f"ue.fit cuda key_trials={trials} on {args.time_fit} rows (32 px): {timing[trials]} s; "
                  f"info {({k: v for k, v in bank.info.items() if k.startswith('key_')})}", flush=True)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump({"command": " ".join(["python"] + sys.argv), "scores": scores, "correlations": table,
                       "candidates": chosen, "fit_seconds": timing}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
