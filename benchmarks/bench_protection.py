"""Protection benchmark: clean CIFAR-10 test accuracy of a model trained on protected data, method x defence.

Fits each method on a CIFAR-10 training subset, protects it with ``Dataset.map(ue.Protect(bank))``,
trains a model from scratch on it under each defence (``ue.evaluate``) and tests on the clean
test subset. ``clean`` is the no-protection row. Writes a JSON with every number and prints a
markdown table (rows: methods, columns: defences).

    nice python benchmarks/bench_protection.py --methods clean random cuda \\
        --defences none grayscale jpeg75 --epochs 8
    python benchmarks/bench_protection.py --methods cuda --param cuda.blur_parameter=0.1
    python benchmarks/bench_protection.py --methods clean cuda --defences none --resolution 96 \
        --train-size 2000 --test-size 1000 --epochs 4      # photo-size stand-in: upscaled, stored as JPEG 95
    python benchmarks/bench_protection.py --methods clean cuda --classes 5-9 --attacker linear-probe \
        --backbone /tmp/cls04.safetensors   # a 5-way task whose classes the backbone (build_surrogate.py --classes 0-4) never saw

Data: ../shared/data/cifar10/{train,test}-00000-of-00001.parquet (``--data`` to change); the
rows are shuffled, so the first 10k / 2k are class-balanced.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from build_surrogate import CIFAR10_CLASSES, class_rows, describe_classes, parse_classes  # noqa: E402

DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "cifar10"))


def parse_params(items: list[str]) -> dict[str, dict[str, object]]:
    """``["cuda.blur_parameter=0.3", "random.epsilon=8/255"]`` -> ``{"cuda": {"blur_parameter": 0.3}, ...}``.

    Values as the CLI's ``--param`` reads them (JSON, fractions such as ``8/255``, text), plus
    Python literals (``None``, ``True``) for the commands recorded in RESULTS.md.
    """
    from uetransforms.cli import parse_param

    out: dict[str, dict[str, object]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        method, dot, name = key.partition(".")
        if not sep or not dot or not method or not name:
            raise SystemExit(f"--param {item!r}: expected METHOD.NAME=VALUE, e.g. cuda.blur_parameter=0.3")
        _, value = parse_param(f"{name}={raw}")
        if isinstance(value, str):
            try:
                value = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                pass  # plain strings such as normalise=max
        out.setdefault(method, {})[name] = value
    return out


def select_classes(ds, column: str, classes: list[int], what: str):
    """The rows of ``ds`` whose ``column`` label is in ``classes`` (order kept), relabelled 0..k-1 with
    those classes' names, so the methods (one key per class) and the attacker (one output per class)
    see a k-way task; a clear error when a class has no row (``what`` names the rows)."""
    import datasets

    idx, labels = class_rows(ds[column], classes, what)
    kept = ds.select(idx)
    feats = kept.features.copy()
    names = getattr(feats[column], "names", None) or CIFAR10_CLASSES
    feats[column] = datasets.ClassLabel(names=[names[c] for c in classes])
    return kept.remove_columns(column).add_column(column, labels.tolist()).cast(feats)


def gray_sparse(ds, column: str, quantile: float):
    """Grey images (kept as 3 equal channels) whose darkest ``quantile`` of pixels is set to black.

    A crude stand-in for sparse medical scans (an object on a black background): it tests whether
    a method's noise still works when most pixels carry nothing, not how it does on real scans.
    """
    import numpy as np
    from PIL import Image

    if not 0 <= quantile < 1:
        raise SystemExit(f"--background-quantile must be in [0, 1), got {quantile}")

    def convert(batch):
        out = []
        for im in batch[column]:
            g = np.asarray(im.convert("L"), np.uint8)
            g = np.where(g >= np.quantile(g, quantile), g, 0).astype(np.uint8)
            out.append(Image.fromarray(np.repeat(g[:, :, None], 3, 2)))
        return {column: out}

    return ds.map(convert, batched=True, batch_size=500, desc="gray-sparse")


def upscale_jpeg(ds, column: str, side: int, quality: int):
    """Every image resized to ``side`` x ``side`` (bicubic, Pillow) and stored as JPEG at ``quality``.

    A stand-in for photo-sized data: the bytes are stored as encoded (not re-encoded by
    ``datasets``), so protection, fitting and training all start from the decoded JPEG, as they
    would from a scraped photo folder. CIFAR upscaled keeps 32 px of detail: it tests the methods
    at the size, not on real photos.
    """
    import io

    from PIL import Image

    if side < 8:
        raise SystemExit(f"--resolution must be at least 8 px, got {side}")
    if not 1 <= quality <= 100:
        raise SystemExit(f"--jpeg-quality must be in 1..100, got {quality}")

    def convert(batch):
        out = []
        for im in batch[column]:
            buf = io.BytesIO()
            im.convert("RGB").resize((side, side), Image.BICUBIC).save(buf, format="JPEG", quality=quality)
            out.append(buf.getvalue())
        return {column: out}

    return ds.map(convert, batched=True, batch_size=500, features=ds.features, desc=f"upscale to {side} px (JPEG {quality})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["clean", "random", "cuda"],
                   help="'clean' (no protection) and/or method keys of ue.methods()")
    p.add_argument("--defences", nargs="+", default=["none", "grayscale", "jpeg75"],
                   help="defence specs (see uetransforms.evaluation.defences), e.g. none grayscale jpeg75 cutout pgd:eps=8,steps=5")
    p.add_argument("--param", action="append", default=[], metavar="METHOD.NAME=VALUE",
                   help="method parameter, repeatable: --param cuda.blur_parameter=0.3")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=None, help="peak lr (default: the attacker's: 0.1 scratch, 0.01 finetune)")
    p.add_argument("--attacker", default="scratch", help="scratch, linear-probe or finetune (ue.evaluate's attacker=)")
    p.add_argument("--backbone", default=None, help="the pretrained attackers' backbone spec (ue.evaluate's backbone=)")
    p.add_argument("--backbone-size", type=int, default=None,
                   help="side the backbone reads its inputs at (default: its own, 224 for tv:, 32 for a small-cnn "
                        "file); pass the --resolution to feed a globally pooled small CNN the images unresized")
    p.add_argument("--allow-random-backbone", action="store_true",
                   help="accept a '...@random' --backbone: the control that says what pretraining added (the "
                        "identity records random_init)")
    p.add_argument("--arch", default="cnn-small")
    p.add_argument("--train-size", type=int, default=10_000)
    p.add_argument("--test-size", type=int, default=2_000)
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--bank-seed", type=int, default=1234, help="the methods' private key")
    p.add_argument("--label-map", choices=["none", "animal-vehicle"], default="none",
                   help="label-agnostic setting: the trainer uses another labelling of the same images "
                        "(animal-vehicle: 2 classes) than the protector")
    p.add_argument("--classes", default=None, metavar="SPEC",
                   help="keep only the --train-size / --test-size rows of these CIFAR-10 classes (e.g. 5-9 or 5,7,9; "
                        "order kept), relabelled 0..k-1: the task for a backbone trained on the other classes "
                        "(build_surrogate.py --classes 0-4)")
    p.add_argument("--protected-fraction", type=float, nargs="+", default=[1.0],
                   help="partial protection: fraction(s) of the training rows protected, the rest clean")
    p.add_argument("--bank", action="append", default=[], metavar="METHOD=PATH",
                   help="use a saved bank for METHOD instead of fitting one (its fit time is then 0 here)")
    p.add_argument("--variant", choices=["rgb", "gray-sparse"], default="rgb",
                   help="gray-sparse: a sparse stand-in for medical scans (train and test images to grey, then "
                        "every pixel darker than the image's --background-quantile set to black)")
    p.add_argument("--background-quantile", type=float, default=0.6,
                   help="gray-sparse: share of each image's pixels turned into black background")
    p.add_argument("--resolution", type=int, default=None,
                   help="photo-size stand-in: train and test images upscaled to this side (bicubic) and stored as "
                        "JPEG at --jpeg-quality before anything else (the banks are fitted at that size)")
    p.add_argument("--jpeg-quality", type=int, default=95, help="--resolution: quality of the stored JPEGs")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--data", default=DEFAULT_DATA, help="folder with CIFAR-10 train/test parquet files")
    p.add_argument("--out", default=os.path.join(HERE, "results", "protection.json"))
    args = p.parse_args(argv)

    import datasets
    import torch

    import uetransforms as ue

    if args.threads:
        torch.set_num_threads(args.threads)
    params = parse_params(args.param)
    classes = parse_classes(args.classes) if args.classes is not None else None
    if classes is not None and args.label_map != "none":
        raise SystemExit("--label-map relabels CIFAR-10's ten classes; it cannot be combined with --classes")
    saved = dict(b.split("=", 1) for b in args.bank)
    known = {m["key"] for m in ue.methods()}
    unknown = [m for m in list(args.methods) + list(params) if m != "clean" and m not in known]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; available: clean, {', '.join(sorted(known))}")
    paths = {s: os.path.join(args.data, f"{s}-00000-of-00001.parquet") for s in ("train", "test")}
    for s, path in paths.items():
        if not os.path.exists(path):
            raise SystemExit(f"no CIFAR-10 {s} file at {path}; pass --data <folder with the parquet files>")
    train = datasets.Dataset.from_parquet(paths["train"]).select(range(args.train_size))
    test = datasets.Dataset.from_parquet(paths["test"]).select(range(args.test_size))
    if classes is not None:
        train = select_classes(train, "label", classes, f"train rows [0, {args.train_size}) (--train-size)")
        test = select_classes(test, "label", classes, f"test rows [0, {args.test_size}) (--test-size)")
        print(f"{describe_classes(classes)}: {len(train)} train rows, {len(test)} test rows", flush=True)
    if args.variant == "gray-sparse":
        train, test = (gray_sparse(ds, "img", args.background_quantile) for ds in (train, test))
    if args.resolution:
        train, test = (upscale_jpeg(ds, "img", args.resolution, args.jpeg_quality) for ds in (train, test))

    backbone = args.backbone
    if args.backbone_size is not None or args.allow_random_backbone:
        if backbone is None:
            raise SystemExit("--backbone-size and --allow-random-backbone are about --backbone: pass --backbone too")
        if args.backbone_size is not None and args.backbone_size < 8:
            raise SystemExit(f"--backbone-size must be at least 8 px, got {args.backbone_size}")
        from uetransforms.models.backbones import load_backbone

        backbone = load_backbone(backbone, image_size=args.backbone_size, device=args.device,
                                 allow_random=args.allow_random_backbone)
    common = dict(image_column="img", label_column="label", arch=args.arch, epochs=args.epochs,
                  batch_size=args.batch_size, lr=args.lr, device=args.device, seed=args.seed,
                  defences=args.defences, attacker=args.attacker, backbone=backbone)
    if args.label_map == "animal-vehicle":
        # CIFAR-10 vehicles: airplane 0, automobile 1, ship 8, truck 9.
        common["label_map"] = [1 if c in (0, 1, 8, 9) else 0 for c in range(10)]
    # only when given, so the other settings' documents keep their bytes
    subset = {} if classes is None else {"classes": classes}
    subset_names = None if classes is None else list(train.features["label"].names)
    results = []
    t_all = time.perf_counter()
    for method in args.methods:
        fit_s = protect_s = 0.0
        if method == "clean":
            report = ue.evaluate(train, test, **common)
        else:
            t0 = time.perf_counter()
            # clusters is the label-agnostic protector: it is fitted without labels.
            fit_labels = None if method == "clusters" else "label"
            if method in saved:
                bank = ue.NoiseBank.load(saved[method])
                if bank.method != method:
                    raise SystemExit(f"--bank {method}={saved[method]} holds a {bank.method!r} bank")
                fitted_on = bank.info.get("class_names")
                if classes is not None and bank.keying == "class" and list(fitted_on or []) != subset_names:
                    # its keys 0..k-1 would be other classes' filters/noise: a silent wrong row
                    raise SystemExit(f"--bank {method}={saved[method]} is keyed by the classes {fitted_on}, but "
                                     f"--classes {args.classes} keeps {subset_names}: fit it on the same rows "
                                     "(fit_bank.py) or leave --bank out")
            else:
                bank = ue.fit(method, train, image_column="img", label_column=fit_labels, seed=args.bank_seed,
                              device=args.device, **params.get(method, {}))
            fit_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            # A cluster bank finds each image's cluster itself; class labels are not cluster ids.
            prot_labels = None if bank.keying == "cluster" else "label"
            prot = train.map(ue.Protect(bank, image_column="img", label_column=prot_labels, device=args.device),
                             batched=True, batch_size=256, desc=f"protecting ({method})")
            protect_s = time.perf_counter() - t0
            report = ue.evaluate(prot, test, clean_train=train, baseline=False,
                                 protected_fraction=args.protected_fraction, **common)
        for row in report.rows:
            setting = row.defence if row.protected_fraction >= 1 else f"{row.defence} @{row.protected_fraction:g} protected"
            # how the protector fitted: a cluster-keyed bank (clusters, or a --bank fitted with
            # --no-labels) used no labels; record_attacks keeps such rows apart from labelled ones
            free = method != "clean" and bank.fitted_without_labels
            labels = "none" if free else "true"
            results.append({"method": method, "params": params.get(method, {}), "defence": setting, "labels": labels,
                            "attacker": report.config["attacker"], "backbone": report.config["backbone"],
                            "resolution": report.data["image_shape"][-1], "peak_accuracy": row.peak_accuracy,
                            "peak_epoch": row.peak_epoch,
                            "variant": args.variant,
                            "stored_as": f"JPEG q{args.jpeg_quality}, bicubic from 32 px" if args.resolution else "PNG",
                            "protected_fraction": row.protected_fraction, "label_map": args.label_map,
                            "test_accuracy": row.test_accuracy, "curve": row.curve,
                            "train_accuracy": row.train_accuracy, "train_seconds": row.seconds,
                            "fit_seconds": round(fit_s, 2), "protect_seconds": round(protect_s, 2),
                            "quality": report.quality, **subset})
            print(f"{method:>10} / {row.defence:<12} test acc {row.test_accuracy:.3f}  "
                  f"(train acc {row.train_accuracy:.3f}, {row.seconds:.0f} s)", flush=True)
    wall = time.perf_counter() - t_all

    defences = list(dict.fromkeys(r["defence"] for r in results))
    acc = {(r["method"], r["defence"]): r["test_accuracy"] for r in results}
    lines = ["| method | " + " | ".join(defences) + " |", "|---|" + "---:|" * len(defences)]
    for m in args.methods:
        lines.append(f"| {m} | " + " | ".join(f"{acc[(m, d)]:.3f}" for d in defences) + " |")
    table = "\n".join(lines)
    print()
    print(table)
    print(f"\n{len(results)} runs in {wall:.0f} s ({wall / max(1, len(results)):.0f} s per run incl. fitting/decoding)")

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({
            "command": "python benchmarks/bench_protection.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "config": {**{k: v for k, v in common.items() if k != "backbone"}, "backbone": args.backbone,
                       "backbone_size": args.backbone_size, "train_size": args.train_size,
                       "test_size": args.test_size, "bank_seed": args.bank_seed, "params": params,
                       "threads": torch.get_num_threads(),
                       **({} if classes is None else {"classes": classes, "class_names": subset_names,
                                                      "train_rows_kept": len(train), "test_rows_kept": len(test)})},
            "environment": {"uetransforms": ue.__version__, "torch": torch.__version__,
                            "python": platform.python_version(), "cpu_count": os.cpu_count()},
            "wall_seconds": round(wall, 1), "table": table, "results": results,
        }, f, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
