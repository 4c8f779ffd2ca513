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
  user's images and say so plainly when nothing near was measured. ``benchmarks/bench_labelfree.py``
  results are rows too: each says how the protector fitted (``labels``: ``"true"`` with the label
  column, ``"none"`` without it, keyed by clusters of the named ``encoder``) and how the attacker
  labelled the images (``labelling``: ``"true"``, or ``"pairs"``, CIFAR-10's 5 groups of 2
  classes). A row fitted without labels is quoted only as such (:func:`labelfree_text`), never as
  the method's labelled number, and the other way round.

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


def summary(key: str, *, profile: str | None = None, resolution: int | None = None, labels: str | None = None,
            path: str | os.PathLike | None = None) -> str | None:
    """One paragraph of what was measured about method ``key`` (None when it never was).

    What ``uetransforms methods KEY``, ``ue.methods()`` and the dataset card say, so a user
    chooses with facts: the harness, the effect against clean training, the image quality, which
    defences break it, hold against it or were not run, and (:func:`attacks_text`) how it fared
    against a pretrained attacker, measured nearest ``resolution`` px when given.

    ``labels`` says which fit the paragraph is about, for a class-keyed method: ``"true"`` (fitted
    with labels: the numbers above only), ``"none"`` (fitted without labels, keyed by clusters:
    only :func:`labelfree_text`, since the labelled numbers do not describe such a bank) or
    ``None`` (both, the label-free rows in a clause of their own).

    Example:
        >>> from uetransforms.algorithms import measured
        >>> measured.summary("no-such-method") is None
        True
    """
    if labels not in (None, "true", "none"):
        raise ValueError(f"labels={labels!r}: expected 'true' (fitted with labels), 'none' (without) or None (both)")
    own = own_labels(key)
    free = own == "true" and bool(attacks(key, labels="none", path=path))
    if labels == "none" and own == "true":
        return (labelfree_text(key, resolution=resolution, path=path) + f"; the numbers of {key} fitted with labels "
                "do not describe a bank fitted without them.")
    f = for_method(key, profile=profile, path=path)
    tail = [f"fitted without labels: {labelfree_text(key, resolution=resolution, path=path)}"] if (
        free and labels is None) else []
    if not f:
        rows = attacks(key, labels=own, path=path)
        if not rows and not tail:
            return None
        return "; ".join(([attacks_text(key, resolution=resolution, path=path)] if rows else []) + tail) + "."
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
    return "; ".join(parts + tail) + "."


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

#: How an attacker may label the training images (a row's ``labelling``), in words.
LABELLING_WORDS = {"true": "the true labels", "pairs": "5 groups of 2 classes"}

# What makes two rows the same measurement setting (a newer row of the same setting replaces the
# older one) and what pairs a protected row with its clean baseline across result files: the
# attacker's labelling is part of it (a 5-pair protected row against the 5-pair clean row).
# ``classes``: a task made of some CIFAR-10 classes only (``bench_protection.py --classes``), absent otherwise.
# ``backbone_tag``: a backbone with no checkpoint file (hub weights by name, random weights) is told
# apart by its name and init seed (absent for a file, whose sha256 says it). ``backbone_size``: the side
# the backbone reads when the attacker resizes the images to it first (absent when it reads them at their
# own size): session 11's 224-px images probed at 64 px replaced the 224-px row of the same key.
_SETTING = ("attacker", "backbone_sha256", "resolution", "train_size", "test_size", "epochs", "seed", "labelling",
            "classes", "backbone_tag", "backbone_size", "victim", "device")
# Setting fields a row holds only where they say something (older rows have none of them): which
# backbone without a file, the side it read the images at, the from-scratch model when it is not the
# harness's small CNN, and "gpu" for a run trained on one (its float arithmetic is not the CPU's).
_OPTIONAL = ("backbone_tag", "backbone_size", "victim", "device")
# Rows recorded before ``labels`` / ``labelling`` existed were fitted with labels and attacked with them.
_OLD_ROWS = {"labels": "true", "labelling": "true"}


def _field(row: Mapping[str, Any], name: str) -> Any:
    return row.get(name, _OLD_ROWS.get(name))


