"""CLIP surrogates for the CLIP-based methods (``clusters``, ``t2ue``), loaded through ``open_clip``.

:func:`load` returns a :class:`ClipModel`: a frozen CLIP whose ``encode_image`` takes images in
``[0, 1]`` and does the model's own resize and normalisation inside (differentiably, so methods
can backpropagate to pixels), and whose ``encode_text`` takes plain strings.

Where the weights come from (``pretrained``):

* an open_clip tag such as ``"openai"`` or ``"laion2b_s34b_b79k"`` (see
  ``open_clip.list_pretrained()``): downloaded on first use, so it needs network access or a
  warm Hugging Face cache;
* a local checkpoint file (``.pt``/``.bin``/``.safetensors`` state dict): works offline; the
  file's sha256 becomes part of the surrogate's identity;
* ``None``: random initialisation from a fixed ``init_seed``. A random-init CLIP has never
  seen an image-text pair: its embeddings are fixed random features, a *weak* surrogate.
  Protection built on it transfers far worse than with trained weights; use it for tests and
  offline experiments only.

Besides every open_clip architecture, two tiny configurations are built in for CPU work:
``"uet-tiny-rn"`` (a 4-stage modified ResNet, one block per stage; ``"uet-tiny-rn-ctx16"``: the same
with a 16-token text context) and ``"uet-tiny-vit"`` (a 3-layer ViT with 8 px patches), all at 32 px
with a 3-layer text tower: a 256-image forward and backward
pass takes about a second on two CPU cores. They have no published weights; use them random-init or with a checkpoint you trained.

Example:
    >>> import torch
    >>> from uetransforms.models import clip
    >>> model = clip.load("uet-tiny-vit")  # warns: random-init surrogate # doctest: +SKIP
    >>> model.encode_image(torch.rand(2, 3, 32, 32)).shape  # doctest: +SKIP
    torch.Size([2, 256])
    >>> model.encode_text(["a photo of a cat.", "a photo of a dog."]).shape  # doctest: +SKIP
    torch.Size([2, 256])
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..core.errors import ClipWeightsError, RandomInitWarning

#: Random-init seed used when ``pretrained=None`` and no ``init_seed`` is given.
DEFAULT_INIT_SEED = 0

# OpenAI CLIP's normalisation, which open_clip also uses for most of its models.
_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

_TINY_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 3}

#: Small configurations (open_clip ``CLIP`` keyword arguments) for CPU-sized experiments.
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "uet-tiny-rn": {
        "embed_dim": 256,
        "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 16, "patch_size": None},
        "text_cfg": dict(_TINY_TEXT),
    },
    # uet-tiny-rn with a 16-token text context: short captions (class-name templates) at a sixth of
    # the text tower's cost; what benchmarks/build_text_surrogate.py trains offline.
    "uet-tiny-rn-ctx16": {
        "embed_dim": 256,
        "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 16, "patch_size": None},
        "text_cfg": {**_TINY_TEXT, "context_length": 16},
    },
    "uet-tiny-vit": {
        "embed_dim": 256,
        "vision_cfg": {"image_size": 32, "layers": 3, "width": 128, "patch_size": 8, "head_width": 64},
        "text_cfg": dict(_TINY_TEXT),
    },
}


def _open_clip() -> Any:
    try:
        import open_clip
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the CLIP-based methods need open_clip: `pip install open_clip_torch`"
        ) from err
    return open_clip


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_path(pretrained: str) -> bool:
    return os.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors")) or os.path.exists(pretrained)


class _LazyTokenizer:
    def __init__(self, factory: Any, *args: Any, **kwargs: Any) -> None:
        self.factory, self.args, self.kwargs = factory, args, kwargs

    def __call__(self) -> Any:
        return self.factory(*self.args, **self.kwargs)


class ClipModel(torch.nn.Module):
    """A frozen open_clip model seen as two encoders of ``[0, 1]`` images and strings.

    Use :func:`load` to build one. The wrapped model is in eval mode with
    ``requires_grad=False``; gradients still flow to the *input* images.

    Attributes:
        name: architecture name (``"RN50"``, ``"ViT-B-16"``, ``"uet-tiny-vit"``...).
        pretrained: the tag, the checkpoint path, or ``None`` (random init).
        image_size: the side the image tower expects; inputs are resized to it.
        embed_dim: size of the joint embedding.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, *, name: str, pretrained: str | None,
                 image_size: int, mean: Sequence[float], std: Sequence[float], init_seed: int | None,
                 checkpoint_sha256: str | None = None, interpolation: str = "bicubic") -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        # A zero-argument factory or a tokenizer: building the BPE tables takes a second or two,
        # and image-only users (cluster assignment) never need them.
        self._tokenizer = tokenizer
        self.name = name
        self.pretrained = pretrained
        self.image_size = int(image_size)
        self.init_seed = init_seed
        self.checkpoint_sha256 = checkpoint_sha256
        self.interpolation = interpolation
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.embed_dim = int(getattr(model, "text_projection").shape[-1]) if hasattr(model, "text_projection") \
            and getattr(model, "text_projection") is not None else None

    @property
    def tokenizer(self) -> Any:
        if isinstance(self._tokenizer, _LazyTokenizer):
            self._tokenizer = self._tokenizer()
        return self._tokenizer

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def train(self, mode: bool = True) -> ClipModel:  # the surrogate stays frozen in eval mode
        return super().train(False)

    def preprocess(self, x01: torch.Tensor) -> torch.Tensor:
        """Resize ``[B, 3, H, W]`` images in [0, 1] to the model's size and normalise them."""
        if x01.ndim != 4 or x01.shape[1] not in (1, 3):
            raise ValueError(f"encode_image takes [B, 3, H, W] images in [0, 1], got shape {tuple(x01.shape)}")
        x = x01.to(self.device, torch.float32)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grayscale: the towers are RGB
        if x.shape[-2:] != (self.image_size, self.image_size):
            # A plain resize to the square input (no crop) keeps every pixel, and so every bit of
            # the perturbation, in view of the surrogate.
            mode = "bicubic" if self.interpolation == "bicubic" else "bilinear"
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode=mode, align_corners=False)
        return (x - self.mean) / self.std

    def encode_image(self, x01: torch.Tensor) -> torch.Tensor:
        """Image embeddings ``[B, D]`` (not normalised) for images in [0, 1]; differentiable."""
        return self.model.encode_image(self.preprocess(x01))

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Text embeddings ``[B, D]`` (not normalised) for a list of strings."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("encode_text takes a list of strings")
        tokens = self.tokenizer(list(texts)).to(self.device)
        return self.model.encode_text(tokens)

    @property
    def logit_scale(self) -> float:
        scale = getattr(self.model, "logit_scale", None)
        return float(scale.exp().item()) if scale is not None else 100.0

    def identity(self) -> dict[str, Any]:
        """JSON-able description that rebuilds exactly this surrogate with :func:`from_identity`."""
        ident: dict[str, Any] = {
            "kind": "open_clip",
            "model": self.name,
            "pretrained": None,
            "image_size": self.image_size,
            "mean": [round(float(v), 8) for v in self.mean.flatten().tolist()],
            "std": [round(float(v), 8) for v in self.std.flatten().tolist()],
            "embed_dim": self.embed_dim,
        }
        if self.pretrained is None:
            ident["init_seed"] = self.init_seed
        elif self.checkpoint_sha256 is not None:
            ident["pretrained"] = os.path.basename(self.pretrained)
            ident["checkpoint_path"] = os.path.abspath(self.pretrained)
            ident["checkpoint_sha256"] = self.checkpoint_sha256
        else:
            ident["pretrained"] = self.pretrained
        return ident

    def __repr__(self) -> str:
        what = self.pretrained if self.pretrained is not None else f"random init (seed {self.init_seed})"
        return f"ClipModel({self.name!r}, {what}, image_size={self.image_size}, embed_dim={self.embed_dim})"


