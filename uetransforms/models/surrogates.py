"""Surrogate models for the model-based methods (``em``, ``salm``, ``bayes``) and the batched
plumbing their fitting loops share.

A :class:`Surrogate` is a classifier split into a *backbone* (images in ``[0, 1]`` -> features
``[B, D]``) and a *head* (features -> logits). Error-minimising noise needs the logits; the
Bayes-error method needs the features. :func:`build` makes one from:

* ``"cnn-small"`` or any torchvision classification model name (``"resnet18"``...): built by
  :func:`uetransforms.models.networks.build_model`, randomly initialised and trained on the fly;
* ``"cnn-tiny"``: three narrow conv layers (about 16x cheaper than ``cnn-small``), for fitting
  sample-wise noise on a CPU within minutes;
* a user's own ``nn.Module`` mapping ``[B, C, H, W]`` images in ``[0, 1]`` to logits ``[B, K]``
  (its logits double as features); it is deep-copied, so the caller's weights never change;
* ``"clip:<model>"``, ``"clip:<model>@<pretrained tag or checkpoint path>"``: an open_clip image
  encoder (frozen; loaded by :func:`uetransforms.models.clip.load`) with a trainable linear head;
* a ready :class:`Surrogate`, used as is.

:class:`Budget` stops a loop after a number of steps or seconds, :class:`ImageSource` serves
float batches from memory or streams them from the dataset, and :func:`progress` is a tqdm bar
that stays quiet unless asked (or stderr is a terminal).

Example:
    >>> import torch
    >>> s = build("cnn-tiny", num_classes=3, image_shape=(3, 8, 8), seed=0)
    >>> s(torch.rand(2, 3, 8, 8)).shape, s.features(torch.rand(2, 3, 8, 8)).shape
    (torch.Size([2, 3]), torch.Size([2, 64]))
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.data import FitData

#: Names :func:`build` knows besides torchvision's models and ``clip:...`` specs.
BUILTIN = ("cnn-small", "cnn-tiny")


class Surrogate(nn.Module):
    """``head(backbone(x))`` for images ``x`` in ``[0, 1]``; :meth:`features` is the backbone alone.

    Args:
        backbone: images ``[B, C, H, W]`` in ``[0, 1]`` -> features ``[B, D]`` (normalises itself).
        head: features -> logits; ``nn.Identity()`` when the backbone already gives logits.
        name: how the surrogate is recorded in ``bank.info``.
        frozen_backbone: only the head is trained (pretrained encoders such as CLIP).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, *, name: str, frozen_backbone: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.name = name
        self.frozen_backbone = frozen_backbone
        if frozen_backbone:
            for p in backbone.parameters():
                p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).flatten(1)

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> Surrogate:
        super().train(mode)
        if self.frozen_backbone:  # a frozen encoder keeps its BatchNorm statistics
            self.backbone.eval()
        return self


