"""The ``uetransforms`` command line: ``methods``, ``fit``, ``protect``, ``evaluate``, ``demo``.

Each subcommand is a thin shell over the library (``ue.methods``, ``ue.fit``, ``ue.publish``,
``uetransforms.evaluation.harness``, ``uetransforms.demo``); no maths lives here. Errors print one
``error: ...`` line and exit with status 2; ``--debug`` shows the traceback as well.

Example:
    $ uetransforms methods
    $ uetransforms fit cuda ../shared/data/cifar10/train-00000-of-00001.parquet --image-column img \\
          --out cifar10-cuda.bank.arrow
    $ uetransforms protect ../shared/data/cifar10/train-00000-of-00001.parquet --image-column img \\
          --bank cifar10-cuda.bank.arrow --out cifar10-unlearnable
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
import time
import traceback
import warnings
from collections.abc import Sequence
from typing import Any


from .data import DATA_HELP, _looks_like_path, check_out_not_in_data, choose_splits, limit_rows, load_data, select_split  # noqa: E402


def parse_param(text: str) -> tuple[str, Any]:
    """``k=v`` -> ``(k, value)``: JSON (``3``, ``0.5``, ``null``), fractions (``8/255``), else text (``linf``)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise ValueError(f"--param {text!r}: expected NAME=VALUE, e.g. --param epsilon=8/255")
    raw = raw.strip()
    frac = re.fullmatch(r"(-?\d+(?:\.\d*)?)\s*/\s*(\d+(?:\.\d*)?)", raw)
    if frac:
        if float(frac.group(2)) == 0:
            raise ValueError(f"--param {text!r}: the fraction divides by zero; write e.g. --param {key}=8/255")
        return key, float(frac.group(1)) / float(frac.group(2))
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def _label_column(value: str | None) -> str | None:
    return None if value is None or value.lower() in ("", "none") else value


# ---------------------------------------------------------------------------- subcommands
def _backbone_cell(row: dict) -> str:
    """A measured row's backbone in a table cell; a random-weights control says so (it is listed, never quoted)."""
    from ..algorithms import measured

    b = row.get("backbone") or {}
    if not b:
        return "-"
    return f"{b.get('arch') or '?'} (random: control)" if measured.is_control(row) else b.get("arch") or "-"


