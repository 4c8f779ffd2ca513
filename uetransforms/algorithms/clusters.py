"""``clusters``: Unlearnable Clusters (Zhang et al., CVPR 2023), label-agnostic.

The protector needs no labels. A frozen surrogate encoder embeds the training images, K-means
splits them into ``K`` clusters, and one L-inf-bounded perturbation per cluster is trained so that
perturbed images move onto *another* cluster's centre (cluster ``i`` targets
``(i + target_offset) mod K``). This "feature dispersion" breaks the uniformity inside each
cluster and the discrepancy between clusters, whatever labels a trainer later attaches.

Objective (the paper's, ``loss="kl"``): ``min E_x KL(softmax(mu_t(i)) || softmax(h(x + delta_i)))``
with ``h`` the surrogate's penultimate embedding and ``mu`` the K-means centres of the raw
embeddings; ``loss="cosine"`` maximises the cosine similarity to the target centre instead.

``mode="generator"`` (default) is the authors' construction:

* one ResNet-style generator per cluster (7x7 conv to ``ngf`` channels, two stride-2
  down-samplings, ``n_blocks`` residual blocks, two transposed-conv up-samplings, 7x7 conv to 3
  channels, ``tanh``) fed one fixed ``U(0, 1)`` image; its output is clamped to +-epsilon:
  ``delta_i = clamp(G_i(sigma_i), -eps, eps)``;
* Adam (the paper: lr 1e-4, weight decay 5e-4) with a per-iteration cosine schedule down to 1e-6,
  batches of ``batch_size`` (the paper: 256) images per generator, the clean images augmented
  (random shift + flip) before the noise is added;
* each generator trains on the *whole* dataset (``train_on="all"``), as the released code does;
  ``train_on="cluster"`` uses only the cluster's own images (the paper's text);
* the budget: ``epochs`` passes over the training pool per generator, i.e. ``epochs * N * K``
  surrogate forward + backward passes. The cosine schedule always spans the run.

The budget comes from ``profile`` (explicit ``epochs`` / ``batch_size`` / ``lr`` / ``ngf`` win):

* ``"paper"``: 50 epochs, batch 256, lr 1e-4, ``ngf`` 64, the authors' schedule; GPU work.
* ``"cpu"``: 6 epochs, batch 32, lr 1e-3, ``ngf`` 16, the same loop shrunk to what a CPU can run.
  Measured on 10k CIFAR-10 images with a small CNN surrogate trained on disjoint rows
  (benchmarks/RESULTS.md, issue 11): the trained model's clean accuracy fell to 0.65x, 0.78x and
  0.65x of clean training with three bank seeds (600k surrogate passes). Other budgets (0.5 to 20
  epochs) gave 0.69x-0.76x, within that bank-to-bank spread: more budget was not more
  protection, so this is the cheapest budget that gave the best bank, not a converged one.
  Cost: 640-1106 s on one shared CPU thread for 10k images (1.1-1.8 ms per pass of that
  0.06-GFLOP surrogate); 50k images take 5x. An ImageNet ResNet-50 at 224 px is about 270x the
  arithmetic per pass, so on a CPU use a small surrogate (``encoder=`` /
  ``surrogate="small-cnn"``) or a GPU.
* ``"auto"`` (default): ``"paper"`` on a CUDA device, ``"cpu"`` elsewhere. ``bank.params``
  records the profile and the resolved schedule.

All K generators are ONE module (:class:`ClusterGenerators`): every layer is a grouped convolution
with K groups over the K stacked inputs, so one forward pass makes all K perturbations. The
authors' BatchNorm sees a batch of one fixed image, which is per-channel normalisation over the
image; here that is instance normalisation (identical maths, and the same in train and eval).

``mode="direct"`` optimises one ``epsilon * tanh(w)`` tensor per cluster instead (Adam, ``steps``,
``per_cluster`` images of every cluster per step): far cheaper, weaker. It reaches a higher
target-hit rate on the surrogate than a short generator run, yet protects less on the CIFAR
harness: the generators' spatially structured noise transfers better to the trained model
(``benchmarks/RESULTS.md``, issue 11).

K-means runs on the raw features (``feature_norm="none"``, the authors' code); ``"l2"`` gives
cosine K-means. The noise is made at the training images' size (the surrogate resizes inputs to
its own); new images of another size get it interpolated (``size_mismatch="resize"``).

After training, the *target-hit rate* (share of perturbed training images whose nearest centre is
their target; chance is 1/K) is measured on up to 64 images per cluster and stored in
``bank.info["target_hit_rate"]``. At or below chance a :class:`LowTargetHitWarning` is raised
(not an error: the bank is still a valid, if weak, perturbation; the warning says what to change).

Surrogates (:mod:`uetransforms.models.encoders`): ``surrogate="resnet50"`` (ImageNet, ``weights``
``"IMAGENET1K_V2"``, the paper's default, "UCs"), ``"clip:RN50"`` ("UC-CLIP", ``weights="openai"``),
``"small-cnn"`` with ``checkpoint=``, or any torchvision ``fc`` model; ``checkpoint=`` loads
local weights offline. Any ``nn.Module`` mapping [0, 1] images to features can be passed as
``encoder``; such a bank cannot rebuild it, so protect with ``Protect(bank, encoder=module)`` or
``ClusterAssigner(bank, encoder=module)``. Random weights are refused unless
``allow_random_surrogate=True`` (then ``bank.info["random_surrogate"]`` is true).

Example:
    >>> import uetransforms as ue
    >>> bank = ue.fit("clusters", ds, image_column="img", label_column=None,
    ...               surrogate="resnet50", n_clusters=10)  # doctest: +SKIP
    >>> prot = ds.map(ue.Protect(bank, image_column="img", label_column=None), batched=True)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.assign import embed_batch, embed_images, fit_clusters, normalise
from ..core.bank import NoiseBank
from ..core.data import FitData
from ..models.kmeans import assign
from . import Choice, Flag, Free, Method, Number, Param, ParameterError, _common


#: What a profile gives the generator-mode parameters left at ``None`` (explicit values win).
#: "paper": the authors' schedule (GPU work). "cpu": the same loop at a budget measured to protect
#: on the CPU harness (benchmarks/RESULTS.md, issue 11); see the module docstring for the numbers.
PROFILES: dict[str, dict[str, Any]] = {
    "paper": {"epochs": 50, "batch_size": 256, "lr": 1e-4, "ngf": 64},
    "cpu": {"epochs": 6, "batch_size": 32, "lr": 1e-3, "ngf": 16},
}
_PAPER = PROFILES["paper"]
_FROM_PROFILE = " (None: the profile's value)"
_DIRECT_LR = 0.05


def _fill_profile(p: dict[str, Any], profile: str) -> dict[str, Any]:
    """Generator parameters left at ``None`` take ``profile``'s value; direct mode's lr is 0.05."""
    values = PROFILES[profile]
    out = {**p, "profile": profile}
    for name in ("epochs", "batch_size", "ngf"):
        out[name] = values[name] if p[name] is None else p[name]
    if p["lr"] is None:
        out["lr"] = values["lr"] if p["mode"] == "generator" else _DIRECT_LR
    return out


def _resolve(p: dict[str, Any], data: FitData | None) -> dict[str, Any]:
    if data is not None and p["n_clusters"] > len(data):
        raise ParameterError(f"n_clusters={p['n_clusters']} is not valid for method 'clusters': it must be between 2 "
                             f"and the number of images ({len(data)})")
    if p["target_offset"] % p["n_clusters"] == 0:
        raise ParameterError(f"target_offset={p['target_offset']} maps clusters onto themselves; use one not "
                             f"divisible by n_clusters={p['n_clusters']}")
    # "auto" is settled by fit(), which knows the device
    return p if p["profile"] == "auto" else _fill_profile(p, p["profile"])


METHOD = Method(
    key="clusters",
    paper="Unlearnable Clusters (Zhang et al., CVPR 2023)",
    citation="J. Zhang, X. Ma, Q. Yi, J. Sang, Y.-G. Jiang, Y. Wang, C. Xu, Unlearnable Clusters: Towards "
             "Label-agnostic Unlearnable Examples, CVPR 2023, arXiv:2301.01217",
    keyed_by="cluster",
    needs="a surrogate image encoder (ImageNet ResNet-50, CLIP RN50 or any nn.Module); no labels",
    kind="additive",
    summary="K-means clusters of surrogate features; per-cluster generators push features to another cluster's centre",
    label_free=True,
    order=20,
    params=(
        Param("surrogate", "resnet50", Free("a name for uetransforms.models.encoders.load: 'resnet50', 'clip:RN50', "
                                            "'small-cnn', a torchvision model with an fc head"), paper="resnet50",
              help="the frozen surrogate (the paper's default: ImageNet ResNet-50)"),
        Param("weights", "default", Free("a torchvision weights name / open_clip tag, 'default', or None"),
              paper="IMAGENET1K_V2", help="surrogate weights by name ('default': IMAGENET1K_V2 / openai; downloads "
                                          "once); None: random init (needs allow_random_surrogate)"),
        Param("checkpoint", None, Free("a local weights file or None"),
              help="load the surrogate's weights from this file (offline)"),
        Param("encoder", None, Free("an nn.Module, an encoder file path, a model name or None"),
              help="the encoder instead of surrogate/weights: any nn.Module mapping [0, 1] images to features, an "
                   "encoder file (models.encoders.save_torchvision/save_small_cnn) or a name for encoders.load"),
        Param("allow_random_surrogate", False, Flag(),
              help="permit a random-init surrogate (weak: clusters by colour); marked in the bank"),
        Param("init_seed", 0, Number(integer=True), help="seed of a random-init surrogate"),
        Param("mode", "generator", Choice(("generator", "direct")), paper="generator", public=True,
              help="'generator' (the authors' per-cluster ResNet generators) or 'direct' (one tensor per cluster)"),
        Param("n_clusters", 10, Number(2, integer=True), paper=10, public=True, help="K, the number of clusters"),
        Param("epsilon", 16 / 255, Number(0, 1, lo_open=True), paper=16 / 255, public=True, budget="linf",
              help="L-inf budget in [0, 1] pixel units"),
        Param("target_offset", 1, Number(integer=True), paper=1,
              help="cluster i is pushed to centre (i + target_offset) mod K"),
        Param("loss", "kl", Choice(("kl", "cosine")), paper="kl", help="'kl' (the paper's) or 'cosine'"),
        Param("augment", True, Flag(), paper=True, help="random flips and shifts of the images while training"),
        Param("feature_norm", "none", Choice(("none", "l2")), paper="none",
              help="'none' (raw-feature K-means, the authors' code) or 'l2' (cosine K-means)"),
        Param("profile", "auto", Choice(("auto", *PROFILES)), paper="paper", public=True,
              help="generator budget: 'auto' (default) is 'paper' on a CUDA device, else 'cpu'; 'cpu': epochs 6, "
                   "batch 32, lr 1e-3, ngf 16 (measured on CIFAR: 0.65-0.78x clean accuracy); 'paper': 50 "
                   "epochs, batch 256, lr 1e-4, ngf 64"),
        Param("epochs", None, Number(0, lo_open=True, none=True), paper=_PAPER["epochs"], public=True,
              help="generator mode: passes over the training pool per generator" + _FROM_PROFILE),
        Param("batch_size", None, Number(1, integer=True, none=True), paper=_PAPER["batch_size"],
              help="generator mode: images per generator per step" + _FROM_PROFILE),
        Param("lr", None, Number(0, lo_open=True, none=True), paper=_PAPER["lr"],
              help="Adam learning rate (None: the profile's for generators; 0.05 for direct tensors)"),
        Param("lr_min", 1e-6, Number(0), paper=1e-6, help="generator mode: floor of the per-iteration cosine schedule"),
        Param("weight_decay", 5e-4, Number(0), paper=5e-4, help="generator mode: Adam weight decay"),
        Param("ngf", None, Number(1, integer=True, none=True), paper=_PAPER["ngf"],
              help="generator mode: generator width" + _FROM_PROFILE),
        Param("n_blocks", 6, Number(0, integer=True), paper=6, help="generator mode: residual blocks per generator"),
        Param("train_on", "all", Choice(("all", "cluster")), paper="all",
              help="generator mode: 'all' (every generator on the whole set, the released code) or 'cluster'"),
        Param("steps", 200, Number(1, integer=True), help="direct mode: Adam steps on all K tensors at once"),
        Param("per_cluster", 16, Number(1, integer=True), help="direct mode: images of each cluster per step"),
        Param("kmeans_batch_size", None, Number(1, integer=True, none=True),
              help="mini-batch K-means with this batch for very large data (None: full-batch Lloyd)"),
        Param("kmeans_iter", 100, Number(1, integer=True), help="K-means iterations at most"),
        Param("embed_batch_size", 256, Number(1, integer=True), help="images per surrogate forward pass"),
        _common.PROGRESS,
    ),
    resolve=_resolve,
)


class LowTargetHitWarning(UserWarning):
    """The trained noise moved no more images onto their target centre than chance (1/K)."""


# ----------------------------------------------------------------------------- K generators as one module
class _GroupConv(nn.Module):
    """K independent convolutions (or transposed convolutions) run as one grouped convolution.

    Input and output are ``[1, K * C, H, W]``: generator ``k`` owns channels ``k*C:(k+1)*C``.
    Each generator's weights are initialised as ``nn.Conv2d`` would initialise its own.
    """

    def __init__(self, k: int, cin: int, cout: int, ksize: int, *, stride: int = 1, padding: int = 0,
                 transpose: bool = False) -> None:
        super().__init__()
        self.k, self.stride, self.padding, self.transpose = k, stride, padding, transpose
        shape = (k * cin, cout, ksize, ksize) if transpose else (k * cout, cin, ksize, ksize)
        self.weight = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.empty(k * cout))
        # torch's default conv init per generator: the fan-in of one generator's kernel
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        fan_in = (cout if transpose else cin) * ksize * ksize
        bound = 1 / math.sqrt(fan_in)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, out_size: tuple[int, int] | None = None) -> torch.Tensor:
        if self.transpose:
            # output_padding picks the exact size back (stride-2 down-sampling of odd sides)
            h, w = x.shape[-2:]
            oh, ow = out_size if out_size is not None else (2 * h, 2 * w)
            op = (oh - ((h - 1) * self.stride - 2 * self.padding + self.weight.shape[-1]),
                  ow - ((w - 1) * self.stride - 2 * self.padding + self.weight.shape[-1]))
            return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, op, groups=self.k)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, groups=self.k)


class _Norm(nn.Module):
    """Per-channel normalisation over the image with an affine map (the authors' BatchNorm on a batch of one)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=1e-5)


class ClusterGenerators(nn.Module):
    """K ResNet-style noise generators (UC's per-cluster generator) evaluated in one pass.

    Architecture of each generator: reflect-pad 3, 7x7 conv to ``ngf``, norm, ReLU; two 3x3
    stride-2 convs (``ngf -> 2ngf -> 4ngf``) with norm + ReLU; ``n_blocks`` residual blocks
    (reflect-pad, 3x3 conv, norm, ReLU, reflect-pad, 3x3 conv, norm, plus the input); two 3x3
    stride-2 transposed convs back to ``ngf``; reflect-pad 3, 7x7 conv to ``channels``; ``tanh``.

    ``forward()`` returns ``[K, channels, H, W]`` in ``[-1, 1]``: generator ``k`` applied to its
    own fixed input ``sigma_k ~ U(0, 1)`` (a buffer, drawn from ``seed``).
    """

    def __init__(self, k: int, channels: int, size: tuple[int, int], *, ngf: int = 64, n_blocks: int = 6,
                 seed: int = 0) -> None:
        super().__init__()
        self.k, self.channels, self.size = int(k), int(channels), (int(size[0]), int(size[1]))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            self.register_buffer("sigma", torch.rand(1, k * channels, *self.size))
            self.stem = _GroupConv(k, channels, ngf, 7)
            self.stem_n = _Norm(k * ngf)
            self.down = nn.ModuleList([_GroupConv(k, ngf, 2 * ngf, 3, stride=2, padding=1),
                                       _GroupConv(k, 2 * ngf, 4 * ngf, 3, stride=2, padding=1)])
            self.down_n = nn.ModuleList([_Norm(k * 2 * ngf), _Norm(k * 4 * ngf)])
            self.blocks = nn.ModuleList([nn.ModuleList([_GroupConv(k, 4 * ngf, 4 * ngf, 3), _Norm(k * 4 * ngf),
                                                        _GroupConv(k, 4 * ngf, 4 * ngf, 3), _Norm(k * 4 * ngf)])
                                         for _ in range(int(n_blocks))])
            self.up = nn.ModuleList([_GroupConv(k, 4 * ngf, 2 * ngf, 3, stride=2, padding=1, transpose=True),
                                     _GroupConv(k, 2 * ngf, ngf, 3, stride=2, padding=1, transpose=True)])
            self.up_n = nn.ModuleList([_Norm(k * 2 * ngf), _Norm(k * ngf)])
            self.head = _GroupConv(k, ngf, channels, 7)

    def forward(self) -> torch.Tensor:
        x = self.sigma
        h = F.relu(self.stem_n(self.stem(F.pad(x, (3, 3, 3, 3), mode="reflect"))))
        sizes = [tuple(h.shape[-2:])]
        for conv, norm in zip(self.down, self.down_n):
            h = F.relu(norm(conv(h)))
            sizes.append(tuple(h.shape[-2:]))
        for c1, n1, c2, n2 in self.blocks:
            y = F.relu(n1(c1(F.pad(h, (1, 1, 1, 1), mode="reflect"))))
            h = h + n2(c2(F.pad(y, (1, 1, 1, 1), mode="reflect")))
        for (conv, norm), size in zip(zip(self.up, self.up_n), reversed(sizes[:-1])):
            h = F.relu(norm(conv(h, size)))
        out = torch.tanh(self.head(F.pad(h, (3, 3, 3, 3), mode="reflect")))
        return out.view(self.k, self.channels, *self.size)


# ----------------------------------------------------------------------------- surrogate
def _surrogate(surrogate: str, weights: str | None, checkpoint: str | os.PathLike | None,
               encoder: torch.nn.Module | str | os.PathLike | None, allow_random: bool, init_seed: int,
               device: torch.device) -> torch.nn.Module:
    from ..models import encoders

    if encoder is not None:  # a module, an encoder file or a name: read as every encoder= is
        return encoders.resolve(encoder, device=device)
    return encoders.resolve(surrogate, weights=weights, checkpoint=checkpoint, allow_random_surrogate=allow_random,
                            init_seed=init_seed, device=device)


def _augment(x: torch.Tensor, gen: torch.Generator, shift: int) -> torch.Tensor:
    """Random horizontal flips and up-to-``shift``-pixel translations (reflect padded), per image."""
    b, _, h, w = x.shape
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip.to(x.device).view(b, 1, 1, 1), x.flip(-1), x)
    if shift > 0:
        pad = F.pad(x, (shift, shift, shift, shift), mode="reflect")
        dy, dx = (torch.randint(0, 2 * shift + 1, (2,), generator=gen)).tolist()
        x = pad[:, :, dy : dy + h, dx : dx + w]  # one offset per batch keeps it one slice
    return x


