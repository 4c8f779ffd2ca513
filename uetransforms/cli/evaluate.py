"""``uetransforms evaluate``: the command line of :func:`uetransforms.evaluate` and the suite.

The training loop and the suite live in :mod:`uetransforms.evaluation`; this module only turns
flags into their arguments and prints what came back.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from ..evaluation.defences import known_specs
from ..evaluation.attackers import keys as attacker_keys
from ..evaluation.harness import evaluate
from .data import load_data


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``uetransforms evaluate``."""
    parser.add_argument("--train", required=True,
                        help="training set: a parquet file/glob, a save_to_disk folder, or a hub dataset id "
                             "(protected, unless --bank is given)")
    parser.add_argument("--test", required=True, help="clean test set (same forms as --train)")
    parser.add_argument("--clean-train", help="the unprotected training set, same rows and order as --train")
    parser.add_argument("--bank", help="protect --train with this bank on the fly; --train is then the clean set")
    parser.add_argument("--image-column", default="image", help="image column of --train and --test (default: image)")
    parser.add_argument("--label-column", default="label",
                        help="integer class column of --train and --test (default: label)")
    parser.add_argument("--limit-train", "--limit", dest="limit_train", type=int, metavar="N",
                        help="use the first N training rows (--limit, as in fit/protect, is the same)")
    parser.add_argument("--limit-test", type=int, metavar="N", help="use the first N test rows")
    parser.add_argument("--resize", type=int, default=None, metavar="PX",
                        help="resize every train/test image to PX x PX after protection, as a trainer would "
                             "(needed for photos of mixed sizes; e.g. 64)")
    parser.add_argument("--arch", default=None, help="cnn-small (default) or a torchvision model name")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 8)")
    parser.add_argument("--batch-size", type=int, default=128, help="training batch size (default 128)")
    parser.add_argument("--lr", type=float, default=None,
                        help="peak learning rate of the one-cycle SGD schedule (default: the attacker's, 0.1 "
                             "scratch, 0.01 finetune)")
    parser.add_argument("--attacker", default="scratch", choices=attacker_keys(),
                        help="who trains on the protected set: scratch (default), linear-probe on a frozen "
                             "pretrained --backbone, or finetune of that --backbone")
    parser.add_argument("--backbone", default=None,
                        help="the pretrained attackers' backbone: tv:resnet18@IMAGENET1K_V1, timm:NAME, "
                             "clip:RN50@openai, or a local checkpoint (small-cnn@FILE, tv:ARCH@FILE.pth)")
    parser.add_argument("--device", default=None, help="cpu (default), cuda, cuda:1...")
    parser.add_argument("--seed", type=int, default=0,
                        help="the training run's seed (weights, shuffling, augmentation; not a bank key; default 0)")
    parser.add_argument("--no-augment", action="store_true", help="no random crop + flip")
    parser.add_argument("--defence", "--defences", dest="defences", nargs="+", default=None,
                        help=f"the trainer's defence(s), one run each (default none); registered: {known_specs()}")
    parser.add_argument("--protected-fraction", type=float, nargs="+", default=[1.0],
                        help="share(s) of training rows protected, e.g. 1 0.5 (needs --clean-train or --bank)")
    parser.add_argument("--label-map", help="label-agnostic training: JSON {\"old\": new} or a list, or a JSON file")
    parser.add_argument("--train-label-column", help="label-agnostic training: train on this column instead")
    parser.add_argument("--out-dir",
                        help="folder for report.json and figure.png (default: ~/.cache/uetransforms/reports/"
                             "evaluate-<time>, outside your working tree; with --suite: .../suite-<profile>, which a "
                             "rerun resumes)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    suite = parser.add_argument_group(
        "defence suite", "--suite standard: every method x defence against clean training under the same defence; "
                         "--train and --test are then the CLEAN sets, each method protects --train itself")
    suite.add_argument("--suite", choices=["standard"], help="run the standard suite (results.json + heatmap.png)")
    suite.add_argument("--profile", choices=["cpu", "paper"], default="cpu",
                       help="cpu: first 10k/2k rows, cnn-small, 8 epochs (default); paper: ResNet-18, all rows, "
                            "60 epochs (for a GPU). --limit-train/--limit-test/--epochs/--arch override it")
    suite.add_argument("--methods", nargs="+", help="suite methods (default: clean cuda em ar lsp ops random)")
    suite.add_argument("--bank-seed", type=int, default=1234, help="the suite methods' private key (default 1234)")
    suite.add_argument("--record-measured", action="store_true",
                       help="write each method's measured facts into the package's measured.json")


