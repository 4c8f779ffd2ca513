"""``coin[:alpha=2]``: every pixel resampled at a randomly displaced position (bilinear), every batch.

COIN (Li, Wang et al., "Detecting and Corrupting Convolution-based Unlearnable Examples", AAAI
2025, arXiv 2311.18403) defeats class-wise convolutions (CUDA) by breaking the fixed spatial
relation between a pixel and its neighbours that a class's filter imprints: each output pixel
``(i, j)`` reads the image at ``(i + dy, j + dx)`` with ``dy, dx ~ U(-alpha, alpha)`` drawn
independently per pixel and per image, by bilinear interpolation. The authors apply it after
crop + flip on every training batch, with ``alpha = 2`` (their "severity 4") by default.

Ours: the displacement wraps around the image (periodic), where their ``scipy`` call uses its
``"wrap"`` mode; one displacement field per image shared by the channels, as theirs; pixels stay
float (theirs are truncated to uint8 before the tensor conversion, a rounding of at most 1/255).
The paper's edge-pixel detector (EPD) is not part of this defence.
"""

from __future__ import annotations

from ...algorithms._common import coin_displacements, coin_resample
from ...core.errors import DefenceError
from . import Defence, number, only

# The re-read itself lives with the fitting augmentations (tap's ``augment="flip+crop+coin"`` crafts
# noise through it); this module is the defence that applies it to training batches.


class Coin(Defence):
    key, spec = "coin", "coin[:alpha=<pixels>]"
    paper = "COIN (Li, Wang et al., AAAI 2025, arXiv 2311.18403)"
    summary = "every pixel re-read at a random offset in (-2, 2) px by bilinear interpolation, every batch"
    order, stage = 200, "augment"

    def __init__(self, alpha: float = 2.0) -> None:
        self.alpha = float(alpha)

    @classmethod
    def parse(cls, num, options):
        only(options, ("alpha",), cls.key)
        alpha = number(options, "alpha", num, 2.0)
        if not 0 < alpha <= 16:
            raise DefenceError(f"COIN's alpha is the largest pixel offset, in (0, 16], got {alpha} (the paper uses 2)")
        return {"alpha": alpha}

    def generate_parameters(self, x, generator):
        dy, dx = coin_displacements(x, self.alpha, generator)
        return {"dy": dy, "dx": dx}

    def apply_transform(self, x, targets, params):
        return coin_resample(x, params["dy"], params["dx"]), targets


DEFENCE = Coin
