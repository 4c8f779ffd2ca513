"""The double-protection rule of publishing: input that is already protected is refused.

Protecting twice adds the noise twice; publishing a protected copy as if it were clean would
stack a second bank on it. What counts as "protected" is the marker's business
(:mod:`uetransforms.core.codecs`); this module only decides when publishing refuses.
"""

from __future__ import annotations

from typing import Any

from ..core.codecs import marked_where


def refuse_double(data: Any, image_column: str, *, where: str) -> None:
    """Refuse to protect ``data`` up front when what it says of itself shows it is already protected
    (the shards' Parquet schema metadata, or the card text of a copy published before the card
    dropped ``dataset_info.description``); the rule is :func:`uetransforms.core.codecs.marked_where`.

    A copy loaded with ``load_dataset`` keeps neither: its images do, each PNG carrying the marker,
    and ``Protect`` (or :func:`refuse_marked`) refuses those before the first batch is written."""
    why = marked_where(data)
    if why:
        raise_double(f"{where}: {why}")


def refuse_marked(ds: Any, image_column: str, *, where: str, batch_size: int = 4096) -> None:
    """Refuse an in-memory dataset any of whose images carries the protection marker (bytes only, no decode)."""
    arrow = ds.with_format("arrow")
    for i in range(0, len(ds), batch_size):
        _refuse_marked_bytes(arrow[i:i + batch_size].column(image_column).to_pylist(), f"{where}, rows from {i}")


def _refuse_marked_bytes(values: Any, where: str) -> None:
    """Refuse images that carry the codec's non-secret protection marker (PNG bytes, records, PIL)."""
    from ..core.codecs import is_marked

    if any(is_marked(v) for v in values):
        raise_double(f"{where}: its images carry the uetransforms protection marker")


def raise_double(why: str) -> None:
    from ..core.errors import DoubleProtectionError

    raise DoubleProtectionError(
        f"this data is already protected ({why}); protecting it again would add the noise a second time. "
        "If it was protected with this bank, publish it as it is with protected=True; if you really mean to "
        "protect it twice, pass allow_double=True."
    )
