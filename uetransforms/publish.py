"""``publish``: protect a dataset and write it in the Hugging Face Hub layout, losslessly, with a card.

The layout is what ``Dataset.push_to_hub`` produces, so ``datasets.load_dataset(<dir>)`` and the
Hub viewer read it as they are::

    <dir>/README.md                               dataset card (YAML front matter + prose)
    <dir>/data/<split>-00000-of-0000N.parquet     images as PNG bytes, every other column kept

Two rules make a published copy worth publishing:

* **Lossless pixels.** Protection lives in the low bits of every pixel; a JPEG round trip or a
  resize smooths it away. Every image written is checked to be PNG, and lossy output formats
  are refused.
* **Banks are secrets.** Whoever holds an additive bank can subtract it and recover the clean
  data. The card carries the method and its public budget (epsilon, norm, kernel size...) from
  an explicit allow-list; never the bank, its path or digest, the seed, salt or key.

Example:
    >>> import datasets, numpy as np, tempfile, uetransforms as ue
    >>> ds = datasets.Dataset.from_dict(
    ...     {"image": list(np.zeros((4, 8, 8, 3), np.uint8)), "label": [0, 1, 0, 1]},
    ...     features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=2)}))
    >>> bank = ue.fit("random", ds, seed=1234)
    >>> out = tempfile.mkdtemp()
    >>> prot = publish(ds, bank, out)  # ue.publish
    >>> sorted(os.listdir(os.path.join(out, "data")))
    ['train-00000-of-00001.parquet']
"""

from __future__ import annotations

import glob
import math
import os
import re
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .bank import NoiseBank
from .card import _guard_secrets, dataset_card

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: Output encodings ``publish`` writes. Only lossless ones belong here, and PNG is the one
#: ``datasets`` produces for new uint8 images, so it is the one offered.
IMAGE_FORMATS = ("PNG",)

#: Bank parameters that may appear on a public card, per bank kind. Everything else stays in the
#: bank: an allow-list (not a deny-list) so a method that adds a secret parameter later cannot
#: leak it by accident. Seeds, salts, keys and paths are deliberately absent.
PUBLIC_PARAMS: dict[str, tuple[str, ...]] = {
    "additive": ("epsilon", "norm", "patch_size", "pattern", "sparsity", "fraction", "num_clusters", "steps",
                 "step_size"),
    "conv": ("kernel_size", "blur_parameter", "center_parameter", "normalise"),
    "pixel": ("epsilon", "norm", "num_pixels", "objective"),
    # AR's coefficients and salt are the key; its search settings and budget are not.
    "synth": ("epsilon", "norm", "synth", "min_response", "max_norm", "max_candidates"),
}

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def public_params(bank: NoiseBank) -> dict[str, Any]:
    """The bank parameters safe to publish: allow-listed names with scalar values only.

    Example:
        >>> import numpy as np
        >>> bank = NoiseBank(method="random", kind="additive", keying="class", keys=[0],
        ...                  tensors={"delta": np.zeros((1, 3, 2, 2), "float32")},
        ...                  params={"epsilon": 0.03, "norm": "linf", "seed": 7})
        >>> public_params(bank)
        {'epsilon': 0.03, 'norm': 'linf'}
    """
    allowed = PUBLIC_PARAMS.get(bank.kind, ())
    out: dict[str, Any] = {}
    for name in allowed:
        value = bank.params.get(name)
        # Arrays or nested structures could be payload (kernel weights, coefficients): never publish them.
        if isinstance(value, (bool, int, float, str)):
            out[name] = value
    return out


