"""``lowpass[:keep=30]``: keep the lowest ``keep`` percent of 2-D DCT rows and columns of each
channel, every batch ("FF" of Kim & Sandoval-Segura 2024, arXiv 2411.01742; 30% there)."""

from __future__ import annotations

import torch

from ...core.errors import DefenceError
from . import Defence, number, only



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


class Lowpass(Defence):
    key, aliases, spec = "lowpass", ("ff",), "lowpass[:keep=<percent>]"
    paper = "FF (Kim & Sandoval-Segura 2024, arXiv 2411.01742)"
    summary = "DCT low-pass of every batch, keeping the lowest 30% of rows and columns"
    order, stage = 120, "pre_augment"

    def __init__(self, keep: float = 30.0) -> None:
        self.keep = float(keep)

    @classmethod
    def parse(cls, num, options):
        only(options, ("keep",), cls.key)
        keep = number(options, "keep", num, 30)
        if not 0 < keep <= 100:
            raise DefenceError(f"low-pass keep is a percentage of DCT rows/columns in (0, 100], got {keep}")
        return {"keep": keep}

    def apply_transform(self, x, targets, params):
        return lowpass_dct(x, self.keep), targets


DEFENCE = Lowpass
