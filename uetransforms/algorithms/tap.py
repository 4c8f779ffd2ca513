"""Targeted adversarial poisoning through a frozen pretrained backbone (``tap``): noise that binds each
class to a *wrong* class in a pretrained model's feature space.

Why: additive and convolution shortcuts are learned by a network trained from scratch, but an
attacker who starts from pretrained weights (a linear probe on frozen features, or fine-tuning)
leans on the features it already has and ignores them ("When Priors Backfire", arXiv 2603.04731).
Noise that survives such an attacker has to move the *features* themselves. This method does what
"Adversarial Examples Make Strong Poisons" (Fowl et al., NeurIPS 2021) does, with BAIT's binding of
perturbations to incorrect targets (same ICLR 2026 paper) and a pretrained model as the crafting
network:

1. a pretrained backbone (``backbone=``, any :func:`uetransforms.models.backbones.load_backbone`
   spec) stays frozen; a logistic-regression head is fitted on its features of the *clean*
   images with their labels (the protector's own linear probe);
2. every class ``y`` is bound to a target ``pi(y) != y`` (a derangement drawn from the secret seed);
3. PGD (``steps`` signed steps of ``step_size``, random start, a random horizontal flip per step so
   the noise survives the attacker's flips) *minimises* the cross-entropy towards ``pi(y)``
   within the L-inf ball ``epsilon``: each image is made to look like its target class to the
   pretrained model (``mode="sample"``), or one pattern per class does it for all its images
   (``mode="class"``, a class-wise universal perturbation: gradients summed over the class).

An attacker who trains on the protected set with the true labels learns "features of ``pi(y)``
-> label ``y``"; on clean test images of class ``pi(y)`` it then answers ``y``. Transfer is the
whole question: fit with a backbone that is *not* the attacker's (other weights, other data,
ideally another architecture) and measure (``benchmarks/RESULTS.md``, "Pretrained attackers").

The bank is additive, keyed by sample id (or class), quantised to whole grey levels as ``em``'s,
inside the pixel box. Parameters: ``epsilon`` (8/255), ``norm`` ("linf"), ``backbone`` (default
``"tv:resnet18@IMAGENET1K_V1"``: torchvision's cache or a download; offline pass a local
checkpoint; several specs, as a list or joined by ``+``, craft through an ensemble: the mean
cross-entropy of the members, each with its own probe), ``mode`` ("sample"), ``augment`` ("flip";
"flip+crop" also shifts each image by up to 1/8 of its side at every step, as the attacker's random
crop does; "flip+crop+coin" then also re-reads every pixel at a random offset of up to 2 px, COIN's
defence), ``grid`` (1: one value per pixel; ``g`` > 1 makes the noise constant on ``g x g`` blocks, PGD
then works on the coarse values; ``"auto"``: ``round(shorter side / 32)``, the scale of a 32-px image's
pixel on photos upscaled from it), ``steps`` (20), ``step_size`` (epsilon/4), ``batch_size`` (128),
``progress``.

Why ``grid``: a network that reads a photo-size image shrinks it in its stem (a stride-3 first
convolution in the harness's 96-px ``cnn-small``, a stride-2 convolution and a max-pool in a ResNet), so
noise that changes from one pixel to the next is largely averaged away before anything learns from it;
blocks survive. Measured at 96 px (CIFAR-10 upscaled from 32 px, ``cudatap``, 5000 rows; RESULTS.md, "96
px through a surrogate and an attacker that read 96 px (session 14)"): through a small CNN reading the
images shrunk to 32 px, ``grid="auto"`` (3) gives 0.31-0.50x clean from scratch over three keys, where
the per-pixel noise gives 0.73x; through a small CNN reading them at 96 px, 0.68x against 0.68-0.77x. At
64 px (``grid`` 2) it protects as the per-pixel noise does (0.18x / 0.34x from scratch / fine-tuned, against
0.23x / 0.30x). The default stays 1 (the paper's), the setting the 224-px rows were measured with.
``bank.info`` records the backbone's identity (a list for an ensemble), the head's clean train
accuracy and the share of perturbed images the crafting model assigns to their target
(``target_hit_rate``, without augmentation; an ensemble votes by summed probabilities).

The PGD itself is :func:`craft`, which ``cudatap`` reuses on the convolved images.

Example:
    >>> import numpy as np, torch, uetransforms as ue
    >>> from uetransforms.models.encoders import save_small_cnn
    >>> from uetransforms.models.networks import SmallCNN
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "bb.safetensors")
    >>> _ = save_small_cnn(SmallCNN(10, 3, width=8), path)
    >>> rng = np.random.default_rng(0)
    >>> ds = {"image": list(rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)), "label": [0, 1] * 4}
    >>> bank = ue.fit("tap", ds, backbone=path, steps=2, seed=1)
    >>> bank.keying, bank.tensors["delta"].shape, bool(abs(bank.tensors["delta"].astype(float)).max() <= 8 / 255)
    ('sample', (8, 3, 8, 8), True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..core.bank import NoiseBank
from ..core.data import FitData
from ..core.kinds.conv import scaled_dilation
from ..models import backbones
from ..models import surrogates as sg
from . import Choice, Free, Method, Number, Param, Rule, _common
from ._common import quantise


def _grid(value: Any) -> Any:
    """An integer >= 1, or ``"auto"`` (resolved from the fitted images' size: :func:`noise_grid`)."""
    if isinstance(value, str) and value == "auto":
        return value
    return Number(1, integer=True)(value)


def noise_grid(value: Any, height: int, width: int) -> int:
    """The side of the blocks the noise is constant on, for ``grid=value`` on ``height x width`` images.
    ``"auto"`` is the factor cuda's ``dilation="auto"`` spaces its taps by (one rule for "this image's
    scale against a 32-px one": :func:`uetransforms.core.kinds.conv.scaled_dilation`)."""
    return scaled_dilation(height, width) if value == "auto" else int(value)


METHOD = Method(
    key="tap",
    paper="Targeted adversarial poisoning through a pretrained backbone (Fowl et al. NeurIPS 2021; BAIT's wrong-target binding)",
    citation="L. Fowl, M. Goldblum, P. Chiang, J. Geiping, W. Czaja, T. Goldstein, Adversarial Examples Make Strong "
             "Poisons, NeurIPS 2021, arXiv:2106.10807; wrong-target binding as in BAIT (When Priors Backfire, "
             "ICLR 2026, arXiv:2603.04731)",
    keyed_by="sample/class",
    needs="a pretrained backbone (frozen; not the attacker's)",
    kind="additive",
    summary="PGD towards a secret wrong class through a frozen pretrained backbone + linear head: "
            "made for attackers who probe or fine-tune pretrained models",
    order=65,
    params=(
        *_common.LINF_BUDGET,
        Param("backbone", "tv:resnet18@IMAGENET1K_V1",
              Free("a uetransforms.models.backbones.load_backbone spec or a local checkpoint path, or several "
                   "(a list, or joined by '+') for an ensemble"),
              help="the frozen pretrained network(s) the noise is crafted through (never the attacker's)"),
        Param("mode", "sample", Choice(("sample", "class")), paper="sample", public=True,
              help="'sample' (one delta per image) or 'class' (one universal delta per class)"),
        Param("augment", "flip", Choice(("flip", "flip+crop", "flip+crop+coin")), public=True,
              help="what PGD draws afresh at every step so the noise survives the attacker's augmentation: "
                   "'flip' (a random horizontal flip), 'flip+crop' (also a random shift of up to 1/8 of the side) "
                   "or 'flip+crop+coin' (also COIN's re-read of every pixel at a random offset of up to 2 px, the defence "
                   "that breaks convolution-based noise; measured, it does not defeat COIN and weakens the noise)"),
        Param("grid", 1, Rule(_grid, "an integer >= 1, or 'auto' (round(shorter side / 32) of the fitted images)"),
              paper=1, public=True,
              help="side of the square blocks the noise is constant on (ours; 1: one value per pixel, the paper's): "
                   "on photos the noise then has the scale of the content, as cuda's dilation spaces its taps; "
                   "'auto' takes it from the images' size as dilation='auto' does"),
        _common.count("steps", 20, "PGD steps (sample: per batch; class: passes over the data)", public=True),
        _common.positive("step_size", None, "PGD step (None: epsilon/4)", none=True, public=True),
        _common.BATCH_SIZE,
        _common.PROGRESS,
    ),
    resolve=_common.step_size_from_epsilon(1 / 4),
)


def derangement(num_classes: int, seed: int) -> np.ndarray:
    """A permutation of ``0..K-1`` with no fixed point, drawn from ``seed`` (the class -> target binding)."""
    if num_classes < 2:
        raise ValueError("tap binds every class to another class: it needs at least 2 classes")
    rng = np.random.default_rng([int(seed), 0x7A9])
    while True:
        perm = rng.permutation(num_classes)
        if not (perm == np.arange(num_classes)).any():
            return perm


def backbone_specs(value: Any) -> list[Any]:
    """``backbone=`` as a list of specs: one spec, a list of them, or several joined by ``+`` (an ensemble)."""
    if isinstance(value, (list, tuple)):
        specs = list(value)
    elif isinstance(value, str):
        specs = [s.strip() for s in value.split("+")]
    else:
        specs = [value]
    if not specs or any(isinstance(s, str) and not s for s in specs):
        raise ValueError(f"backbone={value!r}: give one backbone spec, or several as a list or joined by '+'")
    return specs


#: A transform of each clean batch before the noise is added: ``(images in [0, 1], labels) -> images in [0, 1]``.
Before = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def craft(data: FitData, *, seed: int, device: torch.device, before: Before | None = None, **p: Any,
          ) -> tuple[np.ndarray, Any, dict[str, Any]]:
    """The targeted PGD of this module, on ``before(x, y)`` (the images as they will be when the noise
    is added; ``None``: the clean images). Returns ``(delta, keys, info)`` for the bank.

    Shared with ``cudatap``, which crafts on the class-wise convolved images: the noise is then
    added to exactly the pixels the convolution produced, inside their pixel box.
    """
    eps, steps, step = float(p["epsilon"]), int(p["steps"]), float(p["step_size"])
    bodies = [backbones.load_backbone(s, device=device).eval() for s in backbone_specs(p["backbone"])]
    src = sg.ImageSource(data, device)
    labels_all = torch.from_numpy(data.labels.astype(np.int64))
    k = data.num_classes
    perm = torch.from_numpy(derangement(k, seed)).to(device)
    prep = before if before is not None else (lambda x, y: x)
    probes, head_accs = [], []
    for body in bodies:
        bar = sg.progress(total=None, desc="tap: clean features", enabled=p["progress"])
        feats = torch.cat([body(x).float().cpu() for _, x in src.batches(p["batch_size"])])
        bar.close()
        probe = backbones.fit_linear_probe(feats, labels_all, k, rounds=5, iterations=20, seed=seed).to(device)
        with torch.no_grad():
            head_accs.append(round(float((probe(feats.to(device)).argmax(1).cpu() == labels_all).float().mean()), 4))
        probes.append(probe)

    def loss_of(x: torch.Tensor, t: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        # The ensemble's mean cross-entropy towards the targets: noise that fools every member moves
        # features that the member networks share, which is what transfers to an unseen one.
        return sum(F.cross_entropy(pr(b(x)), t, reduction=reduction) for b, pr in zip(bodies, probes)) / len(bodies)

    def hit(x: torch.Tensor, t: torch.Tensor) -> int:
        logits = sum(F.softmax(pr(b(x)), 1) for b, pr in zip(bodies, probes))
        return int((logits.argmax(1) == t).sum())

    shift, coin = p["augment"] in ("flip+crop", "flip+crop+coin"), p["augment"] == "flip+crop+coin"

    def view(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = _common.flip_some(x, gen)
        x = _common.shift_some(x, gen) if shift else x
        return _common.coin_some(x, gen) if coin else x

    gen = torch.Generator().manual_seed(int(seed))
    rng = np.random.default_rng([int(seed), 1])
    c, h, w = data.image_shape
    cell = noise_grid(p["grid"], h, w)
    ch, cw = -(-h // cell), -(-w // cell)  # the coarse grid PGD works on (the image's own when cell is 1)

    def full(d: torch.Tensor) -> torch.Tensor:
        # each coarse value repeated over its cell x cell block, cut to the image (the last blocks may be partial)
        return d if cell == 1 else d.repeat_interleave(cell, -2).repeat_interleave(cell, -1)[..., :h, :w]

    hits = 0
    if p["mode"] == "class":
        table = torch.empty(k, c, ch, cw).uniform_(-eps, eps, generator=gen).to(device)
        bar = sg.progress(total=steps, desc="tap (class)", enabled=p["progress"])
        for _ in range(steps):
            for rows, x in src.batches(p["batch_size"], shuffle=True, rng=rng):
                y = labels_all[torch.from_numpy(rows)].to(device)
                with torch.no_grad():
                    x = prep(x, y)
                d = table[y].clone().requires_grad_(True)
                loss = loss_of(view((x + full(d)).clamp(0, 1), gen), perm[y], reduction="sum")
                (g,) = torch.autograd.grad(loss, d)
                summed = torch.zeros_like(table).index_add_(0, y, g)
                table = (table - step * summed.sign()).clamp(-eps, eps)
            bar.update(1)
        bar.close()
        table = full(table)
        with torch.no_grad():
            for rows, x in src.batches(p["batch_size"]):
                y = labels_all[torch.from_numpy(rows)].to(device)
                hits += hit((prep(x, y) + table[y]).clamp(0, 1), perm[y])
        delta = quantise(table.cpu().numpy(), eps, np.float32)
        keys: Any = np.arange(k)
    else:
        work = _common.workspace((len(data), c, h, w), np.float16)  # mapped from a temp file when large
        bar = sg.progress(total=len(data), desc="tap (sample)", enabled=p["progress"])
        for rows, x in src.batches(p["batch_size"]):
            y = labels_all[torch.from_numpy(rows)].to(device)
            t = perm[y]
            with torch.no_grad():
                x = prep(x, y)
            d = torch.empty(len(x), c, ch, cw).uniform_(-eps, eps, generator=gen).to(device)  # random start, seeded
            if cell == 1:
                d = (x + d).clamp(0, 1) - x
            d.requires_grad_(True)
            for _ in range(steps):
                # per pixel d is kept in the box below; blocks are clamped into it here
                loss = loss_of(view(x + d if cell == 1 else (x + full(d)).clamp(0, 1), gen), t)
                (g,) = torch.autograd.grad(loss, d)
                with torch.no_grad():
                    d -= step * g.sign()
                    d.clamp_(-eps, eps)
                    if cell == 1:
                        d.copy_((x + d).clamp(0, 1) - x)  # stay inside the pixel box: applying never clips
            with torch.no_grad():
                if cell > 1:  # a per-pixel projection would break the blocks: the box is kept once, here
                    d = (x + full(d)).clamp(0, 1) - x
                hits += hit(x + d, t)
            work[rows] = d.detach().cpu().numpy().astype(np.float16)
            bar.update(len(rows))
        bar.close()
        delta = quantise(work, eps, np.float16, out=work)
        keys = data.sample_ids
    ids = [b.identity() for b in bodies]
    info = {"backbone": ids[0] if len(ids) == 1 else ids,
            "head_clean_train_accuracy": head_accs[0] if len(head_accs) == 1 else head_accs,
            "target_hit_rate": round(hits / max(1, len(data)), 4),
            "grid": cell,
            "binding": "a secret derangement of the classes (from the seed)",
            "quantised": "whole grey levels q/255, |q| <= floor(255*epsilon)"}
    return delta, keys, info


@METHOD.fitter
def fit(data: FitData, *, seed: int, device: torch.device, **p: Any) -> NoiseBank:
    """Fit targeted, class-permuted adversarial noise through a frozen backbone (see the module docs)."""
    delta, keys, info = craft(data, seed=seed, device=device, **p)
    stored = {n: v for n, v in p.items() if n != "progress"}
    return NoiseBank(method="tap", kind="additive", keying=p["mode"], keys=keys, tensors={"delta": delta},
                     params={**stored, "seed": int(seed)}, image_shape=data.image_shape, info=info)
