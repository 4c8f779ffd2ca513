"""Pretrained backbones for the attackers that start from someone else's weights.

Whoever scrapes a protected dataset rarely trains from scratch: they fine-tune a pretrained network
or fit a linear probe on its frozen features. :func:`load_backbone` gives the evaluation's
attackers such a network as a :class:`Backbone`: ``[B, C, H, W]`` images in ``[0, 1]`` -> pooled
features ``[B, D]``, resizing and normalising inside (so it sits in the same pixel space as the
harness's models), frozen or trainable.

Specs (a string; the part after ``@`` says which weights):

* ``"tv:resnet18@IMAGENET1K_V1"`` -- a torchvision model with its named weights (torchvision's
  cache, downloaded once; offline, copy the file into ``$TORCH_HOME/hub/checkpoints``);
  ``"tv:resnet50@/path/resnet50.pth"`` -- the same architecture from a local state-dict file.
  The head (``fc``, ``classifier`` or ``head``) is removed: features are its input.
* ``"timm:resnet18.a1_in1k"`` -- a timm model with its pretrained tag (Hugging Face cache);
  ``"timm:resnet18@/path/model.safetensors"`` -- timm architecture, local weights file.
* ``"clip:RN50@openai"`` -- open_clip's image tower (:func:`uetransforms.models.clip.load`),
  a tag or a local checkpoint after ``@``.
* ``"small-cnn@/path/file.safetensors"`` or just the path of such a file -- the small CNN
  written by ``benchmarks/build_surrogate.py`` / ``benchmarks/build_backbone.py``
  (:func:`uetransforms.models.encoders.save_small_cnn`).
* ``"...@random"`` -- random weights, refused unless ``allow_random=True`` (tests, shape checks):
  an attacker with random weights is a from-scratch attacker under another name.

Weights are read with ``weights_only`` / safetensors, never unpickled code. Nothing here downloads
unless a named tag is asked for and missing from the local cache.

Example:
    >>> import torch
    >>> bb = load_backbone("tv:resnet18@random", allow_random=True, image_size=32)
    >>> bb(torch.rand(2, 3, 32, 32)).shape, bb.feature_dim
    (torch.Size([2, 512]), 512)
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import encoders
from .encoders import SurrogateWeightsError, refuse_random

#: Spec prefixes :func:`load_backbone` understands.
KINDS = ("tv", "timm", "clip", "small-cnn")
#: The weights word that asks for a random init.
RANDOM = "random"


class BackboneError(SurrogateWeightsError):
    """A backbone spec could not be parsed, or its weights not found or loaded."""


class Backbone(nn.Module):
    """A feature network seen from pixel space: ``[0, 1]`` images -> ``[B, D]`` features.

    Args:
        net: normalised images -> features (head removed).
        identity: JSON-able description (kind, arch, weights or checkpoint + sha256) for reports.
        image_size: inputs are resized (bilinear, to the square) to this side; ``None``: as is.
        mean / std: per-channel normalisation applied after resizing.
        trainable: whether ``net``'s parameters take gradients (fine-tuning) or stay frozen
            (linear probe; BatchNorm statistics kept too).
    """

    def __init__(self, net: nn.Module, *, identity: dict[str, Any], image_size: int | None,
                 mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor,
                 trainable: bool = False) -> None:
        super().__init__()
        self.net = net
        self._identity = dict(identity)
        self.image_size = None if image_size is None else int(image_size)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1).clone(),
                             persistent=False)
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1).clone(),
                             persistent=False)
        self.trainable = bool(trainable)
        self.net.requires_grad_(self.trainable)
        self.feature_dim = self._probe_dim()

    def _probe_dim(self) -> int:
        side = self.image_size or 32
        was = self.net.training
        self.net.eval()
        with torch.no_grad():
            d = self.features_of(torch.zeros(1, 3, side, side, device=self.mean.device)).shape[1]
        self.net.train(was)
        return int(d)

    def train(self, mode: bool = True) -> Backbone:
        # a frozen backbone keeps its BatchNorm statistics: the probe sees the pretrained features
        super().train(mode and self.trainable)
        return self

    def preprocess(self, x01: torch.Tensor) -> torch.Tensor:
        if x01.ndim != 4 or x01.shape[1] not in (1, 3):
            raise ValueError(f"a backbone takes [B, 3, H, W] images in [0, 1], got shape {tuple(x01.shape)}")
        x = x01.to(self.mean.device, torch.float32)
        if x.shape[1] == 1:  # grey images: the pretrained stem expects three channels
            x = x.expand(-1, 3, -1, -1)
        if self.image_size is not None and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    def features_of(self, x01: torch.Tensor) -> torch.Tensor:
        out = self.net(self.preprocess(x01))
        if out.ndim == 4:  # a trunk that stops before pooling
            out = out.mean((2, 3))
        return out.flatten(1)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return self.features_of(x01)

    def copy(self, *, trainable: bool) -> Backbone:
        """An independent copy (the caller's weights never change), frozen or trainable."""
        twin = copy.deepcopy(self)
        twin.trainable = bool(trainable)
        twin.net.requires_grad_(twin.trainable)
        return twin.train(False)

    def identity(self) -> dict[str, Any]:
        return dict(self._identity)

    def __repr__(self) -> str:
        i = self._identity
        what = i.get("weights") or i.get("checkpoint") or ("random init" if i.get("random_init") else "?")
        return (f"Backbone({i.get('kind')}:{i.get('arch')}, {what}, image_size={self.image_size}, "
                f"dim={self.feature_dim}, {'trainable' if self.trainable else 'frozen'})")


@torch.no_grad()
def features(backbone: nn.Module, images: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    """Pooled features ``[N, D]`` (float32, CPU) of uint8 ``[N, C, H, W]`` images, in batches sized for
    the backbone's input side (about the same memory at 32 px and 224 px)."""
    device = device if device is not None else next(backbone.parameters()).device
    side = getattr(backbone, "image_size", None) or max(images.shape[-2:])
    batch = max(8, min(500, int(500 * (32 / side) ** 2)))
    out = [backbone(images[s : s + batch].to(device, torch.float32).div_(255)).float().cpu()
           for s in range(0, len(images), batch)]
    return torch.cat(out) if out else torch.empty(0, 0)


class LinearProbe(nn.Module):
    """``W (f - mean) / std + b``: a logistic-regression head on standardised features."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())
        self.linear = nn.Linear(len(mean), num_classes)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.linear((f - self.mean) / self.std)


def fit_linear_probe(feats: torch.Tensor, labels: torch.Tensor, num_classes: int, *, rounds: int = 8,
                     iterations: int = 10, seed: int = 0,
                     on_round: Any = None) -> LinearProbe:
    """Multinomial logistic regression on standardised features, by full-batch L-BFGS.

    The L2 penalty is ``1 / (2 N)`` on the mean loss: scikit-learn's ``LogisticRegression(C=1)``.
    ``rounds`` x ``iterations`` L-BFGS iterations; ``on_round(probe)`` is called after each round
    (the evaluation's curve).
    """
    mu, sd = feats.mean(0), feats.std(0).clamp_min(1e-6)
    torch.manual_seed(seed)
    probe = LinearProbe(mu, sd, num_classes)
    z = (feats - mu) / sd
    penalty = 1.0 / (2 * max(1, len(z)))
    opt = torch.optim.LBFGS(probe.linear.parameters(), lr=1.0, max_iter=iterations, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(probe.linear(z), labels) + penalty * probe.linear.weight.pow(2).sum()
        loss.backward()
        return loss

    for _ in range(rounds):
        opt.step(closure)
        if on_round is not None:
            on_round(probe)
    return probe.requires_grad_(False)


def parse_spec(spec: str) -> tuple[str, str, str | None]:
    """``"tv:resnet18@IMAGENET1K_V1"`` -> ``("tv", "resnet18", "IMAGENET1K_V1")``.

    A bare path to a ``.safetensors`` file is ``("small-cnn", "small-cnn", path)``; a spec
    without ``@`` has weights ``None`` (the kind's default: timm's tag inside the name).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise BackboneError(f"backbone must be a spec string such as 'tv:resnet18@IMAGENET1K_V1', got {spec!r}")
    spec = spec.strip()
    if os.path.isfile(spec) or (spec.endswith(".safetensors") and ":" not in spec.split(os.sep)[0]
                                and not spec.startswith("small-cnn@")):
        return "small-cnn", "small-cnn", spec
    if spec.startswith("small-cnn"):
        _, at, path = spec.partition("@")
        if not at or not path:
            raise BackboneError("backbone 'small-cnn' needs its file: 'small-cnn@/path/to/file.safetensors'")
        return "small-cnn", "small-cnn", path
    kind, colon, rest = spec.partition(":")
    if not colon or kind not in KINDS or not rest:
        raise BackboneError(
            f"cannot read backbone spec {spec!r}: expected 'tv:ARCH@WEIGHTS' (torchvision, e.g. "
            "'tv:resnet18@IMAGENET1K_V1' or 'tv:resnet18@/path/weights.pth'), 'timm:NAME[@FILE]', "
            "'clip:MODEL@TAG_OR_FILE', 'small-cnn@FILE' or the path of a small-cnn .safetensors file"
        )
    arch, at, weights = rest.partition("@")
    if not arch or (at and not weights):
        raise BackboneError(f"backbone spec {spec!r} has an empty architecture or weights part")
    return kind, arch, (weights if at else None)


def _is_file(weights: str | None) -> bool:
    return weights is not None and weights != RANDOM and (
        os.sep in weights or weights.endswith((".pt", ".pth", ".bin", ".safetensors")) or os.path.exists(weights))


def load_backbone(spec: str | Backbone, *, allow_random: bool = False, image_size: int | None = None,
                  trainable: bool = False, init_seed: int = 0,
                  device: str | torch.device | None = None) -> Backbone:
    """Build the :class:`Backbone` a spec names (see the module doc for the grammar).

    Args:
        spec: a spec string, or a ready :class:`Backbone` (copied, so the caller's stays intact).
        allow_random: accept ``@random`` weights (tests, shape checks).
        image_size: the side inputs are resized to; default: the weights' own (224 for ImageNet
            models, 32 for the small CNN, the CLIP tower's).
        trainable: fine-tuning (True) or frozen features (False).
        init_seed: seed of a random init.

    Raises:
        BackboneError: bad spec, missing file, weights that do not fit the architecture, or
            named weights that are neither cached nor downloadable, each saying what to pass.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if isinstance(spec, Backbone):
        return spec.copy(trainable=trainable).to(dev)
    kind, arch, weights = parse_spec(spec)
    if weights == RANDOM:
        refuse_random(f"backbone {spec!r}", allow_random)
    try:
        if kind == "small-cnn":
            enc = encoders.small_cnn(weights, device=dev)  # type: ignore[arg-type]
            side = image_size or enc.image_size
            ident = {**enc.identity(), "kind": "small-cnn", "image_size": side}
            if side != enc.image_size:  # a globally pooled CNN read at another side than it was trained at
                ident["trained_image_size"] = enc.image_size
            bb = Backbone(enc.backbone, identity=ident, image_size=side, mean=enc.mean, std=enc.std,
                          trainable=trainable)
        elif kind == "tv":
            bb = _torchvision(arch, weights, image_size=image_size, trainable=trainable, init_seed=init_seed)
        elif kind == "timm":
            bb = _timm(arch, weights, image_size=image_size, trainable=trainable, init_seed=init_seed)
        else:
            bb = _clip(arch, weights, image_size=image_size, trainable=trainable, init_seed=init_seed)
    except BackboneError:
        raise
    except SurrogateWeightsError as err:
        raise BackboneError(f"backbone {spec!r}: {err}") from err
    return bb.to(dev)


def _head_name(net: nn.Module, arch: str) -> str:
    """The attribute holding a torchvision/timm classifier head (``fc``, ``classifier``, ``head``, ``heads``)."""
    for attr in ("fc", "classifier", "head", "heads"):
        if isinstance(getattr(net, attr, None), nn.Module):
            return attr
    raise BackboneError(f"{arch!r} has no 'fc', 'classifier', 'head' or 'heads' to remove; use a classification model")


def _headless(net: nn.Module, arch: str) -> nn.Module:
    """Remove a torchvision/timm classifier head in place: the features are its input."""
    setattr(net, _head_name(net, arch), nn.Identity())
    return net


def _torchvision(arch: str, weights: str | None, *, image_size: int | None, trainable: bool,
                 init_seed: int) -> Backbone:
    from torchvision import models as tvm

    if arch not in tvm.list_models(module=tvm):
        import difflib

        close = difflib.get_close_matches(arch, tvm.list_models(module=tvm), n=3)
        raise BackboneError(f"unknown torchvision model {arch!r}" + (f"; did you mean {close}?" if close else "")
                            + " (torchvision.models.list_models() lists them)")
    if weights is None:
        raise BackboneError(f"say which weights: 'tv:{arch}@IMAGENET1K_V1' (a torchvision weights name), "
                            f"'tv:{arch}@/path/state_dict.pth', or 'tv:{arch}@random'")
    side = 224 if image_size is None else int(image_size)
    mean, std = encoders._IMAGENET_MEAN, encoders._IMAGENET_STD
    ident: dict[str, Any] = {"kind": "torchvision", "arch": arch}
    if weights == RANDOM:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(init_seed))
            net = tvm.get_model(arch, weights=None)
        ident.update(weights=None, random_init=True, init_seed=int(init_seed))
    elif _is_file(weights):
        sd = encoders._read_state_dict(weights)
        net = tvm.get_model(arch, weights=None)
        # Features are the head's input, so the head goes before loading: a checkpoint trained for any
        # number of classes (ImageNet's 1000, a 32-way pretraining task, CIFAR's 10) loads, and only
        # the trunk must match the architecture.
        head = _head_name(net, arch)
        setattr(net, head, nn.Identity())
        try:
            net.load_state_dict({k: v for k, v in sd.items() if not k.startswith(head + ".")})
        except Exception as err:
            raise BackboneError(f"{weights!r} is not a torchvision {arch} state dict: {err}") from err
        ident.update(weights=None, checkpoint=os.path.basename(weights), checkpoint_sha256=encoders.file_sha256(weights))
        meta = _safetensors_meta(weights)
        if meta.get("trained_on"):  # benchmarks/build_backbone.py writes it: the reports then say what the attacker knew
            ident["trained_on"] = meta["trained_on"]
        if encoders.random_init_file(meta):
            ident["random_init"] = True
    else:
        try:
            enum = tvm.get_model_weights(arch)[weights]
        except KeyError:
            names = [w.name for w in tvm.get_model_weights(arch)]
            raise BackboneError(f"torchvision has no weights {weights!r} for {arch}; it has {names}") from None
        try:
            # The real loading path: weights by name from torchvision's cache ($TORCH_HOME/hub/checkpoints),
            # downloaded there on a miss.
            net = tvm.get_model(arch, weights=enum)
        except Exception as err:
            raise BackboneError(
                f"could not get torchvision weights {arch}/{weights} ({type(err).__name__}: {err}). They are "
                "downloaded once into torchvision's cache, which needs network access; offline, copy the file "
                f"into $TORCH_HOME/hub/checkpoints or pass 'tv:{arch}@/path/state_dict.pth'"
            ) from err
        ident.update(weights=weights)
    ident.update(image_size=side)
    return Backbone(_headless(net, arch), identity=ident, image_size=side, mean=mean, std=std, trainable=trainable)


def _safetensors_meta(path: str) -> dict[str, str]:
    """The metadata of a safetensors file (``{}`` for other formats)."""
    return encoders.file_metadata(path) if path.endswith(".safetensors") else {}


def _timm(name: str, weights: str | None, *, image_size: int | None, trainable: bool, init_seed: int) -> Backbone:
    try:
        import timm
    except ImportError as err:
        raise BackboneError("'timm:' backbones need timm: pip install timm") from err
    ident: dict[str, Any] = {"kind": "timm", "arch": name}
    kwargs: dict[str, Any] = {"num_classes": 0}  # num_classes=0: timm returns pooled features
    try:
        if weights == RANDOM:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(init_seed))
                net = timm.create_model(name, pretrained=False, **kwargs)
            ident.update(weights=None, random_init=True, init_seed=int(init_seed))
        elif _is_file(weights):
            if not os.path.isfile(weights):  # type: ignore[arg-type]
                raise BackboneError(f"timm weights file {weights!r} does not exist")
            net = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": os.path.abspath(weights)},
                                    **kwargs)  # type: ignore[arg-type]
            ident.update(weights=None, checkpoint=os.path.basename(weights),  # type: ignore[arg-type]
                         checkpoint_sha256=encoders.file_sha256(weights))  # type: ignore[arg-type]
        else:
            # "timm:resnet18.a1_in1k" (tag in the name) or "timm:resnet18@a1_in1k"
            full = name if weights is None else f"{name}.{weights}"
            net = timm.create_model(full, pretrained=True, **kwargs)
            ident.update(arch=full, weights=full)
    except BackboneError:
        raise
    except Exception as err:
        raise BackboneError(
            f"could not build timm backbone {name!r} with weights {weights!r} ({type(err).__name__}: {err}). Named "
            "tags are read from the Hugging Face cache and downloaded on a miss (needs network access); offline, "
            f"pass 'timm:{name}@/path/model.safetensors'"
        ) from err
    cfg = getattr(net, "pretrained_cfg", {}) or {}
    side = int(image_size) if image_size is not None else int(cfg.get("input_size", (3, 224, 224))[-1])
    ident.update(image_size=side)
    return Backbone(net, identity=ident, image_size=side, mean=cfg.get("mean", encoders._IMAGENET_MEAN),
                    std=cfg.get("std", encoders._IMAGENET_STD), trainable=trainable)


class _ClipTower(nn.Module):
    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.visual(x)
        return out[0] if isinstance(out, tuple) else out


def _clip(model: str, weights: str | None, *, image_size: int | None, trainable: bool, init_seed: int) -> Backbone:
    from . import clip

    import warnings

    with warnings.catch_warnings():
        if weights == RANDOM:  # the opt-in was explicit; the identity records random_init
            warnings.simplefilter("ignore", clip.RandomInitWarning)
        wrapped = clip.load(model, None if weights == RANDOM else (weights or "openai"),
                            init_seed=init_seed if weights == RANDOM else None)
    ident = {**wrapped.identity(), "kind": "open_clip", "arch": model}
    if weights == RANDOM:
        ident["random_init"] = True
    side = wrapped.image_size if image_size is None else int(image_size)
    return Backbone(_ClipTower(wrapped.model.visual), identity=ident, image_size=side, mean=wrapped.mean,
                    std=wrapped.std, trainable=trainable)


__all__ = ["Backbone", "BackboneError", "KINDS", "LinearProbe", "features", "fit_linear_probe", "load_backbone",
           "parse_spec"]