def _with(variant: str) -> str:
    """How the guide names a recorded variant after the method key: nothing for its defaults."""
    return "" if variant == "defaults" else f" (with {variant})"


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest cell; the last column is left ragged (it holds prose)."""
    table = [list(header)] + [list(r) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header) - 1)]
    for n, line in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)) + "  " + line[-1])
        if n == 0:
            print("  ".join("-" * w for w in widths) + "  " + "-" * len(line[-1]))


#: The questions ``uetransforms methods --for`` answers, and what each asks of the measured facts.
NEEDS = {
    "no-labels": "photos without labels: which methods fit without a label column?",
    "jpeg": "must survive JPEG / re-compression: which methods held when the trainer JPEG-compressed "
            "(quality 10) before training?",
    "pretrained": "must survive an attacker who starts from a pretrained model",
    "least-visible": "least visible: which protecting methods change the pictures least (PSNR, SSIM)?",
}


def method_guide(need: str) -> list[str]:
    """The answer to one :data:`NEEDS` question, as lines of text, from the registry and the
    measured facts only (``uetransforms/assets/measured.json``): a method with no measurement is
    said to be "not measured", never guessed about. ``uetransforms methods --for NEED`` prints it
    and the README's method guide is tested against it."""
    from .. import algorithms as methods
    from ..algorithms import measured

    if need not in NEEDS:
        raise ValueError(f"--for {need!r} is not a question the guide answers; use one of {', '.join(NEEDS)}")
    rows = methods.table()
    facts = {r["key"]: measured.for_method(r["key"]) for r in rows}
    measured_keys = [k for k, f in facts.items() if f]
    first = next((facts[k] for k in measured_keys), {})
    h = first.get("harness") or {}
    setting = (f"measured on {h.get('train_size')} CIFAR-10 training images (32 px), {h.get('arch')} trained from "
               f"scratch for {h.get('epochs')} epochs, clean CIFAR-10 test; recorded by: "
               f"{first.get('command')}") if first else "nothing measured"
    out = [f"{need}: {NEEDS[need]}"]
    ratio = lambda f: f"{f['effect']['protected_accuracy']:.3f} vs {f['effect']['clean_accuracy']:.3f} clean"  # noqa: E731
    if need == "no-labels":
        free = [r for r in rows if r["label_free"]]
        for r in free:
            f = facts[r["key"]]
            line = f"  {r['key']}: needs {r['needs']}; " + (f"measured {ratio(f)}" if f else "not measured in the defence suite")
            if measured.attacks(r["key"], labels="none"):
                line += f"; {measured.labelfree_text(r['key'])}"
            out.append(line)
        # Class-keyed methods fitted without labels: only rows recorded as such (labels "none"),
        # never the labelled numbers of the same method.
        keyed = [r["key"] for r in rows if not r["label_free"] and measured.attacks(r["key"], labels="none")]
        how = ("  every other class-keyed method (cuda, em, ar, lsp, ops, random) runs without labels too, keyed "
               "by clusters of an image encoder: fit METHOD DATA --no-labels --encoder <encoder file or model name> "
               "(add --param cluster_by=head to key by the encoder file's own classifier when it was trained on "
               "classes like yours); ")
        def blur(sessions: str) -> str:
            return ("cuda fitted without labels takes 5x5 filters, and most of their effect is blur (random keys "
                    f"come close); see benchmarks/RESULTS.md, 'Label-free protection, session 6', {sessions}")

        if not keyed:
            out.append(how + "measured weaker than with labels, and not in the shipped facts: "
                       + blur("'session 7' and 'session 8'") + ".")
        else:
            out.append(how + "measured without labels, with its label-free defaults (ratio = protected / clean "
                       "under the same attacker and labelling; not the numbers of the method fitted with labels):")
            out += [f"    {k} without labels: {measured.labelfree_text(k)}" for k in keyed]
            if "cuda" in keyed:  # the random-key controls (not label-free fits, so not in the facts)
                out.append("    " + blur("'session 7', 'session 8' and 'session 9'") + ".")
        if any(r["key"] == "clusters" for r in free):
            out.append("  clusters downloads ImageNet ResNet-50 weights on first use; offline, pass a local copy: "
                       "--param checkpoint=resnet50-11ad3fa6.pth (or --param surrogate=small-cnn --param "
                       "checkpoint=FILE from benchmarks/build_surrogate.py).")
    elif need == "jpeg":
        held = []
        for k in measured_keys:
            d = (facts[k].get("defences") or {}).get("jpeg10")
            if d is not None and facts[k].get("protects"):
                held.append((d["ratio"], k, d, "jpeg10" in (facts[k].get("holds_against") or [])))
        for r, k, d, holds in sorted(held):
            out.append(f"  {k}: {'holds' if holds else 'broken'} under JPEG-10: {d['accuracy']:.3f} vs "
                       f"{d['clean_accuracy']:.3f} clean under the same defence ({r:.2f}x)")
        out += [f"  {k}: not measured" for k in facts if k not in measured_keys]
        out.append("  other JPEG qualities and re-compression of the published PNGs were not measured.")
    elif need == "pretrained":
        # Every recorded variant counts here (an option's numbers are named as such), ranked by its
        # weaker side: a protection must hold against the probe *and* the fine-tune. Rows of one line
        # share a resolution: a 224-px probe is never quoted beside a 32-px fine-tune.
        ranked = []
        for r in rows:
            by_variant: dict[tuple[str, int], dict[str, dict]] = {}
            scratch: dict[tuple[str, int], dict] = {}
            # the method as it is fitted by default (with labels, unless it never takes them), the
            # attacker using the true labels: a label-free row is not this method's labelled number
            for a in measured.attacks(r["key"], labels=measured.own_labels(r["key"]), labelling="true"):
                at = (a["variant"], int(a["resolution"]))
                slot = by_variant.setdefault(at, {}) if a["attacker"] in measured.PRETRAINED else scratch
                name = a["attacker"] if a["attacker"] in measured.PRETRAINED else at
                # two backbones measured at one size: measured's rule picks the quoted one
                if name not in slot or measured.quote_rank(a) < measured.quote_rank(slot[name]):
                    slot[name] = a
            for at, got in by_variant.items():
                if at in scratch:  # the same setting trained from scratch, where that was measured too
                    got = {**got, "scratch": scratch[at]}
                both = all(a in got for a in measured.PRETRAINED)
                worst = max(got[a]["ratio"] for a in measured.PRETRAINED) if both else float("inf")
                ranked.append((worst, r["key"], at, got))
        # The setting behind each number, from the rows themselves (never a fixed sentence): each
        # backbone and size is listed once, numbered, and every number names its own, so a 224-px
        # probe of one backbone is never read as another's.
        def where(a: dict) -> str:
            return measured.where(a, noun="protected CIFAR-10 images")

        settings = sorted({where(a) for *_, got in ranked for a in got.values() if a["attacker"] in measured.PRETRAINED})
        tag = {w: f"[{i}]" for i, w in enumerate(settings, 1)}
        for worst, key, (variant, px), got in sorted(ranked, key=lambda t: (t[0], t[1], t[2][1])):
            every = measured.attacks(key)

            def said_one(a: str) -> str:
                if a not in got:
                    return f"{measured.ATTACKER_WORDS[a]} not measured"
                keys = measured.other_keys(got[a], every)
                more = f", the weaker of {len(keys) + 1} bank keys" if keys else ""
                return f"{measured.ATTACKER_WORDS[a]} {got[a]['ratio']:.2f}x {tag[where(got[a])]}{more}"
            said = ", ".join(said_one(a) for a in measured.PRETRAINED)
            if "scratch" in got:
                victim = got["scratch"].get("victim")  # the from-scratch model, when not the small CNN
                said += (f"; {measured.ATTACKER_WORDS['scratch']}{f' ({victim})' if victim else ''} "
                         f"{got['scratch']['ratio']:.2f}x")
            opts = _with(variant) + f" at {px} px"
            any_row = next(iter(got.values()))
            out.append(f"  {key}{opts}: {said}; PSNR {any_row['psnr']:.1f} dB" if any_row.get("psnr") is not None
                       else f"  {key}{opts}: {said}")
        seen = {key for _, key, _, _ in ranked}
        out += [f"  {r['key']}: not measured" for r in rows if r["key"] not in seen]
        if settings:
            out.append("  (pretrained attackers: " + " ".join(f"{tag[w]} {w};" for w in settings)
                       + " ratio = protected / clean under the same attacker.)")
        # Random-weights controls are no attacker, so never quoted above; but what the same filters do to
        # untrained features is part of what a number means (uetransforms methods KEY lists them).
        controls = [(r["key"], a) for r in rows for a in measured.attacks(r["key"], labels=measured.own_labels(r["key"]),
                                                                           labelling="true", controls=True)
                    if measured.is_control(a)]
        if controls:
            said = "; ".join(f"{key}{_with(a['variant'])} "
                             f"{a['ratio']:.2f}x under {measured.where(a, noun='protected CIFAR-10 images')}"
                             for key, a in sorted(controls, key=lambda t: (t[0], t[1]["resolution"], t[1]["variant"])))
            out.append(f"  (not quoted, as no attacker trains from random weights: {said}.)")
    elif need == "least-visible":
        seen = sorted((k for k in measured_keys if facts[k].get("protects") and (facts[k].get("quality") or {})),
                      key=lambda k: -facts[k]["quality"]["psnr_mean"])
        for k in seen:
            q, f = facts[k]["quality"], facts[k]
            out.append(f"  {k}: PSNR {q['psnr_mean']:.1f} dB, SSIM {q['ssim_mean']:.3f}, largest change "
                       f"{q['linf_max']:.0f}/255; {ratio(f)}")
        out += [f"  {k}: not measured" for k in facts if k not in measured_keys]
    if need != "pretrained":  # those rows name their own setting above
        out.append(f"  ({setting}; photos may differ.)")
    return out


