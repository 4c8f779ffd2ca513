"""``rskff[:center=2.5,keep=30]``: random sharpening then the DCT low-pass, the "RSK+FF" pipeline
of Kim & Sandoval-Segura 2024 (arXiv 2411.01742) against CUDA; the same as ``sharpen+lowpass``."""

from __future__ import annotations

from ...core.errors import DefenceError
from . import Defence, only
from .lowpass import Lowpass
from .sharpen import Sharpen


class RskFf(Defence):
    key, spec = "rskff", "rskff[:center=2.5,keep=30]"
    paper = "RSK+FF (Kim & Sandoval-Segura 2024, arXiv 2411.01742)"
    summary = "random sharpening + DCT low-pass, every batch: the paper's pipeline against CUDA"

    def __init__(self, center: float = 2.5, keep: float = 30.0) -> None:
        self.center, self.keep = float(center), float(keep)

    @classmethod
    def parse(cls, num, options):
        only(options, ("center", "keep"), cls.key)
        if num:
            raise DefenceError("rskff takes center=... and keep=..., not a number")
        return {**Sharpen.parse("", {k: v for k, v in options.items() if k == "center"}),
                **Lowpass.parse("", {k: v for k, v in options.items() if k == "keep"})}

    def expand(self):
        return [Sharpen(self.center), Lowpass(self.keep)]


DEFENCE = RskFf
