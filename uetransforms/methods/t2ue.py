"""``t2ue``: unlearnable noise generated from text (T2UE, "Text-to-Unlearnable Example", 2025).

A small generator ``G(text embedding, z)`` outputs a perturbation bounded by ``epsilon`` (L-inf,
``epsilon * tanh``). It is trained once, with images, by *error minimisation* through a frozen
CLIP surrogate: perturbed images must match their own texts under a symmetric InfoNCE loss
(paper Eq. 4), so the noise becomes a text-keyed shortcut. Afterwards noise needs only text:
whoever protects images hands over class names or captions, never the pictures.

Modes:

* ``mode="class"`` (class-wise): one text per class, ``template.format(class_name)`` (class
  names from the ``ClassLabel`` feature or ``class_names=``), and one fixed ``z`` per class. The
  bank is keyed by class (``delta [K, C, H, W]``). Training pairs each image with its class's
  prompt, so this mode needs labels.
* ``mode="sample"`` (sample-wise): each image's caption (``caption_column``) and a per-sample ``z``
  drawn from the secret seed and the sample's id. The bank is keyed by sample id (the id column,
  or pixel content hashes). No labels needed.

The ``z`` seeds derive from the fit ``seed``, which stays in ``bank.params`` (the bank is the
secret). Pass ``generator_path="x.generator.safetensors"`` to keep the trained generator: a
safetensors file (tensors + JSON metadata, nothing pickled) with which :func:`noise_from_text`
and :func:`text_bank` make noise for *new* texts, without any image.

What differs from the paper (deliberate, documented):

* the generator is a compact conditional up-sampling CNN (FC from ``z`` to 4x4, residual
  up-sampling blocks whose normalisation is modulated by the text embedding, initialised to
  the identity, then a 3x3 conv and ``tanh``), made directly at the training images' size
  rather than 224 px; normalisation is per sample (GroupNorm), not BatchNorm, so a sample's
  noise never depends on its batch-mates;
* the budget is applied in pixel space ([0, 1] images, added, clamped, then CLIP-normalised);
* class-wise batches hold several images per prompt, so InfoNCE counts every image of the same
  text as a positive (text -> image direction averages over them);
* training is short (``steps``) and uses Adam with cosine decay; the paper trains 300-500 epochs.

Surrogate: ``model="ViT-B-16", pretrained="openai"`` by default (the paper's best); needs the
network once, or a local checkpoint path. ``pretrained=None`` builds a random-init CLIP, whose
text embeddings of different prompts are almost parallel and whose image tower knows nothing:
a weak surrogate, for offline experiments and tests.

Example:
    >>> import uetransforms as ue
    >>> bank = ue.fit("t2ue", ds, image_column="img", label_column="label",
    ...               template="a photo of a {}.", generator_path="cifar.generator.safetensors")  # doctest: +SKIP
    >>> from uetransforms.methods import t2ue
    >>> new = t2ue.text_bank("cifar.generator.safetensors", ["a photo of a zebra."], seed=1)  # doctest: +SKIP
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

from ..bank import NoiseBank
from ..data import DataError, FitData
from ..ops import sample_seed
from . import Choice, Free, Method, Number, Param, _common

METHOD = Method(
    key="t2ue",
    paper="T2UE: unlearnable examples from text descriptions (2025)",
    citation="X. Ma, H. Huang, T. Song, Y. Sun, Y. Gao, Y.-G. Jiang, T2UE: Generating Unlearnable Examples from "
             "Text Descriptions, arXiv:2508.03091, 2025",
    keyed_by="class/sample",
    needs="a CLIP surrogate (open_clip) and class names or captions",
    kind="additive",
    summary="a text-conditioned generator trained by error-minimising InfoNCE; noise from text only",
    label_free=True,  # sample-wise mode needs captions, not labels; class-wise mode checks for labels
    order=30,
    params=(
        *_common.clip_surrogate("ViT-B-16"),
        Param("mode", "class", Choice(("class", "sample")), public=True,
              help="'class' (class names through template) or 'sample' (captions from caption_column)"),
        Param("template", "a photo of a {}.", Free("a string with {} for the class name"),
              help="prompt of each class in mode='class'"),
        Param("class_names", None, Free("a list of strings or None"),
              help="override the label feature's class names"),
        Param("caption_column", None, Free("a column name or None"), help="column of captions (mode='sample')"),
        Param("epsilon", 8 / 255, Number(0, 1, lo_open=True), paper=8 / 255, public=True, budget="linf",
              help="L-inf budget in [0, 1] pixel units"),
        Param("steps", 300, Number(1, integer=True), public=True,
              help="AdamW steps with cosine decay (the paper trains 300-500 epochs)"),
        Param("batch_size", 64, Number(1, integer=True), help="images per step"),
        Param("lr", 1e-3, Number(0, lo_open=True), help="AdamW learning rate"),
        Param("weight_decay", 1e-4, Number(0), help="AdamW weight decay"),
        Param("z_dim", 64, Number(1, integer=True), help="size of the Gaussian seed z of the generator"),
        Param("channels", 32, Number(1, integer=True), help="generator feature width"),
        Param("generator_path", None, Free("a file path or None"),
              help="save the trained generator here (safetensors) to make noise from new texts later"),
    ),
)

_RANDOM = (None, "none", "random")
GENERATOR_FORMAT = "uetransforms.t2ue.generator/1"


# ----------------------------------------------------------------------------- generator
class _TextModulatedNorm(nn.Module):
    """Per-sample normalisation whose scale and shift come from the text embedding (identity at init)."""

    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(1, channels, affine=False)
        self.gamma = nn.Linear(cond_dim, channels)
        self.beta = nn.Linear(cond_dim, channels)
        for lin in (self.gamma, self.beta):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        g = self.gamma(cond)[:, :, None, None]
        b = self.beta(cond)[:, :, None, None]
        return self.norm(h) * (1 + g) + b


class _UpBlock(nn.Module):
    def __init__(self, cin: int, cout: int, cond_dim: int) -> None:
        super().__init__()
        self.n1 = _TextModulatedNorm(cin, cond_dim)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.n2 = _TextModulatedNorm(cout, cond_dim)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(h, scale_factor=2, mode="nearest")
        y = self.c1(F.relu(self.n1(up, cond)))
        y = self.c2(F.relu(self.n2(y, cond)))
        return y + self.skip(up)


class TextNoiseGenerator(nn.Module):
    """``G(text_emb, z) -> [B, C, H, W]`` in ``[-1, 1]`` (multiply by epsilon for the noise).

    Args:
        text_dim: size of the (L2-normalised) CLIP text embedding.
        z_dim: size of the Gaussian seed ``z``.
        channels: feature width of the up-sampling blocks.
        out_size: ``(H, W)`` of the noise; the net works at the next power-of-two multiple of 4
            and resizes (bilinear: a convex combination, so the bound holds).
        out_channels: image channels.
    """

    def __init__(self, text_dim: int, *, z_dim: int = 64, channels: int = 64, out_size: Sequence[int] = (32, 32),
                 out_channels: int = 3, cond_dim: int = 128) -> None:
        super().__init__()
        self.config = {"text_dim": int(text_dim), "z_dim": int(z_dim), "channels": int(channels),
                       "out_size": [int(s) for s in out_size], "out_channels": int(out_channels),
                       "cond_dim": int(cond_dim)}
        side = max(out_size)
        n_up = max(1, math.ceil(math.log2(max(side, 8) / 4)))
        # A small MLP on the text embedding: CLIP embeddings of different prompts can be nearly
        # parallel (always so for a random-init CLIP), and it learns to pull their differences apart.
        self.text_mlp = nn.Sequential(nn.Linear(text_dim, cond_dim), nn.ReLU(), nn.Linear(cond_dim, cond_dim))
        self.fc = nn.Linear(z_dim + cond_dim, channels * 16)
        self.blocks = nn.ModuleList([_UpBlock(channels, channels, cond_dim) for _ in range(n_up)])
        self.out_norm = _TextModulatedNorm(channels, cond_dim)
        self.to_img = nn.Conv2d(channels, out_channels, 3, padding=1)
        self.channels = channels

    def forward(self, text_emb: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        cond = self.text_mlp(F.normalize(text_emb.float(), dim=-1))
        h = self.fc(torch.cat([z, cond], dim=1)).view(-1, self.channels, 4, 4)
        for blk in self.blocks:
            h = blk(h, cond)
        y = torch.tanh(self.to_img(F.relu(self.out_norm(h, cond))))
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
def _surrogate(model: str, pretrained: str | None, init_seed: int | None, device: torch.device):
    from .. import clip

    return clip.load(model, None if pretrained in _RANDOM else pretrained, device=device, init_seed=init_seed)


def _texts_for(data: FitData, mode: str, template: str, class_names: Sequence[str] | None,
               caption_column: str | None) -> tuple[list[str], np.ndarray]:
    """Unique texts and, for every image, the index of its text."""
    if mode == "class":
        if data.label_column is None:
            raise DataError("t2ue mode='class' pairs images with their class prompt: pass label_column=<labels> "
                            "(or use mode='sample' with caption_column=<captions>)")
        names = list(class_names) if class_names is not None else data.class_names
        if not names:
            raise DataError("t2ue mode='class' needs class names: use a ClassLabel label column or pass class_names=[...]")
        if "{}" not in template:
            raise ValueError(f"template={template!r} must contain '{{}}' where the class name goes")
        labels = data.labels
        if labels.max() >= len(names):
            raise DataError(f"label {int(labels.max())} has no class name ({len(names)} names given)")
        return [template.format(n) for n in names], labels.astype(np.int64)
    if caption_column is None:
        raise DataError("t2ue mode='sample' needs caption_column=<column of captions>")
    ds = data.dataset
    cols = list(ds) if isinstance(ds, dict) else list(getattr(ds, "column_names", []))
    if caption_column not in cols:
        raise DataError(f"caption_column={caption_column!r} is not a column (columns: {cols})")
    caps = [str(c) for c in ds[caption_column]]
    uniq = sorted(set(caps))
    pos = {c: i for i, c in enumerate(uniq)}
    return uniq, np.asarray([pos[c] for c in caps], dtype=np.int64)


def _info_nce(img: torch.Tensor, txt: torch.Tensor, tidx: torch.Tensor, scale: float) -> torch.Tensor:
    """Symmetric InfoNCE over the batch's distinct texts; images sharing a text are all positives."""
    uniq, inv = torch.unique(tidx, return_inverse=True)
    t = F.normalize(txt[uniq], dim=-1)
    logits = scale * F.normalize(img, dim=-1) @ t.T  # [B, U]
    i2t = F.cross_entropy(logits, inv)
    pos = F.one_hot(inv, len(uniq)).T.float()  # [U, B]
    t2i = -(pos * F.log_softmax(logits.T, dim=1)).sum(1).div(pos.sum(1)).mean()
    return 0.5 * (i2t + t2i)