def bank_of(name: str, config: Mapping[str, Any]) -> str | None:
    """Which bank a benchmark row measured, in words: ``"file NAME"`` for a saved bank the command
    passed (``--bank NAME=PATH``; ``name`` is the method for ``bench_protection.py``, the config
    name for ``bench_labelfree.py``), else ``"seed N"``, the key the benchmark fitted with
    (``None`` when the file does not say). Part of a row's identity: the same setting measured with
    another key is another row, and the weaker of them is quoted (session 9: one setting gave 0.45x
    at one key and 0.61x at another; recording the second replaced the first)."""
    import shlex

    words = shlex.split(config.get("_command") or "")
    for i, w in enumerate(words):
        spec = words[i + 1] if w == "--bank" and i + 1 < len(words) else w[len("--bank="):] if w.startswith("--bank=") else None
        if spec is not None and spec.split("=", 1)[0] == name and "=" in spec:
            return f"file {os.path.basename(spec.split('=', 1)[1])}"
    seed = config.get("bank_seed")
    if seed is None and "--bank-seed" in words[:-1]:
        seed = words[words.index("--bank-seed") + 1]
    return None if seed is None else f"seed {int(seed)}"


def own_labels(key: str) -> str:
    """``"none"`` for a method that never takes labels (``clusters``), else ``"true"``: which rows
    are the method's own numbers (a class-keyed method's label-free rows are quoted apart)."""
    from . import UnknownMethodError, get

    try:
        m = get(key)
    except UnknownMethodError:  # a key no longer (or not yet) registered: its rows are what was recorded
        return "true"
    return "none" if m.label_free and "class" not in m.keyed_by else "true"


