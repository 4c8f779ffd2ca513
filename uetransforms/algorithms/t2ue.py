"""``t2ue``: unlearnable noise generated from text (T2UE, "Text-to-Unlearnable Example", 2025).

A generator ``G(text embedding, z)`` outputs a perturbation bounded by ``epsilon`` (L-inf,
``epsilon * tanh``). It is trained once, with images, by *error minimisation* through a frozen
CLIP: perturbed images must match their own texts under a symmetric InfoNCE loss (paper Eq. 4),
so the noise becomes a text-keyed shortcut. Afterwards noise needs only text.

Two variants:

* **zero contact** (the paper's point): :func:`train_generator` trains the generator once on a
  *public* image-caption corpus and saves it (safetensors + the CLIP text encoder's identity);
  the protected set's bank then comes from its text alone: :func:`bank_from_text` (reads only
  the class names or the caption/id columns), :func:`text_bank` (plain lists of texts), or
  ``ue.fit("t2ue", ds, generator="g.safetensors")``. Nobody needs to see the pictures.
* **protector data** (``ue.fit("t2ue", ds)`` without ``generator``): the generator is trained on
  the protector's own images paired with their prompts or captions, then makes their bank.

Granularity (``mode``):

* ``"class"``: one text per class, ``template.format(class_name)`` (class names from the
  ``ClassLabel`` feature or ``class_names=``), and one fixed ``z`` per class; keyed by class.
* ``"sample"``: each image's caption (``caption_column``) and a per-sample ``z`` drawn from the
  secret seed and the sample's id; keyed by sample id.

The ``z`` seeds derive from the fit ``seed``, which stays in ``bank.params`` (the bank is the
secret).

The generator (:class:`TextNoiseGenerator`) follows the paper: FC(z) -> 4x4x``channels`` (512),
up-sampling residual blocks whose BatchNorm is scaled and shifted by MLPs of the text embedding
under a predicted spatial mask (SSA-GAN's SSACN/SSCBN), then a conv and ``tanh``; AdamW (lr 1e-4)
with a cosine schedule, batch 128. Scaled by options: ``channels``/``n_blocks`` (capacity; the
noise is made at the data's size, the paper's 7 blocks reach 512 px for 224 px images) and
``epochs`` (the paper trains 300-500; the default 1 is a CPU-sized run).

What differs from the paper (deliberate): the budget is applied in pixel space ([0, 1] images,
added, clamped, then CLIP-normalised), as the method notes recommend; class-wise batches hold
several images per prompt, so InfoNCE counts every image of the same text as a positive.

Surrogate: ``surrogate="clip:ViT-B-16", weights="openai"`` by default (the paper's best); needs the
network once, or ``checkpoint=<local weights>``. Random weights are refused unless
``allow_random_surrogate=True`` (a random CLIP's prompt embeddings are almost parallel).

Example:
    >>> from uetransforms.algorithms import t2ue
    >>> net, info = t2ue.train_generator(public_corpus, caption_column="caption",
    ...                                  path="public.generator.safetensors")  # doctest: +SKIP
    >>> bank = t2ue.bank_from_text(private_ds, "public.generator.safetensors", seed=1234)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.bank import NoiseBank
from ..models.clip import file_sha256
from ..core.data import DataError, FitData
from ..core.kernels import sample_seed
from . import Choice, Flag, Free, Method, Number, Param

METHOD = Method(
    key="t2ue",
    paper="T2UE: unlearnable examples from text descriptions (2025)",
    citation="X. Ma, H. Huang, T. Song, Y. Sun, Y. Gao, Y.-G. Jiang, T2UE: Generating Unlearnable Examples from "
             "Text Descriptions, arXiv:2508.03091, 2025",
    keyed_by="class/sample",
    needs="a CLIP surrogate (open_clip) and class names or captions; zero contact: a generator trained elsewhere",
    kind="additive",
    summary="a text-conditioned generator trained by error-minimising InfoNCE; noise from text only",
    label_free=True,  # sample-wise mode needs captions, not labels; class-wise mode checks for labels
    order=30,
    params=(
        Param("generator", None, Free("a generator file written by t2ue.train_generator, or None"),
              help="zero contact: make the noise from text with this generator (trained elsewhere); None: train "
                   "one on the protector's images"),
        Param("surrogate", "clip:ViT-B-16", Free("'clip:<open_clip model>'"), paper="clip:ViT-B-16",
              help="the frozen CLIP (image and text towers)"),
        Param("weights", "default", Free("an open_clip tag, 'default' (openai), or None"), paper="openai",
              help="CLIP weights by tag (downloads once); None: random init (needs allow_random_surrogate)"),
        Param("checkpoint", None, Free("a local CLIP checkpoint file or None"), help="load the CLIP from this file"),
        Param("allow_random_surrogate", False, Flag(), help="permit a random-init CLIP (weak); marked in the bank"),
        Param("init_seed", 0, Number(integer=True), help="seed of a random-init CLIP"),
        Param("mode", "class", Choice(("class", "sample")), public=True,
              help="'class' (class names through template) or 'sample' (captions from caption_column)"),
        Param("template", "a photo of a {}.", Free("a string with {} for the class name"),
              help="prompt of each class in mode='class'"),
        Param("class_names", None, Free("a list of strings or None"),
              help="override the label feature's class names"),
        Param("caption_column", None, Free("a column name or None"), help="column of captions (mode='sample')"),
        Param("epsilon", 8 / 255, Number(0, 1, lo_open=True), paper=8 / 255, public=True, budget="linf",
              help="L-inf budget in [0, 1] pixel units"),
        Param("epochs", 1.0, Number(0, lo_open=True), paper=300, public=True,
              help="passes over the training images (the paper's 300-500 are GPU-sized)"),
        Param("batch_size", 128, Number(1, integer=True), paper=128, help="images per step"),
        Param("lr", 1e-4, Number(0, lo_open=True), paper=1e-4, help="AdamW learning rate (cosine schedule)"),
        Param("weight_decay", 1e-2, Number(0), help="AdamW weight decay"),
        Param("z_dim", 128, Number(1, integer=True), paper=128, help="size of the Gaussian seed z"),
        Param("channels", 512, Number(8, integer=True), paper=512, help="generator width at 4x4 (FC(z) -> 4x4xC)"),
        Param("cond_dim", 256, Number(1, integer=True), help="hidden width of the text-conditioning MLPs"),
        Param("n_blocks", None, Number(1, 7, integer=True, none=True), paper=7,
              help="up-sampling blocks (None: enough to reach the images' size)"),
        Param("generator_path", None, Free("a file path or None"),
              help="save the trained generator here (safetensors) to make noise from new texts later"),
    ),
)

GENERATOR_FORMAT = "uetransforms.t2ue.generator/2"  # /2: the paper-style generator (SSCBN blocks)


# ----------------------------------------------------------------------------- generator
class _SSCBN(nn.Module):
    """Semantic-spatial conditional BatchNorm (SSA-GAN's SSCBN, which T2UE's generator uses).

    ``BN(h) * (1 + m * gamma(t)) + m * beta(t)``: BatchNorm without its own affine, then a scale and
    shift predicted from the text embedding by small MLPs, applied where a mask ``m`` predicted from
    the features (1x1 conv + sigmoid) says. ``gamma``/``beta`` start at zero, so the block starts
    as plain BatchNorm and the text's influence is learnt.
    """

    def __init__(self, channels: int, text_dim: int, hidden: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gamma = nn.Sequential(nn.Linear(text_dim, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        self.beta = nn.Sequential(nn.Linear(text_dim, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        self.mask = nn.Conv2d(channels, 1, 1)
        for mlp in (self.gamma, self.beta):
            nn.init.zeros_(mlp[2].weight)
            nn.init.zeros_(mlp[2].bias)

    def forward(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        m = torch.sigmoid(self.mask(h))
        g = self.gamma(t)[:, :, None, None]
        b = self.beta(t)[:, :, None, None]
        return self.bn(h) * (1 + m * g) + m * b


class _SSACNBlock(nn.Module):
    """Up-sample x2, then two (SSCBN, ReLU, 3x3 conv) stages, plus a (1x1 conv) shortcut."""

    def __init__(self, cin: int, cout: int, text_dim: int, hidden: int) -> None:
        super().__init__()
        self.n1 = _SSCBN(cin, text_dim, hidden)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.n2 = _SSCBN(cout, text_dim, hidden)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(h, scale_factor=2, mode="nearest")
        y = self.c1(F.relu(self.n1(up, t)))
        y = self.c2(F.relu(self.n2(y, t)))
        return y + self.skip(up)


#: SSA-GAN's width multipliers (x ngf) for its 7 up-sampling blocks; fewer blocks keep the last ones,
#: so the high-resolution blocks stay narrow.
_MULTS = (8, 8, 8, 8, 4, 2, 1)


class TextNoiseGenerator(nn.Module):
    """T2UE's generator: ``G(text_emb, z) -> [B, C, H, W]`` in ``[-1, 1]`` (times epsilon = the noise).

    FC(z) -> ``4 x 4 x channels``, then up-sampling SSACN blocks conditioned on the (L2-normalised)
    text embedding through :class:`_SSCBN`, then BN, ReLU, a 3x3 conv and ``tanh``. The paper (after
    SSA-GAN): ``z_dim=128``, ``channels=512`` (ngf 64), 7 blocks to 512 px resized to 224.

    Args:
        text_dim: size of the text embedding.
        z_dim: size of the Gaussian seed ``z``.
        channels: width at 4x4 (paper 512); block ``i`` has ``channels / 8 * mult_i`` channels.
        out_size: ``(H, W)`` of the noise; the net works at the next power-of-two multiple of 4 and
            resizes (bilinear: a convex combination, so the bound holds).
        out_channels: image channels.
        cond_dim: hidden width of the text MLPs.
        n_blocks: up-sampling blocks (default: enough to reach ``out_size``).

    Normalisation is BatchNorm: batch statistics while training, running statistics once in
    ``eval()`` (noise generation), so a text's noise never depends on its batch-mates.
    """

    def __init__(self, text_dim: int, *, z_dim: int = 128, channels: int = 512, out_size: Sequence[int] = (32, 32),
                 out_channels: int = 3, cond_dim: int = 256, n_blocks: int | None = None) -> None:
        super().__init__()
        side = max(int(s) for s in out_size)
        n_up = int(n_blocks) if n_blocks is not None else max(1, math.ceil(math.log2(max(side, 8) / 4)))
        if not 1 <= n_up <= len(_MULTS):
            raise ValueError(f"n_blocks={n_up} must be between 1 and {len(_MULTS)}")
        self.config = {"text_dim": int(text_dim), "z_dim": int(z_dim), "channels": int(channels),
                       "out_size": [int(s) for s in out_size], "out_channels": int(out_channels),
                       "cond_dim": int(cond_dim), "n_blocks": n_up}
        ngf = max(1, int(channels) // 8)
        mults = _MULTS[len(_MULTS) - n_up:]
        widths = [int(channels)] + [ngf * m for m in mults]
        self.fc = nn.Linear(z_dim, 16 * widths[0])
        self.blocks = nn.ModuleList([_SSACNBlock(widths[i], widths[i + 1], text_dim, cond_dim) for i in range(n_up)])
        self.out_bn = nn.BatchNorm2d(widths[-1])
        self.to_img = nn.Conv2d(widths[-1], out_channels, 3, padding=1)
        self.width0 = widths[0]

    def forward(self, text_emb: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        t = F.normalize(text_emb.float(), dim=-1)
        h = self.fc(z).view(-1, self.width0, 4, 4)
        for blk in self.blocks:
            h = blk(h, t)
        y = torch.tanh(self.to_img(F.relu(self.out_bn(h))))
        size = tuple(self.config["out_size"])
        if tuple(y.shape[-2:]) != size:
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        return y


def z_for(seed_value: int, z_dim: int) -> torch.Tensor:
    """The Gaussian seed ``z`` for one 63-bit seed value (CPU generator: same on every device)."""
    return torch.randn(z_dim, generator=torch.Generator().manual_seed(int(seed_value)))


def class_z_seed(seed: int, key: int) -> int:
    return sample_seed(seed, f"t2ue-class:{int(key)}")


def sample_z_seed(seed: int, sample_id: str) -> int:
    return sample_seed(seed, f"t2ue-sample:{sample_id}")


# ----------------------------------------------------------------------------- training
def _surrogate(surrogate: str, weights: str | None, checkpoint: str | os.PathLike | None, allow_random: bool,
               init_seed: int, device: torch.device) -> Any:
    from ..models import encoders

    if not surrogate.startswith("clip:"):
        raise ValueError(f"t2ue needs a CLIP surrogate (image and text towers): surrogate='clip:<open_clip model>', "
                         f"got {surrogate!r}")
    return encoders.load(surrogate, weights=weights, checkpoint=checkpoint, allow_random_surrogate=allow_random,
                         init_seed=init_seed, device=device)


def _column(ds: Any, name: str) -> list[Any]:
    cols = list(ds) if isinstance(ds, dict) else list(getattr(ds, "column_names", []))
    if name not in cols:
        raise DataError(f"column {name!r} is not in this dataset (columns: {cols})")
    return list(ds[name])


def _class_prompts(names: Sequence[str] | None, template: str) -> list[str]:
    if not names:
        raise DataError("t2ue mode='class' needs class names: use a ClassLabel label column or pass class_names=[...]")
    if "{}" not in template:
        raise ValueError(f"template={template!r} must contain '{{}}' where the class name goes")
    return [template.format(n) for n in names]


def _texts_for(data: FitData, mode: str, template: str, class_names: Sequence[str] | None,
               caption_column: str | None) -> tuple[list[str], np.ndarray]:
    """Unique texts and, for every image, the index of its text (protector-data training)."""
    if mode == "class":
        if data.label_column is None:
            raise DataError("t2ue mode='class' pairs images with their class prompt: pass label_column=<labels> "
                            "(or use mode='sample' with caption_column=<captions>)")
        names = list(class_names) if class_names is not None else data.class_names
        prompts = _class_prompts(names, template)
        labels = data.labels
        if labels.max() >= len(prompts):
            raise DataError(f"label {int(labels.max())} has no class name ({len(prompts)} names given)")
        return prompts, labels.astype(np.int64)
    if caption_column is None:
        raise DataError("t2ue mode='sample' needs caption_column=<column of captions>")
    caps = [str(c) for c in _column(data.dataset, caption_column)]
    uniq = sorted(set(caps))
    pos = {c: i for i, c in enumerate(uniq)}
    return uniq, np.asarray([pos[c] for c in caps], dtype=np.int64)


def _info_nce(img: torch.Tensor, txt: torch.Tensor, tidx: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over the batch's distinct texts; images sharing a text are all positives."""
    uniq, inv = torch.unique(tidx, return_inverse=True)
    t = F.normalize(txt[uniq], dim=-1)
    logits = scale * F.normalize(img, dim=-1) @ t.T  # [B, U]
    i2t = F.cross_entropy(logits, inv)
    pos = F.one_hot(inv, len(uniq)).T.float()  # [U, B]
    t2i = -(pos * F.log_softmax(logits.T, dim=1)).sum(1).div(pos.sum(1)).mean()
    return 0.5 * (i2t + t2i)


