"""A fair label-agnostic protocol: the protector used no labels; the attacker picks a labelling.

A label-free bank (``clusters``, or any class-keyed method fitted with ``label_column=None`` and
an encoder) is judged by attackers who train on the protected images with

* (a) the true labels,
* (b) a *coarser* labelling (CIFAR-10: 5 semantic groups of 2 classes, :data:`CIFAR10_PAIRS`),
* (c) a *finer* one where the data has it (a column such as CIFAR-100's ``fine_label``),

and every ratio is protected ÷ clean accuracy *under the same labelling* (the clean model is
trained on the same rows, unprotected, with the same labels). Beside it stands the trivial floor:
the test accuracy of always answering the test set's most common class under that labelling. A
coarse labelling raises clean accuracy and the floor, so a ratio target that would sit below the
floor (0.6x of a 2-class clean accuracy of 0.93 is below the 0.61 of always answering "animal")
is unfair; the table shows the floor as a ratio of clean too, so a reader sees how far down a
ratio can go at all.

Training is :func:`uetransforms.evaluation.harness.evaluate` (its ``label_map=`` /
``train_label_column=``); this module only chooses the labellings, runs each clean baseline once
and tabulates.

Example:
    >>> import uetransforms as ue
    >>> from uetransforms.evaluation import labelfree
    >>> [lab.name for lab in labelfree.cifar10_labellings()]
    ['true', 'pairs']
    >>> labelfree.majority_floor([0, 0, 1, 2], labelfree.CIFAR10_PAIRS.label_map)
    0.5
    >>> rep = labelfree.run({"cuda-k10": prot}, test, clean_train=train, image_column="img")  # doctest: +SKIP
    >>> print(rep.table())  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .harness import evaluate


@dataclass(frozen=True)
class Labelling:
    """How the attacker labels the training (and test) images.

    Attributes:
        name: short name for tables (``"true"``, ``"pairs"``, ``"fine"``).
        kind: ``"true"``, ``"coarser"`` or ``"finer"`` than the true labels.
        description: one line for the table's legend.
        label_map: ``label_map[old] = new`` applied to the label column (coarser labellings).
        column: train and test on this column instead of the label column (finer labellings).
    """

    name: str
    kind: str
    description: str
    label_map: tuple[int, ...] | None = None
    column: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("true", "coarser", "finer"):
            raise ValueError(f"Labelling kind must be 'true', 'coarser' or 'finer', got {self.kind!r}")
        if self.label_map is not None and self.column is not None:
            raise ValueError(f"labelling {self.name!r}: give label_map or column, not both")

    def evaluate_kwargs(self) -> dict[str, Any]:
        """The :func:`~uetransforms.evaluation.harness.evaluate` arguments of this labelling."""
        if self.label_map is not None:
            return {"label_map": list(self.label_map)}
        if self.column is not None:
            return {"train_label_column": self.column}
        return {}


TRUE = Labelling("true", "true", "the dataset's own labels")

#: CIFAR-10's classes in 5 semantic pairs: {airplane, ship}, {automobile, truck}, {bird, frog},
#: {cat, dog}, {deer, horse}. Pairs of similar classes keep the coarse task meaningful (a
#: random pairing would be a harder, arbitrary task).
CIFAR10_PAIRS = Labelling(
    "pairs", "coarser", "5 groups of 2 CIFAR-10 classes: airplane+ship, automobile+truck, bird+frog, cat+dog, "
                        "deer+horse",
    label_map=(0, 1, 2, 3, 4, 3, 2, 4, 0, 1))


def cifar10_labellings(fine_column: str | None = None) -> list[Labelling]:
    """(a) the true labels and (b) :data:`CIFAR10_PAIRS`; (c) a finer labelling only if the data has
    one (``fine_column``): CIFAR-10 itself has no finer labels."""
    out = [TRUE, CIFAR10_PAIRS]
    if fine_column is not None:
        out.append(Labelling("fine", "finer", f"the column {fine_column!r}", column=fine_column))
    return out


def majority_floor(test_labels: Sequence[int] | np.ndarray, label_map: Sequence[int] | None = None) -> float:
    """Test accuracy of always answering the most common (mapped) test label: the trivial floor."""
    labels = np.asarray(test_labels, dtype=np.int64)
    if labels.size == 0:
        raise ValueError("majority_floor needs at least one test label")
    if label_map is not None:
        table = np.asarray(label_map, dtype=np.int64)
        if labels.max() >= len(table):
            raise ValueError(f"label_map has {len(table)} entries but the test labels reach {int(labels.max())}")
        labels = table[labels]
    return float(np.bincount(labels).max() / labels.size)


@dataclass
class ProtocolRow:
    method: str
    labelling: str
    clean_accuracy: float
    protected_accuracy: float
    ratio: float  #: protected / clean, same labelling
    floor: float  #: majority-class test accuracy under the labelling
    floor_ratio: float  #: floor / clean: the lowest ratio a trainer that learnt nothing would reach
    train_accuracy: float
    seconds: float


@dataclass
class ProtocolReport:
    rows: list[ProtocolRow]
    labellings: list[Labelling]
    config: dict[str, Any] = field(default_factory=dict)

    def ratio(self, method: str, labelling: str = "true") -> float:
        for r in self.rows:
            if r.method == method and r.labelling == labelling:
                return r.ratio
        raise KeyError(f"no row for method {method!r} under labelling {labelling!r}")

    def table(self) -> str:
        """Markdown: one row per method, per labelling ``protected (ratio; floor ratio)``."""
        names = [lab.name for lab in self.labellings]
        clean = {r.labelling: r.clean_accuracy for r in self.rows}
        floor = {r.labelling: r.floor for r in self.rows}
        head = "| method | " + " | ".join(f"{n}: acc (protected / clean)" for n in names) + " |"
        lines = [head, "|---|" + "---:|" * len(names)]
        lines.append("| clean | " + " | ".join(f"{clean[n]:.3f}" if n in clean else "-" for n in names) + " |")
        lines.append("| majority-class floor | " + " | ".join(
            f"{floor[n]:.3f} ({floor[n] / clean[n]:.2f}x)" if n in floor else "-" for n in names) + " |")
        by = {(r.method, r.labelling): r for r in self.rows}
        for m in dict.fromkeys(r.method for r in self.rows):
            cells = [f"{by[(m, n)].protected_accuracy:.3f} (**{by[(m, n)].ratio:.2f}x**)" if (m, n) in by else "-"
                     for n in names]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [asdict(r) for r in self.rows], "labellings": [asdict(lab) for lab in self.labellings],
                "config": self.config, "table": self.table()}

    def save(self, path: str | os.PathLike) -> str:
        path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)
        return path


def _setup(labellings: Sequence[Labelling] | None, evaluate_kwargs: Mapping[str, Any], image_column: str,
           label_column: str) -> tuple[list[Labelling], dict[str, Any]]:
    labs = list(labellings) if labellings is not None else cifar10_labellings()
    if not labs:
        raise ValueError("labellings is empty; pass at least [labelfree.TRUE]")
    for bad in ("label_map", "train_label_column", "baseline", "clean_train", "defences"):
        if bad in evaluate_kwargs:
            raise ValueError(f"{bad}= is set by the protocol (labellings=, clean_train=); do not pass it")
    return labs, dict(image_column=image_column, label_column=label_column, defences="none", progress=False,
                      **evaluate_kwargs)


def clean_baselines(test: Any, *, clean_train: Any, labellings: Sequence[Labelling] | None = None,
                    image_column: str = "image", label_column: str = "label",
                    **evaluate_kwargs: Any) -> dict[str, float]:
    """Clean test accuracy under each labelling (``{labelling name: accuracy}``), to pass to
    :func:`run` as ``clean=`` when several methods are measured one after another."""
    labs, common = _setup(labellings, evaluate_kwargs, image_column, label_column)
    return {lab.name: evaluate(clean_train, test, **common, **lab.evaluate_kwargs()).rows[0].test_accuracy
            for lab in labs}


def run(protected: Mapping[str, Any], test: Any, *, clean_train: Any, labellings: Sequence[Labelling] | None = None,
        clean: Mapping[str, float] | None = None, image_column: str = "image", label_column: str = "label",
        **evaluate_kwargs: Any) -> ProtocolReport:
    """Train on each protected set under each labelling; every ratio is against clean training on
    ``clean_train`` under the same labelling.

    Args:
        protected: name -> protected training set (the rows of ``clean_train``, same order).
        test: the clean test set.
        clean_train: the unprotected training rows: the clean baseline of every ratio.
        labellings: default :func:`cifar10_labellings` (true labels and 5 pairs).
        clean: clean accuracies from :func:`clean_baselines` with the *same* settings (saves
            retraining them); labellings missing from it are trained here.
        **evaluate_kwargs: passed to :func:`~uetransforms.evaluation.harness.evaluate` (``arch``,
            ``epochs``, ``seed``...); ``defences`` is ``"none"`` here (a defence is another axis).
    """
    labs, common = _setup(labellings, evaluate_kwargs, image_column, label_column)
    if not protected:
        raise ValueError("protected is empty; pass {name: protected training set}")
    known = dict(clean or {})
    rows: list[ProtocolRow] = []
    for lab in labs:
        kw = {**common, **lab.evaluate_kwargs()}
        floor = majority_floor(test[lab.column or label_column], lab.label_map)
        if lab.name not in known:
            known[lab.name] = evaluate(clean_train, test, **kw).rows[0].test_accuracy
        base = known[lab.name]
        for name, ds in protected.items():
            row = evaluate(ds, test, baseline=False, **kw).rows[0]
            rows.append(ProtocolRow(method=name, labelling=lab.name, clean_accuracy=base,
                                    protected_accuracy=row.test_accuracy, ratio=row.test_accuracy / base,
                                    floor=floor, floor_ratio=floor / base, train_accuracy=row.train_accuracy,
                                    seconds=row.seconds))
    cfg = {k: v for k, v in common.items() if k != "progress"}
    return ProtocolReport(rows=rows, labellings=labs, config=cfg)


__all__ = ["CIFAR10_PAIRS", "TRUE", "Labelling", "ProtocolReport", "ProtocolRow", "cifar10_labellings",
           "clean_baselines", "majority_floor", "run"]
