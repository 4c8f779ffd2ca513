"""``ue.evaluate``: measure protection the way it matters -- train from scratch, test on clean data.

A classifier is trained on the (protected) training set and its accuracy on the *clean* test
set is reported next to the same training on the clean training set, for every defence the
trainer might apply (:mod:`uetransforms.defences`) and for the threat settings a publisher
worries about:

* **partial protection** -- only a fraction of the training rows protected, the rest clean
  (``protected_fraction=0.5``; rows chosen with ``seed``, needs ``clean_train``),
* **label-agnostic training** -- the trainer labels the same images differently
  (``label_map={old: new}`` applied to train and test labels, or ``train_label_column``, a
  column that both splits carry).

Images are decoded once into a uint8 tensor (the harness is meant for sets of about 10k
images); training runs batch by batch on that tensor with vectorised flip + crop, no workers.

Example:
    >>> import numpy as np
    >>> from uetransforms.evaluate import evaluate  # also ue.evaluate
    >>> rng = np.random.default_rng(0)
    >>> train = {"image": list(rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)), "label": [0, 1] * 32}
    >>> test = {"image": list(rng.integers(0, 256, (32, 8, 8, 3), dtype=np.uint8)), "label": [0, 1] * 16}
    >>> report = evaluate(train, test, clean_train=train, epochs=1, progress=False)
    >>> [(r.setting, r.defence) for r in report.rows]
    [('clean', 'none'), ('protected', 'none')]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .data import DataError, FitData
from .defences import Defence, parse_defence, pgd
from .fitting import resolve_device
from .models import build_model

#: Identifies the report format in ``report.json``; bump the version when fields change meaning.
SCHEMA = "uetransforms.evaluate-report"
SCHEMA_VERSION = 2  # 2: rows carry peak_accuracy / peak_epoch


# ---------------------------------------------------------------------------- the report
@dataclass
class EvalRow:
    """One training run: a training set (setting) under one defence."""

    setting: str  #: "clean", "protected" or "protected 50%"
    defence: str  #: canonical defence spec ("none", "jpeg75", "grayscale+cutout"...)
    test_accuracy: float  #: on the clean test set after the last epoch
    curve: list[float]  #: clean test accuracy after each epoch
    train_accuracy: float  #: on (up to 2000 of) the training images as the trainer sees them
    seconds: float  #: wall time of this run (training and per-epoch testing)
    protected_fraction: float  #: share of training rows that carry protection
    train_size: int
    #: best clean test accuracy over the epochs: what a trainer who stops early at the right
    #: epoch gets (an upper bound on early stopping: it picks the epoch with the test set)
    peak_accuracy: float = float("nan")
    peak_epoch: int = 0  #: 1-based epoch of ``peak_accuracy`` (the first, on ties)

    def __post_init__(self) -> None:
        if self.curve and self.peak_epoch == 0:
            best = max(range(len(self.curve)), key=lambda i: (self.curve[i], -i))
            self.peak_accuracy, self.peak_epoch = float(self.curve[best]), best + 1


@dataclass
class EvalReport:
    """What :func:`evaluate` measured, with the exact configuration that produced it."""

    rows: list[EvalRow]
    config: dict[str, Any]
    data: dict[str, Any]
    quality: dict[str, float] | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    #: a few (clean, protected) uint8 images for the figure; not serialised
    samples: tuple[torch.Tensor | None, torch.Tensor] | None = field(default=None, repr=False)

    def accuracy(self, setting: str, defence: str = "none", *, which: str = "last") -> float:
        """Test accuracy of one run, e.g. ``report.accuracy("protected", "jpeg75")``;
        ``which="peak"`` gives the best epoch's (early stopping) instead of the last."""
        if which not in ("last", "peak"):
            raise ValueError(f"which must be 'last' or 'peak', got {which!r}")
        for r in self.rows:
            if r.setting == setting and r.defence == parse_defence(defence).name:
                return r.test_accuracy if which == "last" else r.peak_accuracy
        raise KeyError(f"no run for setting={setting!r}, defence={defence!r}; runs: "
                       f"{[(r.setting, r.defence) for r in self.rows]}")

    @property
    def curves(self) -> dict[str, list[float]]:
        """``"setting / defence" -> per-epoch clean test accuracy``."""
        return {f"{r.setting} / {r.defence}": list(r.curve) for r in self.rows}

    def to_dict(self) -> dict[str, Any]:
        """Every number and the configuration, JSON-ready (non-finite floats become ``None``)."""
        return _json_safe({
            "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
            "config": self.config, "data": self.data, "quality": self.quality,
            "rows": [asdict(r) for r in self.rows], "environment": self.environment, "files": self.files,
        })

    def table(self, *, long: bool = False) -> str:
        """Markdown: settings as rows and defences as columns, side by side; each cell is the clean
        test accuracy after the last epoch and, in brackets, the peak over epochs and its epoch.

        ``long=True`` gives one line per run with train accuracy and seconds as well.
        """
        if long:
            lines = ["| setting | defence | test acc (last) | peak (epoch) | train acc | seconds |",
                     "|---|---|---:|---:|---:|---:|"]
            lines += [f"| {r.setting} | {r.defence} | {r.test_accuracy:.3f} | {r.peak_accuracy:.3f} ({r.peak_epoch}) | "
                      f"{r.train_accuracy:.3f} | {r.seconds:.1f} |" for r in self.rows]
            return "\n".join(lines)
        settings = list(dict.fromkeys(r.setting for r in self.rows))
        defences = list(dict.fromkeys(r.defence for r in self.rows))
        acc = {(r.setting, r.defence): f"{r.test_accuracy:.3f} (peak {r.peak_accuracy:.3f} @{r.peak_epoch})"
               for r in self.rows}
        lines = ["| training set | " + " | ".join(defences) + " |", "|---|" + "---:|" * len(defences)]
        for s in settings:
            cells = [acc.get((s, d), "") for d in defences]
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def save(self, out_dir: str | os.PathLike) -> dict[str, str]:
        """Write ``report.json`` and ``figure.png`` into ``out_dir``; returns their paths."""
        from .figures import report_figure

        out_dir = os.fspath(out_dir)
        os.makedirs(out_dir, exist_ok=True)
        fig = os.path.join(out_dir, "figure.png")
        clean, prot = self.samples if self.samples is not None else (None, None)
        title = f"{self.config.get('arch')} | {self.data.get('train_size')} train / {self.data.get('test_size')} test"
        report_figure(fig, clean=clean, protected=prot, curves=self.curves, title=title)
        path = os.path.join(out_dir, "report.json")
        self.files = {"report": path, "figure": fig}
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(self.to_dict(), f, indent=2, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
        return dict(self.files)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.integer, np.floating)):
        return _json_safe(obj.item())
    return obj