class _TinyCNN(nn.Module):
    """Three narrow conv blocks and a global average pool: features of width 64."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                    nn.MaxPool2d(2)]

        self.net = nn.Sequential(*block(in_channels, 16), *block(16, 32), *block(32, 64),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - 0.5) * 4.0)  # same centring as uetransforms.models.networks.Normalise


class _ClipBackbone(nn.Module):
    """A frozen open_clip image encoder as a module (it resizes and normalises inside)."""

    def __init__(self, clip: Any) -> None:
        super().__init__()
        self.clip = clip  # a ClipModel is an nn.Module: .to(device) and requires_grad_ reach it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(x).float()


def _split_last_linear(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """Cut a classifier at its last ``nn.Linear``: (backbone with Identity there, that Linear)."""
    last: tuple[nn.Module, str, nn.Linear] | None = None
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Linear):
                last = (parent, name, child)
    if last is None:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to use as the head")
    parent, name, linear = last
    setattr(parent, name, nn.Identity())
    return model, linear


def _parse_clip(spec: str) -> tuple[str, str | None]:
    body = spec[len("clip:"):]
    model, _, pretrained = body.partition("@")
    return (model or "RN50"), (pretrained or None)


def build(
    spec: str | nn.Module | Surrogate = "cnn-small",
    *,
    num_classes: int,
    image_shape: tuple[int, int, int],
    device: torch.device | str | None = None,
    seed: int = 0,
) -> Surrogate:
    """A surrogate for ``num_classes`` classes and ``image_shape`` ``(C, H, W)`` images, on ``device``.

    Args:
        spec: ``"cnn-small"``, ``"cnn-tiny"``, a torchvision model name, ``"clip:RN50"`` /
            ``"clip:ViT-B-32@openai"`` / ``"clip:RN50@/path/to/checkpoint.pt"``, ``"backbone:<spec>"``
            (a frozen pretrained backbone, :func:`uetransforms.models.backbones.load_backbone`, with a
            trainable linear head, e.g. ``"backbone:tv:resnet18@IMAGENET1K_V1"``), an ``nn.Module``
            (images in ``[0, 1]`` -> logits; deep-copied) or a :class:`Surrogate`.
        seed: seeds the random initialisation, so the same seed builds the same network.

    Raises:
        ValueError: an unknown name (with the list of what is known), or a module whose output
            does not have ``num_classes`` logits.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    c, h, w = (int(v) for v in image_shape)
    if isinstance(spec, Surrogate):
        return spec.to(device)
    if isinstance(spec, nn.Module):
        module = copy.deepcopy(spec).to(device)
        with torch.no_grad():
            was = module.training
            module.eval()
            out = module(torch.zeros(2, c, h, w, device=device))
            module.train(was)
        if out.ndim != 2 or out.shape[1] != num_classes:
            raise ValueError(
                f"the surrogate module maps a [2, {c}, {h}, {w}] batch to {tuple(out.shape)}; it must give "
                f"logits [B, {num_classes}] for images in [0, 1]"
            )
        return Surrogate(module, nn.Identity(), name=f"module:{type(spec).__name__}").to(device)
    if not isinstance(spec, str):
        raise TypeError(f"surrogate must be a name, an nn.Module or a Surrogate, got {type(spec).__name__}")
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # the same seed gives the same initial weights
    try:
        if spec.startswith("clip:"):
            from . import clip as _clip  # lazy: open_clip is heavy and optional here

            model_name, pretrained = _parse_clip(spec)
            # Random init (no weights given) is seeded by ``seed`` so the surrogate can be rebuilt.
            enc = _clip.load(model_name, pretrained, device=device, init_seed=seed if pretrained is None else None)
            backbone = _ClipBackbone(enc).to(device)
            with torch.no_grad():
                dim = backbone(torch.zeros(1, c, h, w, device=device)).shape[1]
            tag = f"@{pretrained}" if pretrained else ""
            return Surrogate(backbone, nn.Linear(dim, num_classes), name=f"clip:{model_name}{tag}",
                             frozen_backbone=True).to(device)
        if spec.startswith("backbone:"):
            from .backbones import load_backbone

            # A frozen pretrained backbone and a linear head: noise fitted through features someone else
            # learned, the setting of attackers who probe or fine-tune a pretrained model.
            body = load_backbone(spec[len("backbone:"):], device=device)
            return Surrogate(body, nn.Linear(body.feature_dim, num_classes), name=spec,
                             frozen_backbone=True).to(device)
        if spec == "cnn-tiny":
            return Surrogate(_TinyCNN(c), nn.Linear(64, num_classes), name="cnn-tiny").to(device)
        from .networks import build_model

        model = build_model(spec, num_classes=num_classes, in_channels=c, image_size=max(h, w))
        backbone, head = _split_last_linear(model)
        return Surrogate(backbone, head, name=spec).to(device)
    finally:
        torch.random.set_rng_state(gen_state)