def attacks(key: str, *, labels: str | None = None, labelling: str | None = None, controls: bool = False,
            path: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Every recorded attacker row of method ``key`` (a copy; ``[]`` when none was recorded); with
    ``labels`` (``"true"`` / ``"none"``) only rows fitted that way, with ``labelling`` only rows
    whose attacker labelled the images so. Control rows (:func:`is_control`) only with
    ``controls=True``: they are listed, never quoted."""
    rows = _document(path).get("attacks", {}).get(key, [])
    return copy.deepcopy([r for r in rows if (labels is None or _field(r, "labels") == labels)
                          and (labelling is None or _field(r, "labelling") == labelling)
                          and (controls or not is_control(r))])


def is_control(row: Mapping[str, Any]) -> bool:
    """Whether a row's attacker started from *random* weights: a control that shows what a backbone's
    training adds (session 9: a random-init ResNet-18 probed CIFAR better than one pretrained on
    fractals), not an attacker anyone faces, so no number of it is quoted as a method's protection."""
    return bool((row.get("backbone") or {}).get("random_init"))


def _distance(row: Mapping[str, Any], resolution: int | None) -> float:
    # Resolutions compare by ratio (96 px is as far from 32 as 288 from 96), so log2.
    if resolution is None:
        return 0.0
    return abs(math.log2(max(int(row["resolution"]), 1) / max(int(resolution), 1)))


def quote_rank(row: Mapping[str, Any]) -> tuple:
    """Which of two rows of one setting is quoted (the smaller rank): the one the method protected
    *least* against (two backbones measured at one size, or two bank keys of one setting: the
    protection must hold for both, so the weaker result is the one a user can rely on), then the one
    with more training images, then the older one. The one rule of :func:`nearest_attacks` and the
    CLI's method guide."""
    return (-float(row["ratio"]), -int(row.get("train_size") or 0), row.get("recorded", ""))


def nearest_attacks(key: str, *, resolution: int | None = None, variant: str = "defaults",
                    labels: str | None = None, labelling: str = "true",
                    path: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """Per attacker, the recorded row of ``key`` measured nearest ``resolution`` px.

    Only rows of ``variant`` (``"defaults"``: the method as ``fit`` runs it without options) are
    considered, so an option's numbers are never quoted as the default's; only rows fitted with
    ``labels`` (default: the method's own way, :func:`own_labels`) and attacked under
    ``labelling``, so a label-free number is never quoted as the labelled one. Among rows equally
    near, :func:`quote_rank` picks (the one it protected least against). Attackers with no row
    are absent.

    Example:
        >>> from uetransforms.algorithms import measured
        >>> measured.nearest_attacks("no-such-method")
        {}
    """
    best: dict[str, dict[str, Any]] = {}
    for row in attacks(key, labels=own_labels(key) if labels is None else labels, labelling=labelling, path=path):
        if row.get("variant", "defaults") != variant:
            continue
        rank = (_distance(row, resolution), *quote_rank(row))
        held = best.get(row["attacker"])
        if held is None or rank < held[0]:
            best[row["attacker"]] = (rank, row)
    return {a: best[a][1] for a in ATTACKERS if a in best}


def _images(row: Mapping[str, Any], noun: str = "images") -> str:
    """How many images a row trained on, in words; a class-subset task says which classes and how many ways."""
    cls = row.get("classes")
    if not cls:
        return f"{row['train_size']} {noun}"
    return (f"{row.get('train_rows_kept', row['train_size'])} {noun} of CIFAR-10 classes "
            f"{', '.join(map(str, cls))} only ({len(cls)}-way)")


def where(row: Mapping[str, Any], noun: str = "images") -> str:
    """The setting of a pretrained-attacker row in words: the backbone, what it was trained on, the size,
    the images (the one wording of the card, ``methods`` and the method guide)."""
    b = row.get("backbone") or {}
    if b.get("random_init"):
        seed = f" (init seed {b['init_seed']})" if b.get("init_seed") is not None else ""
        trained = f", random weights{seed}, a control"
    else:
        trained = f", trained on {b['trained_on']}" if b.get("trained_on") else ""
    read = f" resized to {row['backbone_size']} px for the backbone" if row.get("backbone_size") else ""
    return f"{b.get('arch', 'a backbone')}{trained}; {row['resolution']} px{read}, {_images(row, noun)}"


def other_keys(row: Mapping[str, Any], rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows of ``rows`` that measured ``row``'s setting, variant and fit with another bank key."""
    same = (*_SETTING, "variant", "labels")
    return [dict(r) for r in rows if all(_field(r, k) == _field(row, k) for k in same)
            and _field(r, "bank") != _field(row, "bank")]


def _numbers(row: Mapping[str, Any], others: Iterable[Mapping[str, Any]] = ()) -> str:
    ratios = [f"{r['ratio']:.2f}x" for r in others]
    more = f"; {', '.join(ratios)} with {'another bank key' if len(ratios) == 1 else 'other bank keys'}" if ratios else ""
    return (f"{ATTACKER_WORDS[row['attacker']]} {row['protected_accuracy']:.3f} vs {row['clean_accuracy']:.3f} clean "
            f"({row['ratio']:.2f}x{more})")


def attacks_text(key: str, *, resolution: int | None = None, path: str | os.PathLike | None = None) -> str:
    """One sentence on the pretrained attackers for ``key``: the nearest measured rows, or plainly
    that none was measured; with ``resolution``, whether anything was measured near that size."""
    rows = nearest_attacks(key, resolution=resolution, path=path)
    pre = [rows[a] for a in PRETRAINED if a in rows]
    if pre:
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in pre:  # one backbone and size named once, with each attacker's numbers after it
            groups.setdefault(where(r), []).append(r)
        every = attacks(key, path=path)
        text = "against a pretrained attacker: " + "; ".join(
            ", ".join(_numbers(r, other_keys(r, every)) for r in rs) + f" ({where})" for where, rs in groups.items())
        missing = [ATTACKER_WORDS[a] for a in PRETRAINED if a not in rows]
        if missing:
            text += f"; {' and '.join(missing)}: not measured"
    else:
        text = f"against a pretrained attacker (linear probe, fine-tune): not measured for {key} with its defaults"
        others = sorted({r["variant"] for r in attacks(key, labels=own_labels(key), path=path)
                         if r["attacker"] in PRETRAINED})
        if others:
            text += f" (measured with other options: {'; '.join(others)}; see uetransforms methods {key})"
    return text + _size_note(key, resolution, {int(r["resolution"]) for r in attacks(key, path=path)}
                             | ({32} if for_method(key, path=path) else set()))


def _size_note(key: str, resolution: int | None, sizes: set[int]) -> str:
    """``"; nothing was measured near N px ..."`` when no measured size is within a factor 2 of ``resolution``."""
    if resolution is None or not sizes:
        return ""
    near = min(sorted(sizes), key=lambda s: abs(math.log2(s / max(int(resolution), 1))))
    if abs(math.log2(near / max(int(resolution), 1))) <= 1:
        return ""
    return (f"; nothing was measured near {resolution} px (the nearest measured size is {near} px): "
            "protection at this size is unknown")


def _results(doc: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(config, results)`` of a results document in ``bench_protection.py``'s shape, whichever
    benchmark wrote it; every result says ``labels`` (how the protector fitted) and ``labelling``
    (how the attacker labelled the images)."""
    if "floors" not in doc:  # bench_protection.py: the trainer used the true labels unless label_map says not
        # newer files say how each bank was fitted (a --bank fitted without labels); older ones fitted
        # every method its own way
        return {**doc.get("config", {}), "_command": doc.get("command")}, [
            {**r, "labels": None if r["method"] == "clean" else r.get("labels") or own_labels(r["method"]),
             "labelling": "true" if r.get("label_map", "none") == "none" else r["label_map"]}
            for r in doc.get("results", [])]
    # bench_labelfree.py: the clean baselines per labelling, then each config's rows per labelling.
    h = doc.get("harness", {})
    (t0, t1), (s0, s1) = h["train_rows"], h["test_rows"]
    config = {"train_size": t1 - t0, "test_size": s1 - s0, "epochs": h.get("epochs"), "seed": h.get("seed"),
              "bank_seed": h.get("bank_seed"), "_command": doc.get("command")}
    # files written before --attacker existed trained from scratch on 32-px CIFAR-10
    base = {"attacker": h.get("attacker", "scratch"), "backbone": h.get("backbone"),
            "resolution": h.get("resolution", 32), "defence": "none", "protected_fraction": 1.0}
    out = [{**base, "method": "clean", "labels": None, "labelling": lab, "test_accuracy": acc}
           for lab, acc in doc.get("clean", {}).items()]
    for r in doc.get("results", []):
        if r.get("key_purity") is not None:  # keyed by noisy true labels: a probe of key purity, not a fit
            continue
        fitted = _labelfree_params(r)
        if fitted is None:
            continue
        for row in r["rows"]:
            out.append({**base, "method": r["method"], "bank_name": r.get("name"), "labels": "none", "labelling": row["labelling"],
                        "test_accuracy": row["protected_accuracy"], "train_accuracy": row.get("train_accuracy"),
                        "quality": r.get("quality"), "fit_variant": labelfree_variant(r["method"], fitted, base["resolution"]),
                        "keying": r.get("keying"), "n_clusters": r.get("n_clusters"),
                        "encoder": r.get("encoder") or _encoder_from_path(doc.get("encoder"))})
    return config, out


def _labelfree_params(r: Mapping[str, Any]) -> dict[str, Any] | None:
    """The parameters a ``bench_labelfree.py`` row was fitted with, or ``None`` when the file
    cannot say. Newer files record the bank's own (``bank_params``, a default of the day
    included) beside the keying options the config set; older ones only the config's, which say
    what was fitted only when they pin every label-free default (``cuda``'s 5 x 5 filters became
    the label-free default in session 8: a session-7 row fitted 3 x 3 by the default of its day
    names no ``kernel_size``, and today's default would misname it)."""
    from . import UnknownMethodError, get
    from ..models.assign import KEYING_OPTIONS

    params = dict(r.get("params") or {})
    if r.get("bank_params") is not None:
        return {**{k: v for k, v in params.items() if k in KEYING_OPTIONS}, **r["bank_params"]}
    try:
        m = get(r["method"])
    except UnknownMethodError:  # nothing says what this installation's defaults were for it
        return None
    pinned = "class" not in m.keyed_by or set(m.label_free_defaults) <= set(params)
    return params if pinned else None


def labelfree_variant(method: str, params: Mapping[str, Any], resolution: int | None = None) -> str:
    """What a label-free fit set apart from the method's label-free defaults (``"defaults"`` when
    nothing): its declared defaults, the ``label_free_defaults`` a class-keyed method takes without
    labels, the keying defaults (K-means, K = 10), and on images of ``resolution`` px the method's
    ``size_defaults`` where they apply (they come before the label-free ones, as in the fit)."""
    from . import get
    from ..models.assign import KEYING_OPTIONS

    m = get(method)
    usual = {**m.defaults, **{k: v for k, v in KEYING_OPTIONS.items() if k not in ("encoder", "encoder_checkpoint")}}
    if "class" in m.keyed_by:
        usual.update(m.label_free_defaults)
    if resolution is not None and m.size_defaults is not None and m.size_defaults.applies((resolution, resolution)):
        usual.update(m.size_defaults.values)
    missing = object()
    set_apart = [f"{k}={v}" for k, v in params.items() if usual.get(k, missing) != v]
    return ", ".join(set_apart) or "defaults"


def _encoder_from_path(path: str | None) -> dict[str, Any] | None:
    """The encoder of a ``bench_labelfree.py`` file written before each row named it: only the
    path is in the file, so the identity is read from the file at that path now, and says so."""
    if not path:
        return None
    out: dict[str, Any] = {"checkpoint": os.path.basename(path), "checkpoint_sha256": None,
                           "identified": "from the file at the results' encoder path when recorded"}
    if os.path.isfile(path) and path.endswith(".safetensors"):
        from ..models.encoders import file_metadata, file_sha256

        meta = file_metadata(path)
        out.update(checkpoint_sha256=file_sha256(path), arch=meta.get("arch"), trained_on=meta.get("trained_on"),
                   validation=meta.get("validation"))
    return out


def _setting_words(row: Mapping[str, Any]) -> str:
    """Where a row was measured, in words: the backbone (pretrained attackers) and size."""
    if row["attacker"] in PRETRAINED:
        return where(row)
    return f"{row['resolution']} px, {_images(row)}"


def _encoder_words(row: Mapping[str, Any]) -> str:
    e = row.get("encoder") or {}
    trained = f" trained on {e['trained_on']}" if e.get("trained_on") else ""
    sha = f", sha256 {e['checkpoint_sha256'][:12]}..." if e.get("checkpoint_sha256") else ""
    keys = (f"K-means clusters (K = {row['n_clusters']})" if row.get("keying") == "cluster" and row.get("n_clusters")
            else "clusters")
    return f"keyed by {keys} of a {e.get('arch') or 'named'} encoder{trained}{sha}"


def labelfree_text(key: str, *, resolution: int | None = None, path: str | os.PathLike | None = None) -> str:
    """What was measured of class-keyed method ``key`` fitted *without* labels (keyed by an
    encoder's clusters, its label-free defaults), per attacker nearest ``resolution`` px: the
    attacker training with the true labels, and with 5 groups of 2 classes where measured. Only
    rows recorded with ``labels="none"``: never the labelled numbers.

    Example:
        >>> from uetransforms.algorithms import measured
        >>> measured.labelfree_text("no-such-method")
        'not measured for no-such-method with its label-free defaults'
    """
    rows = nearest_attacks(key, resolution=resolution, labels="none", labelling="true", path=path)
    if not rows:
        text = f"not measured for {key} with its label-free defaults"
        others = sorted({r["variant"] for r in attacks(key, labels="none", path=path)})
        if others:  # e.g. clusters' bank records the profile "auto" resolved to: named, not passed off as default
            text += f" (measured with other options: {'; '.join(others)}; see uetransforms methods {key})"
        return text
    pairs = nearest_attacks(key, resolution=resolution, labels="none", labelling="pairs", path=path)
    said: dict[str, list[str]] = {}
    for a, r in rows.items():  # one setting named once, each attacker's numbers before it
        p = pairs.get(a)
        same = p is not None and all(p.get(k) == r.get(k) for k in ("resolution", "train_size", "backbone_sha256"))
        extra = f"; attacker with {LABELLING_WORDS['pairs']}: {p['ratio']:.2f}x" if same else ""
        said.setdefault(_setting_words(r), []).append(
            f"{ATTACKER_WORDS[a]} {r['protected_accuracy']:.3f} vs {r['clean_accuracy']:.3f} clean "
            f"({r['ratio']:.2f}x{extra})")
    first = next(iter(rows.values()))
    psnr = f", PSNR {first['psnr']:.1f} dB" if first.get("psnr") is not None else ""
    text = (f"{_encoder_words(first)}{psnr}; attacker with {LABELLING_WORDS['true']}: "
            + "; ".join(", ".join(nums) + f" ({where})" for where, nums in said.items()))
    missing = [ATTACKER_WORDS[a] for a in ATTACKERS if a not in rows]
    if missing:
        text += f"; {' and '.join(missing)}: not measured"
    return text + _size_note(key, resolution, {int(r["resolution"]) for r in attacks(key, labels="none", path=path)})


def backbone_tag(b: Mapping[str, Any] | None) -> str | None:
    """A backbone's identity when no checkpoint file names it: ``"torchvision resnet18 @IMAGENET1K_V1"``
    (hub weights by name) or ``"torchvision resnet18 @random, init seed 0"``; ``None`` for a file (its
    sha256 is the identity) or no backbone. Without it every file-less backbone had one identity."""
    if not b or b.get("checkpoint_sha256"):
        return None
    if b.get("random_init"):
        return f"{b.get('kind')} {b.get('arch')} @random, init seed {b.get('init_seed')}"
    return f"{b.get('kind')} {b.get('arch')} @{b.get('weights')}"


def _read_size(b: Mapping[str, Any] | None, r: Mapping[str, Any]) -> int | None:
    """The side a backbone reads the images at when that is not their own (``--backbone-size``), else None."""
    side = (b or {}).get("image_size")
    return None if side is None or int(side) == int(r.get("resolution") or 32) else int(side)


def _victim(attacker: str, config: Mapping[str, Any]) -> str | None:
    """The model a from-scratch attacker trained, when it is not the harness's default small CNN
    (a pretrained attacker's model is its backbone)."""
    arch = config.get("arch")
    return arch if attacker == "scratch" and arch not in (None, "cnn-small") else None


def _device(config: Mapping[str, Any]) -> str | None:
    """``"gpu"`` for a benchmark run on a CUDA device, else None (the CPU, every older row)."""
    return "gpu" if str(config.get("device") or "cpu").startswith("cuda") else None


def attacker_words(row: Mapping[str, Any]) -> str:
    """A row's attacker in a table cell: ``"scratch (resnet18, GPU)"`` names the from-scratch model when
    it is not the small CNN, and a GPU run."""
    extra = [x for x in (row.get("victim"), "GPU" if row.get("device") == "gpu" else None) if x]
    return f"{row['attacker']} ({', '.join(extra)})" if extra else row["attacker"]


def _backbone_words(b: Mapping[str, Any]) -> dict[str, Any]:
    """What a row keeps of a benchmark's backbone identity: what it is and what it learned from
    (paths and normalisation stay in the result file)."""
    out = {k: b.get(k) for k in ("kind", "arch", "trained_on", "checkpoint_sha256")}
    if b.get("weights") is not None:
        out["weights"] = b["weights"]
    if b.get("random_init"):  # the init seed tells two random controls apart
        out.update(random_init=True, init_seed=b.get("init_seed"))
    return out


def attack_rows(docs: Iterable[Mapping[str, Any]], *, baselines: Iterable[Mapping[str, Any]] = (),
                variant: str = "defaults", methods: Iterable[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Attacker rows per method from ``benchmarks/bench_protection.py`` or
    ``benchmarks/bench_labelfree.py`` results documents.

    Each protected row (no defence, whole set protected) is paired with the clean row of the same
    setting (attacker, backbone checkpoint, resolution, rows, epochs, training seed, the attacker's
    labelling), found in ``docs`` or ``baselines`` (documents read for their clean rows only) -- a
    method is often run in a later file than its baseline.
    A protected row with no clean baseline is skipped (a ratio needs both). ``variant`` names what
    was fitted (``"defaults"``, or e.g. ``"mode=class"``) and is stored with every
    ``bench_protection.py`` row; a ``bench_labelfree.py`` row carries its own
    (:func:`labelfree_variant` of the parameters it records), its ``labels`` (``"none"``: fitted
    without labels) and the encoder that keyed it; its ``key_purity`` probes are not fits and are
    skipped. ``methods`` limits which methods' rows are taken (baselines still come from every
    document).
    """
    docs, baselines = [_results(d) for d in docs], [_results(d) for d in baselines]
    only = None if methods is None else set(methods)

    def setting(c: Mapping[str, Any], r: Mapping[str, Any]) -> tuple:
        b = r.get("backbone") or {}
        attacker = r.get("attacker", "scratch")
        return (attacker, b.get("checkpoint_sha256"), int(r.get("resolution") or 32),
                c.get("train_size"), c.get("test_size"), c.get("epochs"), c.get("seed"), r["labelling"],
                tuple(c["classes"]) if c.get("classes") else None, backbone_tag(b), _read_size(b, r),
                _victim(attacker, c), _device(c))

    def usable(r: Mapping[str, Any]) -> bool:
        return (r.get("defence", "none") == "none" and float(r.get("protected_fraction", 1.0)) == 1.0
                and r["labelling"] in LABELLING_WORDS)

    clean = {setting(c, r): (c, r) for c, rs in (*baselines, *docs) for r in rs if r["method"] == "clean" and usable(r)}
    out: dict[str, list[dict[str, Any]]] = {}
    for c, rs in docs:
        for r in rs:
            if r["method"] == "clean" or not usable(r) or (only is not None and r["method"] not in only):
                continue
            key = setting(c, r)
            if key not in clean:
                continue
            base = clean[key][1]
            b = r.get("backbone") or None
            q = r.get("quality") or {}
            # a class-subset task is part of the setting (a 5-way probe is not a 10-way one); absent otherwise
            row = {k: v for k, v in zip(_SETTING, key) if k != "classes" and (k not in _OPTIONAL or v is not None)}
            if c.get("classes"):
                row.update(classes=list(c["classes"]), train_rows_kept=c.get("train_rows_kept"))
            row.update({
                "bank": bank_of(r.get("bank_name") or r["method"], c),
                "backbone": None if b is None else _backbone_words(b),
                # a label-free file names what each bank was fitted with; a bench_protection.py row's own
                # "variant" is the data's colour variant ("rgb"), not what was fitted, so it is never read here
                "variant": r.get("fit_variant", variant), "labels": r["labels"],
                "clean_accuracy": base["test_accuracy"], "protected_accuracy": r["test_accuracy"],
                "ratio": r["test_accuracy"] / base["test_accuracy"], "clean_peak": base.get("peak_accuracy"),
                "protected_peak": r.get("peak_accuracy"), "psnr": q.get("psnr_mean"), "ssim": q.get("ssim_mean"),
                "command": c["_command"], "baseline_command": clean[key][0]["_command"],
            })
            if r["labels"] == "none" and r.get("encoder") is not None:
                row["encoder"] = r["encoder"]
                row["keying"], row["n_clusters"] = r.get("keying"), r.get("n_clusters")
            out.setdefault(r["method"], []).append(row)
    return out


def record_attacks(docs: Iterable[Mapping[str, Any]], *, baselines: Iterable[Mapping[str, Any]] = (),
                   variant: str = "defaults", methods: Iterable[str] | None = None,
                   path: str | os.PathLike | None = None) -> str:
    """Merge :func:`attack_rows` of ``docs`` into the measured-facts file: a row replaces a recorded
    one of the same method, setting, variant and bank (:func:`bank_of`); every other row is kept, so
    a second key of one setting is a row of its own. Returns the path."""
    import time

    p = os.fspath(path) if path is not None else ASSET
    current = load(p)
    table = current.setdefault("attacks", {})
    stamp = time.strftime("%Y-%m-%d")
    for m, rows in attack_rows(docs, baselines=baselines, variant=variant, methods=methods).items():
        kept = table.get(m, [])
        for row in rows:
            same = lambda old: all(_field(old, k) == _field(row, k) for k in (*_SETTING, "variant", "labels", "bank"))  # noqa: E731
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


__all__ = ["ASSET", "ATTACKERS", "ATTACKER_WORDS", "LABELLING_WORDS", "PRETRAINED", "attack_rows", "attacks", "attacks_text", "backbone_tag",
           "bank_of", "is_control", "other_keys", "where",
           "facts_from_results", "for_method", "labelfree_text", "labelfree_variant", "load", "nearest_attacks", "quote_rank",
           "not_protecting", "own_labels", "record", "record_attacks", "summary"]
