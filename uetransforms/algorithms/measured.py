"""What was *measured* about each method: its effect, its image quality, which defences break it,
and how it fares against attackers other than the suite's (a pretrained backbone, other sizes).

Two kinds of facts live in ``uetransforms/assets/measured.json`` (shipped with the package), each
with the command that produced it:

* ``methods``: the defence suite's facts per method and harness profile
  (:func:`uetransforms.evaluation.suite.evaluate_suite`, written by :func:`record`): a small CNN
  trained from scratch on 32-px CIFAR-10, with and without each defence;
* ``attacks``: one row per method and *setting* -- attacker (``scratch``, ``linear-probe``,
  ``finetune``), the backbone it started from (architecture, what it was trained on, checkpoint
  sha256), image resolution, training rows -- from ``benchmarks/bench_protection.py`` results
  (written by :func:`record_attacks`). :func:`nearest_attacks` picks, per attacker, the row
  measured nearest a user's image size, so the CLI and the card quote the facts closest to the
  user's images and say so plainly when nothing near was measured.

Nothing here is estimated: a defence that was not run is listed under ``not_run``; an attacker
never measured is said to be "not measured".

Example:
    >>> from uetransforms.algorithms import measured
    >>> facts = measured.for_method("cuda")
    >>> sorted(facts) == [] or {"effect", "quality", "broken_by", "command"} <= set(facts)
    True
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

#: The data file shipped with the package.
# The package's assets/ folder (one level up since the layers reorganisation), and the schema
# name the shipped file was recorded with.
ASSET = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "measured.json")
SCHEMA = "uetransforms.measured"


def load(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The whole file: ``{"schema", "methods": {key: {profile: facts}}, "attacks": {key: [row]}}``
    (empty if none recorded; ``attacks`` may be absent from files written before it existed)."""
    return copy.deepcopy(_document(path))