def _encode_texts(surrogate: Any, texts: Sequence[str], batch: int = 256) -> torch.Tensor:
    return torch.cat([surrogate.encode_text(list(texts[s : s + batch])) for s in range(0, len(texts), batch)]).float()


def _train(surrogate: Any, images: np.ndarray, text_emb: torch.Tensor, tindex: np.ndarray, *, epsilon: float,
           epochs: float, batch_size: int, lr: float, weight_decay: float, z_dim: int, channels: int,
           cond_dim: int, n_blocks: int | None, seed: int, device: torch.device) -> tuple[TextNoiseGenerator, list[float]]:
    """The paper's loop (Eq. 4): AdamW + cosine; each step a batch of (image, text) pairs and fresh
    ``z``; ``I' = clamp(I + eps * G(t, z))``; symmetric InfoNCE of the frozen CLIP's features of
    ``I'`` against the texts' features; only ``G`` is updated (error-minimising)."""
    n, c, h, w = images.shape
    gen_rng = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        net = TextNoiseGenerator(text_emb.shape[1], z_dim=z_dim, channels=channels, out_size=(h, w),
                                 out_channels=c, cond_dim=cond_dim, n_blocks=n_blocks).to(device)
    iters = max(1, math.ceil(epochs * n / batch_size))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iters)
    x_all = torch.from_numpy(images)
    tindex_t = torch.from_numpy(tindex)
    scale = surrogate.logit_scale
    text_emb = text_emb.to(device)
    history: list[float] = []
    net.train()
    for _ in range(iters):
        rows = torch.randint(n, (min(batch_size, n),), generator=gen_rng)
        x = x_all[rows].to(device, torch.float32).div_(255)
        ti = tindex_t[rows].to(device)
        z = torch.randn(len(rows), z_dim, generator=gen_rng).to(device)
        delta = epsilon * net(text_emb[ti], z)
        loss = _info_nce(surrogate.encode_image((x + delta).clamp(0, 1)), text_emb, ti, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.append(float(loss.detach()))
    return net.eval(), history


def train_generator(
    corpus: Any,
    *,
    image_column: str = "image",
    caption_column: str = "caption",
    surrogate: str = "clip:ViT-B-16",
    weights: str | None = "default",
    checkpoint: str | os.PathLike | None = None,
    allow_random_surrogate: bool = False,
    init_seed: int = 0,
    epsilon: float = 8 / 255,
    epochs: float = 1.0,
    batch_size: int = 128,
    lr: float = 1e-4,
    weight_decay: float = 1e-2,
    z_dim: int = 128,
    channels: int = 512,
    cond_dim: int = 256,
    n_blocks: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    path: str | os.PathLike | None = None,
) -> tuple[TextNoiseGenerator, dict[str, Any]]:
    """Train T2UE's generator once on a *public* image-caption corpus (the paper's zero-contact setup).

    The images protected later are never needed: their noise comes from text alone
    (:func:`text_bank`, :func:`bank_from_text`, or ``ue.fit("t2ue", ..., generator=path)``).

    Args:
        corpus: a dataset (``datasets.Dataset``, dict of lists) with images and captions; a caption
            cell may be a string or a list of strings (one is drawn per image, as the paper does
            with MSCOCO's five).
        surrogate / weights / checkpoint: the frozen CLIP (``"clip:ViT-B-16"`` with ``"openai"``,
            the paper's best; ``checkpoint`` for local weights; see :func:`uetransforms.models.encoders.load`).
        epsilon: L-inf budget in [0, 1] units (paper 8/255).
        epochs / batch_size / lr / weight_decay: AdamW with a cosine schedule over ``epochs``
            passes (paper: 300-500 epochs, batch 128, lr 1e-4).
        z_dim / channels / cond_dim / n_blocks: generator size (paper: 128, 512, -, 7 to 512 px).
        path: write the generator here (safetensors + the surrogate's identity).

    Returns ``(generator, info)``; ``info`` holds the loss trace ends and, with ``path``, the file's sha256.
    """
    if not 0 < epsilon <= 1:
        raise ValueError(f"epsilon={epsilon} must be in (0, 1] (pixel units in [0, 1]; 8/255 is the paper's)")
    if not epochs > 0 or batch_size < 1:
        raise ValueError(f"epochs={epochs} must be > 0 and batch_size={batch_size} >= 1")
    data = corpus if isinstance(corpus, FitData) else FitData(corpus, image_column=image_column, label_column=None)
    dev = torch.device(device)
    cells = _column(data.dataset, caption_column)
    rng = np.random.default_rng(int(seed))
    caps = []
    for cell in cells:  # one caption per image, drawn once from the image's list
        if isinstance(cell, str):
            caps.append(cell)
        elif isinstance(cell, (list, tuple)) and cell and all(isinstance(c, str) for c in cell):
            caps.append(cell[int(rng.integers(len(cell)))])
        else:
            raise DataError(f"caption_column={caption_column!r} holds {type(cell).__name__} values; expected strings "
                            "or lists of strings")
    uniq = sorted(set(caps))
    pos = {c: i for i, c in enumerate(uniq)}
    tindex = np.asarray([pos[c] for c in caps], dtype=np.int64)
    sur = _surrogate(surrogate, weights, checkpoint, bool(allow_random_surrogate), int(init_seed), dev)
    text_emb = _encode_texts(sur, uniq)
    net, history = _train(sur, data.images(), text_emb, tindex, epsilon=float(epsilon), epochs=float(epochs),
                          batch_size=int(batch_size), lr=float(lr), weight_decay=float(weight_decay),
                          z_dim=int(z_dim), channels=int(channels), cond_dim=int(cond_dim), n_blocks=n_blocks,
                          seed=int(seed), device=dev)
    info: dict[str, Any] = {"surrogate": sur.identity(), "corpus_size": len(data), "unique_captions": len(uniq),
                            "iterations": len(history), "epochs": float(epochs),
                            "loss_first_last": [round(history[0], 6), round(history[-1], 6)]}
    if path is not None:
        info["generator_file"] = save_generator(net, path, surrogate=sur.identity(), epsilon=epsilon,
                                                extra={"trained_on": f"{len(data)} images, {len(uniq)} unique captions",
                                                       "schedule": json.dumps({k: info[k] for k in ("iterations", "epochs")})})
    return net, info


def bank_from_text(dataset: Any, generator: str | os.PathLike, *, seed: int, mode: str = "class",
                   label_column: str | None = "label", class_names: Sequence[str] | None = None,
                   template: str = "a photo of a {}.", caption_column: str | None = None,
                   id_column: str | None = None, device: str | torch.device = "cpu") -> NoiseBank:
    """Zero contact: the bank of ``dataset`` from its *text* alone, with a generator trained elsewhere.

    Reads only text columns: the class names (the ``label_column``'s ``ClassLabel`` names, or
    ``class_names``) in class mode, or ``caption_column`` and ``id_column`` in sample mode. No image
    of ``dataset`` is opened, so no service ever sees the pictures.
    """
    if mode == "class":
        names = list(class_names) if class_names is not None else None
        if names is None:
            feats = getattr(dataset, "features", None)
            feat = feats.get(label_column) if feats is not None and label_column is not None else None
            names = list(getattr(feat, "names", None) or []) or None
        prompts = _class_prompts(names, template)
        bank = text_bank(generator, prompts, seed=seed, keying="class", device=device)
        return _with_info(bank, template=template, class_names=list(names or []))
    if mode != "sample":
        raise ValueError(f"mode={mode!r}; expected 'class' or 'sample'")
    if caption_column is None or id_column is None:
        raise DataError("zero-contact sample-wise noise needs caption_column=<captions> and id_column=<stable ids> "
                        "(content-hash ids would read the pixels)")
    caps = [str(c) for c in _column(dataset, caption_column)]
    ids = [str(v) for v in _column(dataset, id_column)]
    if len(set(ids)) != len(ids):
        raise DataError(f"id column {id_column!r} has duplicate ids; sample-wise noise needs unique ids")
    bank = text_bank(generator, caps, seed=seed, keys=ids, keying="sample", device=device)
    return _with_info(bank, caption_column=caption_column)


def _with_info(bank: NoiseBank, **info: Any) -> NoiseBank:
    return bank.replace(info={**bank.info, **info})  # banks are immutable: a new one with the info added


@METHOD.fitter
def fit(data: FitData, *, seed: int, device: torch.device, generator: str | os.PathLike | None, surrogate: str,
        weights: str | None, checkpoint: str | os.PathLike | None, allow_random_surrogate: bool, init_seed: int,
        mode: str, template: str, class_names: Sequence[str] | None, caption_column: str | None, epsilon: float,
        epochs: float, batch_size: int, lr: float, weight_decay: float, z_dim: int, channels: int, cond_dim: int,
        n_blocks: int | None, generator_path: str | os.PathLike | None) -> NoiseBank:
    """A T2UE bank: zero contact from a trained generator, or the protector-data variant.

    Two variants:

    * ``generator=<file>`` (**zero contact**, the paper's setting): a generator trained elsewhere
      (:func:`train_generator` on a public corpus) makes the noise from the class prompts or the
      captions alone; no image of ``data`` is read (beyond the one :class:`FitData` decodes for
      the image size). The training parameters below are then unused.
    * no ``generator`` (**protector data**): the generator is trained here on the protector's own
      images paired with their prompts/captions, then makes the bank; ``generator_path`` keeps it.

    Args:
        surrogate / weights / checkpoint / allow_random_surrogate / init_seed: the frozen CLIP
            (protector-data variant; see :func:`train_generator`).
        mode: ``"class"`` (class names through ``template``) or ``"sample"`` (``caption_column``).
        template: prompt with ``{}`` for the class name.
        class_names: override the label feature's names.
        caption_column: column of captions (sample mode).
        epsilon / epochs / batch_size / lr / weight_decay / z_dim / channels / cond_dim / n_blocks:
            as :func:`train_generator`.
        generator_path: save the trained generator here (safetensors) for text-only noise later.
    """
    if generator is not None:
        bank = bank_from_text(data.dataset, generator, seed=seed, mode=mode, label_column=data.label_column,
                              class_names=class_names if class_names is not None else data.class_names,
                              template=template, caption_column=caption_column, id_column=data.id_column,
                              device=device)
        return _with_info(bank, variant="zero-contact")
    texts, tindex = _texts_for(data, mode, template, class_names, caption_column)
    sur = _surrogate(surrogate, weights, checkpoint, bool(allow_random_surrogate), int(init_seed), device)
    text_emb = _encode_texts(sur, texts)
    net, history = _train(sur, data.images(), text_emb, tindex, epsilon=float(epsilon), epochs=float(epochs),
                          batch_size=int(batch_size), lr=float(lr), weight_decay=float(weight_decay),
                          z_dim=int(z_dim), channels=int(channels), cond_dim=int(cond_dim), n_blocks=n_blocks,
                          seed=int(seed), device=device)
    c, h, w = data.image_shape
    if mode == "class":
        keys: list[Any] = list(range(len(texts)))
        seeds = [class_z_seed(seed, k) for k in keys]
        key_texts = texts
    else:
        keys = data.sample_ids
        seeds = [sample_z_seed(seed, sid) for sid in keys]
        key_texts = [texts[i] for i in tindex]
    delta = _generate(net, sur, key_texts, seeds, epsilon, device, known=dict(zip(texts, text_emb)))
    from ..models.encoders import is_random

    info: dict[str, Any] = {
        "variant": "protector-data",
        "surrogate": sur.identity(),
        "random_surrogate": is_random(sur.identity()),
        "mode": mode,
        "size_mismatch": "resize",
        "generator": net.config,
        "loss_first_last": [round(history[0], 6), round(history[-1], 6)] if history else None,
    }
    if mode == "class":
        info["template"] = template
        info["prompts"] = texts
    else:
        info["caption_column"] = caption_column
    params = {"epsilon": float(epsilon), "norm": "linf", "mode": mode, "epochs": float(epochs), "iterations": len(history),
              "batch_size": int(batch_size), "lr": float(lr), "z_dim": int(z_dim), "channels": int(channels),
              "seed": int(seed)}
    if generator_path is not None:
        info["generator_file"] = save_generator(net, generator_path, surrogate=sur.identity(), epsilon=epsilon)
    return NoiseBank(method="t2ue", kind="additive", keying="class" if mode == "class" else "sample",
                     keys=np.asarray(keys) if mode == "class" else np.asarray(keys, dtype=object),
                     tensors={"delta": delta}, params=params, image_shape=(c, h, w), info=info)


@torch.no_grad()
def _generate(net: TextNoiseGenerator, surrogate: Any, key_texts: Sequence[str], seeds: Sequence[int], epsilon: float,
              device: torch.device, *, known: dict[str, torch.Tensor] | None = None, batch: int = 256) -> np.ndarray:
    """``epsilon * G(text, z(seed))`` for each (text, seed) pair, as float32 ``[N, C, H, W]``.

    ``known`` holds text embeddings already computed (training prompts), so they are not re-encoded.
    """
    z_dim = net.config["z_dim"]
    cache: dict[str, torch.Tensor] = dict(known or {})
    missing = sorted({t for t in key_texts if t not in cache})
    for s in range(0, len(missing), 256):
        part = missing[s : s + 256]
        for t, e in zip(part, surrogate.encode_text(part).float()):
            cache[t] = e
    out = []
    for s in range(0, len(key_texts), batch):
        e = torch.stack([cache[t] for t in key_texts[s : s + batch]]).to(device)
        z = torch.stack([z_for(v, z_dim) for v in seeds[s : s + batch]]).to(device)
        d = (epsilon * net(e, z)).clamp(-epsilon, epsilon)
        out.append(d.cpu().numpy().astype(np.float32))
    return np.concatenate(out)


# ----------------------------------------------------------------------------- persistence + text-only noise
def save_generator(net: TextNoiseGenerator, path: str | os.PathLike, *, surrogate: dict[str, Any],
                   epsilon: float, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Write the generator as safetensors (tensors + JSON metadata; nothing is pickled).

    The metadata holds the generator's config, the budget and the identity of the CLIP whose text
    encoder turns texts into the generator's input (rebuilt by :func:`noise_from_text`)."""
    from safetensors.torch import save_file

    path = os.fspath(path)
    meta = {"format": GENERATOR_FORMAT, "config": json.dumps(net.config), "surrogate": json.dumps(surrogate),
            "epsilon": repr(float(epsilon)), **(extra or {})}
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, path, metadata=meta)
    return {"name": os.path.basename(path), "sha256": file_sha256(path)}


def load_generator(path: str | os.PathLike) -> tuple[TextNoiseGenerator, dict[str, Any]]:
    """Read a generator file written by :func:`save_generator`: ``(generator, metadata)``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no t2ue generator file at {path!r} (fit with generator_path=... to write one)")
    with safe_open(path, framework="pt") as fh:
        raw = fh.metadata() or {}
    if raw.get("format") != GENERATOR_FORMAT:
        raise ValueError(f"{path!r} is not a t2ue generator file (format {raw.get('format')!r})")
    config = json.loads(raw["config"])
    net = TextNoiseGenerator(config["text_dim"], z_dim=config["z_dim"], channels=config["channels"],
                             out_size=config["out_size"], out_channels=config["out_channels"],
                             cond_dim=config["cond_dim"], n_blocks=config["n_blocks"])
    net.load_state_dict(load_file(path))
    meta = {"config": config, "surrogate": json.loads(raw["surrogate"]), "epsilon": float(raw["epsilon"])}
    return net.eval(), meta


def noise_from_text(generator: str | os.PathLike | TextNoiseGenerator, texts: Sequence[str], seeds: Sequence[int], *,
                    surrogate: Any = None, epsilon: float | None = None, device: str | torch.device = "cpu") -> np.ndarray:
    """Noise ``[N, C, H, W]`` (float32, [0, 1] units) for texts and integer seeds: no image involved.

    ``generator`` is a saved generator file (its surrogate is rebuilt from the recorded identity)
    or a :class:`TextNoiseGenerator` (then pass ``surrogate`` and ``epsilon``).
    """
    if len(texts) != len(seeds):
        raise ValueError(f"{len(texts)} texts but {len(seeds)} seeds: give one seed per text")
    dev = torch.device(device)
    if isinstance(generator, TextNoiseGenerator):
        if surrogate is None or epsilon is None:
            raise ValueError("with a generator object, pass surrogate=<ClipModel> and epsilon=<budget>")
        net = generator
    else:
        net, meta = load_generator(generator)
        epsilon = meta["epsilon"] if epsilon is None else epsilon
        if surrogate is None:
            from ..models.encoders import from_identity

            surrogate = from_identity(meta["surrogate"], device=dev)
    return _generate(net.to(dev).eval(), surrogate, list(texts), list(seeds), float(epsilon), dev)


def text_bank(generator: str | os.PathLike, texts: Sequence[str], *, seed: int, keys: Sequence[Any] | None = None,
              keying: str = "class", device: str | torch.device = "cpu") -> NoiseBank:
    """A noise bank made from texts alone with a saved generator (zero contact with the images).

    ``keying="class"``: ``texts[k]`` is class ``k``'s prompt (keys default to ``0..K-1``);
    ``keying="sample"``: ``keys`` are the samples' ids (their ``id_column`` values) and ``texts``
    their captions. The z seeds follow the same rule as :func:`fit`, so the same generator, seed
    and texts give the same noise as the fitted bank.
    """
    if keying not in ("class", "sample"):
        raise ValueError(f"keying={keying!r}; expected 'class' or 'sample'")
    if keys is None:
        if keying == "sample":
            raise ValueError("keying='sample' needs keys=<the samples' ids>")
        keys = list(range(len(texts)))
    if len(keys) != len(texts):
        raise ValueError(f"{len(keys)} keys but {len(texts)} texts")
    seeds = [class_z_seed(seed, int(k)) if keying == "class" else sample_z_seed(seed, str(k)) for k in keys]
    net, meta = load_generator(generator)
    from ..models.encoders import from_identity, is_random

    surrogate = from_identity(meta["surrogate"], device=device)
    delta = noise_from_text(net, texts, seeds, surrogate=surrogate, epsilon=meta["epsilon"], device=device)
    c, h, w = meta["config"]["out_channels"], *meta["config"]["out_size"]
    info = {"surrogate": meta["surrogate"], "random_surrogate": is_random(meta["surrogate"]), "mode": keying,
            "size_mismatch": "resize", "generator": meta["config"], "from_text_only": True,
            "generator_file": {"name": os.path.basename(os.fspath(generator)),
                               "sha256": file_sha256(generator)}}
    if keying == "class":
        info["prompts"] = list(texts)
    params = {"epsilon": meta["epsilon"], "norm": "linf", "mode": keying, "seed": int(seed)}
    return NoiseBank(method="t2ue", kind="additive", keying=keying,
                     keys=np.asarray(keys) if keying == "class" else np.asarray([str(k) for k in keys], dtype=object),
                     tensors={"delta": delta}, params=params, image_shape=(c, h, w), info=info)
