"""``ue.evaluate_suite``: every method against every standard defence, next to clean training.

One *cell* is one training run: a method's protected training set (or the clean one, method
``"clean"``) under one defence, tested on the clean test set. The suite runs the cells of a
methods x defences grid with the clean baseline under each defence, and writes:

* ``cells/<method>__<defence>.json``: one file per finished cell, written atomically. A rerun
  with the same ``out_dir`` skips every finished cell (resumable), and several processes may
  work on one ``out_dir`` at once: each claims a cell with an exclusive lock file first.
* ``banks/<method>.bank.arrow``: the fitted banks (secret: they undo the protection), reused by
  reruns, and ``methods/<method>.json``: fit time and image quality (PSNR/SSIM/L-inf).
* ``results.json``: every cell, the ratio protected / clean under the same defence, which
  defences break which method, and the cells not run; ``heatmap.png``: the ratios as a grid
  (lower is better for protection).

Profiles fix the training harness: ``"cpu"`` is the 10k/2k CIFAR-sized small-CNN harness of
``benchmarks/RESULTS.md`` (8 epochs), ``"paper"`` the field's setting (ResNet-18, the full
training set, 60 epochs) for a GPU. ``overrides`` changes any field of a profile.

A method counts as **broken** by a defence when the model trained on its protected data reaches
at least :data:`BROKEN_RATIO` of the clean model's accuracy under that defence (last epoch), and
as broken by early stopping when its best epoch does (``"early-stop"`` in the results, from the
``none`` runs).

Example:
    >>> import numpy as np, tempfile
    >>> from uetransforms.evaluation.suite import evaluate_suite
    >>> rng = np.random.default_rng(0)
    >>> train = {"image": list(rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)), "label": [0, 1] * 32}
    >>> test = {"image": list(rng.integers(0, 256, (32, 8, 8, 3), dtype=np.uint8)), "label": [0, 1] * 16}
    >>> res = evaluate_suite(train, test, methods=["clean", "random"], defences=["none"], profile="cpu",
    ...                      overrides={"epochs": 1, "train_size": None, "test_size": None},
    ...                      out_dir=tempfile.mkdtemp(), progress=False)
    >>> sorted(c["method"] for c in res["cells"])
    ['clean', 'random']
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from ..algorithms import public_params
from .defences import parse_defence

SCHEMA = "uetransforms.suite-results"
SCHEMA_VERSION = 1

#: protected / clean accuracy at or above which a defence counts as breaking the protection: the
#: trainer keeps 80% of what clean data gives (peers' JPEG-10 numbers are 0.95-1.0 of clean).
BROKEN_RATIO = 0.8


@dataclass(frozen=True)
class Profile:
    """A training harness: data size, model and schedule, and method parameters that fit its budget."""

    name: str
    arch: str
    epochs: int
    train_size: int | None  #: first N training rows (None: all)
    test_size: int | None
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 5e-4
    #: the PGD adversarial-training spec the suite's ``"pgd"`` column means in this profile
    pgd: str = "pgd:eps=8,steps=10,alpha=2"
    #: per-method fit parameters (the profile's budget); missing methods use their defaults
    method_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["method_params"] = {k: dict(v) for k, v in self.method_params.items()}
        return d


PROFILES: dict[str, Profile] = {
    # The harness of benchmarks/RESULTS.md: a few minutes per cell on two CPU cores. PGD gets 2
    # steps (3 forward/backward passes per batch) so that a cell costs ~3 normal ones, not 11.
    "cpu": Profile(
        name="cpu", arch="cnn-small", epochs=8, train_size=10_000, test_size=2_000, pgd="pgd:eps=8,steps=2",
        method_params={"em": {"mode": "class", "surrogate": "cnn-tiny", "steps": 10, "class_batches": 10,
                              "step_size": 0.00627, "max_rounds": 15}},
    ),
    # The field's evaluation: ResNet-18 (CIFAR stem) on the full set, 60 epochs, 10-step PGD.
    "paper": Profile(
        name="paper", arch="resnet18", epochs=60, train_size=None, test_size=None, pgd="pgd:eps=8,steps=10,alpha=2",
        method_params={"em": {"mode": "class"}},
    ),
}

#: ``--suite standard``: the methods and defences of issue 13, most informative first.
STANDARD_METHODS = ("clean", "cuda", "em", "ar", "lsp", "ops", "random")
STANDARD_DEFENCES = ("none", "iss", "jpeg10", "bdr", "ueraser", "pgd", "sharpen+lowpass", "orthogonal")
SUITES = {"standard": (STANDARD_METHODS, STANDARD_DEFENCES)}


def resolve_profile(profile: str | Profile, overrides: Mapping[str, Any] | None = None) -> Profile:
    """A profile by name (``"cpu"``, ``"paper"``) with ``overrides`` applied to its fields."""
    if isinstance(profile, str):
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
        profile = PROFILES[profile]
    if overrides:
        bad = set(overrides) - set(Profile.__dataclass_fields__)
        if bad:
            raise ValueError(f"unknown profile field(s) {sorted(bad)}; fields: {', '.join(Profile.__dataclass_fields__)}")
        profile = replace(profile, **dict(overrides))
    return profile


def defence_spec(name: str, profile: Profile) -> str:
    """The spec a suite column stands for: ``"pgd"`` is the profile's PGD setting."""
    return profile.pgd if name.strip().lower() == "pgd" else name


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.=-]+", "_", text.lower())


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _write_json(path: str, obj: Any) -> None:
    from .harness import json_safe

    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(json_safe(obj), f, indent=2, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Claim:
    """An exclusive lock file holding the owner's pid; a dead owner's lock is taken over."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.held = False

    def acquire(self) -> bool:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    with open(self.path) as f:
                        pid = int(f.read().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and _pid_alive(pid) and pid != os.getpid():
                    return False
                try:  # stale: its owner died mid-run
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self.held = True
            return True
        return False

    def release(self) -> None:
        if self.held:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
            self.held = False


# ---------------------------------------------------------------------------- the runner
def evaluate_suite(
    train: Any,
    test: Any,
    *,
    methods: Sequence[str] | None = None,
    defences: Sequence[str] | None = None,
    suite: str | None = "standard",
    profile: str | Profile = "cpu",
    overrides: Mapping[str, Any] | None = None,
    out_dir: str | os.PathLike,
    image_column: str = "image",
    label_column: str = "label",
    banks: Mapping[str, Any] | None = None,
    method_params: Mapping[str, Mapping[str, Any]] | None = None,
    bank_seed: int = 1234,
    seed: int = 0,
    device: str | torch.device | None = None,
    command: str | None = None,
    wait: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or resume) methods x defences and return the results document (also ``results.json``).

    Args:
        train / test: the *clean* training and test sets (``datasets.Dataset`` or dict of lists);
            each method protects ``train`` itself. The profile's ``train_size``/``test_size`` take
            the first rows.
        methods / defences: override the suite's lists; ``"clean"`` is the unprotected baseline
            (always run: every ratio needs it), ``"pgd"`` means the profile's PGD setting.
        suite: ``"standard"`` (issue 13's grid) or ``None`` (then pass both lists).
        profile / overrides: ``"cpu"`` or ``"paper"`` (see :data:`PROFILES`), fields overridden.
        out_dir: where cells, banks, ``results.json`` and ``heatmap.png`` go; rerunning with the
            same folder resumes. It must not hold results of another configuration.
        banks: ``{method: NoiseBank or path}`` to use instead of fitting (or the saved one in
            ``out_dir/banks``).
        method_params: per-method fit parameters on top of the profile's.
        bank_seed: the methods' private key; seed: training seed.
        command: the command line that produced this (recorded in the results).
        wait: when the only cells left are being trained by other processes, wait for them
            (``False``: return at once; the results then list those cells as not run yet).
        progress: a tqdm bar over the cells with an ETA.
    """
    from tqdm.auto import tqdm

    prof = resolve_profile(profile, overrides)
    if suite is not None and suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; known: {', '.join(SUITES)}")
    base_methods, base_defences = SUITES[suite] if suite else ((), ())
    method_list = list(dict.fromkeys(["clean", *(methods if methods is not None else base_methods)]))
    defence_list = list(dict.fromkeys(defences if defences is not None else base_defences))
    if not defence_list:
        raise ValueError("no defences to run: pass defences=[...] or suite='standard'")
    for d in defence_list:  # fail on a typo before hours of training
        parse_defence(defence_spec(d, prof))
    from ..algorithms import table as known_methods

    known = {m["key"] for m in known_methods()}
    unknown = [m for m in method_list if m != "clean" and m not in known]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; available: clean, {', '.join(sorted(known))}")
    params = {m: {**dict(prof.method_params.get(m, {})), **dict((method_params or {}).get(m, {}))}
              for m in method_list if m != "clean"}

    out = os.fspath(out_dir)
    for sub in ("cells", "banks", "methods"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    config = {"profile": prof.to_dict(), "bank_seed": int(bank_seed), "seed": int(seed),
              "image_column": image_column, "label_column": label_column}
    fp = _fingerprint(config)
    cfg_path = os.path.join(out, "config.json")
    if os.path.exists(cfg_path):
        with open(cfg_path) as f:
            old = json.load(f)
        if old.get("fingerprint") != fp:
            raise ValueError(f"{out} holds suite results of another configuration ({cfg_path}); "
                             "pass another out_dir, or the same profile, overrides and seeds to resume")
    else:
        _write_json(cfg_path, {"fingerprint": fp, **config})

    # -- the grid, most informative first: every method under "none", then the next defence...
    cells = [(m, d) for d in defence_list for m in method_list]
    done = {k for k in cells if os.path.exists(_cell_path(out, *k))}
    todo = [k for k in cells if k not in done]
    data = _Data(train, test, prof, image_column=image_column, label_column=label_column)
    bar = tqdm(total=len(cells), initial=len(done), desc="suite", disable=not progress, unit="cell")
    deferred_rounds = 0
    while todo:
        left: list[tuple[str, str]] = []
        for method, dname in todo:
            path = _cell_path(out, method, dname)
            if os.path.exists(path):  # another process finished it
                bar.update(1)
                continue
            claim = _Claim(path + ".lock")
            if not claim.acquire():
                left.append((method, dname))
                continue
            try:
                if os.path.exists(path):
                    bar.update(1)
                    continue
                bar.set_postfix_str(f"{method} / {dname}")
                prot = data.protected(method, out=out, params=params.get(method, {}), bank_seed=bank_seed,
                                      banks=banks or {}, device=device)
                if prot is None:  # its bank is being fitted by another process
                    left.append((method, dname))
                    continue
                _write_json(path, _run_cell(data, prot, method, dname, prof, seed=seed, device=device, fingerprint=fp))
                bar.update(1)
                _write_results(out, method_list, defence_list, prof, config, command)
            finally:
                claim.release()
        if left and len(left) == len(todo):
            # everything left is claimed by other live processes: wait for them, then report
            if not wait:
                break
            deferred_rounds += 1
            if deferred_rounds > 720:
                break
            time.sleep(5)
        todo = left
    bar.close()
    return _write_results(out, method_list, defence_list, prof, config, command)


def collect(out_dir: str | os.PathLike, *, methods: Sequence[str] | None = None,
            defences: Sequence[str] | None = None, suite: str | None = "standard", command: str | None = None
            ) -> dict[str, Any]:
    """Rewrite ``results.json`` and ``heatmap.png`` from the finished cells in ``out_dir`` without
    training anything (e.g. while workers are still running, or after several invocations filled
    one folder). Cells of the grid that have no result are listed under ``not_run``."""
    out = os.fspath(out_dir)
    cfg_path = os.path.join(out, "config.json")
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"{out} holds no suite run (no config.json); run evaluate_suite first")
    with open(cfg_path) as f:
        config = json.load(f)
    config.pop("fingerprint", None)
    prof = Profile(**{**config["profile"], "method_params": config["profile"].get("method_params", {})})
    base_methods, base_defences = SUITES[suite] if suite else ((), ())
    method_list = list(dict.fromkeys(["clean", *(methods if methods is not None else base_methods)]))
    defence_list = list(dict.fromkeys(defences if defences is not None else base_defences))
    return _write_results(out, method_list, defence_list, prof, config, command)


def _cell_path(out: str, method: str, defence: str) -> str:
    return os.path.join(out, "cells", f"{_slug(method)}__{_slug(defence)}.json")


class _Data:
    """The clean splits decoded once, and each method's protected training set, made once."""

    def __init__(self, train: Any, test: Any, prof: Profile, *, image_column: str, label_column: str) -> None:
        from .harness import decode_split

        if prof.train_size is not None and hasattr(train, "select") and len(train) > prof.train_size:
            train = train.select(range(prof.train_size))
        if prof.test_size is not None and hasattr(test, "select") and len(test) > prof.test_size:
            test = test.select(range(prof.test_size))
        self.clean = decode_split(_head(train, prof.train_size), image_column=image_column, label_column=label_column,
                             role="train")
        self.test = decode_split(_head(test, prof.test_size), image_column=image_column, label_column=label_column,
                            role="test", channels=self.clean.images.shape[1])
        self.image_column, self.label_column = image_column, label_column
        self._prot: dict[str, Any] = {}

    def as_dict(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, list[Any]]:
        hwc = images.permute(0, 2, 3, 1).numpy()
        return {self.image_column: list(hwc), self.label_column: labels.tolist()}

    def protected(self, method: str, *, out: str, params: Mapping[str, Any], bank_seed: int,
                  banks: Mapping[str, Any], device: Any) -> Any:
        from .harness import Split

        if method == "clean":
            return self.clean
        if method in self._prot:
            return self._prot[method]
        from ..algorithms.fitting import fit
        from ..core.bank import NoiseBank
        from ..integrations.datasets import Protect

        bank_path = os.path.join(out, "banks", f"{_slug(method)}.bank.arrow")
        info_path = os.path.join(out, "methods", f"{_slug(method)}.json")
        t0 = time.perf_counter()
        fit_seconds = None
        if method in banks:
            given = banks[method]
            bank = given if isinstance(given, NoiseBank) else NoiseBank.load(given)
        elif os.path.exists(bank_path):
            bank = NoiseBank.load(bank_path)
        else:
            lock = _Claim(bank_path + ".lock")
            if not lock.acquire():
                return None
            try:
                clean = self.as_dict(self.clean.images, self.clean.labels)
                labels = None if method == "clusters" else self.label_column  # clusters: label-agnostic
                bank = fit(method, clean, image_column=self.image_column, label_column=labels, seed=bank_seed,
                              device=device, **dict(params))
                fit_seconds = round(time.perf_counter() - t0, 1)
                bank.save(bank_path)
            finally:
                lock.release()
        if bank.method != method:
            raise ValueError(f"the bank given for {method!r} holds a {bank.method!r} bank")
        t0 = time.perf_counter()
        prot = Protect(bank, image_column=self.image_column,
                          label_column=None if bank.keying == "cluster" else self.label_column, device=device)
        n = len(self.clean.images)
        chunks = []
        for s in range(0, n, 512):
            batch = self.as_dict(self.clean.images[s : s + 512], self.clean.labels[s : s + 512])
            chunks.append(prot(batch)[self.image_column])
        from .harness import decode_split

        flat = [img for c in chunks for img in c]
        split = decode_split({self.image_column: flat, self.label_column: self.clean.labels.tolist()},
                        image_column=self.image_column, label_column=self.label_column, role=f"{method} protected",
                        channels=self.clean.images.shape[1])
        split = Split(split.images, self.clean.labels)
        if not os.path.exists(info_path) or fit_seconds is not None:
            from .quality import summary

            _write_json(info_path, {"method": method, "params": dict(params), "bank_params": public_params(bank.method, bank.params),
                                    "fit_seconds": fit_seconds, "protect_seconds": round(time.perf_counter() - t0, 1),
                                    "quality": summary(self.clean.images, split.images)})
        self._prot[method] = split
        return split


def _head(ds: Any, n: int | None) -> Any:
    if n is None or hasattr(ds, "select"):
        return ds
    if isinstance(ds, Mapping):
        return {k: list(v)[:n] for k, v in ds.items()}
    return ds


def _run_cell(data: _Data, split: Any, method: str, dname: str, prof: Profile, *, seed: int, device: Any,
              fingerprint: str) -> dict[str, Any]:
    from .harness import evaluate

    spec = defence_spec(dname, prof)
    t0 = time.perf_counter()
    report = evaluate(
        data.as_dict(split.images, split.labels), data.as_dict(data.test.images, data.test.labels),
        image_column=data.image_column, label_column=data.label_column, arch=prof.arch, epochs=prof.epochs,
        batch_size=prof.batch_size, lr=prof.lr, weight_decay=prof.weight_decay, device=device, seed=seed,
        defences=[spec], baseline=False, progress=False,
    )
    row = report.rows[0]
    return {"method": method, "defence": dname, "spec": parse_defence(spec).name, "fingerprint": fingerprint,
            "test_accuracy": row.test_accuracy, "peak_accuracy": row.peak_accuracy, "peak_epoch": row.peak_epoch,
            "curve": row.curve, "train_accuracy": row.train_accuracy, "train_seconds": row.seconds,
            "wall_seconds": round(time.perf_counter() - t0, 1), "train_size": row.train_size,
            "test_size": report.data["test_size"], "arch": prof.arch, "epochs": prof.epochs,
            "threads": torch.get_num_threads(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}


# ---------------------------------------------------------------------------- the results
def _load_cells(out: str) -> dict[tuple[str, str], dict[str, Any]]:
    cells = {}
    folder = os.path.join(out, "cells")
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.endswith(".json"):
            with open(os.path.join(folder, name)) as f:
                c = json.load(f)
            cells[(c["method"], c["defence"])] = c
    return cells


def summarise(cells: Mapping[tuple[str, str], Mapping[str, Any]], methods: Sequence[str],
              defences: Sequence[str]) -> dict[str, Any]:
    """Ratios protected / clean under the same defence, and per method what breaks it.

    ``"early-stop"`` compares the best epoch of the method's ``none`` run with the clean ``none``
    run's best epoch (the trainer stops where clean test accuracy peaks).
    """
    ratio: dict[str, dict[str, float | None]] = {}
    peak_ratio: dict[str, dict[str, float | None]] = {}
    verdict: dict[str, dict[str, Any]] = {}
    for m in methods:
        if m == "clean":
            continue
        ratio[m], peak_ratio[m] = {}, {}
        broken, holds, not_run = [], [], []
        for d in defences:
            c, base = cells.get((m, d)), cells.get(("clean", d))
            if c is None or base is None:
                ratio[m][d] = peak_ratio[m][d] = None
                not_run.append(d)
                continue
            r = c["test_accuracy"] / max(base["test_accuracy"], 1e-9)
            ratio[m][d] = r
            peak_ratio[m][d] = c["peak_accuracy"] / max(base["peak_accuracy"], 1e-9)
            if d == "none":
                continue
            (broken if r >= BROKEN_RATIO else holds).append(d)
        if peak_ratio[m].get("none") is not None:
            (broken if peak_ratio[m]["none"] >= BROKEN_RATIO else holds).append("early-stop")
        elif "none" in defences:
            not_run.append("early-stop")
        none_r = ratio[m].get("none")
        protects = None if none_r is None else none_r < BROKEN_RATIO
        if protects is False:  # nothing to break: the method does not protect on this harness
            broken, holds = [], []
        verdict[m] = {"protects": protects, "broken_by": broken, "holds_against": holds, "not_run": not_run}
    return {"ratio": ratio, "peak_ratio": peak_ratio, "verdict": verdict}


def _write_results(out: str, methods: Sequence[str], defences: Sequence[str], prof: Profile,
                   config: Mapping[str, Any], command: str | None) -> dict[str, Any]:
    from ..core.version import __version__
    from .figures import suite_heatmap

    cells = _load_cells(out)
    # Cells of other methods/defences that an earlier run of this folder produced stay listed.
    methods = list(dict.fromkeys([*methods, *(m for m, _ in cells)]))
    defences = list(dict.fromkeys([*defences, *(d for _, d in cells)]))
    infos = {}
    for m in methods:
        p = os.path.join(out, "methods", f"{_slug(m)}.json")
        if os.path.exists(p):
            with open(p) as f:
                infos[m] = json.load(f)
            infos[m]["bank_params"] = public_params(m, infos[m].get("bank_params") or {})
    summary = summarise(cells, methods, defences)
    not_run = [{"method": m, "defence": d} for d in defences for m in methods if (m, d) not in cells]
    doc = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "command": command, "config": dict(config),
        "profile": prof.name, "methods": list(methods), "defences": list(defences),
        "defence_specs": {d: parse_defence(defence_spec(d, prof)).name for d in defences},
        "broken_ratio": BROKEN_RATIO, "method_info": infos,
        "cells": [cells[k] for k in sorted(cells, key=lambda k: (defences.index(k[1]), methods.index(k[0])))],
        **summary, "not_run": not_run,
        "environment": {"uetransforms": __version__, "torch": torch.__version__},
        "files": {"results": os.path.join(out, "results.json"), "heatmap": os.path.join(out, "heatmap.png")},
    }
    # the last column: early stopping, the best epoch of each "none" run against clean's best epoch
    plot = {m: {**r, "early-stop": summary["peak_ratio"][m].get("none")} for m, r in summary["ratio"].items()}
    columns = [*defences, "early-stop"] if "none" in defences else list(defences)
    suite_heatmap(doc["files"]["heatmap"], plot, [m for m in methods if m != "clean"], columns,
                  title=f"protected / clean test accuracy ({prof.name} profile: {prof.arch}, {prof.epochs} epochs); "
                        "lower = stronger protection",
                  clean={**{d: cells[("clean", d)]["test_accuracy"] for d in defences if ("clean", d) in cells},
                         **({"early-stop": cells[("clean", "none")]["peak_accuracy"]} if ("clean", "none") in cells
                            else {})})
    _write_json(doc["files"]["results"], doc)
    return doc


def table(doc: Mapping[str, Any]) -> str:
    """Markdown: methods as rows, defences as columns; each cell ``accuracy (ratio)``, **bold**
    where the defence breaks a method that protects without it, ``not run`` where the cell has no
    result. The last column is the best epoch of the ``none`` run (early stopping)."""
    defences = list(doc["defences"])
    acc = {(c["method"], c["defence"]): c for c in doc["cells"]}
    head = ["| method | " + " | ".join(defences) + " | early stop (peak) |", "|---|" + "---:|" * (len(defences) + 1)]
    lines = []
    for m in doc["methods"]:
        cells = []
        for d in defences:
            c = acc.get((m, d))
            if c is None:
                cells.append("not run")
                continue
            r = None if m == "clean" else doc["ratio"][m][d]
            text = f"{c['test_accuracy']:.3f}" + ("" if r is None else f" ({r:.2f})")
            cells.append(f"**{text}**" if (r is not None and d in doc["verdict"][m]["broken_by"]) else text)
        c = acc.get((m, "none"))
        if c is None:
            cells.append("not run")
        else:
            pr = None if m == "clean" else doc["peak_ratio"][m]["none"]
            text = f"{c['peak_accuracy']:.3f} @{c['peak_epoch']}" + ("" if pr is None else f" ({pr:.2f})")
            cells.append(f"**{text}**" if (pr is not None and "early-stop" in doc["verdict"][m]["broken_by"]) else text)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(head + lines)


__all__ = ["BROKEN_RATIO", "PROFILES", "Profile", "STANDARD_DEFENCES", "STANDARD_METHODS", "SUITES", "collect",
           "evaluate_suite",
           "resolve_profile", "summarise", "table"]
