"""The standard defence suite on CIFAR-10: ``ue.evaluate_suite`` over methods x defences.

Resumable: rerun the same command to continue (finished cells are skipped); start the same
command twice to use two processes (each claims a cell before training it). Banks, cells,
``results.json`` and ``heatmap.png`` go to ``--out-dir``; ``--copy-to`` copies the results and the
heatmap (never the banks: they are secrets) into the repository when the run ends.

    OMP_NUM_THREADS=1 nice python benchmarks/bench_suite.py --profile cpu --out-dir /tmp/ue-suite-cpu \\
        --copy-to benchmarks/results/suite-cpu

Data: ../shared/data/cifar10/{train,test}-00000-of-00001.parquet (``--data`` to change).
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "cifar10"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="cpu", choices=["cpu", "paper"])
    p.add_argument("--methods", nargs="+", default=None, help="default: the standard suite's")
    p.add_argument("--defences", nargs="+", default=None, help="default: the standard suite's")
    p.add_argument("--epochs", type=int, default=None, help="override the profile's epochs")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--copy-to", default=None, help="copy results.json and heatmap.png here at the end")
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default=None)
    p.add_argument("--no-wait", action="store_true",
                   help="return when the cells left are all being trained by other processes")
    p.add_argument("--collect-only", action="store_true",
                   help="train nothing: rewrite results.json + heatmap.png from the finished cells of --out-dir")
    p.add_argument("--command", default=None, help="with --collect-only: the command(s) to record as the source")
    p.add_argument("--record-measured", action="store_true",
                   help="write the per-method facts into uetransforms/assets/measured.json")
    args = p.parse_args(argv)

    import datasets
    import torch

    from uetransforms.evaluation.suite import collect, evaluate_suite

    torch.set_num_threads(args.threads)
    if args.collect_only:
        doc = collect(args.out_dir, methods=args.methods, defences=args.defences, command=args.command)
        return _finish(doc, args)
    train = datasets.Dataset.from_parquet(os.path.join(args.data, "train-00000-of-00001.parquet"))
    test = datasets.Dataset.from_parquet(os.path.join(args.data, "test-00000-of-00001.parquet"))
    command = "python benchmarks/bench_suite.py " + " ".join(sys.argv[1:] if argv is None else argv)
    doc = evaluate_suite(train, test, methods=args.methods, defences=args.defences, profile=args.profile,
                         overrides={"epochs": args.epochs} if args.epochs else None, out_dir=args.out_dir,
                         image_column="img", label_column="label", device=args.device, command=command,
                         wait=not args.no_wait)
    return _finish(doc, args)


def _finish(doc: dict, args: argparse.Namespace) -> int:
    import shutil

    from uetransforms.algorithms import measured
    from uetransforms.evaluation.suite import table

    print(table(doc))
    print(f"\nnot run: {len(doc['not_run'])} cells; results in {doc['files']['results']}")
    if args.copy_to:
        os.makedirs(args.copy_to, exist_ok=True)
        for key in ("results", "heatmap"):
            shutil.copy(doc["files"][key], args.copy_to)
        print(f"copied results.json and heatmap.png to {args.copy_to}")
    if args.record_measured:
        print(f"recorded measured facts in {measured.record(doc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