def publish(
    dataset: Any,
    bank: NoiseBank | str | os.PathLike,
    path_or_repo_id: str | os.PathLike,
    *,
    push: bool = False,
    image_column: str = "image",
    label_column: str | None = "label",
    id_column: str | None = None,
    batch_size: int = 256,
    num_proc: int | None = None,
    device: str | None = None,
    max_shard_size: int | str = "500MB",
    private: bool = True,
    token: str | None = None,
    card_extra: Mapping[str, Any] | None = None,
    protected: bool = False,
    image_format: str = "PNG",
    overwrite: bool = False,
) -> Any:
    """Protect ``dataset`` with ``bank`` and write (or push) it as lossless Parquet shards plus a card.

    Args:
        dataset: a ``datasets.Dataset`` or ``DatasetDict`` (one shard set per split).
        bank: the :class:`NoiseBank` (or its file) that protects it. Only its public parameters
            reach the card (see :data:`PUBLIC_PARAMS`).
        path_or_repo_id: output directory, or the Hub repo id when ``push=True``.
        push: upload with ``push_to_hub`` (shards) and ``HfApi.upload_file`` (this card)
            instead of writing a local directory.
        image_column / label_column / id_column: passed to :class:`~uetransforms.Protect`.
        batch_size / num_proc / device: how ``dataset.map`` runs the protection.
        max_shard_size: target uncompressed size of one Parquet shard (``"500MB"``, bytes...).
        private / token: Hub repository visibility and credentials (``push=True`` only).
        card_extra: extra YAML front-matter fields (``license``, ``pretty_name``...).
        protected: the dataset is already protected (e.g. by ``map(Protect(bank))``): write it
            as it is. Its images must then already be stored as PNG.
        image_format: output image encoding; only ``"PNG"`` (lossless) is accepted.
        overwrite: allow a non-empty output directory; stale shards and the card are replaced.

    Returns:
        The protected ``Dataset``/``DatasetDict`` that was written.
    """
    import datasets

    from .protect import Protect, _bank_ref

    if str(image_format).upper() not in IMAGE_FORMATS:
        raise ValueError(
            f"image_format={image_format!r} is refused: protection is a few intensity levels per pixel, and "
            "lossy encoding (JPEG, lossy WebP) or resizing smooths it away, so the published copy would no "
            f"longer be unlearnable. Use one of {IMAGE_FORMATS}."
        )
    bank = _bank_ref(bank)
    is_dict = isinstance(dataset, datasets.DatasetDict)
    if not is_dict and not isinstance(dataset, datasets.Dataset):
        raise TypeError(
            f"publish takes a datasets.Dataset or DatasetDict, got {type(dataset).__name__}; "
            "build one with datasets.Dataset.from_dict / load_dataset first"
        )
    splits: dict[str, Any] = dict(dataset) if is_dict else {_split_name(dataset): dataset}
    for name, ds in splits.items():
        if image_column not in ds.column_names:
            raise KeyError(
                f"image_column={image_column!r} is not a column of split {name!r} "
                f"(columns: {ds.column_names}); pass image_column=<name>"
            )
    if push:
        repo_id = os.fspath(path_or_repo_id)
        if not _REPO_ID.match(repo_id):
            raise ValueError(f"push=True needs a Hub repo id like 'user/name', got {repo_id!r}")
    else:
        out_dir = os.fspath(path_or_repo_id)
        _check_target(out_dir, overwrite)

    if not protected:
        fn = Protect(bank, image_column=image_column, label_column=label_column, id_column=id_column, device=device)
        # One GPU per worker: Protect maps the rank to cuda:<rank % n_gpus>.
        with_rank = bool(num_proc and num_proc > 1 and device is not None and str(device).startswith("cuda"))
        splits = {
            name: ds.map(fn, batched=True, batch_size=batch_size, num_proc=num_proc, with_rank=with_rank,
                         desc=f"Protecting {name} ({bank.method})")
            for name, ds in splits.items()
        }
    for name, ds in splits.items():
        _require_png(ds, image_column, name, protected=protected)

    card = dataset_card(splits, bank, image_column=image_column, card_extra=card_extra)
    _guard_secrets(card, bank)
    result = datasets.DatasetDict(splits) if is_dict else next(iter(splits.values()))

    if push:
        _push(splits, card, repo_id, private=private, token=token, max_shard_size=max_shard_size)
        return result

    from datasets.utils.py_utils import convert_file_size_to_int

    max_bytes = convert_file_size_to_int(max_shard_size)
    os.makedirs(os.path.join(out_dir, "data"), exist_ok=True)
    for name, ds in splits.items():
        n = num_shards_for(ds, max_bytes)
        for i in range(n):
            shard = ds.shard(num_shards=n, index=i, contiguous=True)
            shard.to_parquet(os.path.join(out_dir, "data", f"{name}-{i:05d}-of-{n:05d}.parquet"))
    with open(os.path.join(out_dir, "README.md"), "w", encoding="utf-8") as f:
        f.write(card)
    return result