# ---------------------------------------------------------------------------- data
@dataclass
class _Split:
    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N]


def _decode(ds: Any, *, image_column: str, label_column: str, role: str, channels: int | None = None) -> _Split:
    try:
        data = FitData(ds, image_column=image_column, label_column=label_column, channels=channels)
    except DataError as err:
        raise DataError(f"{role}: {err}") from err
    return _Split(torch.from_numpy(np.ascontiguousarray(data.images())), torch.from_numpy(data.labels.copy()))


def _map_labels(labels: torch.Tensor, label_map: Mapping[int, int] | Sequence[int], role: str) -> torch.Tensor:
    if isinstance(label_map, Mapping):
        table = {int(k): int(v) for k, v in label_map.items()}
    else:
        table = {i: int(v) for i, v in enumerate(label_map)}
    missing = sorted(set(labels.tolist()) - set(table))
    if missing:
        raise ValueError(f"label_map has no entry for {role} labels {missing[:10]}; map every label the data uses")
    lut = torch.full((max(max(table), int(labels.max())) + 1,), -1, dtype=torch.int64)
    for k, v in table.items():
        if k >= 0:
            lut[k] = v
    out = lut[labels]
    if (out < 0).any():
        raise ValueError("label_map maps to negative labels; new labels must be class ids 0..K-1")
    return out


