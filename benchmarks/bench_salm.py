"""SALM vs em vs clean on synthetic sparse "scans" (issue 26): a dark background and one small bright object.

The data (deterministic, seeded; nothing downloaded): ``--size`` x ``--size`` grey images stored
as 3 equal channels. Background: grey level ~ N(6, 3^2), clipped to [0, 255]. One object per image,
centred at a random place (kept inside the frame), radius ``r`` ~ U(0.10, 0.19) * size, brightness
~ U(130, 250) with 8% multiplicative speckle, drawn at 4x and averaged down (soft edges). The class
is the object's shape: 0 disk, 1 square, 2 ring (inner radius r/2), 3 plus sign (arm width r/2).
The object covers about 3-11% of the pixels (`sparsity` in the JSON), the rest is background,
a crude stand-in for a lesion on a scan; it says nothing about real medical images.

Each configuration ``NAME=METHOD[:k=v,...]`` is fitted on the training images (``ue.fit``), applied
as a bank would be (``ue.apply``, whole grey levels), and a ``--arch`` model is trained from
scratch on the protected copy (``ue.evaluate``: SGD, one-cycle, crop+flip augmentation), then tested
on clean test images; ``--defence`` (default ``none``) is one defence the attacker applies, e.g.
``grayscale`` (training and test images to luma). ``clean`` is the unprotected row. ``random-tile[:tile=c,fraction=f,epsilon=e]``
is a control with no fit and no model: each class gets a ``c x c`` tile with ``floor(f * c * c)``
positions drawn at random (``--bank-seed``) and a random sign per position and channel, times
``round(255 * e)`` grey levels, repeated over the image (what ``salm``'s ``tile`` would store if the
fit did nothing but pick random positions and signs); with ``design=distinct`` the positions and signs
are ``salm.distinct_tiles``' (seeded by ``--bank-seed``: classes kept apart under the attacker's shifts
and mirror); ``design=distinct-bright`` the same negated as a whole when one of its colours is
negative in every channel (which a black background clips to almost nothing); ``design=chroma`` the same with zero-sum colours (no grey component, so nothing of the
tile is in a grey scan); ``design=grey`` the same with every position +e in every channel (grey and
non-negative: classes differ by positions only), ``design=grey-signs`` +-e the same in every channel; ``block=b`` (designs only) makes each designed position a
``b x b`` square (``salm.design_tiles``: the design on a ``c / b`` grid, a coarser pattern). Its row records ``min_view_distance2``, the smallest squared distance between two
classes' +-1 tiles over those views. The JSON records every number, the share of
pixel positions each bank changed, the bank's stop reason and its warm-up.

    OMP_NUM_THREADS=1 python benchmarks/bench_salm.py --threads 1 \\
        --config clean --config em=em --config salm=salm:fraction=0.1 \\
        --common surrogate=cnn-tiny,steps=5,step_size=2/255,train_steps=20,max_seconds=120 \\
        --out benchmarks/results/salm-scans.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SHAPES = ("disk", "square", "ring", "plus")


def scans(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """``n`` synthetic scans ``[n, size, size, 3]`` uint8, labels ``[n]`` (balanced), mean object share."""
    rng = np.random.default_rng(seed)
    up = 4
    s = size * up
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5
    labels = np.arange(n) % len(SHAPES)
    rng.shuffle(labels)
    out = np.empty((n, size, size, 3), np.uint8)
    share = 0.0
    for i, c in enumerate(labels):
        r = rng.uniform(0.10, 0.19) * s
        cy, cx = rng.uniform(r + up, s - r - up, 2)
        dy, dx = np.abs(yy - cy), np.abs(xx - cx)
        dist = np.hypot(dy, dx)
        if c == 0:
            obj = dist <= r
        elif c == 1:
            obj = np.maximum(dy, dx) <= r * 0.85
        elif c == 2:
            obj = (dist <= r) & (dist >= r / 2)
        else:
            obj = ((dy <= r / 4) & (dx <= r)) | ((dx <= r / 4) & (dy <= r))
        cover = obj.reshape(size, up, size, up).mean(axis=(1, 3))
        bright = rng.uniform(130, 250) * (1 + 0.08 * rng.standard_normal((size, size)))
        bg = rng.normal(6, 3, (size, size))
        g = np.clip(bg * (1 - cover) + bright * cover, 0, 255).round().astype(np.uint8)
        out[i] = g[:, :, None]
        share += float((cover > 0.5).mean())
    return out, labels.astype(np.int64), share / n


def random_tiles(num_classes: int, size: int, tile: int, fraction: float, levels: int, seed: int,
                 design: str = "random", block: int = 1) -> tuple[np.ndarray, float]:
    """The ``random-tile`` control: ``[K, 3, size, size]`` int16 grey levels, one periodic tile per class, and
    the smallest distance between two classes' tiles over the attacker's views (salm.view_correlation).

    ``design="random"``: positions and signs drawn at random; ``"distinct"``: ``salm.distinct_tiles``;
    ``"distinct-bright"``: the same, negated as a whole when a position is negative in every channel;
    ``"chroma"``: ``salm.distinct_tiles(colours="chroma")`` (+1 in one channel, -1 in another: no grey part);
    ``"grey"``: ``colours="grey"`` (+1 in every channel: grey and non-negative, classes differ by positions);
    ``"grey-signs"``: ``colours="grey-signs"`` (+-1, the same in every channel).
    ``block`` (designs only): ``salm.design_tiles``' squares of ``block x block`` positions.
    """
    from uetransforms.algorithms import salm

    keep = int(np.floor(fraction * tile * tile + 1e-9))
    if keep < 1 or size % tile:
        raise SystemExit(f"random-tile: tile={tile} must divide --size {size} and keep >= 1 position at "
                         f"fraction={fraction}")
    if block != 1 and (design == "random" or block < 1 or tile % block
                       or np.floor(fraction * (tile // block) ** 2 + 1e-9) < 1):
        raise SystemExit(f"random-tile: block={block} needs a design (distinct, distinct-bright, chroma, grey, grey-signs), a "
                         f"block side that divides tile={tile}, and fraction * (tile / block)^2 >= 1")
    if design in ("distinct", "distinct-bright", "chroma", "grey", "grey-signs"):
        colours = {"chroma": "chroma", "grey": "grey", "grey-signs": "grey-signs"}.get(design, "signs")
        out = salm.design_tiles(num_classes, 3, tile, fraction, seed, colours=colours, block=block).astype(np.int16)
        if design == "distinct-bright" and (out.max(1) < 0).any():
            # a position negative in every channel changes little on a black background (clipped at 0):
            # the whole design negated keeps every distance between classes and has no such position
            out = -out
    elif design == "random":
        rng = np.random.default_rng(seed)
        out = np.zeros((num_classes, 3, tile, tile), np.int16)
        for c in range(num_classes):
            pos = rng.choice(tile * tile, keep, replace=False)
            signs = rng.choice(np.array([-1, 1], np.int16), (3, keep))
            out[c].reshape(3, -1)[:, pos] = signs
    else:
        raise SystemExit(f"random-tile: design={design!r}; use 'random', 'distinct', 'distinct-bright', 'chroma', "
                         "'grey' or 'grey-signs'")
    apart = salm._design_distance(out)
    return np.tile(out * levels, (1, 1, size // tile, size // tile)), apart


def parse_kv(text: str) -> dict[str, object]:
    from uetransforms.cli import parse_param

    out: dict[str, object] = {}
    for item in filter(None, text.split(",")):
        name, value = parse_param(item)
        out[name] = None if value == "None" else value
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", action="append", default=[], metavar="NAME=METHOD[:k=v,...]",
                   help="'clean', or a named fit, e.g. salm-05=salm:fraction=0.05 (repeatable)")
    p.add_argument("--common", default="", help="k=v,... given to every fit (a method's own k=v win)")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--train-size", type=int, default=2000)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--data-seed", type=int, default=0, help="train data seed (test: data seed + 1)")
    p.add_argument("--arch", default="cnn-small")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--seeds", default=None, metavar="S1,S2,...",
                   help="train the attacker once per training seed on each training set (one fit per config): one "
                        "row per seed, in this order; replaces --seed")
    p.add_argument("--bank-seed", type=int, default=1234)
    p.add_argument("--defence", default="none",
                   help="one defence spec the attacker applies (uetransforms.evaluation.defences), e.g. grayscale")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=os.path.join(HERE, "results", "salm-scans.json"))
    args = p.parse_args(argv)
    try:
        seeds = [args.seed] if args.seeds is None else [int(t) for t in args.seeds.split(",")]
    except ValueError:
        raise SystemExit(f"--seeds {args.seeds!r}: give training seeds as integers separated by commas, e.g. 0,1")
    if not seeds or len(set(seeds)) != len(seeds):
        raise SystemExit(f"--seeds {args.seeds!r}: give at least one training seed, each once")

    import torch

    import uetransforms as ue
    from uetransforms.core.data import FitData

    if args.threads:
        torch.set_num_threads(args.threads)
    common = parse_kv(args.common)
    x_train, y_train, share = scans(args.train_size, args.size, args.data_seed)
    x_test, y_test, _ = scans(args.test_size, args.size, args.data_seed + 1)
    test = {"image": list(x_test), "label": y_test.tolist()}
    clean = {"image": list(x_train), "label": y_train.tolist()}
    ev = dict(arch=args.arch, epochs=args.epochs, progress=False, defences=(args.defence,))
    results: list[dict[str, object]] = []
    t_all = time.perf_counter()

    def write() -> float:
        """The JSON so far (after every row: a run cut by a timeout keeps its finished rows)."""
        # each row against the clean row of its own training seed (rows carry no seed without --seeds)
        base = {r.get("train_seed"): r["test_accuracy"] for r in reversed(results) if r["method"] == "clean"}
        for r in results:
            if base.get(r.get("train_seed")):
                r["ratio_to_clean"] = round(r["test_accuracy"] / base[r.get("train_seed")], 3)
        wall = time.perf_counter() - t_all
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"command": "python benchmarks/bench_salm.py " + " ".join(sys.argv[1:] if argv is None else argv),
                       "setting": {"data": f"synthetic scans ({', '.join(SHAPES)} on a dark background), seed "
                                   f"{args.data_seed}/{args.data_seed + 1}", "size": args.size,
                                   "train_size": args.train_size, "test_size": args.test_size,
                                   "object_share": round(share, 4), "attacker": f"{args.arch} from scratch, "
                                   f"{args.epochs} epochs, seed{'s' * (len(seeds) > 1)} "
                                   f"{', '.join(map(str, seeds))}", "defence": args.defence,
                                   "bank_seed": args.bank_seed,
                                   "common": common, "threads": torch.get_num_threads()},
                       "environment": {"uetransforms": ue.__version__, "torch": torch.__version__,
                                       "python": platform.python_version(), "cpu_count": os.cpu_count()},
                       "wall_seconds": round(wall, 1), "results": results}, f, indent=2, default=str)
        return wall

    for spec in args.config or ["clean"]:
        name, _, rest = spec.partition("=")
        method, _, kv = (rest or name).partition(":")
        row: dict[str, object] = {"name": name, "method": method}
        if method == "clean":
            train, against = clean, {}
        elif method == "random-tile":
            kw = parse_kv(kv)
            c, f = int(kw.get("tile", 4)), float(kw.get("fraction", 0.2))
            levels = int(round(255 * float(kw.get("epsilon", 8 / 255))))
            design, block = str(kw.get("design", "random")), int(kw.get("block", 1))
            noise, apart = random_tiles(len(SHAPES), args.size, c, f, levels, args.bank_seed, design, block)
            x = x_train.astype(np.int16).transpose(0, 3, 1, 2)
            prot_np = np.clip(x + noise[y_train], 0, 255).astype(np.uint8)
            changed = (np.abs(prot_np.astype(np.int16) - x).max(1) > 0).reshape(len(x), -1).mean(1)
            images = list(np.ascontiguousarray(prot_np.transpose(0, 2, 3, 1)))
            train, against = {"image": images, "label": y_train.tolist()}, {"clean_train": clean, "baseline": False}
            row.update(params={"tile": c, "fraction": f, "levels": levels, "design": design,
                               **({"block": block} if block != 1 else {})},
                       min_view_distance2=apart,
                       changed_positions_mean=round(float(changed.mean()), 4),
                       changed_positions_max=round(float(changed.max()), 4))
        else:
            params = {**common, **parse_kv(kv)}
            data = FitData.from_arrays(x_train, y_train)
            t0 = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                bank = ue.fit(method, data, seed=args.bank_seed, **params)
            fit_s = time.perf_counter() - t0
            x = torch.from_numpy(x_train).permute(0, 3, 1, 2).contiguous()
            keys = y_train if bank.keying == "class" else data.sample_ids
            prot = ue.apply(bank, x, keys)
            diff = (prot.int() - x.int()).abs().amax(1)  # [n, H, W]: largest change over channels
            changed = (diff > 0).flatten(1).float().mean(1)
            prot_np = prot.permute(0, 2, 3, 1).contiguous().numpy()
            train, against = {"image": list(prot_np), "label": y_train.tolist()}, {"clean_train": clean, "baseline": False}
            info = {k: v for k, v in bank.info.items() if k not in ("verified", "reconstruction")}
            row.update(params=params, fit_seconds=round(fit_s, 1), info=info,
                       warnings=[str(w.message) for w in caught],
                       changed_positions_mean=round(float(changed.mean()), 4),
                       changed_positions_max=round(float(changed.max()), 4),
                       linf_levels=int(diff.max()))
        # one fit, one attacker per training seed: the attacker's own seed is part of the spread
        for seed in seeds:
            report = ue.evaluate(train, test, seed=seed, **against, **ev)
            r = report.rows[0]
            out = dict(row)
            if method != "clean":
                out["quality"] = report.quality
            if args.seeds is not None:
                out["train_seed"] = seed
            out.update(test_accuracy=r.test_accuracy, train_accuracy=r.train_accuracy, curve=r.curve,
                       train_seconds=r.seconds)
            results.append(out)
            write()
            extra = "" if method in ("clean", "random-tile") else (
                f", fit {row['fit_seconds']} s, stop {row['info']['stopped_by']}, err {row['info']['final_train_error']}, "
                f"changed {row['changed_positions_max']:.3f} of positions")
            tag = f" seed {seed}" if args.seeds is not None else ""
            print(f"{name:>16}{tag}: test acc {r.test_accuracy:.3f} (train {r.train_accuracy:.3f}{extra})", flush=True)
    wall = write()
    print(f"wrote {args.out} ({wall:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