def num_shards_for(ds: Any, max_shard_bytes: int) -> int:
    """How many Parquet shards keep each under ``max_shard_bytes`` (uncompressed), as ``push_to_hub`` counts."""
    nbytes = ds.data.nbytes
    return max(1, min(len(ds), int(math.ceil(nbytes / max(1, max_shard_bytes)))))


def _split_name(ds: Any) -> str:
    split = getattr(ds, "split", None)
    name = str(split) if split is not None else "train"
    return name if re.fullmatch(r"[\w.-]+", name) else "train"


def _check_target(out_dir: str, overwrite: bool) -> None:
    if os.path.isfile(out_dir):
        raise FileExistsError(f"{out_dir!r} is a file; publish writes a directory (README.md + data/)")
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        if not overwrite:
            raise FileExistsError(
                f"output directory {out_dir!r} is not empty; choose a new directory or pass overwrite=True "
                "(--overwrite on the command line), which replaces its README.md and data/*-of-*.parquet shards"
            )
        # Only what publish itself writes is removed: a stale shard set would otherwise be read
        # together with the new one by the card's data/<split>-* pattern.
        for path in glob.glob(os.path.join(out_dir, "data", "*-of-*.parquet")):
            os.remove(path)
        card = os.path.join(out_dir, "README.md")
        if os.path.exists(card):
            os.remove(card)


def _require_png(ds: Any, column: str, split: str, *, protected: bool) -> None:
    """Every image of ``column`` must be stored as PNG bytes; say which format it is otherwise."""
    import datasets

    feature = ds.features[column]
    if not isinstance(feature, datasets.Image):
        raise TypeError(
            f"column {column!r} of split {split!r} is {type(feature).__name__}, not a datasets Image column; "
            + ("protect it with Protect (it writes PNG images) before publishing with protected=True"
               if protected else "cast it with dataset.cast_column(column, datasets.Image())")
        )
    arrow = ds.with_format("arrow")
    missing = n_bad = 0
    first_bad: bytes | None = None
    # In slices: only the first bytes of each image are compared, and nothing is decoded.
    for start in range(0, len(ds), 8192):
        data = arrow[start:start + 8192].column(column).combine_chunks()
        raw = data.field("bytes")
        missing += (pc.sum(pc.is_null(raw)).as_py() or 0) - data.null_count
        heads = pc.binary_slice(raw.fill_null(PNG_SIGNATURE), 0, len(PNG_SIGNATURE))
        bad = pc.invert(pc.equal(heads, pa.scalar(PNG_SIGNATURE, pa.binary())))
        count = pc.sum(bad).as_py() or 0
        if count and first_bad is None:
            first_bad = raw.filter(bad)[0].as_py()
        n_bad += count
    if missing:
        raise ValueError(
            f"{missing} image(s) in split {split!r} are stored as file paths, not bytes; a published copy must "
            "carry its pixels. Protect the dataset with publish(...) (protected=False), which writes PNG bytes."
        )
    if n_bad:
        raise ValueError(
            f"{n_bad} image(s) in split {split!r} are stored as {_sniff(first_bad or b'')}, not PNG. "
            + ("A dataset that was protected and then re-encoded lossily has lost much of its protection: "
               "protect the clean original again and publish that (protected=False)."
               if protected else "Protect writes PNG; was the image column changed after protection?")
        )


def _sniff(head: bytes) -> str:
    if head.startswith(b"\xff\xd8"):
        return "JPEG (lossy)"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head.startswith(b"GIF8"):
        return "GIF"
    if head.startswith(b"BM"):
        return "BMP"
    return "an unrecognised format"


def _push(splits: Mapping[str, Any], card: str, repo_id: str, *, private: bool, token: str | None,
          max_shard_size: int | str) -> None:
    from huggingface_hub import HfApi

    for name, ds in splits.items():
        # push_to_hub writes data/<split>-XXXXX-of-YYYYY.parquet and a README of its own ...
        ds.push_to_hub(repo_id, split=name, private=private, token=token, max_shard_size=max_shard_size)
    # ... which is then replaced by this card, byte for byte the one a local publish writes.
    HfApi(token=token).upload_file(
        path_or_fileobj=card.encode("utf-8"),
        path_in_repo="README.md",
        repo_id=repo_id,
        repo_type="dataset",
        commit_message="uetransforms: dataset card",
    )
