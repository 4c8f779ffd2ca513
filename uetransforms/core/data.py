"""What a method sees of the dataset it is fitted on: :class:`FitData`.

It reads the label column without decoding images, decodes images lazily in batches, and
gives every sample a stable id (an id column, or a hash of its pixels) so sample-wise noise
never depends on row position.

Example:
    >>> import numpy as np
    >>> data = FitData.from_arrays(np.zeros((4, 8, 8, 3), np.uint8), labels=[0, 1, 0, 1])
    >>> data.num_classes, data.image_shape
    (2, (3, 8, 8))
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .errors import DataError
from .images import ImageModeError, content_id, to_chw


def _column_names(ds: Any) -> list[str]:
    names = getattr(ds, "column_names", None)
    if names is None and isinstance(ds, dict):
        names = list(ds)
    return list(names or [])


class FitData:
    """A dataset seen through the columns a method needs.

    Args:
        dataset: a ``datasets.Dataset`` (or anything with ``column_names``, ``len`` and
            ``ds[col]`` / ``ds[i:j]`` access, e.g. a dict of lists).
        image_column: column of images.
        label_column: integer (``ClassLabel``) labels, or ``None`` for label-agnostic methods.
        id_column: stable sample ids; when ``None``, ids are content hashes of the pixels.
        channels: channels to decode to (3 = RGB, 1 = L); defaults to the first image's.
        convert: convert alpha/palette/... images to ``channels`` instead of refusing them.

    Constructing it reads no image: the size is learnt from the first image when a method first
    asks for ``image_shape``, ``channels`` or the images themselves.
    """

    def __init__(
        self,
        dataset: Any,
        *,
        image_column: str = "image",
        label_column: str | None = "label",
        id_column: str | None = None,
        channels: int | None = None,
        convert: bool = False,
    ) -> None:
        names = _column_names(dataset)
        for role, col in (("image_column", image_column), ("label_column", label_column), ("id_column", id_column)):
            if col is not None and col not in names:
                raise DataError(
                    f"{role}={col!r} is not a column of this dataset (columns: {names}); "
                    f"pass {role}=<the right name>" + (" or label_column=None for label-agnostic methods" if role == "label_column" else "")
                )
        self.dataset = dataset
        self.image_column = image_column
        self.label_column = label_column
        self.id_column = id_column
        self.convert = convert
        self._n = len(dataset) if not isinstance(dataset, dict) else len(dataset[image_column])
        if self._n == 0:
            raise DataError("the dataset is empty: there is nothing to fit noise on")
        self._labels: np.ndarray | None = None
        self._num_keys: int | None = None  # set by keyed_by: keys that are not a column's labels
        self._images: np.ndarray | None = None
        self._ids: list[str] | None = None
        # The image size and channels are read lazily (from the first image, on first use) so that
        # a method that needs only text or labels (t2ue's zero-contact bank) never decodes a pixel.
        self._channels = channels
        self._image_shape: tuple[int, int, int] | None = None

    def _first_image(self) -> None:
        first = self._raw_images(0, 1)[0]
        channels = self._channels
        if channels is None:
            # The first image's own channels (1 for grayscale: a PIL "L" image, a 2-D array, an
            # encoded grayscale PNG): there is no bank yet whose channels it could fail to match.
            channels = _native_channels(first, self.image_column)
            channels = channels or 3
        chw = to_chw(first, channels=channels, convert=self.convert, column=self.image_column)
        self._channels = channels
        self._image_shape = tuple(int(s) for s in chw.shape)  # type: ignore[assignment]

    @property
    def channels(self) -> int:
        """Channels images decode to (given, or 1 for a grayscale first image, else 3); read lazily."""
        if self._image_shape is None:
            self._first_image()
        return int(self._channels)  # type: ignore[arg-type]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the first image, which every image must share; read lazily."""
        if self._image_shape is None:
            self._first_image()
        return self._image_shape  # type: ignore[return-value]

    @classmethod
    def from_arrays(
        cls, images: np.ndarray | Sequence[Any], labels: Sequence[int] | np.ndarray | None = None,
        ids: Sequence[str] | None = None,
    ) -> FitData:
        """FitData over in-memory images (uint8 ``[N, H, W, C]`` / PIL list) and labels."""
        d: dict[str, list[Any]] = {"image": list(images)}
        if labels is not None:
            d["label"] = [int(v) for v in labels]
        if ids is not None:
            d["id"] = [str(v) for v in ids]
        return cls(d, image_column="image", label_column="label" if labels is not None else None,
                   id_column="id" if ids is not None else None)

    def __len__(self) -> int:
        return self._n

    # ---------------------------------------------------------------- labels
    @property
    def labels(self) -> np.ndarray:
        """Integer labels ``[N]``; a clear error if the method needs labels and there are none."""
        if self._labels is None:
            if self.label_column is None:
                raise DataError("this method needs labels: pass label_column=<integer label column>")
            raw = self.dataset[self.label_column]
            values = list(raw) if not isinstance(raw, np.ndarray) else raw
            missing = [i for i, v in enumerate(values) if v is None or (isinstance(v, float) and v != v)]
            if missing:
                more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                raise DataError(
                    f"label column {self.label_column!r} has no label in row {missing[0]}{more}: every row needs an "
                    "integer class id to fit on. Drop the unlabelled rows first, e.g. "
                    f"dataset.filter(lambda row: row[{self.label_column!r}] is not None), or pass label_column=None "
                    "for a label-free method"
                )
            arr = np.asarray(values)
            if arr.dtype.kind not in "iu":
                raise DataError(
                    f"label column {self.label_column!r} holds {arr.dtype} values such as {arr.flat[0]!r}; "
                    "labels must be integer class ids: dataset.class_encode_column(...) converts names"
                )
            if (arr < 0).any():
                raise DataError(f"label column {self.label_column!r} has negative labels (unlabelled rows?); drop them")
            self._labels = arr.astype(np.int64)
        return self._labels

    @property
    def num_classes(self) -> int:
        if self._num_keys is not None:
            return self._num_keys
        names = self.class_names
        if names:
            return len(names)
        return int(self.labels.max()) + 1

    def keyed_by(self, keys: Sequence[int] | np.ndarray, num_keys: int, name: str) -> FitData:
        """The same data with ``keys`` (e.g. cluster ids) in the labels' place, ``num_keys`` of them.

        Decoded images and sample ids are shared, not decoded again. ``name`` says what the keys
        are (it is not a column of the dataset, and there are no class names).
        """
        keys = np.asarray(keys, dtype=np.int64)
        if keys.shape != (self._n,) or (keys < 0).any() or (keys >= num_keys).any():
            raise DataError(f"keyed_by needs {self._n} integer keys in [0, {num_keys}), got shape {keys.shape}")
        out = copy.copy(self)
        out.label_column, out._labels, out._num_keys = name, keys, int(num_keys)
        return out

    @property
    def class_names(self) -> list[str] | None:
        feats = getattr(self.dataset, "features", None)
        if feats is not None and self.label_column is not None and self._num_keys is None:
            feat = feats.get(self.label_column)
            names = getattr(feat, "names", None)
            if names:
                return list(names)
        return None

    # ---------------------------------------------------------------- images
    def _raw_images(self, start: int, stop: int) -> list[Any]:
        if isinstance(self.dataset, dict):
            return list(self.dataset[self.image_column][start:stop])
        return list(self.dataset[start:stop][self.image_column])

    def _decode(self, raw: list[Any], start: int = 0) -> np.ndarray:
        out = []
        for i, img in enumerate(raw):
            try:
                chw = to_chw(img, channels=self.channels, convert=self.convert, column=self.image_column)
            except ImageModeError as err:
                # The codec speaks of "the bank"; while fitting there is none yet, only the first image.
                native = _native_channels(img, self.image_column)
                if native is not None and native != self.channels:
                    raise ImageModeError(
                        f"row {start + i} of column {self.image_column!r} has {native}-channel pixels, but the first "
                        f"image has {self.channels}: a bank is fitted for one channel count. Convert the images to "
                        "one mode first (e.g. dataset.cast_column(column, datasets.Image(mode='RGB'))), or pass "
                        "convert=True to convert PIL images to the first image's"
                    ) from err
                raise ImageModeError(f"row {start + i}: {err}") from err
            if chw.shape != self.image_shape:
                raise DataError(
                    f"images differ in size ({chw.shape[1]}x{chw.shape[2]} vs {self.image_shape[1]}x"
                    f"{self.image_shape[2]}); this method needs one size: resize the dataset first "
                    "(e.g. with a torchvision Resize in dataset.map)"
                )
            out.append(chw)
        return np.stack(out)

    def iter_batches(self, batch_size: int = 256) -> Iterator[tuple[np.ndarray, slice]]:
        """Yield ``(uint8 [b, C, H, W], slice of rows)`` over the dataset, decoding lazily."""
        if self._images is not None:
            for s in range(0, self._n, batch_size):
                yield self._images[s : s + batch_size], slice(s, min(s + batch_size, self._n))
            return
        for s in range(0, self._n, batch_size):
            e = min(s + batch_size, self._n)
            yield self._decode(self._raw_images(s, e), s), slice(s, e)

    def images_at(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """The images of ``rows`` (in that order) as uint8 ``[n, C, H, W]``, decoding only those rows.

        For a method that reads a bounded sample of a large dataset; the whole set is not kept.
        """
        rows = [int(r) for r in rows]
        bad = [r for r in rows if not 0 <= r < self._n]
        if bad:
            raise IndexError(f"rows {bad[:5]} are outside the dataset's {self._n} rows")
        if self._images is not None:
            return self._images[rows]
        if not rows:
            return np.empty((0, *self.image_shape), np.uint8)
        return np.concatenate([self._decode(self._raw_images(r, r + 1), r) for r in rows])

    def images(self) -> np.ndarray:
        """All images as one uint8 ``[N, C, H, W]`` array (decoded once, then kept)."""
        if self._images is None:
            parts = [b for b, _ in self.iter_batches(512)]
            self._images = np.concatenate(parts)
        return self._images

    @property
    def sample_ids(self) -> list[str]:
        """One stable id per row: the id column's values, or content hashes of the pixels."""
        if self._ids is None:
            if self.id_column is not None:
                ids = [str(v) for v in self.dataset[self.id_column]]
            else:
                ids = [content_id(img) for batch, _ in self.iter_batches(512) for img in batch]
            if len(set(ids)) != len(ids):
                what = f"id column {self.id_column!r}" if self.id_column else "content hashes (duplicate images)"
                raise DataError(
                    f"{what} are not unique, so sample-wise noise could not tell samples apart; "
                    "deduplicate the dataset or pass a unique id_column"
                )
            self._ids = ids
        return self._ids


def _native_channels(img: Any, column: str) -> int | None:
    """The channels ``img`` has as it is (1 or 3), or ``None`` when it cannot be read."""
    try:
        return int(to_chw(img, channels=None, convert=False, column=column).shape[0])
    except (ImageModeError, ValueError, TypeError, OSError):
        return None


__all__ = ["FitData", "DataError", "ImageModeError"]