def _document(path: str | os.PathLike | None) -> dict[str, Any]:
    """The parsed file, shared: callers copy what they hand out."""
    p = os.fspath(path) if path is not None else ASSET
    if not os.path.exists(p):
        return {"schema": SCHEMA, "methods": {}, "attacks": {}}
    st = os.stat(p)
    # ue.methods() asks once per method: parse the file once per version of it.
    return _parse(os.path.abspath(p), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _parse(p: str, mtime_ns: int, size: int) -> dict[str, Any]:
    with open(p) as f:
        doc = json.load(f)
    if doc.get("schema") != SCHEMA:
        raise ValueError(f"{p} is not a uetransforms measured-facts file (schema {doc.get('schema')!r})")
    return doc


def for_method(key: str, *, profile: str | None = None, path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The measured facts of one method (``{}`` when it was never measured).

    Keys: ``profile`` (the harness), ``effect`` (clean and protected test accuracy without a
    defence, their ratio, the best-epoch accuracies), ``quality`` (PSNR/SSIM/L-inf of the
    perturbation), ``defences`` (per defence: accuracy, clean accuracy, ratio), ``broken_by`` /
    ``holds_against`` / ``not_run`` (defence names), ``protects``, ``command`` and ``recorded``.

    Args:
        key: a method key (``"cuda"``...).
        profile: which harness's facts (``"cpu"``, ``"paper"``); default: the paper profile when
            recorded, else the CPU one.
    """
    # A copy of this method's facts only: copying the whole file per call cost 8 ms.
    per_profile = _document(path)["methods"].get(key, {})
    if profile is not None:
        return copy.deepcopy(per_profile.get(profile, {}))
    for name in ("paper", "cpu"):
        if name in per_profile:
            return copy.deepcopy(per_profile[name])
    return copy.deepcopy(next(iter(per_profile.values()), {}))


def summary(key: str, *, profile: str | None = None, resolution: int | None = None,
            path: str | os.PathLike | None = None) -> str | None:
    """One paragraph of what was measured about method ``key`` (None when it never was).

    What ``uetransforms methods KEY``, ``ue.methods()`` and the dataset card say, so a user
    chooses with facts: the harness, the effect against clean training, the image quality, which
    defences break it, hold against it or were not run, and (:func:`attacks_text`) how it fared
    against a pretrained attacker, measured nearest ``resolution`` px when given.

    Example:
        >>> from uetransforms.algorithms import measured
        >>> measured.summary("no-such-method") is None
        True
    """
    f = for_method(key, profile=profile, path=path)
    if not f:
        rows = attacks(key, path=path)
        return attacks_text(key, resolution=resolution, path=path) + "." if rows else None
    h = f.get("harness") or {}
    parts = [f"{f['profile']} harness ({h.get('arch')}, {h.get('train_size')} CIFAR-10 training images, "
             f"{h.get('epochs')} epochs, recorded {f.get('recorded', '?')})"]
    e = f.get("effect")
    if e:
        verdict = {True: "protects", False: "does not protect"}.get(f.get("protects"), "no verdict")
        parts.append(f"clean-test accuracy {e['protected_accuracy']:.3f} against {e['clean_accuracy']:.3f} for clean "
                     f"training ({e['ratio']:.2f}x; {verdict})")
    q = f.get("quality") or {}
    if "psnr_mean" in q:
        parts.append(f"PSNR {q['psnr_mean']:.1f} dB, SSIM {q['ssim_mean']:.3f}")
    ratio = f"{f.get('broken_ratio', 0.8):g}"
    lists = [("broken by (>= " + ratio + "x clean under the same defence)", f.get("broken_by")),
             ("holds against", f.get("holds_against")), ("not measured", f.get("not_run"))]
    parts += [f"{label}: {', '.join(names)}" for label, names in lists if names]
    parts.append(attacks_text(key, resolution=resolution, path=path))
    return "; ".join(parts) + "."


def not_protecting(key: str, *, path: str | os.PathLike | None = None) -> str | None:
    """A loud warning when method ``key`` was measured *not* to protect (``None`` otherwise).

    ``ue.fit``, ``ue.publish`` and the dataset card all say it, so nobody publishes the negative
    control (``random``) believing it protects: the numbers come from the measured facts.
    """
    f = for_method(key, path=path)
    e = f.get("effect")
    if f.get("protects") is not False or not e:
        return None
    return (f"method {key!r} does not protect: a model trained on its output reached {e['protected_accuracy']:.3f} "
            f"clean-test accuracy against {e['clean_accuracy']:.3f} for clean training ({e['ratio']:.2f}x; "
            f"{f.get('profile')} harness, 32-px CIFAR-10). It is a control for checking an evaluation; to protect "
            "data use a method that does, e.g. cuda (model-free): uetransforms methods --for least-visible")


def facts_from_results(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-method facts from a suite results document (``results.json``)."""
    cells = {(c["method"], c["defence"]): c for c in doc["cells"]}
    out: dict[str, dict[str, Any]] = {}
    for m in doc["methods"]:
        if m == "clean" or m not in doc["verdict"]:
            continue
        prot, clean = cells.get((m, "none")), cells.get(("clean", "none"))
        effect = None
        if prot is not None and clean is not None:
            effect = {"clean_accuracy": clean["test_accuracy"], "protected_accuracy": prot["test_accuracy"],
                      "ratio": doc["ratio"][m]["none"], "clean_peak": clean["peak_accuracy"],
                      "protected_peak": prot["peak_accuracy"], "protected_peak_epoch": prot["peak_epoch"]}
        defences = {}
        for d in doc["defences"]:
            c, base = cells.get((m, d)), cells.get(("clean", d))
            if c is not None and base is not None:
                defences[d] = {"spec": doc["defence_specs"].get(d, d), "accuracy": c["test_accuracy"],
                               "clean_accuracy": base["test_accuracy"], "ratio": doc["ratio"][m][d],
                               "peak_ratio": doc["peak_ratio"][m][d]}
        from . import public_params

        info = doc.get("method_info", {}).get(m, {})
        v = doc["verdict"][m]
        out[m] = {"profile": doc["profile"], "effect": effect, "quality": info.get("quality"),
                  "bank_params": public_params(m, info.get("bank_params") or {}), "defences": defences, "protects": v["protects"],
                  "broken_by": v["broken_by"], "holds_against": v["holds_against"], "not_run": v["not_run"],
                  "broken_ratio": doc["broken_ratio"], "command": doc.get("command"),
                  "harness": {k: doc["config"]["profile"].get(k) for k in ("arch", "epochs", "train_size", "test_size")}}
    return out


def record(doc: Mapping[str, Any], path: str | os.PathLike | None = None) -> str:
    """Merge a suite's per-method facts into the measured-facts file (other profiles and methods
    are kept; this profile's entry of each measured method is replaced). Returns the path."""
    import time

    p = os.fspath(path) if path is not None else ASSET
    current = load(p)
    stamp = time.strftime("%Y-%m-%d")
    for m, facts in facts_from_results(doc).items():
        current["methods"].setdefault(m, {})[facts["profile"]] = {**facts, "recorded": stamp}
    current["methods"] = {k: current["methods"][k] for k in sorted(current["methods"])}
    _write(current, p)
    return p


#: The attackers a row of ``attacks`` can name, in the order they are shown: the suite's own
#: (a model trained from scratch) first, then the two that start from a pretrained backbone.
ATTACKERS = ("scratch", "linear-probe", "finetune")
PRETRAINED = ("linear-probe", "finetune")
#: How each attacker is named in sentences.
ATTACKER_WORDS = {"scratch": "training from scratch", "linear-probe": "a linear probe", "finetune": "fine-tuning"}

# What makes two rows the same measurement setting (a newer row of the same setting replaces the
# older one) and what pairs a protected row with its clean baseline across result files.
_SETTING = ("attacker", "backbone_sha256", "resolution", "train_size", "test_size", "epochs", "seed")


def attacks(key: str, *, path: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Every recorded attacker row of method ``key`` (a copy; ``[]`` when none was recorded)."""
    return copy.deepcopy(_document(path).get("attacks", {}).get(key, []))


def _distance(row: Mapping[str, Any], resolution: int | None) -> float:
    # Resolutions compare by ratio (96 px is as far from 32 as 288 from 96), so log2.
    if resolution is None:
        return 0.0
    return abs(math.log2(max(int(row["resolution"]), 1) / max(int(resolution), 1)))


def nearest_attacks(key: str, *, resolution: int | None = None, variant: str = "defaults",
                    path: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """Per attacker, the recorded row of ``key`` measured nearest ``resolution`` px.

    Only rows of ``variant`` (``"defaults"``: the method as ``fit`` runs it without options) are
    considered, so an option's numbers are never quoted as the default's. Ties go to the row with
    more training images, then the newer one. Attackers with no row are absent.

    Example:
        >>> from uetransforms.algorithms import measured
        >>> measured.nearest_attacks("no-such-method")
        {}
    """
    best: dict[str, dict[str, Any]] = {}
    for row in attacks(key, path=path):
        if row.get("variant", "defaults") != variant:
            continue
        rank = (_distance(row, resolution), -int(row.get("train_size") or 0), row.get("recorded", ""))
        held = best.get(row["attacker"])
        if held is None or rank < held[0]:
            best[row["attacker"]] = (rank, row)
    return {a: best[a][1] for a in ATTACKERS if a in best}


def _where(row: Mapping[str, Any]) -> str:
    """The setting of a pretrained-attacker row in words: the backbone, what it was trained on, the size."""
    b = row.get("backbone") or {}
    trained = f", trained on {b['trained_on']}" if b.get("trained_on") else ""
    return f"{b.get('arch', 'a backbone')}{trained}; {row['resolution']} px, {row['train_size']} images"


def _numbers(row: Mapping[str, Any]) -> str:
    return (f"{ATTACKER_WORDS[row['attacker']]} {row['protected_accuracy']:.3f} vs {row['clean_accuracy']:.3f} clean "
            f"({row['ratio']:.2f}x)")


def attacks_text(key: str, *, resolution: int | None = None, path: str | os.PathLike | None = None) -> str:
    """One sentence on the pretrained attackers for ``key``: the nearest measured rows, or plainly
    that none was measured; with ``resolution``, whether anything was measured near that size."""
    rows = nearest_attacks(key, resolution=resolution, path=path)
    pre = [rows[a] for a in PRETRAINED if a in rows]
    if pre:
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in pre:  # one backbone and size named once, with each attacker's numbers after it
            groups.setdefault(_where(r), []).append(r)
        text = "against a pretrained attacker: " + "; ".join(
            ", ".join(_numbers(r) for r in rs) + f" ({where})" for where, rs in groups.items())
        missing = [ATTACKER_WORDS[a] for a in PRETRAINED if a not in rows]
        if missing:
            text += f"; {' and '.join(missing)}: not measured"
    else:
        text = f"against a pretrained attacker (linear probe, fine-tune): not measured for {key} with its defaults"
        others = sorted({r["variant"] for r in attacks(key, path=path) if r["attacker"] in PRETRAINED})
        if others:
            text += f" (measured with other options: {'; '.join(others)}; see uetransforms methods {key})"
    if resolution is not None:
        sizes = sorted({int(r["resolution"]) for r in attacks(key, path=path)} | ({32} if for_method(key, path=path) else set()))
        near = min(sizes, key=lambda s: abs(math.log2(s / max(int(resolution), 1)))) if sizes else None
        if near is not None and abs(math.log2(near / max(int(resolution), 1))) > 1:
            text += (f"; nothing was measured near {resolution} px (the nearest measured size is {near} px): "
                     "protection at this size is unknown")
    return text


def attack_rows(docs: Iterable[Mapping[str, Any]], *, baselines: Iterable[Mapping[str, Any]] = (),
                variant: str = "defaults", methods: Iterable[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Attacker rows per method from ``benchmarks/bench_protection.py`` results documents.

    Each protected row (no defence, whole set protected, true labels) is paired with the clean
    row of the same setting (attacker, backbone checkpoint, resolution, rows, epochs, training
    seed), found in ``docs`` or ``baselines`` (documents read for their clean rows only) -- a method
    is often run in a later file than its baseline.
    A protected row with no clean baseline is skipped (a ratio needs both). ``variant`` names what
    was fitted (``"defaults"``, or e.g. ``"mode=class"``) and is stored with every row; ``methods``
    limits which methods' rows are taken (baselines still come from every document).
    """
    docs, baselines = list(docs), list(baselines)
    only = None if methods is None else set(methods)

    def setting(doc: Mapping[str, Any], r: Mapping[str, Any]) -> tuple:
        c = doc.get("config", {})
        b = r.get("backbone") or {}
        return (r.get("attacker", "scratch"), b.get("checkpoint_sha256"), int(r.get("resolution") or 32),
                c.get("train_size"), c.get("test_size"), c.get("epochs"), c.get("seed"))

    def usable(r: Mapping[str, Any]) -> bool:
        return (r.get("defence", "none") == "none" and float(r.get("protected_fraction", 1.0)) == 1.0
                and r.get("label_map", "none") == "none")

    clean = {setting(d, r): (d, r) for d in (*baselines, *docs) for r in d.get("results", [])
             if r["method"] == "clean" and usable(r)}
    out: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        for r in d.get("results", []):
            if r["method"] == "clean" or not usable(r) or (only is not None and r["method"] not in only):
                continue
            key = setting(d, r)
            if key not in clean:
                continue
            base = clean[key][1]
            b = r.get("backbone") or None
            q = r.get("quality") or {}
            row = dict(zip(_SETTING, key))
            row.update({
                "backbone": None if b is None else {k: b.get(k) for k in ("kind", "arch", "trained_on", "checkpoint_sha256")},
                "variant": variant, "clean_accuracy": base["test_accuracy"], "protected_accuracy": r["test_accuracy"],
                "ratio": r["test_accuracy"] / base["test_accuracy"], "clean_peak": base.get("peak_accuracy"),
                "protected_peak": r.get("peak_accuracy"), "psnr": q.get("psnr_mean"), "ssim": q.get("ssim_mean"),
                "command": d.get("command"), "baseline_command": clean[key][0].get("command"),
            })
            out.setdefault(r["method"], []).append(row)
    return out


def record_attacks(docs: Iterable[Mapping[str, Any]], *, baselines: Iterable[Mapping[str, Any]] = (),
                   variant: str = "defaults", methods: Iterable[str] | None = None,
                   path: str | os.PathLike | None = None) -> str:
    """Merge :func:`attack_rows` of ``docs`` into the measured-facts file: a row replaces a recorded
    one of the same method, setting and variant; every other row is kept. Returns the path."""
    import time

    p = os.fspath(path) if path is not None else ASSET
    current = load(p)
    table = current.setdefault("attacks", {})
    stamp = time.strftime("%Y-%m-%d")
    for m, rows in attack_rows(docs, baselines=baselines, variant=variant, methods=methods).items():
        kept = table.get(m, [])
        for row in rows:
            same = lambda old: all(old.get(k) == row.get(k) for k in (*_SETTING, "variant"))  # noqa: E731
            kept = [old for old in kept if not same(old)] + [{**row, "recorded": stamp}]
        table[m] = sorted(kept, key=lambda r: (ATTACKERS.index(r["attacker"]), r["resolution"], r["variant"]))
    current["attacks"] = {k: table[k] for k in sorted(table)}
    _write(current, p)
    return p


def _write(doc: Mapping[str, Any], p: str) -> None:
    """Write the file atomically (a reader never sees half of it)."""
    os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
    tmp = f"{p}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=False, allow_nan=False)
        f.write("\n")
    os.replace(tmp, p)


__all__ = ["ASSET", "ATTACKERS", "ATTACKER_WORDS", "PRETRAINED", "attack_rows", "attacks", "attacks_text", "facts_from_results",
           "for_method", "load", "nearest_attacks", "not_protecting", "record", "record_attacks", "summary"]