# ---------------------------------------------------------------------------- training
def random_crop_flip(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Standard augmentation, vectorised: zero-pad by ``pad``, crop back at a random offset, flip half."""
    b, _, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
    flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)
    rows = oy[:, None] + torch.arange(h, device=x.device)
    cols = ox[:, None] + torch.arange(w, device=x.device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    # Advanced indices on dims 0, 2, 3 around a slice: the result is [B, H, W, C].
    out = xp[torch.arange(b, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def _accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device,
              batch_size: int = 1000) -> float:
    model.eval()
    correct = 0
    for s in range(0, len(images), batch_size):
        x = images[s : s + batch_size].to(device, torch.float32).div_(255)
        correct += int((model(x).argmax(1) == labels[s : s + batch_size].to(device)).sum())
    return correct / max(1, len(images))


def _ueraser_loss(model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor, repeats: int,
                  gen: torch.Generator) -> torch.Tensor:
    """UEraser's loss: K augmented draws of every image, each image's worst draw (UEraser-Max,
    arXiv 2303.15127); K = 1 is UEraser-Lite, plain training on one draw."""
    from .defences import ueraser_augment

    losses = torch.stack([F.cross_entropy(model(ueraser_augment(x, gen)), targets, reduction="none")
                          for _ in range(repeats)])
    return losses.amax(0).mean()


def _train_run(train: _Split, test: _Split, defence: Defence, *, num_classes: int, cfg: dict[str, Any],
               device: torch.device, desc: str, progress: bool) -> tuple[list[float], float, float]:
    """Train one model from scratch; return (per-epoch clean test accuracy, train accuracy, seconds)."""
    from tqdm.auto import tqdm

    seed = cfg["seed"]
    torch.manual_seed(seed)  # weight init
    gen = torch.Generator().manual_seed(seed)  # shuffling, augmentation, defences
    c, h, w = train.images.shape[1:]
    model = build_model(cfg["arch"], num_classes=num_classes, in_channels=c, image_size=max(h, w)).to(device)
    # The first optimizer of a process imports torch._dynamo (seconds): start the clock after it.
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=0.9, nesterov=True,
                          weight_decay=cfg["weight_decay"])
    start = time.perf_counter()
    x_train = defence.prepare_train(train.images, train.labels, generator=gen).to(device)
    x_test = defence.prepare_test(test.images)
    y_train = train.labels.to(device)
    n, bs = len(x_train), min(cfg["batch_size"], len(x_train))
    per_epoch = n // bs  # drop the ragged last batch: a batch of 1 breaks BatchNorm
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=cfg["epochs"] * per_epoch,
                                                pct_start=0.25, anneal_strategy="linear")
    pad = max(1, round(max(h, w) / 8))
    soft = defence.mixup_alpha is not None or defence.cutmix_alpha is not None
    curve: list[float] = []
    bar = tqdm(range(cfg["epochs"]), desc=desc, disable=not progress, leave=False)
    for _ in bar:
        model.train()
        order = torch.randperm(n, generator=gen).to(device)
        for i in range(per_epoch):
            idx = order[i * bs : (i + 1) * bs]
            x = x_train[idx].to(torch.float32).div_(255)
            if defence.transforms_batches:
                x = defence.pre_augment(x, gen)
            if cfg["augment"]:
                x = random_crop_flip(x, pad, gen)
            y = y_train[idx]
            targets: torch.Tensor = F.one_hot(y, num_classes).to(x.dtype) if soft else y
            if defence.cutout is not None or soft:
                x, targets = defence.augment(x, targets if soft else F.one_hot(y, num_classes).to(x.dtype), gen)
                if not soft:
                    targets = y  # cutout leaves labels alone
            if defence.is_adversarial:
                x = pgd(model, x, targets, epsilon=defence.pgd_epsilon, steps=defence.pgd_steps,  # type: ignore[arg-type]
                        step_size=defence.pgd_step_size, generator=gen, norm=defence.pgd_norm)
            if defence.ueraser_repeats is not None:
                loss = _ueraser_loss(model, x, targets, defence.ueraser_repeats, gen)
            else:
                loss = F.cross_entropy(model(x), targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        curve.append(_accuracy(model, x_test, test.labels, device))
        bar.set_postfix(test_acc=f"{curve[-1]:.3f}")
    bar.close()
    sub = torch.randperm(n, generator=gen)[: cfg["train_eval_size"]].sort().values.to(device)
    train_acc = _accuracy(model, x_train[sub], y_train[sub], device)
    return curve, train_acc, time.perf_counter() - start


# ---------------------------------------------------------------------------- the entry point
def evaluate(
    train: Any,
    test: Any,
    *,
    clean_train: Any = None,
    image_column: str = "image",
    label_column: str = "label",
    arch: str = "cnn-small",
    epochs: int = 8,
    batch_size: int = 128,
    lr: float = 0.1,
    weight_decay: float = 5e-4,
    device: str | torch.device | None = None,
    seed: int = 0,
    augment: bool = True,
    defences: Sequence[str | Defence] | str = ("none",),
    label_map: Mapping[int, int] | Sequence[int] | None = None,
    train_label_column: str | None = None,
    protected_fraction: float | Sequence[float] = 1.0,
    baseline: bool = True,
    train_eval_size: int = 2000,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> EvalReport:
    """Train on ``train`` (protected), test on clean ``test``; one run per setting x defence.

    Args:
        train: the protected training set: a ``datasets.Dataset`` (or dict of lists) with
            ``image_column`` and ``label_column``.
        test: the clean test set (same columns, same image size and mode).
        clean_train: the same training rows unprotected, in the same order. Gives the clean
            baseline row, the image-quality metrics and the clean rows of partial protection.
        arch: ``"cnn-small"`` (fast, CPU) or a torchvision model name (``"resnet18"``...).
        epochs / batch_size / lr / weight_decay: SGD (Nesterov, momentum 0.9) with a one-cycle
            schedule peaking at ``lr``.
        device: ``None`` (CPU), ``"cuda"``...
        seed: seeds weight init, shuffling, augmentation, defences and the partial-protection
            row choice: the same call gives the same numbers on the same machine.
        augment: random crop (zero padding, 1/8 of the side) + horizontal flip.
        defences: specs such as ``"none"``, ``"grayscale"``, ``"jpeg10"``, ``"bdr"``, ``"iss"``,
            ``"ueraser"``, ``"orthogonal"``, ``"sharpen+lowpass"``, ``"cutout"``, ``"mixup"``,
            ``"pgd:eps=8,steps=5"``, ``"pgd:norm=l2,eps=0.5"``, combined with ``+`` (see
            :mod:`~uetransforms.defences`). Every row reports the last epoch's clean test accuracy
            and the best epoch's (``peak_accuracy``/``peak_epoch``: early stopping).
        label_map: label-agnostic threat: ``{old: new}`` (or a list indexed by old label)
            relabelling train *and* test, e.g. CIFAR-10 classes to animal/vehicle.
        train_label_column: label-agnostic threat: train on this column instead (test and
            ``clean_train`` must carry it too).
        protected_fraction: share(s) of training rows that are protected, e.g. ``[1.0, 0.5]``;
            rows below 1 take the remaining rows from ``clean_train``.
        baseline: add the clean-training row for every defence (needs ``clean_train``).
        train_eval_size: training images (random subset) the final train accuracy is measured on.
        out_dir: if set, write ``report.json`` and ``figure.png`` there.
        progress: show a progress bar per run.

    Returns:
        an :class:`EvalReport`; ``report.table()`` is the markdown table, ``report.to_dict()``
        the JSON.

    Raises:
        DataError / ValueError: missing columns, mismatched splits, bad fractions or label maps,
        each message naming the fix.
    """
    defence_list = [parse_defence(d) for d in ([defences] if isinstance(defences, (str, Defence)) else defences)]
    if not defence_list:
        raise ValueError("defences is empty; pass at least ('none',)")
    if len({d.name for d in defence_list}) != len(defence_list):
        raise ValueError(f"defences repeat: {[d.name for d in defence_list]}")
    fractions = [float(f) for f in ([protected_fraction] if isinstance(protected_fraction, (int, float))
                                    else protected_fraction)]
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise ValueError(f"protected_fraction must be in (0, 1], got {protected_fraction!r}")
    fractions = sorted(set(fractions), reverse=True)
    if int(epochs) < 1 or int(batch_size) < 2:
        raise ValueError(f"need epochs >= 1 and batch_size >= 2, got epochs={epochs}, batch_size={batch_size}")
    if label_map is not None and train_label_column is not None:
        raise ValueError("pass label_map or train_label_column, not both")
    if any(f < 1 for f in fractions) and clean_train is None:
        raise ValueError("protected_fraction < 1 mixes in clean rows: pass clean_train=<the unprotected training set>")
    dev = resolve_device(device)

    # -- decode once ----------------------------------------------------------------------
    lab = train_label_column or label_column
    prot = _decode(train, image_column=image_column, label_column=lab, role="train")
    channels = prot.images.shape[1]
    tst = _decode(test, image_column=image_column, label_column=lab, role="test", channels=channels)
    clean = None
    if clean_train is not None:
        clean = _decode(clean_train, image_column=image_column, label_column=lab, role="clean_train", channels=channels)
        if clean.images.shape != prot.images.shape:
            raise DataError(
                f"clean_train {tuple(clean.images.shape)} and train {tuple(prot.images.shape)} differ: clean_train "
                "must be the same rows, in the same order, before protection"
            )
        if not torch.equal(clean.labels, prot.labels):
            raise DataError("clean_train and train have different labels row by row: pass the same rows in the same order")
    if tst.images.shape[1:] != prot.images.shape[1:]:
        raise DataError(f"test images are {tuple(tst.images.shape[1:])} but training images are "
                        f"{tuple(prot.images.shape[1:])}; resize one split to match")
    if label_map is not None:
        prot.labels, tst.labels = _map_labels(prot.labels, label_map, "train"), _map_labels(tst.labels, label_map, "test")
        if clean is not None:
            clean.labels = prot.labels
    num_classes = int(max(prot.labels.max(), tst.labels.max())) + 1

    # -- the training sets ------------------------------------------------------------------
    sets: list[tuple[str, float, _Split]] = []
    if baseline and clean is not None:
        sets.append(("clean", 0.0, clean))
    for f in fractions:
        if f == 1.0:
            sets.append(("protected", 1.0, prot))
            continue
        k = int(round(f * len(prot.images)))
        chosen = torch.randperm(len(prot.images), generator=torch.Generator().manual_seed(seed))[:k]
        mask = torch.zeros(len(prot.images), dtype=torch.bool)
        mask[chosen] = True
        mixed = torch.where(mask.view(-1, 1, 1, 1), prot.images, clean.images)  # type: ignore[union-attr]
        sets.append((f"protected {100 * f:g}%", k / len(prot.images), _Split(mixed, prot.labels)))

    cfg: dict[str, Any] = {
        "arch": arch, "epochs": int(epochs), "batch_size": int(batch_size), "lr": float(lr),
        "weight_decay": float(weight_decay), "optimizer": "sgd(momentum=0.9, nesterov)", "schedule": "one-cycle",
        "device": str(dev), "seed": int(seed), "augment": bool(augment),
        "augmentation": "random crop (zero pad 1/8 side) + horizontal flip" if augment else "none",
        "defences": [d.to_dict() for d in defence_list], "protected_fraction": fractions,
        "label_map": (None if label_map is None else
                      {str(k): int(v) for k, v in (label_map.items() if isinstance(label_map, Mapping)
                                                   else enumerate(label_map))}),
        "train_label_column": train_label_column, "image_column": image_column, "label_column": label_column,
        "baseline": bool(baseline and clean is not None), "train_eval_size": int(train_eval_size),
    }
    data_info = {
        "train_size": len(prot.images), "test_size": len(tst.images), "image_shape": list(prot.images.shape[1:]),
        "num_classes": num_classes, "threat": ("label-agnostic" if (label_map is not None or train_label_column)
                                               else "same labels"),
    }
    quality = None
    if clean is not None:
        from .quality import summary

        quality = summary(clean.images, prot.images)

    rows: list[EvalRow] = []
    for d in defence_list:
        for name, frac, split in sets:
            curve, train_acc, secs = _train_run(split, tst, d, num_classes=num_classes, cfg=cfg, device=dev,
                                                desc=f"{name} / {d.name}", progress=progress)
            rows.append(EvalRow(setting=name, defence=d.name, test_accuracy=curve[-1], curve=curve,
                                train_accuracy=train_acc, seconds=round(secs, 2), protected_fraction=frac,
                                train_size=len(split.images)))
    # keep the table's order: settings in the order above, defences side by side
    order = {n: i for i, (n, _, _) in enumerate(sets)}
    rows.sort(key=lambda r: order[r.setting])
    from . import __version__

    env = {"uetransforms": __version__, "torch": torch.__version__, "python": platform.python_version(),
           "threads": torch.get_num_threads(), "machine": platform.machine()}
    pick = torch.arange(min(8, len(prot.images)))
    report = EvalReport(rows=rows, config=cfg, data=data_info, quality=quality, environment=env,
                        samples=(None if clean is None else clean.images[pick], prot.images[pick]))
    if out_dir is not None:
        report.save(out_dir)
    return report


# ---------------------------------------------------------------------------- CLI
def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``uetransforms evaluate`` (wired into the CLI by ``uetransforms/cli.py``)."""
    parser.add_argument("--train", required=True,
                        help="training set: a parquet file/glob, a save_to_disk folder, or a hub dataset id "
                             "(protected, unless --bank is given)")
    parser.add_argument("--test", required=True, help="clean test set (same forms as --train)")
    parser.add_argument("--clean-train", help="the unprotected training set, same rows and order as --train")
    parser.add_argument("--bank", help="protect --train with this bank on the fly; --train is then the clean set")
    parser.add_argument("--image-column", default="image")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--limit-train", type=int, help="use the first N training rows")
    parser.add_argument("--limit-test", type=int, help="use the first N test rows")
    parser.add_argument("--arch", default=None, help="cnn-small (default) or a torchvision model name")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 8)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--device", default=None, help="cpu (default), cuda, cuda:1...")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-augment", action="store_true", help="no random crop + flip")
    parser.add_argument("--defence", "--defences", dest="defences", nargs="+", default=None,
                        help="none (default) grayscale jpeg10 bdr[:bits=2] iss ueraser[:repeats=5] orthogonal "
                             "sharpen+lowpass cutout mixup cutmix pgd[:eps=8,steps=5,norm=linf|l2]; combine with '+'")
    parser.add_argument("--protected-fraction", type=float, nargs="+", default=[1.0],
                        help="share(s) of training rows protected, e.g. 1 0.5 (needs --clean-train or --bank)")
    parser.add_argument("--label-map", help="label-agnostic training: JSON {\"old\": new} or a list, or a JSON file")
    parser.add_argument("--train-label-column", help="label-agnostic training: train on this column instead")
    parser.add_argument("--out-dir",
                        help="folder for report.json and figure.png (default: ./uetransforms-reports/evaluate-<time>; "
                             "with --suite: ./uetransforms-reports/suite-<profile>, which a rerun resumes)")
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


