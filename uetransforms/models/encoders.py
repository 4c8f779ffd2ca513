"""Frozen image encoders ("surrogates") for the surrogate-based methods (``clusters``, ``t2ue``).

Every encoder takes ``[B, 3, H, W]`` images in ``[0, 1]``, does its own resize and normalisation
inside (differentiably, so methods can backpropagate to pixels) and returns ``[B, D]`` features.
Each records an :meth:`~Encoder.identity` that a bank stores, so cluster assignment of new images
can rebuild the same encoder (:func:`from_identity`).

What a user would pick:

* ``load("resnet50")``: torchvision's ImageNet ResNet-50, weights by name (``IMAGENET1K_V2`` by
  default; UC's default surrogate, "UCs"). The features are the penultimate layer (the 2048-d
  input of ``fc``), as in the authors' code. Needs the network once (torchvision's cache), or
  ``checkpoint=<local state-dict file>`` (``.pth``/``.pt``/``.safetensors``) offline. Any
  torchvision model with an ``fc`` head works the same way (``"resnet18"``, ``"wide_resnet50_2"``...).
* ``load("clip:RN50")``: CLIP RN50 through open_clip (``weights="openai"`` or a local checkpoint;
  "UC-CLIP"), features = the visual tower's embedding (see :mod:`uetransforms.models.clip`).
* ``load("small-cnn", checkpoint=PATH)``: the small CNN of :mod:`uetransforms.models.networks` trained by
  ``benchmarks/build_surrogate.py`` on data disjoint from what is protected; the offline benchmark
  surrogate (features: its global-pooled conv features, the input of its linear head).
* any ``nn.Module`` mapping ``[0, 1]`` images to features, passed to a method as ``encoder=``.

Random weights are refused unless asked for: a random-init network clusters images by colour,
not content, so protection fitted with it means little. ``allow_random_surrogate=True`` builds
one anyway (tests, shape checks), and the identity says ``"random_init": True``.

Example:
    >>> import torch
    >>> from uetransforms.models import encoders
    >>> enc = encoders.load("resnet18", weights=None, allow_random_surrogate=True, image_size=64)
    >>> enc(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 512])
    >>> encoders.load("resnet50")  # ImageNet weights: downloads once # doctest: +SKIP
    >>> encoders.load("resnet50", checkpoint="resnet50-11ad3fa6.pth")  # offline # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: safetensors metadata ``format`` of a saved small-CNN encoder.
ENCODER_FORMAT = "uetransforms.encoder/1"

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
#: Default torchvision weights per architecture when ``weights`` is not given.
DEFAULT_WEIGHTS = {"resnet50": "IMAGENET1K_V2"}


class RandomSurrogateError(ValueError):
    """A random-init surrogate was requested without ``allow_random_surrogate=True``."""


class SurrogateWeightsError(RuntimeError):
    """Surrogate weights could not be found, fetched or loaded."""


def file_sha256(path: str | os.PathLike) -> str:
    from .clip import file_sha256 as sha

    return sha(path)


def refuse_random(what: str, allow: bool) -> None:
    """Raise :class:`RandomSurrogateError` for a random-init surrogate unless ``allow``."""
    if not allow:
        raise RandomSurrogateError(
            f"{what} would have RANDOM weights: a random-init surrogate groups images by colour, not content, "
            "so the protection fitted with it means little. Pass pretrained weights (a name such as "
            "'IMAGENET1K_V2'/'openai', or a local checkpoint path), an encoder=<trained nn.Module>, or opt in "
            "with allow_random_surrogate=True (tests, shape checks)"
        )


class Encoder(nn.Module):
    """A frozen backbone seen as ``[0, 1]`` images -> ``[B, D]`` features.

    Args:
        backbone: maps normalised images to features (its classifier head already removed).
        identity: JSON-able description that :func:`from_identity` rebuilds this encoder from.
        image_size: the side the backbone expects; inputs of another size are resized (a plain
            bilinear resize to the square, no crop, so every perturbed pixel stays in view).
            ``None``: any size goes in as is.
        mean / std: per-channel normalisation applied after resizing.
    """

    def __init__(self, backbone: nn.Module, *, identity: dict[str, Any], image_size: int | None,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.backbone = backbone.eval().requires_grad_(False)
        self._identity = dict(identity)
        self.image_size = None if image_size is None else int(image_size)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def train(self, mode: bool = True) -> Encoder:  # a surrogate stays frozen (BatchNorm in eval)
        return super().train(False)

    def preprocess(self, x01: torch.Tensor) -> torch.Tensor:
        if x01.ndim != 4 or x01.shape[1] not in (1, 3):
            raise ValueError(f"the encoder takes [B, 3, H, W] images in [0, 1], got shape {tuple(x01.shape)}")
        x = x01.to(self.device, torch.float32)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.image_size is not None and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.preprocess(x01)).flatten(1)

    def encode_image(self, x01: torch.Tensor) -> torch.Tensor:
        """Features ``[B, D]`` of images in [0, 1]; differentiable with respect to the images."""
        return self(x01)

    def identity(self) -> dict[str, Any]:
        return dict(self._identity)

    def __repr__(self) -> str:
        i = self._identity
        what = i.get("weights") or i.get("checkpoint") or ("random init" if i.get("random_init") else "?")
        return f"Encoder({i.get('kind')}:{i.get('arch')}, {what}, image_size={self.image_size})"


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise SurrogateWeightsError(f"surrogate checkpoint {path!r} does not exist; pass the path of a state-dict file")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            sd: Any = load_file(path)
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)  # never unpickles code
    except Exception as err:
        raise SurrogateWeightsError(f"could not read the state dict in {path!r}: {err}") from err
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise SurrogateWeightsError(f"{path!r} does not hold a state dict (got {type(sd).__name__})")
    return sd


def torchvision_encoder(arch: str = "resnet50", weights: str | None = "default", *,
                        checkpoint: str | os.PathLike | None = None, allow_random_surrogate: bool = False,
                        image_size: int = 224, init_seed: int = 0, expect_sha256: str | None = None,
                        device: str | torch.device | None = None) -> Encoder:
    """A torchvision classifier with its ``fc`` head removed: penultimate (pooled) features.

    Args:
        arch: a torchvision model with an ``fc`` head (ResNet family, RegNet, GoogLeNet...).
        weights: torchvision weights by name (``"IMAGENET1K_V2"``; ``"default"``: the paper's
            choice for ResNet-50, torchvision's ``DEFAULT`` otherwise). Downloaded once into
            torchvision's cache (``$TORCH_HOME``); offline, use ``checkpoint``. ``None``: random
            init (refused unless ``allow_random_surrogate``).
        checkpoint: a local state-dict file of the classifier instead (its ``fc`` weights, for any
            number of classes, are ignored: the head is removed).
        image_size: inputs are resized to this square side (224 for ImageNet models).
        init_seed: seed of a random init.
        expect_sha256: refuse a checkpoint whose sha256 differs (rebuilding a recorded surrogate).
    """
    from torchvision import models as tvm

    if arch not in tvm.list_models(module=tvm):
        raise ValueError(f"unknown torchvision model {arch!r}; see torchvision.models.list_models()")
    ident: dict[str, Any] = {"kind": "torchvision", "arch": arch, "image_size": int(image_size),
                             "mean": list(_IMAGENET_MEAN), "std": list(_IMAGENET_STD)}
    if checkpoint is not None:
        path = os.fspath(checkpoint)
        sd = _read_state_dict(path)
        sha = file_sha256(path)
        if expect_sha256 is not None and sha != expect_sha256:
            raise SurrogateWeightsError(f"checkpoint {path!r} has sha256 {sha[:12]}..., but the bank was fitted "
                                        f"with {expect_sha256[:12]}...: pass the checkpoint the bank was made with")
        net = tvm.get_model(arch, weights=None)
        # The head is dropped below (features are the input of fc), so a classifier trained for any
        # number of classes (a CIFAR-10 ResNet-18, 10-way fc) loads: only the backbone must match.
        net.fc = nn.Identity()
        try:
            net.load_state_dict({k: v for k, v in sd.items() if not k.startswith("fc.")})
        except Exception as err:
            raise SurrogateWeightsError(f"{path!r} is not a {arch} state dict: {err}") from err
        ident.update(weights=None, checkpoint=os.path.basename(path), checkpoint_path=os.path.abspath(path),
                     checkpoint_sha256=sha)
    elif weights is not None:
        name = DEFAULT_WEIGHTS.get(arch, "DEFAULT") if weights == "default" else str(weights)
        try:
            # The real loading path: torchvision.models.resnet50(weights="IMAGENET1K_V2"), etc. It
            # reads torchvision's cache ($TORCH_HOME/hub/checkpoints) and downloads on a miss.
            net = getattr(tvm, arch)(weights=name)
        except Exception as err:
            raise SurrogateWeightsError(
                f"could not get torchvision weights {arch}/{name} ({type(err).__name__}: {err}). They are "
                "downloaded once into torchvision's cache, which needs network access; offline, copy the file "
                "into $TORCH_HOME/hub/checkpoints or pass checkpoint=<local state-dict file>"
            ) from err
        ident.update(weights=name)
    else:
        refuse_random(f"torchvision {arch!r} with weights=None", allow_random_surrogate)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(init_seed))
            net = tvm.get_model(arch, weights=None)
        ident.update(weights=None, random_init=True, init_seed=int(init_seed))
    if not isinstance(getattr(net, "fc", None), nn.Module):
        raise ValueError(f"{arch!r} has no 'fc' head to remove; pass the model as encoder=<nn.Module> instead")
    net.fc = nn.Identity()  # penultimate features: the input of fc, as in UC's code
    enc = Encoder(net, identity=ident, image_size=image_size, mean=_IMAGENET_MEAN, std=_IMAGENET_STD)
    return enc.to(torch.device(device) if device is not None else torch.device("cpu"))


def resnet50(weights: str | None = "IMAGENET1K_V2", **kwargs: Any) -> Encoder:
    """ImageNet ResNet-50 (UC's default surrogate); see :func:`torchvision_encoder`."""
    return torchvision_encoder("resnet50", weights, **kwargs)


# ----------------------------------------------------------------------------- small CNN (offline benchmarks)
def save_small_cnn(net: nn.Module, path: str | os.PathLike, *, image_size: int = 32,
                   extra: dict[str, str] | None = None) -> str:
    """Write a trained :class:`uetransforms.models.networks.SmallCNN` as a safetensors encoder file; returns its sha256.

    ``image_size``: the side the network was trained at; its readers resize every input to it (a
    96-px network with a strided stem, ``benchmarks/build_surrogate.py --resolution 96``, must not
    be read at 32 px, where its stem would see a third of the detail it learned from).
    """
    from safetensors.torch import save_file

    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int (the side the network was trained at), got {image_size!r}")
    head = getattr(net, "head", None)
    if not isinstance(head, nn.Linear):
        raise TypeError("save_small_cnn takes a uetransforms.models.networks.SmallCNN")
    width = head.in_features // 8
    first = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    meta = {"format": ENCODER_FORMAT, "arch": "small-cnn", "width": str(width), "num_classes": str(head.out_features),
            "in_channels": str(first.in_channels), "image_size": str(image_size), **(extra or {})}
    if first.stride[0] != 1:
        # The stride has no weights: without this a photo-size (strided) network would load as the 32-px one.
        meta["stem_stride"] = str(first.stride[0])
    path = os.fspath(path)
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, path, metadata=meta)
    return file_sha256(path)


def file_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata block of a safetensors file (``{}`` when it has none): the one reader of it here."""
    from safetensors import safe_open

    with safe_open(os.fspath(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


def random_init_file(meta: dict[str, str]) -> bool:
    """Whether a checkpoint's metadata says it holds random weights written on purpose (a control, as
    ``benchmarks/run_cls04.sh`` writes RAND04): every report then names it as random, never as trained."""
    return meta.get("random_init") == "true"


def small_cnn(checkpoint: str | os.PathLike, *, expect_sha256: str | None = None,
              device: str | torch.device | None = None) -> Encoder:
    """The encoder in a file written by :func:`save_small_cnn` (e.g. by ``benchmarks/build_surrogate.py``)."""
    from .networks import SmallCNN

    path = os.fspath(checkpoint)
    if not os.path.isfile(path):
        raise SurrogateWeightsError(f"no small-cnn encoder file at {path!r} (benchmarks/build_surrogate.py writes one)")
    meta = file_metadata(path)
    if meta.get("format") != ENCODER_FORMAT or meta.get("arch") != "small-cnn":
        raise SurrogateWeightsError(f"{path!r} is not a small-cnn encoder file (format {meta.get('format')!r})")
    sha = file_sha256(path)
    if expect_sha256 is not None and sha != expect_sha256:
        raise SurrogateWeightsError(f"encoder file {path!r} has sha256 {sha[:12]}..., but the bank was fitted with "
                                    f"{expect_sha256[:12]}...: pass the file the bank was made with")
    net = SmallCNN(int(meta["num_classes"]), int(meta["in_channels"]), width=int(meta["width"]),
                   stem_stride=int(meta.get("stem_stride", 1)))  # files before the stride hold none: 1
    _load_strict(net, _read_state_dict(path), path)
    ident = {"kind": "small-cnn", "arch": f"small-cnn-w{meta['width']}", "image_size": int(meta["image_size"]),
             "mean": [0.5] * 3, "std": [0.25] * 3, "checkpoint": os.path.basename(path),
             "checkpoint_path": os.path.abspath(path), "checkpoint_sha256": sha,
             "trained_on": meta.get("trained_on", "unknown")}
    if random_init_file(meta):
        ident["random_init"] = True
    # features = conv blocks + global average pool: the input of the linear head
    enc = Encoder(net.features, identity=ident, image_size=int(meta["image_size"]), mean=(0.5,) * 3, std=(0.25,) * 3)
    return enc.to(torch.device(device) if device is not None else torch.device("cpu"))


def save_torchvision(net: nn.Module, path: str | os.PathLike, *, arch: str, image_size: int,
                     extra: dict[str, str] | None = None) -> str:
    """Write a trained torchvision classifier (``fc`` head of any width) as a self-describing encoder
    file that :func:`encoder_file` / ``ue.fit(..., encoder=PATH)`` loads offline; returns its sha256.

    The metadata names the architecture and the input side, so the file alone rebuilds the encoder
    (features = the input of ``fc``, ImageNet normalisation, inputs resized to ``image_size``).
    """
    from safetensors.torch import save_file

    from torchvision import models as tvm

    if arch not in tvm.list_models(module=tvm):
        raise ValueError(f"unknown torchvision model {arch!r}; see torchvision.models.list_models()")
    meta = {"format": ENCODER_FORMAT, "arch": arch, "image_size": str(int(image_size)), **(extra or {})}
    path = os.fspath(path)
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, path, metadata=meta)
    return file_sha256(path)


def encoder_file(path: str | os.PathLike, *, device: str | torch.device | None = None) -> Encoder:
    """The encoder in a self-describing file (:func:`save_small_cnn` or :func:`save_torchvision`)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SurrogateWeightsError(f"no encoder file at {path!r}")
    try:
        meta = file_metadata(path)
    except Exception as err:
        raise SurrogateWeightsError(
            f"{path!r} is not an encoder file written by save_small_cnn/save_torchvision ({err}); for a plain "
            "torchvision state dict give the architecture's name with the file as its checkpoint"
        ) from err
    if meta.get("format") != ENCODER_FORMAT:
        raise SurrogateWeightsError(
            f"{path!r} carries no uetransforms encoder metadata (format {meta.get('format')!r}); for a plain "
            "torchvision state dict give the architecture's name with the file as its checkpoint"
        )
    if meta.get("arch") == "small-cnn":
        return small_cnn(path, device=device)
    return torchvision_encoder(meta["arch"], None, checkpoint=path, image_size=int(meta.get("image_size", 224)),
                               device=device)


