"""Image conversion at the edges: whatever a pipeline holds -> uint8 ``[C, H, W]`` and back.

Decoding and encoding live in :mod:`uetransforms.core.codecs` (the one place that does either);
this module keeps the names the adapters use: :func:`to_chw` (= :func:`codecs.decode`),
:func:`from_chw` and :func:`content_id`.

Example:
    >>> import numpy as np
    >>> from PIL import Image
    >>> to_chw(Image.new("RGB", (4, 2)), channels=3).shape
    (3, 2, 4)
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from .codecs import ImageModeError, decode

__all__ = ["ImageModeError", "content_id", "encoded_bytes", "from_chw", "to_chw"]

#: Decode one image to uint8 ``[C, H, W]``; see :func:`uetransforms.core.codecs.decode`.
to_chw = decode


def encoded_bytes(column: Any) -> list[bytes] | None:
    """The encoded bytes of an Arrow ``Image()`` column (``{bytes, path}`` structs), or None.

    None unless every row holds its bytes (a row with only a path, or a null row, is read by
    whoever decodes the records: ``datasets`` for remote paths). Reading the bytes straight
    from Arrow skips a ``{bytes, path}`` dict per row, and lets the fast decoders in
    :mod:`uetransforms.core.codecs` see the bytes before ``datasets`` decodes them with PIL.
    """
    import pyarrow as pa

    data = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not pa.types.is_struct(data.type) or data.type.get_field_index("bytes") < 0:
        return None
    raw = data.field("bytes")
    if data.null_count or raw.null_count:
        return None
    return raw.to_pylist()


def from_chw(arr: np.ndarray):
    """uint8 ``[C, H, W]`` -> a new PIL image (format unset, so ``datasets`` encodes it as PNG)."""
    from PIL import Image

    if arr.shape[0] == 1:
        return Image.fromarray(np.ascontiguousarray(arr[0]))  # uint8 2-D -> mode L
    return Image.fromarray(np.ascontiguousarray(arr.transpose(1, 2, 0)))


def content_id(chw: np.ndarray) -> str:
    """A stable sample id from pixels alone: sha256 of shape and bytes (first 32 hex digits)."""
    h = hashlib.sha256(str(chw.shape).encode())
    h.update(memoryview(np.ascontiguousarray(chw)).cast("B"))
    return h.hexdigest()[:32]