def load_split(spec: str, *, split: str = "train") -> Any:
    """A dataset from a parquet file/glob, a ``save_to_disk`` folder, or a hub id / loading script."""
    import glob

    import datasets

    if os.path.isdir(spec) and os.path.exists(os.path.join(spec, "dataset_info.json")):
        ds = datasets.load_from_disk(spec)
        return ds[split] if isinstance(ds, datasets.DatasetDict) else ds
    if spec.endswith(".parquet") or (os.path.isdir(spec) and glob.glob(os.path.join(spec, "**/*.parquet"), recursive=True)):
        files = sorted(glob.glob(os.path.join(spec, "**/*.parquet"), recursive=True)) if os.path.isdir(spec) \
            else sorted(glob.glob(spec))
        if not files:
            raise FileNotFoundError(f"no parquet file matches {spec!r}")
        return datasets.Dataset.from_parquet(files)
    return datasets.load_dataset(spec, split=split)


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
    """Where the CLI writes a report without ``--out-dir``: ``./uetransforms-reports/<kind>``."""
    return os.path.join(os.getcwd(), "uetransforms-reports", kind)


def _run_suite_cli(args: argparse.Namespace, train: Any, test: Any) -> int:
    import sys

    from .suite import evaluate_suite, table

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
        from . import measured

        print(f"recorded measured facts in {measured.record(doc)}")
    return 0


