"""``uetransforms demo``: the whole story on real data, offline, in a few minutes on a laptop CPU.

1. load the bundled handwritten digits (1797 real 8x8 scans, see ``assets/README.md``) as a
   ``datasets.Dataset`` and split it into train / test,
2. **fit** a CUDA bank (one secret blur filter per class) and the ``random`` negative control,
3. **protect and publish** each training set locally with :func:`uetransforms.publishing.pipeline`
   (lossless Parquet shards + dataset card), then read the shards back as a downloader would,
4. **evaluate**: train a small CNN from scratch on the clean and on each published training set,
   test on the clean test set, and print the table; ``report.json`` and ``figure.png`` are
   written next to the published data.

Example:
    >>> from uetransforms.cli.demo import run_demo
    >>> summary = run_demo("uetransforms-demo", quick=True)  # doctest: +SKIP
    >>> summary["accuracy"]["clean"] > summary["accuracy"]["cuda"]  # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
import time
from importlib import resources
from typing import Any

import numpy as np

#: The bundled dataset (uint8 images [N, 8, 8] and labels [N]).
DIGITS = "digits.npz"


def load_digits(*, test_size: int = 397, seed: int = 0) -> tuple[Any, Any]:
    """The bundled digits as ``(train, test)`` ``datasets.Dataset`` s: ``image`` (8x8, mode L), ``label``.

    The split is a seeded random permutation, so both parts hold every digit in about equal numbers.
    """
    import datasets

    with resources.files("uetransforms").joinpath("assets", DIGITS).open("rb") as f:
        arrays = np.load(f, allow_pickle=False)
        images, labels = arrays["images"], arrays["labels"].astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(images))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(d) for d in range(10)])})

    def build(idx: np.ndarray) -> datasets.Dataset:
        return datasets.Dataset.from_dict({"image": list(images[idx]), "label": labels[idx].tolist()}, features=features)

    return build(np.sort(order[test_size:])), build(np.sort(order[:test_size]))


def run_demo(out_dir: str = "uetransforms-demo", *, quick: bool = False, methods: tuple[str, ...] | None = None,
             epochs: int | None = None, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Fit -> protect -> publish locally -> evaluate clean vs protected; print the table.

    Args:
        out_dir: where the banks, the published datasets, ``report.json`` and ``figure.png`` go.
        quick: fewer epochs and only the ``cuda`` method (for tests and a first look).
        methods: methods to compare (default ``("cuda", "random")``; ``("cuda",)`` when quick).
        epochs: training epochs per run (default 12, or 6 when quick).
        seed: seeds the split and training. The banks' keys are fresh secrets drawn by ``fit``, as
            everywhere (a key fixed in the demo would be public), so numbers vary a little by run.
        progress: progress bars and step messages.

    Returns:
        ``{"accuracy": {"clean": ..., "<method>": ...}, "quality": {method: {...}}, "reports": {...},
        "table": markdown, "seconds": wall time, "out_dir": ...}``.
    """
    import datasets

    from ..algorithms.fitting import fit
    from ..evaluation.harness import evaluate
    from ..publishing.pipeline import publish
    from .data import load_data

    start = time.perf_counter()
    methods = tuple(methods or (("cuda",) if quick else ("cuda", "random")))
    epochs = int(epochs or (6 if quick else 12))
    say = print if progress else (lambda *a, **k: None)
    os.makedirs(out_dir, exist_ok=True)
    train, test = load_digits(seed=seed)
    say(f"[1/4] digits: {len(train)} train / {len(test)} test images, 8x8 grayscale, 10 classes")

    accuracy: dict[str, float] = {}
    quality: dict[str, Any] = {}
    reports: dict[str, str] = {}
    evaluated: dict[str, Any] = {}
    rows: list[str] = []
    for i, method in enumerate(methods):
        bank = fit(method, train)  # no seed: fit draws a fresh secret key, kept only in the bank
        bank_path = bank.save(os.path.join(out_dir, f"{method}.bank.arrow"))
        step = f"{method} {i + 1}/{len(methods)}"  # steps 2-4 repeat per method: say which pass this is
        say(f"[2/4, {step}] fitted {method!r} -> {bank_path} (secret: keep it, never publish it)")
        published_dir = os.path.join(out_dir, f"published-{method}")
        # The bundled digits are CC BY 4.0 (uetransforms/assets/README.md): the card says so.
        publish(train, bank, published_dir, overwrite=True, card_extra={"license": "cc-by-4.0"})
        published = load_data(published_dir, split="train")
        if isinstance(published, datasets.DatasetDict):
            published = published["train"]
        say(f"[3/4, {step}] published {len(published)} protected images to {published_dir} (PNG shards + README card)")
        say(f"[4/4, {step}] training a small CNN from scratch ({epochs} epochs) on clean and {method!r}-protected data")
        report = evaluate(published, test, clean_train=train, epochs=epochs, batch_size=64, seed=seed,
                          baseline=(i == 0), out_dir=os.path.join(out_dir, f"eval-{method}"), progress=progress)
        if i == 0:
            accuracy["clean"] = report.accuracy("clean")
            rows.append(_row("clean (no protection)", report.accuracy("clean"), None))
        accuracy[method] = report.accuracy("protected")
        quality[method] = report.quality
        reports[method] = report.files["report"]
        evaluated[method] = report
        rows.append(_row(f"{method} (published)", accuracy[method], report.quality))
    if evaluated:
        _draw_figures(evaluated)
    table = "\n".join(["| training set | clean test accuracy | PSNR (dB) | SSIM | L-inf |", "|---|---:|---:|---:|---:|",
                       *rows])
    seconds = time.perf_counter() - start
    print(table)
    print(f"\nA model trained on the published data should do much worse on clean digits than one trained on "
          f"the clean data; 'random' is the control that should not.\nFigures: "
          + ", ".join(os.path.join(os.path.dirname(p), "figure.png") for p in reports.values())
          + f"\nDone in {seconds:.0f} s.")
    return {"accuracy": accuracy, "quality": quality, "reports": reports, "table": table,
            "seconds": seconds, "out_dir": os.path.abspath(out_dir), "epochs": epochs}


