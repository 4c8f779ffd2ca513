"""``ue.evaluate``: measure protection the way it matters -- train from scratch, test on clean data.

A classifier is trained on the (protected) training set and its accuracy on the *clean* test
set is reported next to the same training on the clean training set, for every defence the
trainer might apply (:mod:`uetransforms.evaluation.defences`) and for the threat settings a publisher
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
    >>> from uetransforms.evaluation.harness import evaluate  # also ue.evaluate
    >>> rng = np.random.default_rng(0)
    >>> train = {"image": list(rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)), "label": [0, 1] * 32}
    >>> test = {"image": list(rng.integers(0, 256, (32, 8, 8, 3), dtype=np.uint8)), "label": [0, 1] * 16}
    >>> report = evaluate(train, test, clean_train=train, epochs=1, progress=False)
    >>> [(r.setting, r.defence) for r in report.rows]
    [('clean', 'none'), ('protected', 'none')]
"""

from __future__ import annotations

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

from ..core.data import DataError, FitData
from .defences import Defence, DefencePipeline, parse_defence
from ..core.device import resolve_device

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
        return json_safe({
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


def json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.integer, np.floating)):
        return json_safe(obj.item())
    return obj


# ---------------------------------------------------------------------------- data
@dataclass
class Split:
    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N]


def decode_split(ds: Any, *, image_column: str, label_column: str, role: str, channels: int | None = None) -> Split:
    try:
        data = FitData(ds, image_column=image_column, label_column=label_column, channels=channels)
    except DataError as err:
        raise DataError(f"{role}: {err}") from err
    return Split(torch.from_numpy(np.ascontiguousarray(data.images())), torch.from_numpy(data.labels.copy()))


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


def _train_run(train: Split, test: Split, defence: DefencePipeline, *, num_classes: int, cfg: dict[str, Any],
               device: torch.device, desc: str, progress: bool,
               backbone: Any = None) -> tuple[list[float], float, float]:
    """One run of the configured attacker (``cfg["attacker"]``); return (per-epoch clean test accuracy,
    train accuracy, seconds). The attacker builds its model; :func:`_fit_loop` trains it."""
    from .attackers import AttackContext, AttackRun, get

    def loop(model: torch.nn.Module) -> AttackRun:
        return AttackRun(*_fit_loop(model, train, test, defence, num_classes=num_classes, cfg=cfg, device=device,
                                    desc=desc, progress=progress))

    def prepared() -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(cfg["seed"])
        return defence.prepare_train(train.images, train.labels, generator=gen), defence.prepare_test(test.images)

    ctx = AttackContext(train.images, train.labels, test.images, test.labels, num_classes, cfg, device, backbone,
                        loop, prepared, batch_transforms=_batch_transforms(defence), defence_name=defence.name,
                        desc=desc, progress=progress)
    out = get(cfg["attacker"]).run(ctx)
    return out.curve, out.train_accuracy, out.seconds


def _batch_transforms(defence: DefencePipeline) -> bool:
    """Whether the defence acts on each training batch (a stage, a perturbation or its own loss), so it
    needs a trainer and not cached features."""
    return (defence.has_stage("pre_augment") or defence.has_stage("augment")
            or any(type(p).perturb is not Defence.perturb or type(p).loss is not Defence.loss for p in defence))


