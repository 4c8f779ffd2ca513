"""``cudatap``: CUDA's class-wise convolution, then ``tap``'s targeted additive noise crafted on the
*convolved* images through a frozen pretrained backbone.

Why both: against a network trained from scratch the per-class blur of CUDA is a shortcut it
learns instead of the content (``cuda``); against an attacker that starts from pretrained weights
the blur still changes the features the backbone computes, but only partly, and an additive term
that drives each image's features towards a secret *wrong* class (``tap``; Fowl et al. 2021 with
BAIT's wrong-target binding) attacks what the pretrained features see. Issue 22 asked for
"combining a convolution with an additive shortcut"; this is that combination, the additive part
crafted with the convolution already applied, so it moves the features of the pixels the attacker
will actually get.

Fitting: the filters are exactly ``cuda``'s for the same seed and parameters (``cuda.fit``), then
``tap``'s PGD (:func:`uetransforms.algorithms.tap.craft`) runs on ``convolve(x)`` instead of ``x``;
the bank (kind ``convadd``) holds both, keyed alike (per class, or per sample with each sample's
class filter). Applying filters the image, rounds it to uint8 as a ``cuda`` bank does, then adds the
delta: the delta was kept inside the pixel box of the filtered image, so adding never clips.
Parameters: ``cuda``'s (``blur_parameter``, ``center_parameter``, ``kernel_size``, ``normalise``,
``padding``, ``dilation``)
and ``tap``'s (``epsilon``, ``backbone``, ``mode``, ``augment``, ``steps``, ``step_size``...), with
their defaults except ``augment="flip+crop"`` (the setting measured) and cuda's photo-size filters at
every size (7 x 7, reflect, ``dilation="auto"``). Measured (``benchmarks/RESULTS.md``; CIFAR-10, upscaled
above 32 px; protected / clean accuracy, fine-tune / linear probe of a small CNN pretrained on other rows
/ a small CNN from scratch), crafted through another small CNN trained on other rows: 0.25-0.32x /
0.20-0.25x / 0.13-0.26x at 32 px (three keys, 16.6-16.8 dB PSNR), 0.30-0.32x / 0.22-0.26x / 0.19-0.36x at
64 px (two keys, 17.0-17.1 dB); at 224 px on a GPU, through a ResNet-34 against a ResNet-18, 0.51x /
0.50x / 0.34x (one key). At 96 px the per-pixel noise adds nothing from scratch (0.68-0.77x); tap's
``grid="auto"`` through a surrogate reading the images at 32 px gives 0.31-0.50x there (three keys) and
0.49-0.56x / 0.22-0.31x under a 96-px backbone's fine-tune / probe (two keys), and 0.44-0.49x from scratch
at 160 px (two keys; session 14).

Example:
    >>> import numpy as np, torch, uetransforms as ue
    >>> from uetransforms.models.encoders import save_small_cnn
    >>> from uetransforms.models.networks import SmallCNN
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "bb.safetensors")
    >>> _ = save_small_cnn(SmallCNN(10, 3, width=8), path)
    >>> rng = np.random.default_rng(0)
    >>> ds = {"image": list(rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)), "label": [0, 1] * 4}
    >>> bank = ue.fit("cudatap", ds, backbone=path, steps=2, seed=1)
    >>> bank.kind, bank.keying, bank.tensors["weight"].shape, bank.tensors["delta"].shape
    ('convadd', 'sample', (8, 3, 7, 7), (8, 3, 8, 8))
    >>> filters = ue.fit("cuda", ds, seed=1, kernel_size=7, padding="reflect", dilation="auto")  # cudatap's defaults
    >>> bool((bank.tensors["weight"] == filters.tensors["weight"][ds["label"]]).all())
    True
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from ..core import kernels
from ..core.kinds.conv import conv_options
from ..core.bank import NoiseBank
from ..core.data import FitData
from . import Method, cuda, tap

METHOD = Method(
    key="cudatap",
    paper="CUDA's class-wise convolution + targeted adversarial poisoning crafted on the convolved images",
    citation=f"{cuda.METHOD.citation}; {tap.METHOD.citation}",
    keyed_by="sample/class",
    needs="a pretrained backbone (frozen; not the attacker's)",
    kind="convadd",
    summary="cuda's per-class blur, then tap's wrong-class noise crafted on the blurred images: "
            "for attackers from scratch and from pretrained models alike",
    order=66,
    # tap's parameters, but the shift in the PGD loop on by default: the measured setting (20 steps, flip+crop:
    # 0.52x under ATTACK's fine-tune against 0.63x with 8 steps and flips only; RESULTS.md, session 7);
    # cuda's, with cuda's photo-size filters at every size (7 x 7 reflect, dilation "auto"): 0.21-0.32x at 32 px
    # against 0.30-0.52x with 3 x 3 (RESULTS.md, session 12), and 0.34-0.51x at 224 px
    params=(*(replace(q, default=cuda.PHOTO_DEFAULTS.values[q.name]) if q.name in cuda.PHOTO_DEFAULTS.values else q
              for q in cuda.METHOD.params),
            *(replace(q, default="flip+crop") if q.name == "augment" else q for q in tap.METHOD.params)),
    resolve=tap.METHOD.resolve,
)

_CONV = tuple(q.name for q in cuda.METHOD.params)


@METHOD.fitter
def fit(data: FitData, *, seed: int, device: torch.device, **p: Any) -> NoiseBank:
    """``cuda``'s filters, then ``tap``'s PGD on the filtered images (see the module docs)."""
    filters = cuda.fit(data, seed=seed, device=device, **{n: p[n] for n in _CONV})
    weight = torch.from_numpy(np.array(filters.tensors["weight"]))

    def filtered(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # The very kernel apply runs, on the uint8 pixels (x is u8 / 255, so the rounding is exact).
        u8 = (x * 255).round_().to(torch.uint8)
        return kernels.convolve(u8, weight.to(x.device)[y], **conv_options(p, u8.shape)).float().div_(255)

    delta, keys, info = tap.craft(data, seed=seed, device=device, before=filtered,
                                  **{n: v for n, v in p.items() if n not in _CONV})
    if p["mode"] == "sample":
        weight_rows = weight.numpy()[data.labels.astype(np.int64)]  # each sample keyed with its class's filter
    else:
        weight_rows = weight.numpy()
    stored = {n: v for n, v in p.items() if n != "progress"}
    return NoiseBank(method="cudatap", kind="convadd", keying=p["mode"], keys=keys,
                     tensors={"weight": weight_rows, "delta": delta}, params={**stored, "seed": int(seed)},
                     image_shape=data.image_shape, info=info)