def _build_tiny(name: str) -> Any:
    open_clip = _open_clip()
    cfg = TINY_CONFIGS[name]
    return open_clip.CLIP(embed_dim=cfg["embed_dim"], vision_cfg=dict(cfg["vision_cfg"]),
                          text_cfg=dict(cfg["text_cfg"]))


def load(model: str = "RN50", pretrained: str | None = None, *, device: str | torch.device | None = None,
         init_seed: int | None = None, expect_sha256: str | None = None) -> ClipModel:
    """Build a frozen CLIP surrogate.

    Args:
        model: an open_clip architecture (``open_clip.list_models()``), ``"local-dir:<folder>"``
            or one of :data:`TINY_CONFIGS`.
        pretrained: an open_clip tag (``"openai"``: needs the network once), a local checkpoint
            path (offline), or ``None`` for random init (a weak surrogate; warns).
        device: where the model lives (default CPU).
        init_seed: seed of the random initialisation (``pretrained=None`` only); the same seed
            rebuilds the same weights.
        expect_sha256: refuse a checkpoint file whose sha256 differs (used when rebuilding a
            surrogate recorded in a bank).

    Example:
        >>> from uetransforms.models import clip
        >>> m = clip.load("RN50", "openai")  # downloads once # doctest: +SKIP
        >>> m = clip.load("uet-tiny-rn", "my-tiny-clip.pt")  # a local checkpoint # doctest: +SKIP
    """
    open_clip = _open_clip()
    device = torch.device(device) if device is not None else torch.device("cpu")
    if not isinstance(model, str):
        raise TypeError(f"model must be an open_clip model name, got {type(model).__name__}")
    known = model in TINY_CONFIGS or model in open_clip.list_models() or model.startswith(("local-dir:", "hf-hub:"))
    if not known:
        raise ValueError(
            f"unknown CLIP model {model!r}; use a name from open_clip.list_models() (e.g. 'RN50', 'ViT-B-16') "
            f"or one of the built-in tiny configs {sorted(TINY_CONFIGS)}"
        )
    sha = None
    if pretrained is not None:
        pretrained = os.fspath(pretrained)
        if _is_path(pretrained):
            if not os.path.isfile(pretrained):
                raise ClipWeightsError(f"CLIP checkpoint {pretrained!r} does not exist; pass the path of a state-dict file")
            sha = file_sha256(pretrained)
            if expect_sha256 is not None and sha != expect_sha256:
                raise ClipWeightsError(
                    f"CLIP checkpoint {pretrained!r} has sha256 {sha[:12]}..., but the bank was fitted with "
                    f"{expect_sha256[:12]}...: pass the checkpoint the bank was made with"
                )
    # A fixed seed makes random init reproducible; fork_rng leaves the caller's RNG untouched.
    seed = (DEFAULT_INIT_SEED if init_seed is None else int(init_seed)) if pretrained is None else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed if seed is not None else 0)
        if model in TINY_CONFIGS:
            net = _build_tiny(model)
            if pretrained is not None:
                if sha is None:
                    raise ClipWeightsError(
                        f"{model!r} is a built-in tiny config with no published weights ({pretrained!r} is not a "
                        "file); pass pretrained=<local checkpoint path> or pretrained=None"
                    )
                try:
                    open_clip.load_checkpoint(net, pretrained, strict=True, weights_only=True)
                except Exception as err:
                    raise ClipWeightsError(f"could not load {pretrained!r} into {model!r}: {err}") from err
            tokenizer = _LazyTokenizer(open_clip.SimpleTokenizer,
                                       context_length=TINY_CONFIGS[model]["text_cfg"]["context_length"])
            size = TINY_CONFIGS[model]["vision_cfg"]["image_size"]
            mean, std, interp = _OPENAI_MEAN, _OPENAI_STD, "bicubic"
        else:
            try:
                net = open_clip.create_model(model, pretrained=pretrained, device="cpu", weights_only=True)
            except Exception as err:
                if pretrained is not None and sha is None:
                    raise ClipWeightsError(
                        f"could not get open_clip weights {model!r}/{pretrained!r} ({type(err).__name__}: {err}). "
                        "Tags are downloaded from the Hugging Face Hub, which needs network access. Offline, "
                        "download the checkpoint elsewhere and pass pretrained=<local checkpoint path>; the tags "
                        f"for this model are {[t for m, t in open_clip.list_pretrained() if m == model]}"
                    ) from err
                raise ClipWeightsError(f"could not build open_clip model {model!r} ({pretrained!r}): {err}") from err
            tokenizer = _LazyTokenizer(open_clip.get_tokenizer, model)
            pcfg = open_clip.get_model_preprocess_cfg(net)
            size_cfg = pcfg.get("size", 224)
            size = size_cfg[0] if isinstance(size_cfg, (tuple, list)) else size_cfg
            mean, std = pcfg.get("mean", _OPENAI_MEAN), pcfg.get("std", _OPENAI_STD)
            interp = pcfg.get("interpolation", "bicubic")
    if pretrained is None:
        warnings.warn(
            f"CLIP surrogate {model!r} has RANDOM weights (init_seed={seed}): it is a weak surrogate and "
            "protection fitted with it transfers poorly. Pass pretrained='openai' (online) or a local "
            "checkpoint path for real use.",
            RandomInitWarning,
            stacklevel=2,
        )
    wrapped = ClipModel(net, tokenizer, name=model, pretrained=pretrained, image_size=int(size), mean=mean,
                        std=std, init_seed=seed, checkpoint_sha256=sha, interpolation=str(interp))
    return wrapped.to(device)


