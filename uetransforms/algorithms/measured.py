"""What was *measured* about each method: its effect, its image quality, which defences break it.

The facts come from the defence suite (:func:`uetransforms.evaluation.suite.evaluate_suite`), recorded with
the command that produced them in ``uetransforms/assets/measured.json`` (shipped with the
package) by :func:`record`. Nothing here is estimated: a defence that was not run is listed under
``not_run``.

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
import os
from collections.abc import Mapping
from typing import Any

#: The data file shipped with the package.
# The package's assets/ folder (one level up since the layers reorganisation), and the schema
# name the shipped file was recorded with.
ASSET = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "measured.json")
SCHEMA = "uetransforms.measured"


def load(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The whole file: ``{"schema", "methods": {key: {profile: facts}}}`` (empty if none recorded)."""
    return copy.deepcopy(_document(path))


def _document(path: str | os.PathLike | None) -> dict[str, Any]:
    """The parsed file, shared: callers copy what they hand out."""
    p = os.fspath(path) if path is not None else ASSET
    if not os.path.exists(p):
        return {"schema": SCHEMA, "methods": {}}
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


def summary(key: str, *, profile: str | None = None, path: str | os.PathLike | None = None) -> str | None:
    """One paragraph of what was measured about method ``key`` (None when it never was).

    What ``uetransforms methods KEY``, ``ue.methods()`` and the dataset card say, so a user
    chooses with facts: the harness, the effect against clean training, the image quality, and
    which defences break it, hold against it or were not run.

    Example:
        >>> from uetransforms.algorithms import measured
        >>> measured.summary("no-such-method") is None
        True
    """
    f = for_method(key, profile=profile, path=path)
    if not f:
        return None
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
    os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
    tmp = f"{p}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(current, f, indent=1, sort_keys=False, allow_nan=False)
        f.write("\n")
    os.replace(tmp, p)
    return p


__all__ = ["ASSET", "facts_from_results", "for_method", "load", "not_protecting", "record", "summary"]