def _uc_loss(f: torch.Tensor, tk: torch.Tensor, tgt_prob: torch.Tensor, tgt_dir: torch.Tensor, loss: str) -> torch.Tensor:
    if loss == "kl":  # KL(softmax(mu_t) || softmax(h(x + delta))), batch mean, as the paper
        return F.kl_div(F.log_softmax(f, dim=-1), tgt_prob[tk], reduction="batchmean")
    return 1 - (F.normalize(f, dim=-1) * tgt_dir[tk]).sum(-1).mean()


def _train_generators(enc: nn.Module, x_all: torch.Tensor, members: list[torch.Tensor], tgt_prob: torch.Tensor,
                      tgt_dir: torch.Tensor, *, epsilon: float, loss: str, epochs: float, batch_size: int, lr: float,
                      lr_min: float, weight_decay: float, ngf: int, n_blocks: int, train_on: str, augment: bool,
                      gen: torch.Generator, seed: int, device: torch.device,
                      progress: bool | None) -> tuple[torch.Tensor, list[float]]:
    from ..models.surrogates import progress as _bar

    k = len(members)
    n, c, h, w = x_all.shape
    nets = ClusterGenerators(k, c, (h, w), ngf=ngf, n_blocks=n_blocks, seed=seed).to(device)
    opt = torch.optim.Adam(nets.parameters(), lr=lr, weight_decay=weight_decay)
    # one epoch = every generator has seen its training pool once, batch_size images per step
    pool = n if train_on == "all" else max(len(m) for m in members)
    iters = max(1, math.ceil(epochs * pool / batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iters, eta_min=lr_min)
    keys = torch.arange(k).repeat_interleave(batch_size).to(device)
    shift = max(1, min(h, w) // 8) if augment else 0
    history: list[float] = []
    bar = _bar(total=iters, desc="clusters generators", enabled=progress)
    for _ in range(iters):
        if train_on == "all":  # each generator its own draw from the whole set (the released code)
            rows = torch.randint(n, (k * batch_size,), generator=gen)
        else:
            rows = torch.cat([m[torch.randint(len(m), (batch_size,), generator=gen)] for m in members])
        x = x_all[rows].to(device, torch.float32).div_(255)
        if augment:  # the clean images are augmented, then the (fixed) noise is added
            x = _augment(x, gen, shift)
        delta = nets().clamp(-epsilon, epsilon)
        f = embed_batch(enc, (x + delta[keys]).clamp(0, 1))
        lval = _uc_loss(f, keys, tgt_prob, tgt_dir, loss)
        opt.zero_grad(set_to_none=True)
        lval.backward()
        opt.step()
        sched.step()
        history.append(float(lval.detach()))
        bar.set_postfix(loss=f"{history[-1]:.4f}", refresh=False)
        bar.update()
    bar.close()
    with torch.no_grad():
        return nets().clamp(-epsilon, epsilon), history


def _train_direct(enc: nn.Module, x_all: torch.Tensor, members: list[torch.Tensor], tgt_prob: torch.Tensor,
                  tgt_dir: torch.Tensor, *, epsilon: float, loss: str, steps: int, per_cluster: int, lr: float,
                  augment: bool, gen: torch.Generator, device: torch.device,
                  progress: bool | None) -> tuple[torch.Tensor, list[float]]:
    from ..models.surrogates import progress as _bar

    k = len(members)
    _, c, h, w = x_all.shape
    # Small random start (drawn on CPU so every device starts the same): tanh is near-linear there.
    w_param = (torch.rand(k, c, h, w, generator=gen) - 0.5).to(device).requires_grad_(True)
    opt = torch.optim.Adam([w_param], lr=lr)
    keys = torch.arange(k).repeat_interleave(per_cluster).to(device)
    shift = max(1, min(h, w) // 8) if augment else 0
    history: list[float] = []
    bar = _bar(total=int(steps), desc="clusters direct", enabled=progress)
    for _ in range(int(steps)):
        rows = torch.cat([m[torch.randint(len(m), (per_cluster,), generator=gen)] for m in members])
        x = x_all[rows].to(device, torch.float32).div_(255)
        xp = (x + epsilon * torch.tanh(w_param)[keys]).clamp(0, 1)
        if augment:
            xp = _augment(xp, gen, shift)
        lval = _uc_loss(embed_batch(enc, xp), keys, tgt_prob, tgt_dir, loss)
        opt.zero_grad(set_to_none=True)
        lval.backward()
        opt.step()
        history.append(float(lval.detach()))
        bar.set_postfix(loss=f"{history[-1]:.4f}", refresh=False)
        bar.update()
    bar.close()
    with torch.no_grad():
        return (epsilon * torch.tanh(w_param)).clamp(-epsilon, epsilon), history


@torch.no_grad()
def target_hit_rate(enc: nn.Module, images: np.ndarray, labels: torch.Tensor, delta: torch.Tensor,
                    centroids: torch.Tensor, targets: torch.Tensor, feature_norm: str, *, per_cluster: int = 64,
                    device: torch.device) -> float:
    """Share of perturbed images (``x + delta[cluster]``, quantised to uint8 as published) whose
    nearest centre is their cluster's target; up to ``per_cluster`` images of each cluster."""
    probe = torch.cat([torch.nonzero(labels == j).flatten()[:per_cluster] for j in range(len(centroids))])
    x = torch.from_numpy(images[probe.numpy()]).float().div(255)
    xp = (x + delta.cpu()[labels[probe]]).clamp(0, 1)
    fp = normalise(embed_images(enc, (xp * 255).round().to(torch.uint8).numpy(), device=device), feature_norm)
    moved, _ = assign(fp, centroids)
    return float((moved.cpu() == targets[labels[probe]]).float().mean())


@METHOD.fitter
def fit(data: FitData, *, seed: int, device: torch.device, surrogate: str, weights: str | None,
        checkpoint: str | os.PathLike | None, encoder: torch.nn.Module | None, allow_random_surrogate: bool,
        init_seed: int, mode: str, n_clusters: int, epsilon: float, target_offset: int, loss: str, augment: bool,
        feature_norm: str, profile: str, epochs: float | None, batch_size: int | None, lr: float | None,
        lr_min: float, weight_decay: float, ngf: int | None, n_blocks: int, train_on: str, steps: int,
        per_cluster: int, kmeans_batch_size: int | None, kmeans_iter: int, embed_batch_size: int,
        progress: bool | None) -> NoiseBank:
    """Fit Unlearnable Clusters noise.

    Args:
        surrogate / weights / checkpoint: the frozen surrogate by name (:func:`uetransforms.models.encoders.load`):
            ``"resnet50"`` (ImageNet ``IMAGENET1K_V2``, the paper's default), ``"clip:RN50"``
            (``weights="openai"``), ``"small-cnn"`` (``checkpoint`` required); ``checkpoint`` loads
            local weights offline.
        encoder: any ``nn.Module`` surrogate instead (takes [0, 1] images, returns features).
        allow_random_surrogate: permit ``weights=None`` (random init, weak); marked in the bank.
        init_seed: seed of such a random init.
        mode: ``"generator"`` (the authors' per-cluster ResNet generators) or ``"direct"`` (one
            tanh-bounded tensor per cluster, cheaper).
        n_clusters: K (the paper uses 10).
        epsilon: L-inf budget in [0, 1] units (the paper uses 16/255).
        target_offset: cluster ``i`` is pushed to centre ``(i + target_offset) mod K``.
        loss: ``"kl"`` (paper) or ``"cosine"``.
        augment: random flips and shifts while training.
        feature_norm: ``"none"`` (raw-feature K-means, the authors' code) or ``"l2"`` (cosine).
        profile: the generator budget for ``epochs`` / ``batch_size`` / ``lr`` / ``ngf`` left at
            ``None``: ``"paper"`` (50, 256, 1e-4, 64), ``"cpu"`` (6, 32, 1e-3, 16: measured to
            protect on a CPU) or ``"auto"`` (``"paper"`` on CUDA, else ``"cpu"``).
        epochs / batch_size / lr / lr_min / weight_decay: generator mode: passes over the training
            pool per generator, images per generator per step, Adam lr (direct mode: 0.05 when
            ``None``), the cosine floor (1e-6) and weight decay (5e-4, the paper's).
        ngf / n_blocks: generator width and residual blocks (6, the paper's).
        progress: a progress bar over the training iterations (``None``: only on a terminal).
        train_on: ``"all"`` (each generator on the whole dataset, as the released code) or
            ``"cluster"`` (on its own cluster, as the paper describes).
        steps / per_cluster: direct mode: Adam steps (lr default 0.05) and images of each cluster
            per step.
        kmeans_batch_size: mini-batch K-means with this batch (for very large data); ``None``
            runs full-batch Lloyd.
    """
    if profile == "auto":  # the paper's schedule where a GPU can run it, the measured CPU one elsewhere
        given = {"mode": mode, "epochs": epochs, "batch_size": batch_size, "lr": lr, "ngf": ngf}
        filled = _fill_profile(given, "paper" if device.type == "cuda" else "cpu")
        profile, epochs, batch_size, lr, ngf = (filled[n] for n in ("profile", "epochs", "batch_size", "lr", "ngf"))
    k = n_clusters  # 2 <= K <= N and a target offset that moves every cluster: checked by METHOD
    target = (torch.arange(k) + int(target_offset)) % k
    gen = torch.Generator().manual_seed(int(seed))
    enc = _surrogate(surrogate, weights, checkpoint, encoder, bool(allow_random_surrogate), int(init_seed), device)
    images = data.images()  # uint8 [N, C, H, W]
    km = fit_clusters(enc, images, k, seed=int(seed), feature_norm=feature_norm, device=device,
                      kmeans_batch_size=kmeans_batch_size, kmeans_iter=kmeans_iter, embed_batch_size=embed_batch_size)
    feats_raw, labels = km.features, km.labels
    members = [torch.nonzero(labels == j).flatten() for j in range(k)]
    # Targets of the loss: the paper's KL works on raw embeddings, the cosine loss on directions.
    raw_centre = torch.stack([feats_raw[m.to(feats_raw.device)].mean(0) for m in members])
    tgt = raw_centre[target.to(raw_centre.device)]
    tgt_prob = F.softmax(tgt, dim=-1)
    tgt_dir = F.normalize(tgt, dim=-1)
    x_all = torch.from_numpy(images)

    if mode == "generator":
        lr_used = float(lr)
        delta_t, history = _train_generators(
            enc, x_all, members, tgt_prob, tgt_dir, epsilon=epsilon, loss=loss, epochs=float(epochs),
            batch_size=int(batch_size), lr=lr_used, lr_min=float(lr_min), weight_decay=float(weight_decay),
            ngf=int(ngf), n_blocks=int(n_blocks), train_on=train_on, augment=bool(augment), gen=gen, seed=int(seed),
            device=device, progress=progress)
        schedule = {"profile": profile, "epochs": float(epochs), "batch_size": int(batch_size), "lr": lr_used,
                    "lr_min": float(lr_min), "weight_decay": float(weight_decay), "ngf": int(ngf),
                    "n_blocks": int(n_blocks), "train_on": train_on, "iterations": len(history)}
    else:
        lr_used = float(lr)
        delta_t, history = _train_direct(enc, x_all, members, tgt_prob, tgt_dir, epsilon=epsilon, loss=loss,
                                         steps=int(steps), per_cluster=int(per_cluster), lr=lr_used,
                                         augment=bool(augment), gen=gen, device=device, progress=progress)
        schedule = {"steps": int(steps), "per_cluster": int(per_cluster), "lr": lr_used}
    delta = delta_t.detach().cpu().numpy().astype(np.float32)
    hit = target_hit_rate(enc, images, labels, torch.from_numpy(delta), km.centroids, target, feature_norm,
                          device=device)
    if hit <= 1 / k:
        warnings.warn(
            f"clusters: only {hit:.1%} of perturbed images reach their target centre, no better than chance "
            f"(1/K = {1 / k:.1%}): the noise is barely doing UC's feature dispersion. Train longer (epochs=), use "
            "a semantic (pretrained) surrogate, or a larger epsilon",
            LowTargetHitWarning, stacklevel=3,
        )
    info = {
        **km.bank_info(),
        "size_mismatch": "resize",
        "targets": target.tolist(),
        "loss_first_last": [round(history[0], 6), round(history[-1], 6)] if history else None,
        "target_hit_rate": round(hit, 4),
        "chance_hit_rate": round(1 / k, 4),
    }
    params = {"epsilon": float(epsilon), "norm": "linf", "n_clusters": k, "mode": mode, **schedule,
              "target_offset": int(target_offset), "loss": loss, "augment": bool(augment), "seed": int(seed)}
    return NoiseBank(method="clusters", kind="additive", keying="cluster", keys=np.arange(k),
                     tensors={"delta": delta, "centroid": km.centroids.cpu().numpy().astype(np.float32)},
                     params=params, image_shape=tuple(x_all.shape[1:]), info=info)