def run_cli(args: argparse.Namespace) -> int:
    """Run ``uetransforms evaluate``: print the table and where the report was written; exit code."""
    train = load_split(args.train, split="train")
    test = load_split(args.test, split="test")
    if args.suite:
        if args.bank or args.clean_train or args.protected_fraction != [1.0] or args.label_map or args.train_label_column:
            raise ValueError("--suite protects the clean --train set with each method itself: drop --bank, "
                             "--clean-train, --protected-fraction, --label-map and --train-label-column")
        return _run_suite_cli(args, train, test)
    if args.methods or args.record_measured:
        raise ValueError("--methods and --record-measured belong to --suite standard")
    if args.limit_train:
        train = train.select(range(min(args.limit_train, len(train))))
    if args.limit_test:
        test = test.select(range(min(args.limit_test, len(test))))
    clean_train = None
    if args.bank:
        from .protect import Protect

        clean_train = train
        train = train.map(Protect(args.bank, image_column=args.image_column, label_column=args.label_column),
                          batched=True, batch_size=256, desc="protecting")
    elif args.clean_train:
        clean_train = load_split(args.clean_train, split="train")
        if args.limit_train:
            clean_train = clean_train.select(range(min(args.limit_train, len(clean_train))))
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
        out_dir=out_dir, progress=not args.quiet,
    )
    print(report.table())
    if report.quality:
        q = report.quality
        print(f"\nperturbation: L-inf max {q['linf_max']:.0f}/255, L2 mean {q['l2_mean']:.3f}, "
              f"PSNR {q['psnr_mean']:.1f} dB, SSIM {q['ssim_mean']:.3f}")
    print(f"\nwrote {report.files['report']} and {report.files['figure']}")
    return 0


__all__ = ["EvalReport", "EvalRow", "SCHEMA", "add_cli_arguments", "evaluate", "load_split", "random_crop_flip",
           "run_cli"]