@METHOD.fitter
def fit(data: FitData, *, seed: int, device: torch.device, model: str, pretrained: str | None,
        init_seed: int | None, mode: str, template: str, class_names: Sequence[str] | None,
        caption_column: str | None, epsilon: float, steps: int, batch_size: int, lr: float, weight_decay: float,
        z_dim: int, channels: int, generator_path: str | os.PathLike | None) -> NoiseBank:
    """Train the text-to-noise generator on ``data`` and return the noise bank it makes.

    Args:
        model / pretrained / init_seed: the frozen open_clip surrogate (see :func:`uetransforms.clip.load`).
        mode: ``"class"`` (class names through ``template``) or ``"sample"`` (``caption_column``).
        template: prompt with ``{}`` for the class name.
        class_names: override the label feature's names.
        caption_column: column of captions (sample mode).
        epsilon: L-inf budget in [0, 1] units (paper: 8/255).
        steps / batch_size / lr / weight_decay: AdamW steps with cosine decay.
        z_dim / channels: generator size.
        generator_path: save the trained generator here (safetensors) for text-only noise later.
    """
    texts, tindex = _texts_for(data, mode, template, class_names, caption_column)
    surrogate = _surrogate(model, pretrained, init_seed, device)
    text_emb = torch.cat([surrogate.encode_text(texts[s : s + 256]) for s in range(0, len(texts), 256)]).float()
    c, h, w = data.image_shape
    gen_rng = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        net = TextNoiseGenerator(text_emb.shape[1], z_dim=z_dim, channels=channels, out_size=(h, w),
                                 out_channels=c).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, int(steps)))
    images = torch.from_numpy(data.images())
    tindex_t = torch.from_numpy(tindex)
    scale = surrogate.logit_scale
    n = len(images)
    history: list[float] = []
    net.train()
    for _ in range(int(steps)):
        rows = torch.randint(n, (min(batch_size, n),), generator=gen_rng)
        x = images[rows].to(device, torch.float32).div_(255)
        ti = tindex_t[rows].to(device)
        z = torch.randn(len(rows), z_dim, generator=gen_rng).to(device)
        delta = epsilon * net(text_emb[ti], z)
        feats = surrogate.encode_image((x + delta).clamp(0, 1))
        loss = _info_nce(feats, text_emb, ti, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.append(float(loss.detach()))
    net.eval()

    if mode == "class":
        keys: list[Any] = list(range(len(texts)))
        seeds = [class_z_seed(seed, k) for k in keys]
        key_texts = texts
    else:
        keys = data.sample_ids
        seeds = [sample_z_seed(seed, sid) for sid in keys]
        key_texts = [texts[i] for i in tindex]
    delta = _generate(net, surrogate, key_texts, seeds, epsilon, device, known=dict(zip(texts, text_emb)))
    info: dict[str, Any] = {
        "surrogate": surrogate.identity(),
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
    params = {"epsilon": float(epsilon), "norm": "linf", "mode": mode, "steps": int(steps), "batch_size": int(batch_size),
              "lr": float(lr), "z_dim": int(z_dim), "channels": int(channels), "seed": int(seed)}
    if generator_path is not None:
        info["generator_file"] = save_generator(net, generator_path, surrogate=surrogate.identity(), epsilon=epsilon)
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
                   epsilon: float) -> dict[str, str]:
    """Write the generator as safetensors (tensors + JSON metadata; nothing is pickled)."""
    from safetensors.torch import save_file

    from ..clip import file_sha256

    path = os.fspath(path)
    meta = {"format": GENERATOR_FORMAT, "config": json.dumps(net.config), "surrogate": json.dumps(surrogate),
            "epsilon": repr(float(epsilon))}
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
                             cond_dim=config["cond_dim"])
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
            from ..clip import from_identity

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
    from ..clip import from_identity

    surrogate = from_identity(meta["surrogate"], device=device)
    delta = noise_from_text(net, texts, seeds, surrogate=surrogate, epsilon=meta["epsilon"], device=device)
    c, h, w = meta["config"]["out_channels"], *meta["config"]["out_size"]
    info = {"surrogate": meta["surrogate"], "mode": keying, "size_mismatch": "resize", "generator": meta["config"],
            "from_text_only": True}
    if keying == "class":
        info["prompts"] = list(texts)
    params = {"epsilon": meta["epsilon"], "norm": "linf", "mode": keying, "seed": int(seed)}
    return NoiseBank(method="t2ue", kind="additive", keying=keying,
                     keys=np.asarray(keys) if keying == "class" else np.asarray([str(k) for k in keys], dtype=object),
                     tensors={"delta": delta}, params=params, image_shape=(c, h, w), info=info)
