"""FitData: what a method sees of its dataset, and the errors it raises for unusable data."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
from PIL import Image

from uetransforms.core.data import DataError, FitData
from uetransforms.core.images import ImageModeError, content_id


def _imgs(n=6, h=8, w=8, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _hf(n=6) -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {"img": [Image.fromarray(a) for a in _imgs(n)], "y": [i % 3 for i in range(n)], "uid": [f"u{i}" for i in range(n)]},
        features=datasets.Features({"img": datasets.Image(), "y": datasets.ClassLabel(names=["a", "b", "c"]),
                                    "uid": datasets.Value("string")}),
    )


def test_from_arrays():
    data = FitData.from_arrays(_imgs(4), labels=[0, 1, 0, 3])
    assert len(data) == 4
    assert data.image_shape == (3, 8, 8) and data.channels == 3
    assert data.labels.dtype == np.int64 and data.labels.tolist() == [0, 1, 0, 3]
    assert data.num_classes == 4 and data.class_names is None
    np.testing.assert_array_equal(data.images(), _imgs(4).transpose(0, 3, 1, 2))


def test_hf_dataset_columns_and_class_names():
    data = FitData(_hf(), image_column="img", label_column="y", id_column="uid")
    assert data.class_names == ["a", "b", "c"] and data.num_classes == 3
    assert data.sample_ids == [f"u{i}" for i in range(6)]
    batches = list(data.iter_batches(4))
    assert [b.shape for b, _ in batches] == [(4, 3, 8, 8), (2, 3, 8, 8)]
    assert [s for _, s in batches] == [slice(0, 4), slice(4, 6)]
    np.testing.assert_array_equal(np.concatenate([b for b, _ in batches]), data.images())


def test_images_at_decodes_only_the_rows_asked_in_their_order():
    data = FitData(_hf(), image_column="img", label_column="y")
    want = _imgs(6).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(data.images_at([4, 1, 1]), want[[4, 1, 1]])
    assert data._images is None  # a sample does not load the whole set
    assert data.images_at([]).shape == (0, 3, 8, 8)
    with pytest.raises(IndexError, match="outside"):
        data.images_at([6])
    data.images()  # once the set is loaded, rows come from it
    np.testing.assert_array_equal(data.images_at(np.array([5, 0])), want[[5, 0]])


def test_content_hash_ids_are_stable_and_positionless():
    imgs = _imgs(5)
    data = FitData.from_arrays(imgs, labels=[0] * 5)
    ids = data.sample_ids
    assert ids == [content_id(a.transpose(2, 0, 1)) for a in imgs]
    rev = FitData.from_arrays(imgs[::-1], labels=[0] * 5)
    assert rev.sample_ids == ids[::-1]


def test_grayscale_channels_detected():
    gray = [Image.fromarray(a[..., 0]) for a in _imgs(3)]
    data = FitData({"image": gray, "label": [0, 1, 2]})
    assert data.channels == 1 and data.image_shape == (1, 8, 8)


@pytest.mark.parametrize("kwargs, phrase", [
    (dict(image_column="picture"), "image_column='picture' is not a column"),
    (dict(label_column="target"), "label_column=None"),
    (dict(id_column="key"), "id_column='key'"),
])
def test_missing_columns(kwargs, phrase):
    with pytest.raises(DataError, match=phrase):
        FitData(_hf(), **{"image_column": "img", "label_column": "y", **kwargs})


def test_empty():
    with pytest.raises(DataError, match="empty"):
        FitData(_hf().select([]), image_column="img", label_column="y")
    with pytest.raises(DataError, match="empty"):
        FitData({"image": [], "label": []})


def test_string_labels():
    data = FitData({"image": list(_imgs(2)), "label": ["cat", "dog"]})
    with pytest.raises(DataError, match="class_encode_column"):
        data.labels


def test_negative_labels():
    with pytest.raises(DataError, match="negative"):
        FitData({"image": list(_imgs(2)), "label": [0, -1]}).labels


def test_label_free_data_has_no_labels():
    data = FitData.from_arrays(_imgs(2))
    with pytest.raises(DataError, match="needs labels"):
        data.labels


def test_mixed_sizes():
    imgs = list(_imgs(2)) + list(_imgs(1, h=10, w=8))
    data = FitData({"image": imgs, "label": [0, 1, 2]})
    with pytest.raises(DataError, match="differ in size.*10x8 vs 8x8.*resize"):
        data.images()


def test_duplicate_ids():
    with pytest.raises(DataError, match="id column 'id' are not unique"):
        FitData.from_arrays(_imgs(3), labels=[0, 1, 2], ids=["a", "b", "a"]).sample_ids
    same = np.repeat(_imgs(1), 2, axis=0)
    with pytest.raises(DataError, match="content hashes.*deduplicate"):
        FitData.from_arrays(same, labels=[0, 1]).sample_ids


def test_bad_image_column():
    data = FitData({"image": [1, 2], "label": [0, 1]})  # constructing reads no image (see below)
    with pytest.raises(ImageModeError, match="not an image"):
        data.image_shape
    with pytest.raises(ImageModeError, match="not an image"):
        FitData({"image": [1, 2], "label": [0, 1]}).images()


class _CountingImages(list):
    """A list of images that counts how often it is read."""

    reads = 0

    def __getitem__(self, i):
        type(self).reads += 1
        return super().__getitem__(i)


def test_image_size_is_read_lazily_once():
    imgs = _CountingImages(_imgs(3))
    data = FitData({"image": imgs, "label": [0, 1, 2]})
    assert _CountingImages.reads == 0 and data.labels.tolist() == [0, 1, 2]  # labels need no pixels
    assert data.image_shape == (3, 8, 8) and data.channels == 3
    assert _CountingImages.reads == 1  # one slice of the first image
    gray = FitData({"image": [Image.fromarray(a[..., 0]) for a in _imgs(2)]}, label_column=None)
    assert gray.channels == 1 and gray.image_shape == (1, 8, 8)
    assert FitData({"image": [Image.fromarray(a[..., 0]) for a in _imgs(2)]}, label_column=None, channels=3,
                   convert=True).image_shape == (3, 8, 8)


# ------------------------------------------------------------------ clear errors at the door
def test_two_d_uint8_arrays_fit_as_grayscale():
    import uetransforms as ue

    data = FitData({"image": [np.full((8, 8), 9, np.uint8)] * 4, "label": [0, 1, 0, 1]})
    assert data.channels == 1 and data.image_shape == (1, 8, 8)
    assert ue.fit("random", {"image": [np.full((8, 8), 9, np.uint8)] * 4, "label": [0, 1, 0, 1]}, seed=1).channels == 1


def test_mixed_channel_counts_name_the_row_not_a_bank():
    images = [np.zeros((8, 8, 3), np.uint8)] * 3 + [np.zeros((8, 8), np.uint8)]
    with pytest.raises(ImageModeError) as info:
        FitData({"image": images, "label": [0, 1, 0, 1]}).images()
    assert "row 3 of column 'image' has 1-channel pixels, but the first image has 3" in str(info.value)
    assert "bank is for" not in str(info.value)


@pytest.mark.parametrize("missing", [None, float("nan")])
def test_missing_label_names_the_row_and_the_fix(missing):
    data = FitData({"image": [np.zeros((8, 8, 3), np.uint8)] * 4, "label": [0, missing, 1, missing]})
    with pytest.raises(DataError) as info:
        data.labels
    text = str(info.value)
    assert "has no label in row 1 (and 1 more)" in text and "dataset.filter(" in text
    assert "class_encode_column" not in text