def from_identity(identity: dict[str, Any], *, device: str | torch.device | None = None,
                  checkpoint: str | os.PathLike | None = None) -> ClipModel:
    """Rebuild the surrogate described by :meth:`ClipModel.identity` (e.g. one stored in a bank).

    ``checkpoint`` overrides the recorded checkpoint path when the file has moved; its sha256 must
    still match the recorded one.
    """
    if identity.get("kind") != "open_clip":
        raise ValueError(f"not an open_clip surrogate identity: {identity.get('kind')!r}")
    sha = identity.get("checkpoint_sha256")
    if sha is not None:
        path = os.fspath(checkpoint) if checkpoint is not None else identity.get("checkpoint_path")
        if path is None or not os.path.isfile(path):
            raise ClipWeightsError(
                f"the surrogate was the local checkpoint {identity.get('pretrained')!r} (sha256 {sha[:12]}...), "
                f"which is not at {path!r} any more: pass checkpoint=<its new path>"
            )
        with warnings.catch_warnings():
            return load(identity["model"], path, device=device, expect_sha256=sha)
    if identity.get("pretrained") is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomInitWarning)  # already warned when the bank was fitted
            return load(identity["model"], None, device=device, init_seed=identity.get("init_seed"))
    return load(identity["model"], identity["pretrained"], device=device)


__all__ = ["ClipModel", "ClipWeightsError", "RandomInitWarning", "TINY_CONFIGS", "load", "from_identity", "file_sha256"]