class Trainer:
    """SGD on a surrogate: :meth:`step` takes one batch of (perturbed) images and labels.

    Momentum 0.9, weight decay 5e-4 as in the error-minimising-noise paper; ``lr`` 0.1 for
    networks trained from scratch (0.01 is safer for a linear head on a frozen encoder).
    """

    def __init__(self, surrogate: Surrogate, *, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 5e-4):
        self.surrogate = surrogate
        params = surrogate.trainable()
        if not params:
            raise ValueError(f"surrogate {surrogate.name!r} has no trainable parameters")
        self.opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.steps = 0

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """One update on ``(x, y)``; returns (loss, accuracy) on that batch."""
        self.surrogate.train()
        logits = self.surrogate(x)
        loss = F.cross_entropy(logits, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.steps += 1
        return float(loss.detach()), float((logits.detach().argmax(1) == y).float().mean())


class Budget:
    """Stops a loop after ``max_steps`` steps or ``max_seconds`` seconds (``None``: no limit)."""

    def __init__(self, max_steps: int | None = None, max_seconds: float | None = None) -> None:
        self.max_steps = max_steps
        self.max_seconds = max_seconds
        self.start = time.perf_counter()
        self.steps = 0

    def tick(self, n: int = 1) -> None:
        self.steps += n

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def exhausted(self) -> str | None:
        """``"steps"`` or ``"time"`` when a limit is reached, else ``None``."""
        if self.max_steps is not None and self.steps >= self.max_steps:
            return "steps"
        if self.max_seconds is not None and self.elapsed >= self.max_seconds:
            return "time"
        return None


#: How each budget is named to the user: the parameter that sets it.
_BUDGET_PARAMS = {"steps": "max_steps", "time": "max_seconds", "max_rounds": "max_rounds"}


def warn_budget_stop(method: str, why: str, *, wanted: str, reached: str, limit: Any = None,
                     stacklevel: int = 5) -> None:
    """A ``UserWarning`` saying a budget, not the method's own criterion, ended the fit.

    The bank is still valid (every row has noise), but weaker than the method's paper promises;
    the message names the parameter to raise. ``why`` is ``"steps"``, ``"time"`` or
    ``"max_rounds"``; ``wanted`` the criterion that was not met, ``reached`` where the fit got to;
    ``stacklevel`` points the warning at the caller of ``ue.fit``.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as w:
        ...     warnings.simplefilter("always")
        ...     warn_budget_stop("em", "time", wanted="surrogate error < 0.01", reached="error 0.03", limit=60)
        >>> "max_seconds=60" in str(w[0].message)
        True
    """
    import warnings

    name = _BUDGET_PARAMS.get(why, why)
    shown = f"{name}={limit!r}" if limit is not None else name
    warnings.warn(
        f"{method}: the fit was stopped by its budget ({shown}) before {wanted} (it reached {reached}); "
        f"the bank is usable but weaker than the method intends. Raise {name}"
        + (" (or pass None)" if name != "max_rounds" else "") + " to let it finish.",
        UserWarning, stacklevel=stacklevel,
    )


def progress(iterable: Any = None, *, total: float | None = None, desc: str = "", enabled: bool | None = None,
             unit: str = "it", initial: float = 0) -> Any:
    """A tqdm bar with rate and ETA; ``enabled=None`` shows it only when stderr is a terminal.

    Every model-based fit passes its ``progress`` parameter here, so ``progress=False`` keeps a
    fit quiet and ``progress=True`` forces a bar (in a log file, for instance).
    """
    from tqdm.auto import tqdm

    if enabled is None:
        enabled = sys.stderr.isatty()
    fmt = "{l_bar}{bar}| {n:.3g}/{total_fmt} [{elapsed}<{remaining}{postfix}]" if total else None
    return tqdm(iterable, total=total, desc=desc, disable=not enabled, leave=False, unit=unit, initial=initial,
                **({"bar_format": fmt} if fmt else {}))


class ImageSource:
    """Float ``[0, 1]`` batches of a :class:`FitData`, with row indices, on one device.

    Datasets whose decoded pixels fit in ``max_resident_bytes`` are decoded once and kept
    (uint8); bigger ones are streamed from the dataset on every pass, so memory stays flat.
    """

    def __init__(self, data: FitData, device: torch.device, *, max_resident_bytes: int = 2 * 2**30) -> None:
        self.data = data
        self.device = device
        self.n = len(data)
        self.resident = self.n * int(np.prod(data.image_shape)) <= max_resident_bytes
        self._labels = torch.from_numpy(data.labels.astype(np.int64)) if data.label_column is not None else None

    def _to(self, u8: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(u8)).to(self.device).float().div_(255)

    def labels(self, rows: np.ndarray) -> torch.Tensor:
        if self._labels is None:
            raise ValueError("this method needs labels: pass label_column=<integer label column>")
        return self._labels[torch.from_numpy(rows)].to(self.device)

    def batches(self, batch_size: int, *, shuffle: bool = False, rng: np.random.Generator | None = None,
                ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """One pass: ``(rows [b] int64, images [b, C, H, W] float in [0, 1])``.

        With ``shuffle`` a resident dataset is permuted; a streamed one is read in order and
        shuffled within chunks of 16 batches (random access would decode everything).
        """
        rng = rng or np.random.default_rng(0)
        if self.resident:
            imgs = self.data.images()
            order = rng.permutation(self.n) if shuffle else np.arange(self.n)
            for s in range(0, self.n, batch_size):
                rows = np.sort(order[s : s + batch_size]) if shuffle else order[s : s + batch_size]
                yield rows, self._to(imgs[rows])
            return
        for chunk, sl in self.data.iter_batches(batch_size * 16):
            rows = np.arange(sl.start, sl.stop)
            order = rng.permutation(len(rows)) if shuffle else np.arange(len(rows))
            for s in range(0, len(rows), batch_size):
                pick = np.sort(order[s : s + batch_size])
                yield rows[pick], self._to(chunk[pick])

    def cycle(self, batch_size: int, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Shuffled batches forever (a new pass each time one ends)."""
        while True:
            yield from self.batches(batch_size, shuffle=True, rng=rng)


__all__ = ["BUILTIN", "Budget", "ImageSource", "Surrogate", "Trainer", "build", "progress", "warn_budget_stop"]
