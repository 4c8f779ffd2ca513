"""What a trainer may do against unlearnable data: the defences the evaluation harness applies.

Maths only (uint8/float tensors in, tensors out, no files). A defence is written as a short
spec and several combine with ``+``:

=====================  =====================================================================
spec                   what the trainer does
=====================  =====================================================================
``none``               nothing (the baseline)
``grayscale``          converts every image to gray (ITU-R 601 luma, kept at C channels),
                       training *and* test images: the model never sees colour
``jpeg75``             re-compresses the training images as JPEG at quality 75 (any 1-100)
``cutout`` / ``cutout8``  zeroes one random square per training image (side: half the image,
                       or the given pixels)
``mixup`` / ``mixup0.4``  mixes pairs of training images and their labels (Beta(alpha, alpha),
                       alpha 1 by default)
``cutmix``             pastes a random box from another image, labels mixed by area
``pgd`` / ``pgd4``     PGD adversarial training (Madry et al. 2018, arXiv 1706.06083), L-inf
                       budget in /255 (8 by default), 5 steps; ``pgd:eps=4,steps=3,alpha=1``
                       sets budget, steps and step size (/255); ``pgd:norm=l2,eps=0.5``: L2
                       ball of radius 0.5 in [0, 1] pixel units per image (step 2.5 eps/steps)
``bdr`` / ``bdr:bits=3``  bit-depth reduction of the training images to ``2**bits`` evenly spaced
                       levels per channel, 0 and 255 kept (2 bits by default): feature
                       squeezing's definition (Xu et al. 2018, arXiv 1704.01155), which ISS
                       (arXiv 2301.13838) lists among its squeezers; ISS's code uses
                       torchvision's posterize (keep the top bits: levels 0, 64, 128, 192)
``jpeg10``             JPEG at quality 10, ISS's setting against L-inf (high-frequency) noise
``iss``                Image Shortcut Squeezing as ``grayscale+jpeg10`` (ISS, arXiv 2301.13838).
                       The paper reports grayscale (against low-frequency noise) and JPEG-10
                       (against L-inf noise) one at a time; its code applies both, grayscale
                       first, when both are asked for. ``iss`` is that pair, so a trainer needs
                       no idea of the perturbation's kind; ``grayscale`` and ``jpeg10`` alone
                       are the paper's columns
``ueraser``            UEraser (Qin et al. 2023, arXiv 2303.15127): per-sample plasma brightness
                       and contrast, random channel shuffle and TrivialAugment on every batch;
                       ``ueraser:repeats=5`` is UEraser-Max (loss maximised over 5 draws per
                       image), ``repeats=1`` (default) UEraser-Lite. A CPU re-implementation,
                       see :func:`ueraser_augment` for what is equal and what is simplified
``orthogonal``         orthogonal projection (Sandoval-Segura et al., NeurIPS 2023, arXiv
                       2305.19254): fit a bias-free linear classifier on the training set, then
                       remove the span of its class weight vectors from every training image
``sharpen+lowpass``    random sharpening kernels + DCT low-pass (Kim & Sandoval-Segura 2024,
                       arXiv 2411.01742, "RSK+FF") against CUDA's class-wise blurs, every
                       batch; ``sharpen:center=2.5`` (RSK) and ``lowpass:keep=30`` (FF, percent
                       of the lowest DCT rows/columns kept) alone are the paper's ablations;
                       ``rskff`` is both; the defaults are the paper's values
=====================  =====================================================================

JPEG, BDR and orthogonal projection change only the *training* images (a trainer cleans suspicious
data; clean test images stay as they are); grayscale changes both, so the model sees gray at test
time too (ISS's code squeezes test images only on request; a gray-trained model tested on colour
is the weaker choice for the trainer). UEraser, sharpen+lowpass, cutout/mixup/cutmix and PGD act on every training batch.

Example:
    >>> d = parse_defence("grayscale+jpeg50")
    >>> d.name, d.grayscale, d.jpeg_quality
    ('grayscale+jpeg50', True, 50)
    >>> parse_defence("iss").name, parse_defence("iss").jpeg_quality
    ('iss', 10)
    >>> import torch
    >>> x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    >>> g = to_grayscale(x)
    >>> bool((g[:, 0] == g[:, 1]).all())
    True
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..core.errors import DefenceError  # defined there; importable from here as before


# ---------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class Defence:
    """A parsed, combinable defence (see the module docstring for the spec language)."""

    name: str = "none"
    grayscale: bool = False
    jpeg_quality: int | None = None
    cutout: int | None = None  #: square side in pixels; 0 means "half the image side"
    mixup_alpha: float | None = None
    cutmix_alpha: float | None = None
    pgd_epsilon: float | None = None  #: L-inf budget in [0, 1] units
    pgd_steps: int = 5
    pgd_step_size: float | None = None  #: default 2.5 * epsilon / steps (Madry et al.)
    pgd_norm: str = "linf"  #: "linf" or "l2" (then pgd_epsilon is the per-image L2 radius)
    bdr_bits: int | None = None
    ueraser_repeats: int | None = None  #: 1: UEraser-Lite; K > 1: UEraser-Max over K draws
    orthogonal: bool = False
    sharpen_center: float | None = None  #: RSK: mean centre of the random sharpening kernel
    lowpass_keep: float | None = None  #: FF: percent of the lowest DCT rows/columns kept

    @property
    def is_adversarial(self) -> bool:
        return self.pgd_epsilon is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # -- what the trainer does to its data --------------------------------------------
    def prepare_train(self, images: torch.Tensor, labels: torch.Tensor | None = None, *,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """The static part, applied once to the uint8 training set: grayscale, JPEG, bit-depth
        reduction, then orthogonal projection (which needs ``labels`` and returns float32 in
        0..255 units, unclipped, as the paper trains on the projected floats)."""
        if self.grayscale:
            images = to_grayscale(images)
        if self.jpeg_quality is not None:
            if self.grayscale and images.shape[1] == 3:
                # encode the one luma plane: a 3-channel JPEG of a gray image comes back off-gray by +-1
                images = jpeg(images[:, :1].contiguous(), self.jpeg_quality).expand_as(images).contiguous()
            else:
                images = jpeg(images, self.jpeg_quality)
        if self.bdr_bits is not None:
            images = bit_depth_reduce(images, self.bdr_bits)
        if self.orthogonal:
            if labels is None:
                raise DefenceError("the orthogonal projection defence fits a linear model: pass the training labels")
            images = orthogonal_projection(images, labels, generator=generator)
        return images

    def prepare_test(self, images: torch.Tensor) -> torch.Tensor:
        """What the trainer's deployed model sees: gray if it was trained gray. JPEG is a
        clean-up step for suspicious *training* data only, so clean test images stay as they are."""
        return to_grayscale(images) if self.grayscale else images

    @property
    def transforms_batches(self) -> bool:
        """Whether :meth:`pre_augment` changes batches (sharpen and/or lowpass)."""
        return self.sharpen_center is not None or self.lowpass_keep is not None

    def pre_augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Per-batch transforms that come *before* crop + flip (float ``x`` in [0, 1]): random
        sharpening, then the DCT low-pass, in the order of the RSK+FF pipeline."""
        if self.sharpen_center is not None:
            x = random_sharpen(x, self.sharpen_center, generator)
        if self.lowpass_keep is not None:
            x = lowpass_dct(x, self.lowpass_keep)
        return x

    def augment(self, x: torch.Tensor, targets: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-batch part on float ``x`` in [0, 1] and one-hot/soft ``targets``: cutout,
        mixup, cutmix. Returns ``(x, targets)``."""
        if self.cutout is not None:
            x = cutout(x, self.cutout or max(1, x.shape[-1] // 2), generator)
        if self.mixup_alpha is not None:
            x, targets = mixup(x, targets, self.mixup_alpha, generator)
        if self.cutmix_alpha is not None:
            x, targets = cutmix(x, targets, self.cutmix_alpha, generator)
        return x, targets


_PARTS: dict[str, Callable[[str, dict[str, str]], dict[str, Any]]] = {}


def _part(*names: str):
    def register(fn):
        for n in names:
            _PARTS[n] = fn
        return fn
    return register


@_part("none", "clean")
def _none(num: str, kw: dict[str, str]) -> dict[str, Any]:
    return {}


@_part("grayscale", "gray", "grey", "greyscale")
def _gray(num: str, kw: dict[str, str]) -> dict[str, Any]:
    return {"grayscale": True}


@_part("jpeg", "jpg")
def _jpeg(num: str, kw: dict[str, str]) -> dict[str, Any]:
    q = int(float(kw.get("quality", num or 75)))
    if not 1 <= q <= 100:
        raise DefenceError(f"JPEG quality must be in 1..100, got {q}")
    return {"jpeg_quality": q}


@_part("bdr")
def _bdr(num: str, kw: dict[str, str]) -> dict[str, Any]:
    bits = int(float(kw.get("bits", num or 2)))
    if not 1 <= bits <= 7:
        raise DefenceError(f"bit-depth reduction keeps 1..7 bits per channel, got bits={bits}")
    return {"bdr_bits": bits}


@_part("iss")
def _iss(num: str, kw: dict[str, str]) -> dict[str, Any]:
    q = int(float(kw.get("quality", num or 10)))
    if not 1 <= q <= 100:
        raise DefenceError(f"JPEG quality must be in 1..100, got {q}")
    return {"grayscale": True, "jpeg_quality": q}


@_part("ueraser")
def _ueraser(num: str, kw: dict[str, str]) -> dict[str, Any]:
    k = int(float(kw.get("repeats", num or 1)))
    if k < 1:
        raise DefenceError(f"UEraser needs repeats >= 1 (1: Lite, 5: the paper's Max), got {k}")
    return {"ueraser_repeats": k}


@_part("orthogonal", "ortho")
def _orthogonal(num: str, kw: dict[str, str]) -> dict[str, Any]:
    return {"orthogonal": True}


@_part("sharpen", "rsk")
def _sharpen(num: str, kw: dict[str, str]) -> dict[str, Any]:
    return {"sharpen_center": _positive(float(kw.get("center", num or 2.5)), "sharpening centre")}


@_part("lowpass", "ff")
def _lowpass(num: str, kw: dict[str, str]) -> dict[str, Any]:
    keep = float(kw.get("keep", num or 30))
    if not 0 < keep <= 100:
        raise DefenceError(f"low-pass keep is a percentage of DCT rows/columns in (0, 100], got {keep}")
    return {"lowpass_keep": keep}


@_part("rskff")
def _rskff(num: str, kw: dict[str, str]) -> dict[str, Any]:
    return {**_sharpen("", {k: v for k, v in kw.items() if k == "center"}),
            **_lowpass("", {k: v for k, v in kw.items() if k == "keep"})}


@_part("cutout")
def _cutout(num: str, kw: dict[str, str]) -> dict[str, Any]:
    size = int(float(kw.get("size", num or 0)))
    if size < 0:
        raise DefenceError(f"cutout size must be >= 0 pixels, got {size}")
    return {"cutout": size}


@_part("mixup")
def _mixup(num: str, kw: dict[str, str]) -> dict[str, Any]:
    return {"mixup_alpha": _positive(float(kw.get("alpha", num or 1.0)), "mixup alpha")}


@_part("cutmix")
def _cutmix(num: str, kw: dict[str, str]) -> dict[str, Any]:
    return {"cutmix_alpha": _positive(float(kw.get("alpha", num or 1.0)), "cutmix alpha")}


@_part("pgd", "at", "adv")
def _pgd(num: str, kw: dict[str, str]) -> dict[str, Any]:
    norm = kw.get("norm", "linf").replace("-", "").replace("inf", "inf")
    if norm not in ("linf", "l2"):
        raise DefenceError(f"PGD norm must be linf or l2, got {kw.get('norm')!r}")
    # L-inf budgets are quoted in /255 (8/255); L2 radii in [0, 1] pixel units (0.5), as papers do.
    scale = 255.0 if norm == "linf" else 1.0
    eps = _positive(float(kw.get("eps", kw.get("epsilon", num or (8 if norm == "linf" else 0.5)))), "PGD epsilon") / scale
    steps = int(kw.get("steps", 5))
    if steps < 1:
        raise DefenceError(f"PGD needs at least one step, got steps={steps}")
    out: dict[str, Any] = {"pgd_epsilon": eps, "pgd_steps": steps, "pgd_norm": norm}
    if "alpha" in kw:
        out["pgd_step_size"] = _positive(float(kw["alpha"]), "PGD step size") / scale
    return out


def _positive(v: float, what: str) -> float:
    if not v > 0:
        raise DefenceError(f"{what} must be positive, got {v}")
    return v


_SPEC = re.compile(r"^([a-z]+)([0-9.]*)(?::(.*))?$")


def parse_defence(spec: str | Defence) -> Defence:
    """Parse ``"grayscale"``, ``"jpeg75"``, ``"pgd:eps=4,steps=3"``, ``"grayscale+cutout"``...

    Raises:
        DefenceError: unknown name or bad parameter, listing what is understood.
    """
    if isinstance(spec, Defence):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise DefenceError(f"a defence is a non-empty string such as 'jpeg75', got {spec!r}")
    fields: dict[str, Any] = {}
    names = []
    for raw in spec.lower().replace(" ", "").split("+"):
        m = _SPEC.match(raw)
        if not m or m.group(1) not in _PARTS:
            raise DefenceError(
                f"unknown defence {raw!r} in {spec!r}; known: none, grayscale, jpeg<quality>, bdr[:bits=<n>], iss, "
                "ueraser[:repeats=<k>], orthogonal, sharpen+lowpass (rskff[:center=2.5,keep=30]), cutout[<px>], "
                "mixup[<alpha>], cutmix[<alpha>], pgd[<eps/255>][:norm=linf|l2,steps=<n>,alpha=<step>], joined with '+'"
            )
        kw: dict[str, str] = {}
        for item in filter(None, (m.group(3) or "").split(",")):
            if "=" not in item:
                raise DefenceError(f"defence parameter {item!r} in {spec!r} is not key=value")
            k, v = item.split("=", 1)
            kw[k] = v
        try:
            part = _PARTS[m.group(1)](m.group(2), kw)
        except ValueError as err:
            if isinstance(err, DefenceError):
                raise
            raise DefenceError(f"bad parameter in defence {raw!r}: {err}") from err
        clash = set(part) & set(fields) - {"pgd_steps", "pgd_norm"}
        if clash:
            raise DefenceError(f"defence {spec!r} sets {sorted(clash)} twice")
        fields.update(part)
        if part or m.group(1) not in ("none", "clean"):
            names.append(raw)
    return Defence(name="+".join(names) or "none", **fields)


# ---------------------------------------------------------------------------- image maths
#: ITU-R BT.601 luma weights, as PIL's ``convert("L")`` uses.
_LUMA = (0.299, 0.587, 0.114)


def to_grayscale(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, C, H, W]`` -> the same shape with every channel set to the luma (C=1: unchanged)."""
    if images.shape[1] == 1:
        return images
    if images.shape[1] != 3:
        raise DefenceError(f"grayscale needs 1- or 3-channel images, got {images.shape[1]} channels")
    w = torch.tensor(_LUMA, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    luma = (images.to(torch.float32) * w).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
    return luma.expand_as(images).contiguous()


def jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Round-trip uint8 ``[B, C, H, W]`` (C = 1 or 3) through JPEG at ``quality`` (libjpeg via Pillow,
    4:2:0 chroma subsampling as Pillow's default), in memory."""
    import io

    import numpy as np
    from PIL import Image

    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DefenceError(f"JPEG takes uint8 [B, 1|3, H, W] images, got {images.dtype} {tuple(images.shape)}")
    arr = images.cpu().numpy()
    out = np.empty_like(arr)
    buf = io.BytesIO()
    for i, chw in enumerate(arr):
        img = Image.fromarray(chw[0] if chw.shape[0] == 1 else chw.transpose(1, 2, 0))
        buf.seek(0)
        buf.truncate()
        img.save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        dec = np.asarray(Image.open(buf).convert(img.mode))
        out[i] = dec[None] if dec.ndim == 2 else dec.transpose(2, 0, 1)
    return torch.from_numpy(out).to(images.device)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero one ``size x size`` square per image, centred anywhere (clipped at the border; DeVries & Taylor 2017)."""
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b,), generator=generator).to(x.device)
    cx = torch.randint(0, w, (b,), generator=generator).to(x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    y0 = (cy - size // 2).view(b, 1, 1)
    x0 = (cx - size // 2).view(b, 1, 1)
    inside = (ys >= y0) & (ys < y0 + size) & (xs >= x0) & (xs < x0 + size)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def _beta(alpha: float, generator: torch.Generator) -> float:
    # torch.distributions takes no generator: draw Beta(a, a) from two seeded Gammas instead.
    g = torch._standard_gamma(torch.full((2,), float(alpha)), generator=generator)
    return float(g[0] / g.sum())


def mixup(x: torch.Tensor, targets: torch.Tensor, alpha: float,
          generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``lam * x + (1 - lam) * x[perm]`` and the same mix of the soft targets (Zhang et al. 2018)."""
    lam = _beta(alpha, generator)
    perm = torch.randperm(len(x), generator=generator).to(x.device)
    return lam * x + (1 - lam) * x[perm], lam * targets + (1 - lam) * targets[perm]


def cutmix(x: torch.Tensor, targets: torch.Tensor, alpha: float,
           generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste one random box of ``x[perm]`` into every image; targets mixed by area (Yun et al. 2019)."""
    _, _, h, w = x.shape
    lam = _beta(alpha, generator)
    perm = torch.randperm(len(x), generator=generator).to(x.device)
    bh, bw = int(round(h * (1 - lam) ** 0.5)), int(round(w * (1 - lam) ** 0.5))
    cy, cx = (int(v) for v in (torch.randint(0, h, (1,), generator=generator), torch.randint(0, w, (1,), generator=generator)))
    y0, y1 = max(cy - bh // 2, 0), min(cy - bh // 2 + bh, h)
    x0, x1 = max(cx - bw // 2, 0), min(cx - bw // 2 + bw, w)
    out = x.clone()
    out[:, :, y0:y1, x0:x1] = x[perm][:, :, y0:y1, x0:x1]
    area = (y1 - y0) * (x1 - x0) / (h * w)  # the box actually pasted, after clipping
    return out, (1 - area) * targets + area * targets[perm]


def pgd(model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor, *, epsilon: float, steps: int,
        step_size: float | None = None, generator: torch.Generator | None = None, norm: str = "linf") -> torch.Tensor:
    """PGD with a random start (Madry et al. 2018, arXiv 1706.06083): images in [0, 1] that raise the loss.

    ``norm="linf"``: sign steps, clipped to the ``epsilon`` box. ``norm="l2"``: steps along the
    per-image normalised gradient, projected back onto the L2 ball of radius ``epsilon`` (the
    random start is uniform in direction with radius up to ``epsilon``). ``targets`` are class ids
    or soft targets. Parameter gradients are left untouched; the model stays in whatever mode it
    is in (training mode during adversarial training).
    """
    if norm not in ("linf", "l2"):
        raise DefenceError(f"PGD norm must be 'linf' or 'l2', got {norm!r}")
    alpha = step_size if step_size is not None else 2.5 * epsilon / steps
    b = len(x)
    if norm == "linf":
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        adv = (x + (2 * noise - 1) * epsilon).clamp_(0, 1)
    else:
        direction = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        radius = torch.rand(b, generator=generator, dtype=x.dtype).to(x.device).view(-1, 1, 1, 1) * epsilon
        adv = (x + direction / _l2(direction) * radius).clamp_(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv), targets)
        (grad,) = torch.autograd.grad(loss, adv)
        with torch.no_grad():
            if norm == "linf":
                adv = adv + alpha * grad.sign()
                adv = torch.min(torch.max(adv, x - epsilon), x + epsilon).clamp_(0, 1)
            else:
                delta = adv + alpha * grad / _l2(grad) - x
                delta = delta * (epsilon / _l2(delta)).clamp(max=1.0)  # project onto the L2 ball
                adv = (x + delta).clamp_(0, 1)  # clipping to [0, 1] only shrinks the delta
    return adv.detach()


def _l2(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.ndim - 1)))


# ---------------------------------------------------------------------------- ISS: bit depth
def bit_depth_reduce(images: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 images quantised to ``2**bits`` evenly spaced levels per channel (0 and 255 kept).

    Feature squeezing's rounding (Xu et al. 2018, arXiv 1704.01155); ISS (Liu et al. 2023,
    arXiv 2301.13838) tests bit-depth reduction alongside grayscale and JPEG: a few levels cannot
    hold a +-8/255 perturbation. ISS's code posterizes instead (floor to the top bits).
    """
    if images.dtype != torch.uint8:
        raise DefenceError(f"bit-depth reduction takes uint8 images, got {images.dtype}")
    if not 1 <= int(bits) <= 8:
        raise DefenceError(f"bits must be in 1..8, got {bits}")
    top = (1 << int(bits)) - 1
    q = torch.round(images.to(torch.float32) * (top / 255.0))
    return torch.round(q * (255.0 / top)).clamp_(0, 255).to(torch.uint8)


# ---------------------------------------------------------------------------- orthogonal projection
def fit_linear_directions(images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 20, lr: float = 0.1,
                          batch_size: int = 1024, generator: torch.Generator | None = None) -> torch.Tensor:
    """The class weight vectors ``[K, D]`` of a bias-free linear classifier on flattened images.

    As Sandoval-Segura et al. (arXiv 2305.19254, Algorithm 1) fit it: inputs in [0, 1], plain SGD
    at lr 0.1, batch 1024, 20 epochs, the rate divided by 10 at 50% and 75% of the epochs.
    On class-wise linearly separable noise the weights recover the noise patterns.
    """
    x = images.to(torch.float32).flatten(1) / 255.0
    y = labels.to(torch.int64)
    k = int(y.max()) + 1
    w = torch.zeros(k, x.shape[1], requires_grad=True)
    opt = torch.optim.SGD([w], lr=lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(epochs * 0.5), int(epochs * 0.75)])
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    # The paper initialises like torch's Linear; a small seeded init keeps the fit reproducible.
    with torch.no_grad():
        bound = 1.0 / x.shape[1] ** 0.5
        w.copy_((torch.rand(w.shape, generator=gen) * 2 - 1) * bound)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for s in range(0, len(x), batch_size):
            idx = order[s : s + batch_size]
            loss = F.cross_entropy(x[idx] @ w.t(), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return w.detach()


def orthogonal_projection(images: torch.Tensor, labels: torch.Tensor, *,
                          generator: torch.Generator | None = None, **fit_options: Any) -> torch.Tensor:
    """Project every training image onto the orthogonal complement of the linear class directions.

    Sandoval-Segura et al., "What Can We Learn from Unlearnable Datasets?" (NeurIPS 2023, arXiv
    2305.19254): fit :func:`fit_linear_directions`, orthonormalise the K weight vectors (QR), and
    subtract each image's component in their span. Returns float32 ``[B, C, H, W]`` in 0..255 units,
    not clipped (the paper trains on the projected floats). Only the training set is projected.
    """
    w = fit_linear_directions(images, labels, generator=generator, **fit_options)
    q, _ = torch.linalg.qr((w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)).t())  # [D, K], orthonormal
    x = images.to(torch.float32).flatten(1)
    return (x - (x @ q) @ q.t()).view(images.shape)


# ---------------------------------------------------------------------------- RSK + FF against CUDA
def random_sharpen(x: torch.Tensor, center: float, generator: torch.Generator, *, std: float = 0.1) -> torch.Tensor:
    """Random sharpening kernels, one per image (Kim & Sandoval-Segura 2024, arXiv 2411.01742).

    A cross-shaped 3x3 kernel: centre ~ N(center, 0.1), each of the four neighbours ~
    N(-(c - 1) / 4, 0.1) around the drawn centre c, the corners 0, the same kernel on every
    channel, then clipped to [0, 1]. The paper convolves without padding (32 -> 30 px and the crop
    pads back); here the border is replicated so the image keeps its size.
    """
    b, c = x.shape[:2]
    centre = center + std * torch.randn(b, generator=generator)
    neigh = (centre - 1).view(b, 1) / 4 + std * torch.randn(b, 4, generator=generator)
    k = torch.zeros(b, 3, 3)
    k[:, 1, 1] = centre
    k[:, 0, 1], k[:, 1, 0], k[:, 1, 2], k[:, 2, 1] = (-neigh).unbind(1)
    weight = k.to(x.device, x.dtype).repeat_interleave(c, 0).unsqueeze(1)  # [B*C, 1, 3, 3]
    xp = F.pad(x.reshape(1, b * c, *x.shape[2:]), (1, 1, 1, 1), mode="replicate")
    return F.conv2d(xp, weight, groups=b * c).view_as(x).clamp_(0, 1)


def _dct_matrix(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # Orthonormal DCT-II: row k is the k-th cosine basis vector; its transpose is the inverse.
    i = torch.arange(n, dtype=torch.float64)
    m = torch.cos(torch.pi * (2 * i.view(1, -1) + 1) * i.view(-1, 1) / (2 * n)) * (2.0 / n) ** 0.5
    m[0] /= 2 ** 0.5
    return m.to(device, dtype)


def lowpass_dct(x: torch.Tensor, keep: float) -> torch.Tensor:
    """Keep the lowest ``keep`` percent of 2-D DCT rows and columns of each channel, zero the rest,
    invert, clip to [0, 1] (the "FF" step of arXiv 2411.01742; 30% by default there)."""
    h, w = x.shape[-2:]
    rows, cols = max(1, int(h * keep / 100)), max(1, int(w * keep / 100))
    dh, dw = _dct_matrix(h, x.device, x.dtype), _dct_matrix(w, x.device, x.dtype)
    coef = dh @ x @ dw.t()
    mask = torch.zeros(h, w, device=x.device, dtype=x.dtype)
    mask[:rows, :cols] = 1
    return (dh.t() @ (coef * mask) @ dw).clamp_(0, 1)


# ---------------------------------------------------------------------------- UEraser
def plasma(shape: tuple[int, int, int], roughness: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Fractal noise in [0, 1], one ``[H, W]`` map per entry of ``roughness`` (``[B]``).

    Simplified plasma: octaves of bilinearly upsampled uniform noise, octave ``o`` weighted by
    ``roughness ** o``, then min-max normalised per map. Kornia's plasma (used by UEraser) is the
    diamond-square algorithm; both give smooth maps whose high-frequency share grows with roughness.
    """
    b, h, w = shape
    size = max(h, w)
    out = torch.zeros(b, 1, h, w)
    octave, cells = 0, 2
    while cells <= size:
        grid = torch.rand(b, 1, cells + 1, cells + 1, generator=generator)
        up = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=True)
        out += roughness.view(b, 1, 1, 1) ** octave * up
        octave, cells = octave + 1, cells * 2
    lo = out.flatten(1).amin(1).view(b, 1, 1, 1)
    hi = out.flatten(1).amax(1).view(b, 1, 1, 1)
    return ((out - lo) / (hi - lo).clamp_min(1e-6)).squeeze(1)


def ueraser_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One UEraser draw per image of a float batch in [0, 1] (Qin et al. 2023, arXiv 2303.15127).

    The paper's kornia pipeline, in order: plasma brightness (roughness U(0.1, 0.7), intensity
    U(0, 1), always), plasma contrast (roughness U(0.1, 0.7), always), channel shuffle (p = 0.5)
    and TrivialAugment (one random op at a random magnitude). Equal: the ops, their order, the
    probabilities and ranges. Simplified: the plasma maps (:func:`plasma`, octave noise instead of
    diamond-square); brightness adds ``intensity * (plasma - 0.5)`` and contrast scales the
    deviation from the image mean by ``2 * plasma`` (our reading of the kornia ops); TrivialAugment
    is torchvision's ``TrivialAugmentWide`` on the 8-bit image.
    """
    from torchvision.transforms import v2

    b, c, h, w = x.shape
    dev = x.device
    x = x.cpu()
    rough_b = 0.1 + 0.6 * torch.rand(b, generator=generator)
    intensity = torch.rand(b, generator=generator).view(b, 1, 1, 1)
    x = (x + intensity * (plasma((b, h, w), rough_b, generator).unsqueeze(1) - 0.5)).clamp_(0, 1)
    rough_c = 0.1 + 0.6 * torch.rand(b, generator=generator)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * 2 * plasma((b, h, w), rough_c, generator).unsqueeze(1) + mean).clamp_(0, 1)
    if c > 1:
        shuffle = torch.rand(b, generator=generator) < 0.5
        perms = torch.stack([torch.randperm(c, generator=generator) for _ in range(b)])
        idx = torch.where(shuffle.view(b, 1), perms, torch.arange(c).view(1, c))
        x = torch.gather(x, 1, idx.view(b, c, 1, 1).expand_as(x))
    # TrivialAugment draws from python's/torch's global RNG: seed it from ours so runs repeat.
    trivial = v2.TrivialAugmentWide()
    u8 = (x * 255).round_().to(torch.uint8)
    state = torch.get_rng_state()
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    try:
        u8 = torch.stack([trivial(img) for img in u8])
    finally:
        torch.set_rng_state(state)
    return u8.to(torch.float32).div_(255).to(dev)


__all__ = ["Defence", "DefenceError", "bit_depth_reduce", "cutmix", "cutout", "fit_linear_directions", "jpeg",
           "lowpass_dct", "mixup", "orthogonal_projection", "parse_defence", "pgd", "plasma", "random_sharpen",
           "to_grayscale", "ueraser_augment"]