def methods_markdown() -> str:
    """The README's methods table: the rows ``uetransforms methods`` prints, as Markdown."""
    from .. import algorithms as methods

    lines = ["| key | kind | keyed by | needs | paper |", "|---|---|---|---|---|"]
    lines += [f"| `{r['key']}` | {r['kind']} | {r['keyed_by']} | {r['needs']} | {r['paper']} |" for r in methods.table()]
    return "\n".join(lines)


def measured_markdown() -> str:
    """The README's measured-protection table, from ``measured.json`` (the one source of the numbers)."""
    from .. import algorithms as methods
    from ..algorithms import measured

    lines = ["| method | setting | protected | clean | ratio | PSNR | SSIM | broken by | holds against |",
             "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for r in methods.table():
        f = measured.for_method(r["key"])
        e, q, h = f.get("effect"), f.get("quality") or {}, f.get("harness") or {}
        if not e:
            continue
        setting = f"{f['profile']}: {h.get('arch')}, {h.get('train_size')} CIFAR-10 images, {h.get('epochs')} epochs"
        lines.append(f"| `{r['key']}` | {setting} | {e['protected_accuracy']:.3f} | {e['clean_accuracy']:.3f} | "
                     f"{e['ratio']:.2f}x | {q.get('psnr_mean', float('nan')):.1f} dB | {q.get('ssim_mean', float('nan')):.3f} | "
                     f"{', '.join(f.get('broken_by') or []) or '-'} | {', '.join(f.get('holds_against') or []) or '-'} |")
    return "\n".join(lines)


def guide_text() -> str:
    """Every ``methods --for`` answer, as the README quotes them."""
    return "\n".join(line for need in NEEDS for line in method_guide(need))


def cmd_methods(args: argparse.Namespace) -> int:
    from .. import algorithms as methods

    if getattr(args, "need", None) is not None:
        if args.key is not None:
            raise ValueError("pass either KEY or --for NEED, not both")
        print("\n".join(method_guide(args.need)))
        return 0
    if args.key is None:
        cols = [("key", "key"), ("kind", "kind"), ("keyed_by", "keyed by"), ("needs", "needs"), ("paper", "paper")]
        _print_table([h for _, h in cols], [[str(r[k]) for k, _ in cols] for r in methods.table()])
        # stderr: stdout stays one clean table (for grep/cut)
        print("Parameters, defaults, ranges and the paper's values: uetransforms methods KEY", file=sys.stderr)
        return 0
    m = methods.get(args.key)
    print(f"{m.key}: {m.paper}")
    print(f"  {m.summary}")
    print(f"  bank kind {m.kind}, keyed by {m.keyed_by}; needs {m.needs}"
          f"{'' if m.label_free else '; needs labels'}")
    print(f"  cite: {m.citation}")
    from ..algorithms import measured

    facts = measured.for_method(m.key)
    if facts:
        print(f"  measured: {measured.summary(m.key)}")
        rows = [[d, f"{v['accuracy']:.3f}", f"{v['clean_accuracy']:.3f}", f"{v['ratio']:.2f}"]
                for d, v in facts.get("defences", {}).items()]
        if rows:
            print()
            _print_table(["defence", "protected", "clean", "ratio"], rows)
    else:
        print("  measured: nothing recorded yet (uetransforms evaluate --suite standard --record-measured)")
    attack_rows = measured.attacks(m.key, controls=True)
    if attack_rows:
        print()
        print("  against other attackers (protected / clean under the same attacker; benchmarks/RESULTS.md):")
        # which fit (with or without labels) and the attacker's labelling are columns of their own,
        # so a label-free row is never read as the labelled one
        # the bank column: one setting measured with two keys is two rows (the weaker is the one quoted)
        _print_table(["attacker", "backbone", "px", "images", "fit labels", "attacker labels", "protected", "clean",
                      "ratio", "fitted with", "bank"],
                     [[measured.attacker_words(a), _backbone_cell(a), str(a["resolution"]), str(a["train_size"]),
                       "none" if a.get("labels") == "none" else "true", a.get("labelling", "true"),
                       f"{a['protected_accuracy']:.3f}", f"{a['clean_accuracy']:.3f}", f"{a['ratio']:.2f}", a["variant"],
                       a.get("bank") or "-"]
                      for a in attack_rows])
    else:
        print(f"  {measured.attacks_text(m.key)}.")
    print()
    fmt = methods.format_value
    rows = [[p.name, fmt(p.default), p.check.describe(), "-" if p.paper is None else fmt(p.paper),
             "public" if p.public else "secret", p.help] for p in m.params]
    if rows:
        _print_table(["parameter", "default", "valid", "paper", "card", "help"], rows)
    else:
        print("(no parameters)")
    if m.size_defaults is not None:
        print(f"\nDefaults {m.size_defaults.describe()} (what you pass wins; the bank records what was used).")
    print("\npublic: printed on the dataset card; secret: kept only in the bank (with the seed).")
    print(f"Set with: uetransforms fit {m.key} DATA --param NAME=VALUE (fractions such as 8/255 work).")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    import uetransforms as ue
    from ..evaluation import quality
    from ..algorithms import get

    method = get(args.method)  # an unknown method fails before any data is read
    label_column = None if args.no_labels else _label_column(args.label_column)
    if args.encoder is not None and label_column is not None:
        raise ValueError("--encoder is for fitting without labels: add --no-labels (or drop --encoder)")
    if label_column is None and not method.label_free and args.encoder is None:
        raise ValueError(f"method {method.key!r} needs labels: pass --label-column <integer label column>, or "
                         "--no-labels with --encoder <encoder file or model name> to key it by clusters of the "
                         "encoder's features")
    if os.path.exists(args.out) and not args.overwrite:
        raise FileExistsError(
            f"{args.out!r} exists; a bank is a secret key, so it is not replaced unless you pass --overwrite"
        )
    params = dict(parse_param(p) for p in args.param or [])
    if args.encoder is not None:
        params["encoder"] = args.encoder
    ds = select_split(load_data(args.data, split=args.split), args.split, need_one=True, what="fit")
    ds = limit_rows(ds, args.limit)
    # Never the seed itself: it is the private key, and CI logs keep stderr.
    print(f"fitting {args.method!r} on {len(ds):,} images"
          + (" (the --seed given, kept only in the bank)" if args.seed is not None
             else " (fresh secret seed, kept only in the bank)"),
          file=sys.stderr)
    start = time.perf_counter()
    # seed=None: ue.fit draws the private key itself (secrets), so the CLI and Python agree.
    bank = ue.fit(args.method, ds, image_column=args.image_column, label_column=label_column,
                  id_column=args.id_column, seed=args.seed, device=args.device, convert=args.convert,
                  size_mismatch=args.size_mismatch, **params)
    seconds = time.perf_counter() - start
    bank.save(args.out, overwrite=args.overwrite)
    size = ("any image size" if bank.info.get("size_mismatch") == "resize"
            else f"image shape {bank.image_shape}")
    print(f"wrote {args.out}: {bank.method} bank, {bank.kind}, {bank.num_keys} {bank.keying} keys, "
          f"{size}, {seconds:.1f}s. Keep it private: it is the key.")
    if hasattr(ds, "select") and len(ds):
        try:
            q = quality.probe(bank, ds, image_column=args.image_column, label_column=label_column,
                              id_column=args.id_column, n=64)
        except Exception as err:  # noqa: BLE001 - the bank is written; say why there is no quality line
            print(f"warning: the bank is written, but its quality line could not be computed ({_message(err)})",
                  file=sys.stderr)
            return 0
        print(f"quality: {quality.describe(q)}")
        if quality.visible(q):
            print(f"warning: the change is likely visible (PSNR < {quality.VISIBLE_PSNR_DB:g} dB or SSIM < "
                  f"{quality.VISIBLE_SSIM:g}); look at a few images before publishing", file=sys.stderr)
    return 0


def cmd_protect(args: argparse.Namespace) -> int:
    import uetransforms as ue

    from ..publishing.pipeline import check_hub, upload

    if args.push:  # before anything is protected or written: offline or a bad token fails in seconds
        check_hub(args.push, args.token, cli=True)
    check_out_not_in_data(args.data, args.out)
    bank = ue.NoiseBank.load(args.bank)
    ds = load_data(args.data, split=args.split)
    if args.split is None:
        ds = choose_splits(ds, args.splits, what="protect")
    elif args.splits:
        raise ValueError("pass either --split (one split) or --splits (several), not both")
    ds = limit_rows(ds, args.limit)
    _check_columns(ds, args, bank)
    card_extra: dict[str, Any] = {}
    if args.license:
        card_extra["license"] = args.license
    sources = list(args.source_dataset or [])
    if not sources and not os.path.exists(args.data) and not glob.has_magic(args.data) \
            and not _looks_like_path(args.data):
        sources = [args.data]  # DATA was a Hub dataset id: the protected copy derives from it
    if sources:
        card_extra["source_datasets"] = sources
    common = dict(image_column=args.image_column, max_shard_size=args.max_shard_size,
                  card_extra=card_extra or None)
    # No --label-column: the adapters' default, which a cluster-keyed bank reads as "assign clusters".
    from ..core.bank import DEFAULT_LABEL

    label_column = DEFAULT_LABEL if args.label_column is None else _label_column(args.label_column)
    ue.publish(ds, bank, args.out, label_column=label_column, id_column=args.id_column,
               batch_size=args.batch_size, num_proc=args.num_proc, device=args.device,
               overwrite=args.overwrite, allow_double=args.allow_double, size_mismatch=args.size_mismatch,
               convert=args.convert, png_encoder=args.png_encoder, png_level=args.png_level,
               threads=args.threads, return_dataset=False, **common)
    shards = sorted(glob.glob(os.path.join(args.out, "data", "*.parquet")))
    import pyarrow.parquet as pq

    # Counted from the shards' footers: the CLI asks publish for no returned copy of the rows.
    rows = sum(pq.ParquetFile(s).metadata.num_rows for s in shards)
    card = os.path.join(args.out, "README.md")
    print(f"wrote {rows:,} protected rows in {len(shards)} shard(s) to {args.out} (card: {card})")
    if args.push:
        upload(args.out, args.push, token=args.token, private=not args.public, cli=True)
        print(f"pushed to https://huggingface.co/datasets/{args.push} ({'public' if args.public else 'private'})")
    return 0


def _check_columns(ds: Any, args: argparse.Namespace, bank: Any) -> None:
    """The column flags against every split's columns, before anything is protected, in flag names."""
    splits = dict(ds) if isinstance(ds, dict) else {None: ds}  # a DatasetDict is a dict of splits
    label = _label_column(args.label_column)
    wanted = [("--image-column", args.image_column), ("--id-column", args.id_column)]
    # The default label column matters only to banks keyed by class (a cluster bank assigns its own).
    if label is not None and (label != "label" or bank.keying == "class"):
        wanted.append(("--label-column", label))
    for name, split in splits.items():
        columns = list(getattr(split, "column_names", None) or [])
        for flag, column in wanted:
            if column is not None and columns and column not in columns:
                where = f" of split {name!r}" if name is not None else ""
                hint = " (or --label-column none for a cluster bank to assign clusters itself)" \
                    if flag == "--label-column" and bank.keying == "cluster" else ""
                raise ValueError(f"{flag} {column!r} is not a column{where} of DATA (its columns: {columns}); "
                                 f"pass {flag} <one of them>{hint}")


def _shard_size(text: str) -> str:
    """``--max-shard-size``: checked when parsed, so a typo is named with its flag."""
    from datasets.utils.py_utils import convert_file_size_to_int

    try:
        if convert_file_size_to_int(text) <= 0:
            raise ValueError
    except (ValueError, TypeError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; use a number with a unit, e.g. 500MB or 2GB") \
            from None
    return text


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import run_cli

    return int(run_cli(args) or 0)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, quick=args.quick)
    return 0


def _evaluate_unavailable(reason: str):
    def handler(args: argparse.Namespace) -> int:
        raise RuntimeError(f"the evaluate command is not available in this installation ({reason})")

    return handler


# ---------------------------------------------------------------------------- parser
def _subcommand(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The argument parser. ``evaluate``'s options are added only when it is the command, so
    ``uetransforms methods`` never imports the training stack."""
    from ..core.version import __version__

    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    parser = argparse.ArgumentParser(
        prog="uetransforms", parents=[debug],
        description="Make image datasets unlearnable: fit a noise bank, protect, publish, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"uetransforms {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("methods", parents=[debug], help="list the protection methods, or one method's parameters")
    p.add_argument("key", nargs="?", default=None, metavar="KEY",
                   help="a method key: list its parameters (default, valid range, the paper's value, public or "
                        "secret, help), its citation and summary")
    p.add_argument("--for", dest="need", choices=tuple(NEEDS), default=None, metavar="NEED",
                   help="which method fits a need, with the measured numbers behind the answer: "
                        + ", ".join(NEEDS))
    p.set_defaults(handler=cmd_methods)

    def columns(p: argparse.ArgumentParser) -> None:
        p.add_argument("--split", default=None, help="split to use when DATA has several")
        p.add_argument("--image-column", default="image", help="image column (default: image)")
        p.add_argument("--label-column", default="label",
                       help="integer label column (default: label); 'none' for label-free methods/banks")
        p.add_argument("--id-column", default=None, help="stable sample ids (default: pixel content hash)")
        p.add_argument("--device", default=None, help="cpu (default), cuda, cuda:N")

    p = sub.add_parser("fit", parents=[debug], help="fit a method on a dataset and save its (secret) bank")
    p.add_argument("method", help="method key (see `uetransforms methods`)")
    p.add_argument("data", metavar="DATA", help=DATA_HELP)
    p.add_argument("--out", required=True, help="bank file to write, e.g. cifar10-cuda.bank.arrow")
    columns(p)
    p.add_argument("--seed", type=int, default=None, help="private key (default: a fresh random one)")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="method parameter, repeatable; `uetransforms methods METHOD` lists them "
                        "(fractions allowed: --param epsilon=8/255)")
    p.add_argument("--convert", action="store_true", help="convert RGBA/palette/... images instead of refusing them")
    p.add_argument("--size-mismatch", choices=("error", "resize"), default=None,
                   help="photos of several sizes: 'resize' records in the bank that its noise is interpolated to "
                        "each image's size (protect then needs no flag); default: the method's own policy")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="fit on the first N rows only (a quick try)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bank file")
    p.add_argument("--no-labels", action="store_true",
                   help="fit without labels (= --label-column none): label-free methods (clusters), or any "
                        "class-keyed method keyed by K clusters of --encoder's features (--param n_clusters=K, "
                        "default 10)")
    p.add_argument("--encoder", default=None, metavar="FILE_OR_NAME",
                   help="image encoder for --no-labels: an encoder file (uetransforms.models.encoders."
                        "save_torchvision / save_small_cnn; offline) or a model name such as resnet50 or clip:RN50 "
                        "(weights from torchvision's / open_clip's cache, downloaded once)")
    p.set_defaults(handler=cmd_fit)

    p = sub.add_parser("protect", parents=[debug], help="protect a dataset and write lossless shards + card")
    p.add_argument("data", metavar="DATA", help=DATA_HELP)
    p.add_argument("--bank", required=True, help="bank file from `uetransforms fit`")
    p.add_argument("--out", required=True, help="output directory (README.md + data/*.parquet)")
    columns(p)
    # unset: "label" for class banks; a cluster-keyed bank assigns clusters (a class is not a cluster id)
    p.set_defaults(label_column=None)
    p.add_argument("--splits", default=None, metavar="A,B",
                   help="splits to protect when DATA has several (default: all of them, listed on stderr)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="protect only the first N rows of each split (a quick try)")
    p.add_argument("--batch-size", type=int, default=256, help="images per kernel call (default: 256)")
    p.add_argument("--num-proc", type=int, default=None, help="worker processes for datasets.map (default: one)")
    p.add_argument("--max-shard-size", default="500MB", type=_shard_size,
                   help="as push_to_hub's: shards of about this uncompressed Arrow size, equal rows each "
                        "(default 500MB, the Hub's); one can be larger where image sizes vary")
    p.add_argument("--overwrite", action="store_true", help="replace the card and shards in a non-empty --out")
    p.add_argument("--allow-double", action="store_true",
                   help="protect DATA even though it already carries the uetransforms marker (adds noise twice)")
    p.add_argument("--size-mismatch", choices=("error", "resize"), default=None,
                   help="images of another size than the bank's: refuse them (error) or interpolate the noise "
                        "to each image (resize); default: the bank's own setting, else error")
    p.add_argument("--convert", action="store_true", help="convert RGBA/palette/... images instead of refusing them")
    p.add_argument("--png-encoder", choices=("isal", "fpng", "pil"), default=None,
                   help="lossless PNG encoder (default: the fastest installed)")
    p.add_argument("--png-level", type=int, default=None, metavar="N",
                   help="PNG compression level: 0-3 for isal (default 1), 0-9 for pil (default 6)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="slices of a batch protected in parallel (default: torch's thread count); many small "
                        "images ran fastest with --threads <cores> and OMP_NUM_THREADS=1")
    p.add_argument("--license", default=None, metavar="ID",
                   help="the source's licence for the card, as a Hub licence id such as cc-by-4.0; only a licence "
                        "the source really has (default: read from DATA, else unknown)")
    p.add_argument("--source-dataset", action="append", metavar="REPO_ID",
                   help="source dataset named on the card, repeatable (default: DATA when it is a Hub id)")
    p.add_argument("--push", metavar="REPO_ID", default=None, help="also push to this Hub dataset repo")
    p.add_argument("--public", action="store_true", help="make the pushed repo public (default: private)")
    p.add_argument("--token", default=None, help="Hub token (default: your saved login / HF_TOKEN)")
    p.set_defaults(handler=cmd_protect)

    p = sub.add_parser("evaluate", parents=[debug], help="measure protection: train on protected, test on clean")
    if _subcommand(argv) == "evaluate":
        try:
            from .evaluate import add_cli_arguments
        except ImportError as err:
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            p.set_defaults(handler=_evaluate_unavailable(str(err)))
        else:
            add_cli_arguments(p)
            p.set_defaults(handler=cmd_evaluate)
    else:
        p.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser("demo", parents=[debug], help="end-to-end demo on the bundled default data")
    p.add_argument("--out", default="uetransforms-demo", help="output directory (default: uetransforms-demo)")
    p.add_argument("--quick", action="store_true", help="a smaller, faster run")
    p.set_defaults(handler=cmd_demo)
    return parser


#: Python keyword arguments named in library errors, and the CLI flag that does the same job.
_FLAGS = {
    "image_column": "--image-column ", "label_column": "--label-column ", "id_column": "--id-column ",
    "device": "--device ", "seed": "--seed ", "split": "--split ", "batch_size": "--batch-size ",
    "num_proc": "--num-proc ", "token": "--token ", "clean_train": "--clean-train ",
    "overwrite=True": "--overwrite", "convert=True": "--convert", "push=True": "--push REPO_ID",
    "size_mismatch": "--size-mismatch ", "encoder": "--png-encoder ", "level": "--png-level ",
    "encoder=None": "no --png-encoder", "level=None": "no --png-level", "threads": "--threads ",
    "allow_double=True": "--allow-double", "private=False": "--public", "label_column=None": "--label-column none",
    "protected=True": "ue.publish(..., protected=True) from Python (the CLI always adds the noise)",
}
_ANY_FLAG = re.compile(r"\b(image_column|label_column|id_column|clean_train|num_proc|batch_size)=")
_KWARG = re.compile(r"\b(pass|use|set|with|or) ([a-z][a-z0-9_]*)=(True|False|None)?")


def cli_terms(text: str) -> str:
    """Rewrite "pass image_column=<name>" as "pass --image-column <name>" and a method parameter
    "use mode=..." as "use --param mode=...": the library speaks Python, the CLI user types flags."""

    def swap(m: re.Match) -> str:
        verb, name, flag_value = m.group(1), m.group(2), m.group(3) or ""
        flag = _FLAGS.get(f"{name}={flag_value}") if flag_value else None
        if flag is None:
            flag = _FLAGS.get(name)
            if flag is not None and flag_value:
                flag = flag + flag_value
        if flag is None:
            flag = f"--param {name}={flag_value}"
        return f"{verb} {flag}"

    # The card's missing fields (publish warns in Python terms).
    text = text.replace("card_extra={'license': '<Hub licence id>'}", "--license <Hub licence id>")
    text = text.replace("card_extra={'source_datasets': ['<repo id>']}", "--source-dataset <repo id>")
    text = _KWARG.sub(swap, text)
    # Column and size arguments named anywhere else ("image_column='image' is not a column").
    return _ANY_FLAG.sub(lambda m: _FLAGS[m.group(1)], text)


def _message(err: BaseException) -> str:
    if isinstance(err, KeyError) and err.args:
        text = str(err.args[0])
    else:
        text = str(err) or type(err).__name__
    return cli_terms(" ".join(text.split()))


def _show_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    """A warning as one ``warning: ...`` line in the CLI's terms (no source line, no file path)."""
    print(f"warning: {cli_terms(' '.join(str(message).split()))}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 usage or input error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse has printed usage and its own "error:" line
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    try:
        with warnings.catch_warnings():
            # The library's warnings as the CLI's own "warning: ..." lines, each once.
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning
            return args.handler(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    except Exception as err:  # noqa: BLE001 - the CLI turns any failure into one readable line
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"error: {_message(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