def _parse_label_map(text: str) -> Any:
    if os.path.exists(text):
        with open(text) as f:
            text = f.read()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--label-map must be JSON ({{\"0\": 0, \"1\": 1}} or [0, 0, 1]) or a JSON file: {err}") from err
    if isinstance(value, dict):
        return {int(k): int(v) for k, v in value.items()}
    if isinstance(value, list):
        return [int(v) for v in value]
    raise ValueError("--label-map must be a JSON object or list")


def default_report_dir(kind: str) -> str:
    """Where the CLI writes a report without ``--out-dir``: ``$XDG_CACHE_HOME/uetransforms/reports/<kind>``
    (``~/.cache/...``): reports are run output, and a folder in the working tree got committed by accident."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "uetransforms", "reports", kind)


def _resized(ds: Any, column: str, size: int | None) -> Any:
    """``ds`` with every image resized to ``size`` x ``size`` (RGB, bicubic), as a trainer's pipeline does."""
    if size is None:
        return ds
    if size < 8:
        raise ValueError(f"--resize {size}: pass a side of at least 8 pixels, e.g. --resize 64")
    import datasets
    from PIL import Image

    def resize(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        return {column: [im.convert("RGB").resize((size, size), Image.BICUBIC) for im in batch[column]]}

    return ds.cast_column(column, datasets.Image()).map(resize, batched=True, batch_size=64,
                                                         desc=f"resizing to {size}px")


def print_verdicts(report: Any) -> None:
    """One verdict line per defence that has both a clean and a fully protected run."""
    from ..evaluation.verdict import verdict

    runs = {(r.setting, r.defence): r.test_accuracy for r in report.rows}
    for (setting, defence), acc in runs.items():
        clean = runs.get(("clean", defence))
        if setting != "protected" or clean is None:
            continue
        v = verdict(clean_accuracy=clean, protected_accuracy=acc, num_classes=int(report.data["num_classes"]))
        where = "" if defence == "none" else f" [defence {defence}]"
        print(v.line().replace("verdict:", f"verdict{where}:", 1))


def _run_suite_cli(args: argparse.Namespace, train: Any, test: Any) -> int:
    import sys

    from ..evaluation.suite import evaluate_suite, table

    overrides: dict[str, Any] = {}
    if args.limit_train:
        overrides["train_size"] = args.limit_train
    if args.limit_test:
        overrides["test_size"] = args.limit_test
    if args.epochs:
        overrides["epochs"] = args.epochs
    if args.arch:
        overrides["arch"] = args.arch
    out_dir = args.out_dir or default_report_dir(f"suite-{args.profile}")
    print(f"suite results go to {out_dir} (rerun the same command to resume)", flush=True)
    doc = evaluate_suite(train, test, methods=args.methods, defences=args.defences, suite="standard",
                         profile=args.profile, overrides=overrides, out_dir=out_dir, image_column=args.image_column,
                         label_column=args.label_column, bank_seed=args.bank_seed, seed=args.seed,
                         device=args.device, command="uetransforms " + " ".join(sys.argv[1:]),
                         progress=not args.quiet)
    print(table(doc))
    if doc["not_run"]:
        print(f"\nnot run: {len(doc['not_run'])} cells (rerun to continue)")
    print(f"\nwrote {doc['files']['results']} and {doc['files']['heatmap']}")
    if args.record_measured:
        from ..algorithms import measured

        print(f"recorded measured facts in {measured.record(doc)}")
    return 0


def run_cli(args: argparse.Namespace) -> int:
    """Run ``uetransforms evaluate``: print the table and where the report was written; exit code."""
    train = load_data(args.train, split="train")
    test = load_data(args.test, split="test")
    if args.suite:
        if args.resize is not None:
            raise ValueError("--resize is for one evaluation of your own data; --suite standard uses its profile's "
                             "CIFAR-sized images: drop --resize")
        if args.bank or args.clean_train or args.protected_fraction != [1.0] or args.label_map or args.train_label_column:
            raise ValueError("--suite protects the clean --train set with each method itself: drop --bank, "
                             "--clean-train, --protected-fraction, --label-map and --train-label-column")
        return _run_suite_cli(args, train, test)
    if args.methods or args.record_measured:
        raise ValueError("--methods and --record-measured belong to --suite standard")
    if args.attacker != "scratch" and not args.backbone:
        raise ValueError(f"--attacker {args.attacker} starts from a pretrained model: add --backbone "
                         "(e.g. tv:resnet18@IMAGENET1K_V1 or small-cnn@/path/file.safetensors)")
    if args.attacker == "scratch" and args.backbone:
        raise ValueError("--backbone is for --attacker linear-probe or finetune; scratch trains a fresh --arch")
    if args.limit_train:
        train = train.select(range(min(args.limit_train, len(train))))
    if args.limit_test:
        test = test.select(range(min(args.limit_test, len(test))))
    test = _resized(test, args.image_column, args.resize)
    clean_train = None
    if args.bank:
        from ..integrations.datasets import Protect

        clean_train = train
        train = train.map(Protect(args.bank, image_column=args.image_column, label_column=args.label_column),
                          batched=True, batch_size=256, desc="protecting")
    elif args.clean_train:
        clean_train = load_data(args.clean_train, split="train")
        if args.limit_train:
            clean_train = clean_train.select(range(min(args.limit_train, len(clean_train))))
    # After protection (a bank protects the images as they are published), before training.
    train = _resized(train, args.image_column, args.resize)
    if clean_train is not None:
        clean_train = _resized(clean_train, args.image_column, args.resize)
    if clean_train is None:
        print("no clean baseline: --train is used as given (protected) and nothing unprotected was passed, so the "
              "clean-training row and the image-quality numbers are missing. Pass --clean-train <the same rows "
              "before protection>, or --bank <bank file> with the clean set as --train.", flush=True)
    out_dir = args.out_dir or default_report_dir(time.strftime("evaluate-%Y%m%d-%H%M%S"))
    report = evaluate(
        train, test, clean_train=clean_train, image_column=args.image_column, label_column=args.label_column,
        arch=args.arch or "cnn-small", epochs=args.epochs or 8, batch_size=args.batch_size, lr=args.lr,
        device=args.device, seed=args.seed, augment=not args.no_augment, defences=args.defences or ["none"],
        label_map=_parse_label_map(args.label_map) if args.label_map else None,
        train_label_column=args.train_label_column, protected_fraction=args.protected_fraction,
        out_dir=out_dir, progress=not args.quiet, attacker=args.attacker, backbone=args.backbone,
    )
    print(report.table())
    print()
    print_verdicts(report)
    if report.quality:
        q = report.quality
        # After --resize the two sets are compared at the trainer's size, not as published: say so,
        # or the line contradicts the one `fit` printed for the same bank.
        where = (f" (measured at {args.resize}x{args.resize} px after --resize, as the trainer sees them; fit's "
                 "quality line is at the images' own size)") if args.resize else ""
        print(f"\nperturbation: L-inf max {q['linf_max']:.0f}/255, L2 mean {q['l2_mean']:.3f}, "
              f"PSNR {q['psnr_mean']:.1f} dB, SSIM {q['ssim_mean']:.3f}{where}")
    print(f"\nwrote {report.files['report']} and {report.files['figure']}")
    return 0


__all__ = ["add_cli_arguments", "default_report_dir", "run_cli"]
