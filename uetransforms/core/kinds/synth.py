"""``synth``: noise synthesised per image from its key's coefficients and a per-sample seed
(:func:`~uetransforms.core.kernels.sample_seed`), then added. Synthesisers are registered by name
(``params["synth"]``); ``ar`` (autoregressive) is built in."""

from __future__ import annotations

import numpy as np
import torch

from . import hw, register_kind, register_synth, synthesiser
from ..kernels import add_delta, synth_ar

register_synth("ar", synth_ar)


def apply_synth(app, x: torch.Tensor, rows: np.ndarray, seeds: list[int] | None) -> torch.Tensor:
    if seeds is None:
        raise ValueError("a synth bank needs one seed per sample (see kernels.sample_seed)")
    bank = app.bank
    synth = synthesiser(bank.params.get("synth"))
    delta = synth(bank.gather("coef", rows), list(seeds), bank.image_shape, epsilon=float(bank.params["epsilon"]),
                  norm=bank.params.get("norm", "l2"), innovation=float(bank.params.get("innovation", 0.0)))
    # The noise is per image (its own seed), so it is resized per batch: there is nothing to cache.
    d = torch.from_numpy(delta).mul_(255).to(app.device)
    return add_delta(x, app.fit_size(d, hw(x), mode="bilinear"))


KIND = register_kind("synth", required_tensors=("coef",), kernel=apply_synth, per_sample_seed=True)
