"""``iss``: Image Shortcut Squeezing as ``grayscale+jpeg10`` (ISS, arXiv 2301.13838). The paper
reports grayscale (against low-frequency noise) and JPEG-10 (against L-inf noise) one at a time;
its code applies both, grayscale first, when both are asked for, so a trainer needs no idea of the
perturbation's kind."""

from __future__ import annotations

from . import Defence
from .grayscale import Grayscale
from .jpeg import Jpeg


class Iss(Defence):
    key, spec = "iss", "iss[<jpeg quality>]"
    paper = "ISS (Liu et al. 2023, arXiv 2301.13838)"
    summary = "grayscale, then JPEG at quality 10: both squeezers, no guess about the noise"

    def __init__(self, quality: int = 10) -> None:
        self.quality = int(quality)

    @classmethod
    def parse(cls, num, options):
        return Jpeg.parse(num or "10", options)

    def expand(self):
        return [Grayscale(), Jpeg(self.quality)]


DEFENCE = Iss
