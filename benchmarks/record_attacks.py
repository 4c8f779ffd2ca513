"""Record attacker rows from ``bench_protection.py`` and ``bench_labelfree.py`` results into the shipped measured facts.

``uetransforms/assets/measured.json`` keeps, per method, one row per setting (attacker, backbone,
resolution, rows, the attacker's labelling); ``uetransforms methods KEY``, the method guide and the
dataset card quote the row nearest the user's images (``uetransforms.algorithms.measured``). Each
protected row is paired with the clean row of the same setting found in the files given or in
``--baseline`` files (read for their clean rows only).

A ``bench_labelfree.py`` file's rows are recorded as fitted **without labels** (``labels: "none"``,
with the encoder that keyed them), one row per attacker labelling (the true labels; 5 groups of 2
classes), each with the variant its parameters make against the method's label-free defaults
(``--variant`` is for ``bench_protection.py`` rows); its ``key_purity`` probes are not recorded:

    python benchmarks/record_attacks.py benchmarks/results/labelfree-s8.json \
        benchmarks/results/labelfree-s8-pairs.json benchmarks/results/labelfree-s9-probe.json

    python benchmarks/record_attacks.py benchmarks/results/pretrained-probe.json \\
        benchmarks/results/pretrained-finetune-others.json
    python benchmarks/record_attacks.py --variant "mode=class, steps=8" \\
        --baseline benchmarks/results/pretrained-probe.json benchmarks/results/pretrained-probe-tapclass.json
"""

from __future__ import annotations

import argparse
import json

from uetransforms.algorithms import measured


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", help="bench_protection.py / bench_labelfree.py --out JSON files whose rows to record")
    ap.add_argument("--baseline", action="append", default=[],
                    help="a results file read for its clean rows only (repeatable)")
    ap.add_argument("--variant", default="defaults",
                    help="what was fitted, when not the method's defaults (e.g. 'mode=class, steps=8'); "
                         "only 'defaults' rows are quoted as the method's own numbers")
    ap.add_argument("--methods", nargs="*", default=None, help="record only these methods' rows (default: all)")
    ap.add_argument("--out", default=None, help="facts file (default: the package's assets/measured.json)")
    args = ap.parse_args(argv)
    docs, baselines = [_read(p) for p in args.results], [_read(p) for p in args.baseline]
    rows = measured.attack_rows(docs, baselines=baselines, variant=args.variant, methods=args.methods)
    for m, rs in rows.items():
        for r in rs:
            fitted = "without labels" if r["labels"] == "none" else "with labels"
            print(f"{m:8s} {r['attacker']:13s} {r['resolution']:4d} px {r['train_size']} rows, {fitted}, attacker "
                  f"labels {r['labelling']:5s}: {r['protected_accuracy']:.3f} / {r['clean_accuracy']:.3f} = "
                  f"{r['ratio']:.2f}x  [{r['variant']}]" + ("  (random weights: a control, listed, never quoted)"
                                                         if measured.is_control(r) else ""))
    if not rows:
        raise SystemExit("no protected row had a clean baseline of the same setting in these files: pass the "
                         "file that holds the 'clean' row with --baseline")
    p = measured.record_attacks(docs, baselines=baselines, variant=args.variant, methods=args.methods, path=args.out)
    print(f"recorded in {p}")
    return 0


def _read(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


if __name__ == "__main__":
    raise SystemExit(main())