def figure_curves(reports: dict[str, Any]) -> dict[str, list[float]]:
    """Every training set's accuracy curve under one name each, in one order for all figures.

    The evaluation's own figure names its lines "clean / none" and "protected / none" and colours
    them by position, so the ``random`` figure (no clean baseline of its own) drew its protected
    line in the colour that meant "clean" in the ``cuda`` figure (issue 24, point 13). Here each
    training set keeps its name and its place, hence its colour and legend, in every figure.
    """
    first = next(iter(reports.values()))
    curves = {"clean (no protection)": first.curves["clean / none"]}
    for method, report in reports.items():
        curves[f"{method} (published)"] = report.curves["protected / none"]
    return curves


def _draw_figures(reports: dict[str, Any]) -> None:
    """Redraw each ``eval-<method>/figure.png``: that method's samples over the curves of all."""
    from ..evaluation.figures import report_figure

    curves = figure_curves(reports)
    for method, report in reports.items():
        clean, prot = report.samples if report.samples is not None else (None, None)
        title = f"samples: {method} | {report.data.get('train_size')} train / {report.data.get('test_size')} test"
        report_figure(report.files["figure"], clean=clean, protected=prot, curves=curves, title=title)


def _row(name: str, acc: float, q: dict[str, float] | None) -> str:
    if q is None:
        return f"| {name} | {acc:.3f} | - | - | - |"
    psnr = q["psnr_mean"]
    return f"| {name} | {acc:.3f} | {psnr:.1f} | {q['ssim_mean']:.3f} | {q['linf_max']:.0f}/255 |"


__all__ = ["figure_curves", "load_digits", "run_demo"]