def _fit_loop(model: torch.nn.Module, train: Split, test: Split, defence: DefencePipeline, *, num_classes: int,
              cfg: dict[str, Any], device: torch.device, desc: str, progress: bool) -> tuple[list[float], float, float]:
    """Train ``model``'s trainable parameters; return (per-epoch clean test accuracy, train accuracy, seconds)."""
    from tqdm.auto import tqdm

    seed = cfg["seed"]
    gen = torch.Generator().manual_seed(seed)  # shuffling, augmentation, defences
    c, h, w = train.images.shape[1:]
    model = model.to(device)
    # The first optimizer of a process imports torch._dynamo (seconds): start the clock after it.
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=cfg["lr"], momentum=0.9,
                          nesterov=True, weight_decay=cfg["weight_decay"])
    start = time.perf_counter()
    x_train = defence.prepare_train(train.images, train.labels, generator=gen).to(device)
    x_test = defence.prepare_test(test.images)
    y_train = train.labels.to(device)
    n, bs = len(x_train), min(cfg["batch_size"], len(x_train))
    per_epoch = n // bs  # drop the ragged last batch: a batch of 1 breaks BatchNorm
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=cfg["epochs"] * per_epoch,
                                                pct_start=0.25, anneal_strategy="linear")
    pad = max(1, round(max(h, w) / 8))
    soft = defence.soft_targets  # mixing defences train on one-hot targets
    pre = defence.has_stage("pre_augment")
    post = defence.has_stage("augment")
    curve: list[float] = []
    bar = tqdm(range(cfg["epochs"]), desc=desc, disable=not progress, leave=False)
    for _ in bar:
        model.train()
        order = torch.randperm(n, generator=gen).to(device)
        for i in range(per_epoch):
            idx = order[i * bs : (i + 1) * bs]
            x = x_train[idx].to(torch.float32).div_(255)
            y = y_train[idx]
            targets: torch.Tensor = F.one_hot(y, num_classes).to(x.dtype) if soft else y
            # The defence's hooks, in order (see evaluation.defences): before crop + flip, after
            # it, an adversarial perturbation, then the loss. The loop names no defence.
            if pre:
                x, targets = defence.run_stage("pre_augment", x, targets, gen)
            if cfg["augment"]:
                x = random_crop_flip(x, pad, gen)
            if post:
                x, targets = defence.run_stage("augment", x, targets, gen)
            x = defence.perturb(model, x, targets, gen)
            loss = defence.loss(model, x, targets, gen)
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
    lr: float | None = None,
    weight_decay: float = 5e-4,
    device: str | torch.device | None = None,
    seed: int = 0,
    augment: bool = True,
    defences: Sequence[str | Defence | DefencePipeline] | str = ("none",),
    label_map: Mapping[int, int] | Sequence[int] | None = None,
    train_label_column: str | None = None,
    protected_fraction: float | Sequence[float] = 1.0,
    baseline: bool = True,
    train_eval_size: int = 2000,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
    attacker: str = "scratch",
    backbone: Any = None,
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
            schedule peaking at ``lr`` (default: the attacker's, 0.1 from scratch, 0.01 fine-tuning).
            The linear probe counts ``epochs`` as rounds of L-BFGS iterations and ignores the rest.
        device: ``None`` (CPU), ``"cuda"``...
        seed: seeds weight init, shuffling, augmentation, defences and the partial-protection
            row choice: the same call gives the same numbers on the same machine.
        augment: random crop (zero padding, 1/8 of the side) + horizontal flip.
        defences: specs such as ``"none"``, ``"grayscale"``, ``"jpeg10"``, ``"bdr"``, ``"iss"``,
            ``"ueraser"``, ``"orthogonal"``, ``"sharpen+lowpass"``, ``"cutout"``, ``"mixup"``,
            ``"pgd:eps=8,steps=5"``, ``"pgd:norm=l2,eps=0.5"``, combined with ``+`` (see
            :mod:`~uetransforms.evaluation.defences`). Every row reports the last epoch's clean test accuracy
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
        attacker: who trains on the protected set (:mod:`uetransforms.evaluation.attackers`):
            ``"scratch"`` (a random-init ``arch``), ``"linear-probe"`` (logistic regression on a
            frozen pretrained backbone's features) or ``"finetune"`` (the backbone + a new head,
            all layers).
        backbone: the pretrained attackers' starting point: a spec for
            :func:`uetransforms.models.backbones.load_backbone` (``"tv:resnet18@IMAGENET1K_V1"``,
            ``"timm:resnet18.a1_in1k"``, ``"clip:RN50@openai"``, a local checkpoint path...) or a
            loaded :class:`~uetransforms.models.backbones.Backbone`.

    Returns:
        an :class:`EvalReport`; ``report.table()`` is the markdown table, ``report.to_dict()``
        the JSON.

    Raises:
        DataError / ValueError: missing columns, mismatched splits, bad fractions or label maps,
        each message naming the fix.
    """
    defence_list = [parse_defence(d) for d in ([defences] if isinstance(defences, (str, Defence, DefencePipeline))
                                              else defences)]
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
    from .attackers import get as get_attacker

    threat = get_attacker(attacker)
    if threat.needs_backbone and backbone is None:
        raise ValueError(f"attacker={attacker!r} starts from a pretrained model: pass backbone=<spec>, e.g. "
                         "'tv:resnet18@IMAGENET1K_V1' or the path of a local checkpoint")
    if not threat.needs_backbone and backbone is not None:
        raise ValueError(f"attacker={attacker!r} trains from scratch and takes no backbone; use "
                         "attacker='linear-probe' or 'finetune' with backbone=")
    dev = resolve_device(device)
    bb = None
    if backbone is not None:
        from ..models.backbones import load_backbone

        bb = load_backbone(backbone, device=dev)
    lr = threat.default_lr if lr is None else float(lr)

    # -- decode once ----------------------------------------------------------------------
    lab = train_label_column or label_column
    prot = decode_split(train, image_column=image_column, label_column=lab, role="train")
    channels = prot.images.shape[1]
    tst = decode_split(test, image_column=image_column, label_column=lab, role="test", channels=channels)
    clean = None
    if clean_train is not None:
        clean = decode_split(clean_train, image_column=image_column, label_column=lab, role="clean_train", channels=channels)
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
    sets: list[tuple[str, float, Split]] = []
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
        sets.append((f"protected {100 * f:g}%", k / len(prot.images), Split(mixed, prot.labels)))

    cfg: dict[str, Any] = {
        "arch": None if threat.needs_backbone else arch, "epochs": int(epochs), "batch_size": int(batch_size), "lr": float(lr),
        "weight_decay": float(weight_decay), "optimizer": "sgd(momentum=0.9, nesterov)", "schedule": "one-cycle",
        "device": str(dev), "seed": int(seed), "augment": bool(augment),
        "augmentation": (threat.augmentation if threat.augmentation != "harness" else
                         "random crop (zero pad 1/8 side) + horizontal flip" if augment else "none"),
        "attacker": threat.key, "backbone": None if bb is None else bb.identity(),
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

        quality = summary(clean.images, prot.images, device=dev)

    rows: list[EvalRow] = []
    for d in defence_list:
        for name, frac, split in sets:
            curve, train_acc, secs = _train_run(split, tst, d, num_classes=num_classes, cfg=cfg, device=dev,
                                                desc=f"{name} / {d.name}", progress=progress, backbone=bb)
            rows.append(EvalRow(setting=name, defence=d.name, test_accuracy=curve[-1], curve=curve,
                                train_accuracy=train_acc, seconds=round(secs, 2), protected_fraction=frac,
                                train_size=len(split.images)))
    # keep the table's order: settings in the order above, defences side by side
    order = {n: i for i, (n, _, _) in enumerate(sets)}
    rows.sort(key=lambda r: order[r.setting])
    from ..core.version import __version__

    env = {"uetransforms": __version__, "torch": torch.__version__, "python": platform.python_version(),
           "threads": torch.get_num_threads(), "machine": platform.machine()}
    pick = torch.arange(min(8, len(prot.images)))
    report = EvalReport(rows=rows, config=cfg, data=data_info, quality=quality, environment=env,
                        samples=(None if clean is None else clean.images[pick], prot.images[pick]))
    if out_dir is not None:
        report.save(out_dir)
    return report


__all__ = ["EvalReport", "EvalRow", "SCHEMA", "Split", "decode_split", "evaluate", "json_safe", "random_crop_flip"]
