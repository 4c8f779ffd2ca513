"""``jpeg<quality>``: the training images re-compressed as JPEG (a trainer cleaning suspicious data;
clean test images stay as they are). ``jpeg10`` is ISS's setting against L-inf noise."""

from __future__ import annotations

import torch

from ...core.errors import DefenceError
from . import Defence, number, only


def jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Round-trip uint8 ``[B, C, H, W]`` (C = 1 or 3) through JPEG at ``quality`` (libjpeg via Pillow,
    4:2:0 chroma subsampling as Pillow's default), in memory."""
    import io

    import numpy as np
    from PIL import Image

    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DefenceError(f"JPEG takes uint8 [B, 1|3, H, W] images, got {images.dtype} {tuple(images.shape)}")
    arr = images.cpu().numpy()
    out = np.empty_like(arr)
    buf = io.BytesIO()
    for i, chw in enumerate(arr):
        img = Image.fromarray(chw[0] if chw.shape[0] == 1 else chw.transpose(1, 2, 0))
        buf.seek(0)
        buf.truncate()
        img.save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        dec = np.asarray(Image.open(buf).convert(img.mode))
        out[i] = dec[None] if dec.ndim == 2 else dec.transpose(2, 0, 1)
    return torch.from_numpy(out).to(images.device)


class Jpeg(Defence):
    key, aliases, spec = "jpeg", ("jpg",), "jpeg<quality 1-100>"
    paper = "ISS (Liu et al. 2023, arXiv 2301.13838)"
    summary = "re-compress the training images as JPEG at the given quality (75 by default)"
    order = 20

    def __init__(self, quality: int = 75) -> None:
        self.quality = int(quality)

    @classmethod
    def parse(cls, num, options):
        only(options, ("quality",), cls.key)
        q = int(number(options, "quality", num, 75))
        if not 1 <= q <= 100:
            raise DefenceError(f"JPEG quality must be in 1..100, got {q}")
        return {"quality": q}

    def prepare_train(self, images, labels, *, generator):
        if images.shape[1] == 3 and bool((images[:, 0] == images[:, 1]).all() and (images[:, 1] == images[:, 2]).all()):
            # A gray image (after grayscale) is encoded as its one luma plane: a 3-channel JPEG of
            # it comes back off-gray by +-1.
            return jpeg(images[:, :1].contiguous(), self.quality).expand_as(images).contiguous()
        return jpeg(images, self.quality)


DEFENCE = Jpeg
