"""CUDA: Convolution-based Unlearnable DAtasets (Sadasivan et al., CVPR 2023).

Paper: V. S. Sadasivan, M. Soltanolkotabi, S. Feizi, "CUDA: Convolution-based Unlearnable
Datasets", CVPR 2023 (arXiv:2303.04278).

Every class ``k`` gets its own random ``k x k`` filter and each image of that class is filtered
with it (one depthwise convolution per channel, zero padding ``k // 2``), then divided by its own
maximum so it spans the full range again. The filters are the private key; nothing is learned
and no image is read (only the label column and the first image's shape), unless ``key_trials > 1``
asks to choose among several keys (ours, below).

Faithful to the paper and the authors' code:

* filter entries drawn from ``U(0, blur_parameter)`` (the paper's :math:`p_b`);
* one uniformly random entry of channel 0 set to ``center_parameter`` (1.0, as the code does),
  then channel 0 copied to every channel (the code's ``w[1] = w[0]; w[2] = w[0]``);
* ``kernel_size`` 3 and ``blur_parameter`` 0.3, the paper's CIFAR-10 setting, on images smaller than
  64 px. For ImageNet-100 the paper uses a smaller :math:`p_b`; the code of a later paper that runs CUDA
  on ImageNet-100 (IRP, github.com/lyumingzhi/IRP, ``stat_A.py``) uses ``kernel_size=9,
  blur_parameter=0.06``. We do not use it on large images: at 96 px (CIFAR-10
  upscaled, JPEG, 5000 rows, 8 epochs, ``cnn-small`` from scratch; ``benchmarks/RESULTS.md``, "96 px
  from scratch at a learning budget (session 8)") it protects more than the 3 x 3 filters (0.70x clean
  against 0.97x) but neither protects well, it costs 19.8 dB PSNR against 25.6 dB, and it has no
  32-px row; and against a backbone probed at 224 px it gave 0.89x. Pass both to use it;
* per-image max normalisation after filtering (``kernels.convolve``, ``normalise="max"``).

**Photo sizes (ours): on images whose shorter side is 64 px or more the defaults are** ``kernel_size=7,
padding="reflect", dilation="auto"`` (:data:`PHOTO_DEFAULTS`, ``METHOD.size_defaults``): 7 x 7 filters whose
taps are spaced by each image's own size (``round(shorter side / 32)``: 2 at 64 px, 3 at 96, 7 at 224, 32 at
1024), so a filter covers the share of a photo that a contiguous 7 x 7 filter covers of a 32-px image, and no
dark frame. Why: the paper's 3 x 3 filters act on a few pixels of a large image, which a network, and above all
a pretrained one, reads past. Measured (``benchmarks/RESULTS.md``; CIFAR-10 upscaled bicubic and stored as
JPEG 95, every size; key 1234 unless said; ratio = protected / clean test accuracy under the same attacker):

* 224 px, GPU, ResNet-18 pretrained at 224 px on other classes (CIFAR-10 0-4), victim task classes 5-9:
  the paper's 3 x 3 filters 1.00x fine-tuned; the photo setting (dilation 7) 0.38-0.55x fine-tuned, 0.54-0.61x
  linearly probed and 0.45-0.54x for a ResNet-18 trained from scratch over three keys, at 17.2-17.7 dB PSNR;
* the same attackers at 96 and 160 px (the fine-tune reads the images resized to 224 px), dilation 3 / 5:
  0.53x / 0.54x fine-tuned, but 0.70x / 0.65x from scratch, at 17.2 dB; twice the spacing (6 / 7) gives
  0.38-0.57x / 0.32-0.48x fine-tuned over three keys and still 0.63-0.68x / 0.48-0.70x from scratch, at 14.0 /
  15.6 dB ("Filter spacing across sizes on the GPU (session 13)");
* 64 px, CPU (dilation 2): a small CNN pretrained on other CIFAR rows, reading the images at 32 px and
  fine-tuned, 0.31x, where the paper's filters give 1.00x; a small CNN from scratch 0.56x (the paper's: 0.89x) (same section);
  32 px: the same filters contiguous (``kernel_size=7, padding="reflect"``) 0.31-0.47x under that CNN's
  fine-tune and probe and 0.33-0.50x from scratch.

The price is visible damage (PSNR about 17 dB at every size on upscaled images, SSIM 0.44-0.68), and
protection against a network trained from scratch on the photos is weaker than on 32-px images. Pass
``kernel_size=3, padding="zeros", dilation=1`` for the paper's filters at any size; ``bank.info
["size_defaults"]`` records which values the image size chose.

Ours: the random stream (``numpy.random.default_rng(seed)`` instead of the legacy global
``np.random.seed``), so the same seed does not give the authors' exact filters; filters are
drawn per class in class order, then rounded down to multiples of :math:`2^{-f}` (``f = 14`` at
the paper's setting, from ``kernels.conv_grid_bits``): on that grid a float32 convolution of uint8
pixels is exact, so a fast library convolution gives the same bytes on every machine. Convolution has no spatial size, so the bank fits images of any
size (``info["size_mismatch"] = "resize"``: nothing is resized, the filter is just applied).

Parameters (all stored in ``bank.params``, with the seed):

* ``blur_parameter`` (default 0.3): upper bound :math:`p_b` of the uniform entries, > 0.
* ``center_parameter`` (default 1.0): value of the one random "centre" entry, >= 0, or ``None``
  to leave all entries uniform (the code's ``center_parameter=None``).
* ``kernel_size`` (default 3; **5 when fitted without labels**, keyed by clusters of an encoder,
  ``ue.fit("cuda", ds, label_column=None, encoder=...)``; 7 on images of 64 px or more, with or without
  labels, the photo defaults above): odd integer >= 1. Why 5 there: keys that
  are only partly the classes leave the 3 x 3 filters little grip. Measured on CIFAR-10 (10k rows,
  32 px, a small CNN trained from scratch with the true labels, keys from K = 10 K-means clusters of
  a ResNet-18 encoder trained on other rows; ``benchmarks/RESULTS.md``, "Label-free protection,
  session 8"): 0.51x clean with 5 x 5 against 0.80x with 3 x 3, at a visible cost (PSNR 16.8 dB,
  SSIM 0.60, against 19.4 dB, 0.81). Most of that is the stronger blur itself: the same 5 x 5
  filters keyed at random (no information about the classes) gave 0.57x. Pass ``kernel_size=3``
  for the paper's filters.
* ``normalise`` (default ``"max"``): ``"max"`` (the paper) or ``"none"`` (clip only).
* ``padding`` (default ``"zeros"``, the paper's and the authors' ``Conv2d(padding=k // 2)``):
  ``"reflect"`` mirrors the image at its border instead. Zero padding mixes black into the outer
  ``k // 2`` pixels, a dark frame (measured at 96 px, k = 3: outer ring 88 grey levels against
  133 one pixel in) that COIN's edge-pixel detector keys on and that costs PSNR (25.3 dB against
  31.0 dB with reflect); reflect leaves no frame. Stored in ``bank.params``: every apply path
  reads it from the bank, and banks saved before this parameter apply as ``"zeros"``.
* ``dilation`` (default 1, the paper's contiguous filters; ours): the ``k x k`` taps are spaced
  ``dilation`` pixels apart (``F.conv2d(dilation=...)``), so the filter spans
  ``dilation * (k - 1) + 1`` pixels with the same ``k * k`` random entries. Why: a 3 x 3 filter on a
  photo whose detail is several pixels wide (an upscaled or soft image) only mixes neighbours that
  are nearly equal, so every class's filter does almost the same thing; spacing the taps by the
  detail's scale makes the class filters differ where the content is. Zero padding then draws a
  frame ``dilation * (k // 2)`` pixels wide, so pair it with ``padding="reflect"``. Stored in
  ``bank.params``; banks saved before it apply with 1. Measured at 96 px only
  (``benchmarks/RESULTS.md``, "96 px with dilated filters (session 9)"; CIFAR-10 upscaled 3x, JPEG,
  5000 rows, 8 epochs, ``cnn-small`` from scratch, reflect padding, k = 3): dilation 1, 2, 3, 4, 6
  give 0.99x, 0.84x, 0.72x, 0.65x, 0.48x clean (0.50x at a second training seed) at 31.8, 26.0,
  22.7, 20.6, 18.2 dB PSNR (SSIM 0.97 ... 0.50): protection comes with visible damage, though far
  less than from a dense kernel of the same span (``kernel_size=5, dilation=3``: 0.81x at 19.0 dB).
  ``dilation=6, padding="reflect"`` is the one cuda setting measured at <= 0.5x there, at SSIM 0.50;
  its 32-px counterpart (``dilation=2``, reflect) gives 0.40x at 17.9 dB / SSIM 0.50, against 0.57x
  at 21.8 dB / 0.81 with the paper's contiguous filters.
  Caveat: those images are CIFAR upscaled, whose detail is exactly 3 px wide at 96 px (a
  dilation-3 filter gives the 32-px cuda image upscaled); real photos have detail at every scale,
  and none has been measured with a dilation. The default stays 1, the paper's, below 64 px;
  ``"auto"`` (the photo-size default) spaces the taps ``round(min(H, W) / 32)`` pixels apart on each image
  as it is protected (``core.kinds.conv.scaled_dilation``), so one bank serves photos of mixed sizes.
* ``key_trials`` (default 1, the paper's one random key; ours): how many candidate keys to draw from the
  seed before keeping one. The paper draws one key; how well it protects then depends on the draw
  (``kernel_size=5, padding="reflect"``: 0.28x ... 0.54x clean from scratch at 32 px and 0.33x ... 0.62x at
  96 px over seven keys, ``benchmarks/RESULTS.md``, "One cuda setting at three sizes (session 10)"):
  when the attacker learns the filters as the classes' cue it generalises badly to clean images; when a
  key's filters happen to look alike to a network, only the blur is left. With ``key_trials = N > 1``
  candidate 0 is the one-key draw and candidates 1 ... N-1 are drawn from seeds derived from the seed
  (:func:`candidate_seeds`); each is scored by :func:`key_score` (a ``cnn-tiny`` trained a few epochs on
  a seeded sample of at most ``SCORE_IMAGES`` = 2000 of the images, shrunk to 32 px and filtered with the
  candidate, tested on clean held-out images of the sample: the lower its accuracy, the more a network
  learns the key instead of the content), and the lowest is kept. The same seed gives the same bank on
  the same machine; ``bank.info`` records ``key_trials``, the kept candidate's index and every
  candidate's score (never a seed). ``key_trials=1`` reads no image and gives exactly the one-key bank.
  Measured effect (``benchmarks/RESULTS.md``, "Choosing cuda's key at fit time (session 11)";
  ``kernel_size=5, padding="reflect"``, CIFAR-10 rows [0, 5000), 8 candidates of seeds 2026, 2027, 2028):
  **no benefit shown**. On the seven earlier keys the score ranked the measured rows weakly (Spearman
  -0.54 ... -0.75, p 0.05-0.22), but on the new keys the kept candidate met every goal line (32 px
  fine-tune / probe of a pretrained CNN <= 0.6x, from scratch <= 0.5x; 96 px, dilation 6, from scratch
  <= 0.5x) for one seed of three, and protected more than the worst-ranked candidate in 6 of 13
  attacker x size comparisons (224 px, one pair: 0.47x against 0.58x); rescored with other surrogate
  training seeds, each set kept another candidate. So the default stays 1, and ``key_trials > 1`` only
  costs time for now.
  Cost: 6-24 s per candidate on one shared CPU core (8 candidates on 5000 rows at 32 px: 45-192 s, by load).

Example:
    >>> import numpy as np, torch, uetransforms as ue
    >>> ds = {"image": list(np.full((4, 8, 8, 3), 128, np.uint8)), "label": [0, 1, 0, 1]}
    >>> bank = ue.fit("cuda", ds, seed=1234)
    >>> bank.kind, bank.tensors["weight"].shape
    ('conv', (2, 3, 3, 3))
    >>> w = bank.tensors["weight"]
    >>> bool((w[:, 1] == w[:, 0]).all() and (w[:, 0] == 1.0).sum() == 2)
    True
    >>> x = torch.from_numpy(np.stack(ds["image"])).permute(0, 3, 1, 2).contiguous()
    >>> ue.apply(bank, x, ds["label"]).shape
    torch.Size([4, 3, 8, 8])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..core import kernels
from ..core.bank import NoiseBank
from ..core.data import FitData
from . import Choice, Method, Number, Param, Rule, SizeDefaults


def _dilation(value: Any) -> Any:
    """An integer >= 1, or ``"auto"`` (resolved per image when it is protected: ``conv_options``)."""
    if isinstance(value, str) and value == "auto":
        return value
    return Number(1, integer=True)(value)


#: The photo-size setting (``METHOD.size_defaults``): 7 x 7 filters, reflect padding, taps spaced by the image's
#: size. Why from 64 px: the smallest size where it was measured against the paper's (module docs).
PHOTO_DEFAULTS = SizeDefaults(min_side=64, values={"kernel_size": 7, "padding": "reflect", "dilation": "auto"})

METHOD = Method(
    key="cuda",
    paper="Convolution-based Unlearnable DAtasets (Sadasivan et al., CVPR 2023)",
    citation="V. S. Sadasivan, M. Soltanolkotabi, S. Feizi, CUDA: Convolution-based Unlearnable Datasets, "
             "CVPR 2023, arXiv:2303.04278",
    keyed_by="class",
    # key_trials > 1 also reads a sample of up to 2000 images (the docstring); `needs` feeds the README's
    # generated methods table (the lead's), so its line changes with a regeneration, not here
    needs="a private key only",
    kind="conv",
    summary="one random k x k blur filter per class; images are filtered, not noised",
    order=10,
    params=(
        Param("blur_parameter", 0.3, Number(0, lo_open=True), paper=0.3, public=True,
              help="upper bound p_b of the uniform filter entries (smaller for high-resolution data)"),
        Param("center_parameter", 1.0, Number(0, none=True), paper=1.0, public=True,
              help="value of the one random centre entry (None: all entries uniform)"),
        Param("kernel_size", 3, Number(1, integer=True, odd=True), paper=3, public=True,
              help="filter side k"),
        Param("normalise", "max", Choice(("max", "none")), paper="max", public=True,
              help="'max': divide each filtered image by its maximum (the paper); 'none': clip only"),
        Param("padding", "zeros", Choice(kernels.CONV_PADDINGS), paper="zeros", public=True,
              help="'zeros' (the paper: a dark frame k//2 px wide, a detection cue) or 'reflect' (no frame)"),
        Param("dilation", 1, Rule(_dilation, "an integer >= 1, or 'auto' (round(shorter side / 32) on each image)"),
              paper=1, public=True,
              help="pixels between filter taps (ours; the paper's filters are contiguous, 1): a k x k filter then "
                   "spans dilation*(k-1)+1 px; 'auto' spaces them by each image's size, so the filter covers the "
                   "share of a photo it covers of a 32-px image"),
        Param("key_trials", 1, Number(1, integer=True), paper=1,
              help="candidate keys drawn from the seed, the one a small surrogate learns least from kept (ours; "
                   "1: the paper's single draw, no image read; > 1 reads a sample of up to 2000 images and costs "
                   "6-24 s per candidate; no protection gain measured yet, so leave it at 1)"),
    ),
    # keyed by clusters (no labels) the 3 x 3 filters protect little: 0.80x vs 0.51x with 5 x 5 (module docs)
    label_free_defaults={"kernel_size": 5},
    # the paper's 3 x 3 filters protect nothing against a fine-tuned ResNet-18 at 224 px (1.00x): module docs
    size_defaults=PHOTO_DEFAULTS,
)


#: Fewest fractional bits worth rounding filters to (see ``fit``); 10 keeps entries within 1e-3.
_MIN_GRID_BITS = 10


def _below(limit: float) -> np.float32:
    """The largest float32 strictly below ``limit`` (so float32 rounding keeps entries < p_b)."""
    v = np.float32(limit)
    while float(v) >= limit:
        v = np.nextafter(v, np.float32(0))
    return v


def _draw(seed: int, num_classes: int, channels: int, p: dict[str, Any]) -> np.ndarray:
    """The filters of one key: one per class, in class order, from ``numpy.random.default_rng(seed)``."""
    k = p["kernel_size"]
    rng = np.random.default_rng(seed)
    weight = np.empty((num_classes, channels, k, k), dtype=np.float32)
    top = _below(p["blur_parameter"])
    for cls in range(num_classes):
        w = rng.uniform(0.0, p["blur_parameter"], size=(k, k))  # channel 0; the others are copies
        w = np.minimum(w.astype(np.float32), top)
        if p["center_parameter"] is not None:
            i, j = rng.integers(k), rng.integers(k)
            w[i, j] = p["center_parameter"]
        weight[cls] = w[None]
    # Round the entries down to a 2**-f grid on which float32 convolution of uint8 pixels is exact
    # (kernels.conv_grid_bits), so the kernel may use the library convolution and still give the same
    # bytes on every machine. 14 bits at the paper's setting (entries < 0.3 move by < 6e-5); a
    # coarser grid (huge kernels) would change the filters visibly, so those stay as drawn.
    bits = kernels.conv_grid_bits(float(np.abs(weight).sum(axis=(-2, -1)).max()))
    if bits >= _MIN_GRID_BITS:
        weight = (np.floor(weight.astype(np.float64) * 2.0**bits) / 2.0**bits).astype(np.float32)
    return weight


def candidate_seeds(seed: int, trials: int) -> list[int]:
    """The keys ``key_trials`` draws from: ``seed`` itself (the one-key draw), then ``trials - 1`` keys
    derived from it (``numpy.random.SeedSequence(seed, spawn_key=(1, i))``'s first 32-bit word, i = 1, 2, ...).

    Each is a plain seed: ``ue.fit("cuda", ..., seed=candidate_seeds(s, n)[i])`` draws candidate ``i``'s
    filters, which is how the benchmarks measure a candidate that was not kept.
    """
    return [int(seed)] + [int(np.random.SeedSequence(int(seed), spawn_key=(1, i)).generate_state(1, np.uint32)[0])
                          for i in range(1, trials)]


#: The key score's setting (``key_score``), the one measured in benchmarks/RESULTS.md, "Choosing cuda's key at
#: fit time (session 11)": a seeded sample of at most SCORE_IMAGES images, shrunk to at most SCORE_SIZE px,
#: 3/4 to train a cnn-tiny SCORE_EPOCHS epochs (batch 64, SGD lr 0.05) per training seed in SCORE_SEEDS.
SCORE_IMAGES = 2000
SCORE_SIZE = 32
SCORE_EPOCHS = 6
SCORE_SEEDS = (0, 1)


def score_images(images: np.ndarray) -> torch.Tensor:
    """``images`` (uint8 ``[N, C, H, W]``) shrunk to at most ``SCORE_SIZE`` px on the longer side (area
    average, aspect kept); smaller images are kept as they are."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    h, w = x.shape[-2:]
    if max(h, w) <= SCORE_SIZE:
        return x
    size = (max(1, round(h * SCORE_SIZE / max(h, w))), max(1, round(w * SCORE_SIZE / max(h, w))))
    return F.interpolate(x.float(), size=size, mode="area").round_().clamp_(0, 255).to(torch.uint8)


def key_score(images: torch.Tensor, labels: np.ndarray, weight: np.ndarray, *, normalise: str, padding: str) -> float:
    """How much a small network trained on images filtered with ``weight`` still learns of the classes:
    its mean accuracy on the *clean* held-out quarter of ``images`` (lower: the key protects more).

    ``images`` uint8 ``[N, C, h, w]`` (already through :func:`score_images`), ``labels`` their classes. The
    filters act contiguously (dilation 1) at this small size, whatever the bank's size and dilation: that is
    how the session-11 check scored the 96-px (dilation 6) and 224-px (dilation 7) keys too, an
    approximation (a dilated filter on a large image is close to the contiguous one on the image shrunk by
    the dilation), not a measured rule. Trains on the CPU whatever the fit's device, so the choice does not
    depend on the accelerator.
    """
    from ..models import surrogates

    n = len(images)
    cut = max(1, min(n - 1, (3 * n) // 4))
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    filt = kernels.convolve(images[:cut], torch.tensor(weight)[y[:cut]], normalise=normalise, padding=padding)
    xt, yt = filt.float().div_(255), y[:cut]
    held, yh = images[cut:].float().div_(255), y[cut:]
    accs = []
    for s in SCORE_SEEDS:
        model = surrogates.build("cnn-tiny", num_classes=weight.shape[0], image_shape=tuple(xt.shape[1:]), seed=s)
        trainer = surrogates.Trainer(model, lr=0.05)
        gen = torch.Generator().manual_seed(s)
        for _ in range(SCORE_EPOCHS):
            for idx in torch.randperm(len(xt), generator=gen).split(64):
                trainer.step(xt[idx], yt[idx])
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(b).argmax(1) for b in held.split(256)])
        accs.append(int((pred == yh).sum()) / len(yh))
    return float(np.mean(accs))


@METHOD.fitter
def fit(data: FitData, *, seed: int, device: torch.device, **p: Any) -> NoiseBank:
    """One random filter per class; reads only the label column (``data.num_classes``), and with
    ``key_trials > 1`` a seeded sample of at most ``SCORE_IMAGES`` images to score the candidate keys."""
    num_classes = data.num_classes
    c, _, _ = data.image_shape
    trials = p.pop("key_trials")
    info: dict[str, Any] = {"size_mismatch": "resize"}
    if trials == 1:
        weight = _draw(seed, num_classes, c, p)
    else:
        labels = data.labels
        rows = np.sort(np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(0,))).choice(
            len(data), size=min(SCORE_IMAGES, len(data)), replace=False))
        if len(rows) < 2:
            raise ValueError(f"key_trials={trials} scores keys on held-out images and needs at least 2 images, "
                             "got 1; pass key_trials=1")
        sample = score_images(data.images_at(rows))
        weights, scores = [], []
        for cand in candidate_seeds(seed, trials):
            weights.append(_draw(cand, num_classes, c, p))
            scores.append(key_score(sample, labels[rows], weights[-1], normalise=p["normalise"], padding=p["padding"]))
        # lowest clean accuracy wins; a tie keeps the earlier candidate (the one-key draw first)
        kept = int(np.argmin(scores))
        weight = weights[kept]
        info.update({"key_trials": trials, "key_kept": kept, "key_score": scores[kept], "key_scores": scores,
                     "key_score_images": len(rows)})
        p["key_trials"] = trials  # stored only when > 1, so one-key banks keep main's bytes
    return NoiseBank(
        method="cuda",
        kind="conv",
        keying="class",
        keys=np.arange(num_classes),
        tensors={"weight": weight},
        params={**p, "seed": int(seed)},
        image_shape=data.image_shape,
        info=info,
    )