def resolve(encoder: nn.Module | str | os.PathLike, *, checkpoint: str | os.PathLike | None = None,
            weights: str | None = "default", allow_random_surrogate: bool = False, init_seed: int = 0,
            device: str | torch.device | None = None) -> nn.Module:
    """A frozen encoder from what a caller gives as ``encoder=``: the one reading of that argument.

    * an ``nn.Module`` mapping [0, 1] images to features: used as is (frozen, moved to ``device``);
    * the path of an encoder file (:func:`save_small_cnn`, :func:`save_torchvision`): loaded offline;
    * a name for :func:`load` (``"resnet50"``, ``"clip:RN50"``...), with ``checkpoint`` for local
      weights (offline) or ``weights`` by name (downloads once).
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if isinstance(encoder, nn.Module):
        return encoder.to(dev).eval().requires_grad_(False)
    if not isinstance(encoder, (str, os.PathLike)):
        raise TypeError(f"encoder must be an nn.Module, an encoder file path or a model name, got "
                        f"{type(encoder).__name__}")
    spec = os.fspath(encoder)
    if checkpoint is None and (os.path.isfile(spec) or spec.endswith(".safetensors")):
        return encoder_file(spec, device=dev)
    return load(spec, weights=weights, checkpoint=checkpoint, allow_random_surrogate=allow_random_surrogate,
                init_seed=init_seed, device=dev)


def _load_strict(net: nn.Module, sd: dict[str, torch.Tensor], path: str) -> None:
    try:
        net.load_state_dict(sd)
    except Exception as err:
        raise SurrogateWeightsError(f"could not load {path!r}: {err}") from err


# ----------------------------------------------------------------------------- one front door
def load(name: str = "resnet50", *, weights: str | None = "default", checkpoint: str | os.PathLike | None = None,
         allow_random_surrogate: bool = False, image_size: int | None = None, init_seed: int = 0,
         device: str | torch.device | None = None) -> nn.Module:
    """Build a frozen surrogate by name.

    Args:
        name: ``"resnet50"`` (or another torchvision model with an ``fc`` head), ``"clip:RN50"``
            (any open_clip model after ``clip:``), or ``"small-cnn"`` (needs ``checkpoint``).
        weights: torchvision weights name (``"default"``: ``IMAGENET1K_V2`` for ResNet-50) or the
            open_clip tag (``"default"``: ``"openai"``); ``None``: random init (needs
            ``allow_random_surrogate=True``).
        checkpoint: a local weights file (offline); overrides ``weights``.
        image_size: torchvision models only: the input side (default 224).
    """
    if not isinstance(name, str):
        raise TypeError(f"surrogate name must be a string, got {type(name).__name__}; pass modules as encoder=")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if name.startswith("clip:"):
        from . import clip

        pretrained = os.fspath(checkpoint) if checkpoint is not None else ("openai" if weights == "default" else weights)
        if pretrained is None:
            refuse_random(f"CLIP {name[5:]!r} with pretrained=None", allow_random_surrogate)
        import warnings

        with warnings.catch_warnings():
            if pretrained is None:  # the opt-in was explicit; the bank records random_init instead
                warnings.simplefilter("ignore", clip.RandomInitWarning)
            return clip.load(name[5:], pretrained, device=dev, init_seed=init_seed if pretrained is None else None)
    if name == "small-cnn":
        if checkpoint is None:
            raise SurrogateWeightsError("surrogate 'small-cnn' has no published weights: pass checkpoint=<file from "
                                        "benchmarks/build_surrogate.py>")
        return small_cnn(checkpoint, device=dev)
    return torchvision_encoder(name, weights, checkpoint=checkpoint, allow_random_surrogate=allow_random_surrogate,
                               image_size=224 if image_size is None else image_size, init_seed=init_seed, device=dev)


def from_identity(identity: dict[str, Any], *, device: str | torch.device | None = None,
                  checkpoint: str | os.PathLike | None = None) -> nn.Module:
    """Rebuild the surrogate an identity (e.g. a bank's ``info["surrogate"]``) describes.

    ``checkpoint`` replaces the recorded checkpoint path when the file moved; its sha256 must match.
    """
    kind = identity.get("kind")
    if kind == "open_clip":
        from . import clip

        return clip.from_identity(identity, device=device, checkpoint=checkpoint)
    sha = identity.get("checkpoint_sha256")
    path = os.fspath(checkpoint) if checkpoint is not None else identity.get("checkpoint_path")
    if sha is not None and (path is None or not os.path.isfile(path)):
        raise SurrogateWeightsError(
            f"the surrogate was the local checkpoint {identity.get('checkpoint')!r} (sha256 {sha[:12]}...), which "
            f"is not at {path!r} any more: pass checkpoint=<its new path>"
        )
    if kind == "small-cnn":
        return small_cnn(path, expect_sha256=sha, device=device)
    if kind == "torchvision":
        return torchvision_encoder(identity["arch"], identity.get("weights"), checkpoint=path if sha else None,
                                   expect_sha256=sha, allow_random_surrogate=bool(identity.get("random_init")),
                                   image_size=int(identity.get("image_size", 224)),
                                   init_seed=int(identity.get("init_seed", 0)), device=device)
    raise SurrogateWeightsError(
        f"this surrogate ({identity.get('class', kind)}) was a custom module, which a bank cannot rebuild: pass it "
        "again as encoder=<that module>"
    )


def identity_of(encoder: nn.Module) -> dict[str, Any]:
    """What a bank records about a surrogate: its rebuildable identity, or a custom module's class name."""
    ident = getattr(encoder, "identity", None)
    if callable(ident):
        return dict(ident())
    cls = type(encoder)
    return {"kind": "module", "class": f"{cls.__module__}.{cls.__qualname__}"}


def is_random(identity: dict[str, Any]) -> bool:
    """Whether a recorded surrogate had random weights."""
    if identity.get("kind") == "open_clip":
        return identity.get("pretrained") is None
    return bool(identity.get("random_init"))


__all__ = ["Encoder", "RandomSurrogateError", "SurrogateWeightsError", "load", "resnet50", "torchvision_encoder",
           "small_cnn", "save_small_cnn", "save_torchvision", "encoder_file", "resolve", "from_identity", "identity_of", "is_random", "refuse_random"]
