"""The evaluation figure, drawn with PIL only (matplotlib is not a dependency).

Top: a few clean training images, their protected versions and the perturbation (protected
minus clean) stretched per image to the full gray range, mid-gray meaning "unchanged". Bottom:
clean test accuracy per epoch, one line per training set x defence.

Example:
    >>> import torch, tempfile, os
    >>> x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    >>> path = os.path.join(tempfile.mkdtemp(), "fig.png")
    >>> _ = report_figure(path, clean=x, protected=x.flip(-1), curves={"clean / none": [0.3, 0.6]})
    >>> from PIL import Image; Image.open(path).format
    'PNG'
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

# Colour-blind-safe palette (Okabe-Ito), cycled over the curves.
PALETTE = [(0, 114, 178), (213, 94, 0), (0, 158, 115), (204, 121, 167), (230, 159, 0), (86, 180, 233),
           (240, 228, 66), (0, 0, 0)]
TILE = 56  # pixels per sample image in the figure
WIDTH = 720


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _tile(chw: np.ndarray) -> Image.Image:
    img = Image.fromarray(chw[0] if chw.shape[0] == 1 else chw.transpose(1, 2, 0))
    return img.convert("RGB").resize((TILE, TILE), Image.NEAREST)


def amplify(clean: torch.Tensor, protected: torch.Tensor) -> torch.Tensor:
    """``protected - clean`` mapped per image to 0..255 with 128 = no change (sign kept)."""
    d = protected.to(torch.float32) - clean.to(torch.float32)
    peak = d.abs().flatten(1).amax(1).clamp_min(1).view(-1, 1, 1, 1)
    return (128 + d / peak * 127).round().clamp(0, 255).to(torch.uint8)


def _samples_panel(clean: torch.Tensor | None, protected: torch.Tensor | None) -> Image.Image | None:
    if protected is None or len(protected) == 0:
        return None
    rows: list[tuple[str, torch.Tensor]] = []
    if clean is not None:
        rows.append(("clean", clean))
    rows.append(("protected", protected))
    if clean is not None:
        rows.append(("noise (amplified)", amplify(clean, protected)))
    font = _font(13)
    label_w = 130
    n = min(len(protected), (WIDTH - label_w) // (TILE + 4))
    panel = Image.new("RGB", (WIDTH, len(rows) * (TILE + 6) + 6), "white")
    draw = ImageDraw.Draw(panel)
    for r, (name, batch) in enumerate(rows):
        y = 6 + r * (TILE + 6)
        draw.text((6, y + TILE // 2 - 7), name, fill="black", font=font)
        arr = batch[:n].cpu().numpy()
        for i in range(n):
            panel.paste(_tile(arr[i]), (label_w + i * (TILE + 4), y))
    return panel


def _curves_panel(curves: Mapping[str, Sequence[float]]) -> Image.Image:
    font, small = _font(13), _font(11)
    height = 300
    left, right, top, bottom = 56, 210, 14, 40
    panel = Image.new("RGB", (WIDTH, height), "white")
    draw = ImageDraw.Draw(panel)
    x0, x1, y0, y1 = left, WIDTH - right, top, height - bottom
    epochs = max((len(c) for c in curves.values()), default=1)

    def px(epoch: float, acc: float) -> tuple[float, float]:
        fx = (epoch - 1) / max(1, epochs - 1)
        return x0 + fx * (x1 - x0), y1 - acc * (y1 - y0)

    for k in range(6):  # horizontal grid at 0, 0.2, ..., 1
        acc = k / 5
        _, y = px(1, acc)
        draw.line([(x0, y), (x1, y)], fill=(225, 225, 225))
        draw.text((x0 - 34, y - 7), f"{acc:.1f}", fill="black", font=small)
    step = max(1, epochs // 10)
    for e in range(1, epochs + 1, step):
        x, _ = px(e, 0)
        draw.line([(x, y1), (x, y1 + 4)], fill="black")
        draw.text((x - 4, y1 + 6), str(e), fill="black", font=small)
    draw.rectangle([x0, y0, x1, y1], outline="black")
    draw.text(((x0 + x1) // 2 - 24, height - 18), "epoch", fill="black", font=font)
    draw.text((4, y0 - 2), "acc", fill="black", font=small)
    for i, (name, curve) in enumerate(curves.items()):
        colour = PALETTE[i % len(PALETTE)]
        pts = [px(e + 1, float(a)) for e, a in enumerate(curve)]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        for x, y in pts:
            draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=colour)
        ly = y0 + 4 + i * 17
        draw.line([(x1 + 12, ly + 7), (x1 + 32, ly + 7)], fill=colour, width=3)
        draw.text((x1 + 38, ly), f"{name} ({float(curve[-1]):.2f})" if len(curve) else name, fill="black", font=small)
    return panel


def report_figure(
    path: str | os.PathLike,
    *,
    clean: torch.Tensor | None,
    protected: torch.Tensor | None,
    curves: Mapping[str, Sequence[float]],
    title: str = "",
) -> str:
    """Write the PNG (samples on top when given, accuracy curves below) and return its path."""
    parts = [p for p in (_samples_panel(clean, protected), _curves_panel(curves)) if p is not None]
    head = 30 if title else 0
    fig = Image.new("RGB", (WIDTH, head + sum(p.height for p in parts)), "white")
    if title:
        ImageDraw.Draw(fig).text((8, 7), title + "  -  clean test accuracy per epoch", fill="black", font=_font(15))
    y = head
    for p in parts:
        fig.paste(p, (0, y))
        y += p.height
    path = os.fspath(path)
    fig.save(path, format="PNG")
    return path


# Diverging scale for protected / clean ratios: blue = strong protection (ratio 0), pale yellow at
# 0.5, red = the defence restores clean accuracy (ratio >= 1). Colour-blind safe (ColorBrewer RdYlBu).
_RATIO_STOPS = [(0.0, (49, 54, 149)), (0.25, (116, 173, 209)), (0.5, (255, 255, 191)), (0.75, (244, 109, 67)),
                (1.0, (165, 0, 38))]


def ratio_colour(r: float) -> tuple[int, int, int]:
    """The heatmap colour of a protected / clean ratio (clipped to [0, 1])."""
    r = min(max(float(r), 0.0), 1.0)
    for (a, ca), (b, cb) in zip(_RATIO_STOPS, _RATIO_STOPS[1:]):
        if r <= b:
            t = (r - a) / (b - a)
            return tuple(int(round(x + t * (y - x))) for x, y in zip(ca, cb))  # type: ignore[return-value]
    return _RATIO_STOPS[-1][1]


def suite_heatmap(
    path: str | os.PathLike,
    ratio: Mapping[str, Mapping[str, float | None]],
    methods: Sequence[str],
    defences: Sequence[str],
    *,
    title: str = "",
    clean: Mapping[str, float] | None = None,
) -> str:
    """Methods (rows) x defences (columns): protected / clean test accuracy under the same defence,
    lower is better; a missing cell is drawn grey and labelled "not run". ``clean`` (clean accuracy
    per defence) is printed under the column names. Returns the PNG's path.

    Example:
        >>> import tempfile, os
        >>> p = suite_heatmap(os.path.join(tempfile.mkdtemp(), "h.png"), {"cuda": {"none": 0.4, "iss": None}},
        ...                   ["cuda"], ["none", "iss"])
        >>> from PIL import Image; Image.open(p).size[0] > 0
        True
    """
    font, small = _font(13), _font(11)
    cw, ch, left, top = 120, 34, 96, 70 if title else 48
    width = max(left + cw * len(defences) + 12, 480)
    height = top + ch * len(methods) + 34
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((8, 6), title, fill="black", font=small)
    for j, d in enumerate(defences):
        x = left + j * cw
        draw.text((x + 4, top - 36), d[:16], fill="black", font=font)
        if clean and d in clean:
            draw.text((x + 4, top - 18), f"clean {clean[d]:.2f}", fill=(90, 90, 90), font=small)
    for i, m in enumerate(methods):
        y = top + i * ch
        draw.text((6, y + ch // 2 - 7), m, fill="black", font=font)
        for j, d in enumerate(defences):
            x = left + j * cw
            r = ratio.get(m, {}).get(d)
            fill = (200, 200, 200) if r is None else ratio_colour(r)
            draw.rectangle([x, y, x + cw - 2, y + ch - 2], fill=fill)
            text = "not run" if r is None else f"{r:.2f}"
            dark = r is not None and (r < 0.2 or r > 0.85)
            draw.text((x + cw // 2 - 18, y + ch // 2 - 7), text, fill="white" if dark else "black", font=font)
    # legend: the colour scale from 0 to 1
    ly = top + ch * len(methods) + 10
    for k in range(200):
        draw.line([(left + k, ly), (left + k, ly + 10)], fill=ratio_colour(k / 199))
    draw.text((left - 40, ly - 2), "0", fill="black", font=small)
    draw.text((left + 206, ly - 2), ">=1 (clean accuracy: broken)", fill="black", font=small)
    path = os.fspath(path)
    img.save(path, format="PNG")
    return path


__all__ = ["amplify", "ratio_colour", "report_figure", "suite_heatmap"]
