"""Class-wise uniform random noise: the negative control.

Used as the random-noise baseline in the unlearnable-examples literature (e.g. Huang et al.,
"Unlearnable Examples", ICLR 2021, Table 1 "random noise"): every class gets one fixed noise
pattern drawn i.i.d. from ``U(-epsilon, epsilon)`` per pixel and channel, added to all images of
the class. At the usual budget it should *not* make data unlearnable: a model trained on it
still generalises, which is what a control is for. Nothing is learned and no image is read
(only the label column and the first image's shape).

The construction is the standard one; only the random stream is ours
(``numpy.random.default_rng(seed)``).

Parameters (stored in ``bank.params`` with ``norm="linf"`` and the seed):

* ``epsilon`` (default 8/255): L-inf budget in [0, 1] pixel units, 0 < epsilon <= 1.

Example:
    >>> import numpy as np, torch, uetransforms as ue
    >>> ds = {"image": list(np.full((4, 8, 8, 3), 128, np.uint8)), "label": [0, 1, 0, 1]}
    >>> bank = ue.fit("random", ds, seed=7)
    >>> bank.kind, bank.tensors["delta"].shape, bank.params["norm"]
    ('additive', (2, 3, 8, 8), 'linf')
    >>> x = torch.from_numpy(np.stack(ds["image"])).permute(0, 3, 1, 2).contiguous()
    >>> out = ue.apply(bank, x, ds["label"])
    >>> int((out.int() - x.int()).abs().max()) <= 8
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core.bank import NoiseBank
from ..core.data import FitData
from . import Method, Number, Param

METHOD = Method(
    key="random",
    paper="Random-noise baseline (class-wise U(-eps, eps); e.g. Huang et al., ICLR 2021)",
    citation="Random-noise control as in H. Huang, X. Ma, S. M. Erfani, J. Bailey, Y. Wang, Unlearnable Examples: "
             "Making Personal Data Unexploitable, ICLR 2021, arXiv:2101.04898 (Table 1)",
    keyed_by="class",
    needs="nothing",
    kind="additive",
    summary="class-wise uniform noise: the negative control (should not protect)",
    order=100,
    params=(
        Param("epsilon", 8 / 255, Number(0, 1, lo_open=True), paper=8 / 255, public=True, budget="linf",
              help="L-inf budget in [0, 1] pixel units"),
    ),
    public_extra=("norm",),  # always "linf", recorded by the fit
)


@METHOD.fitter
def fit(data: FitData, *, seed: int, device: torch.device, **params: Any) -> NoiseBank:
    """One ``U(-eps, eps)`` pattern per class; reads only the label column."""
    p = {**params, "norm": "linf"}
    num_classes = data.num_classes
    rng = np.random.default_rng(seed)
    eps = p["epsilon"]
    delta = rng.uniform(-eps, eps, size=(num_classes, *data.image_shape)).astype(np.float32)
    delta = np.clip(delta, np.float32(-eps), np.float32(eps))  # float32 rounding must not leave the ball
    return NoiseBank(
        method="random",
        kind="additive",
        keying="class",
        keys=np.arange(num_classes),
        tensors={"delta": delta},
        params={**p, "seed": int(seed)},
        image_shape=data.image_shape,
    )
