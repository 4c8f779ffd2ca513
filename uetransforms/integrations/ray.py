"""Ray Data adapter: protect a ``ray.data.Dataset`` on a cluster with the same bank and bytes.

:func:`protect` runs :class:`~uetransforms.Protect` in ``map_batches`` with numpy batches. Images
stored encoded (Parquet ``{bytes, path}`` structs as ``datasets`` writes them, or raw bytes) come
back as PNG records in the same struct layout, typed ``struct<bytes: binary, path: string>`` and
tagged with ``datasets`` feature metadata, so ``write_parquet`` output loads in ``datasets`` as an
``Image()`` column with the very bytes ``Dataset.map(Protect(bank))`` stores. Numeric tensor columns
(``[B, H, W, C]`` uint8) stay numeric.

On CPUs the work is one fused task per batch (decode -> kernel -> PNG). With GPUs it is split
into three stages so the GPU only applies noise: CPU tasks decode, GPU actors (one per GPU, the
bank resident on the device) run the kernel, CPU tasks encode PNG; Ray streams between them.

Example:
    >>> import numpy as np, ray, uetransforms as ue                         # doctest: +SKIP
    >>> from uetransforms.integrations import ray as ue_ray                  # doctest: +SKIP
    >>> ray.init(num_cpus=2, include_dashboard=False)                       # doctest: +SKIP
    >>> rd = ray.data.read_parquet("cifar10/train-00000-of-00001.parquet")  # doctest: +SKIP
    >>> bank = ue.NoiseBank.load("cifar10-cuda.bank.arrow")                 # doctest: +SKIP
    >>> prot = ue_ray.protect(rd, bank, image_column="img", label_column="label")  # doctest: +SKIP
    >>> prot.write_parquet("out/")  # loads with datasets.load_dataset("parquet", ...)  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import json
import os
from typing import Any

import numpy as np

from ..core.bank import NoiseBank
from ..core.images import to_chw
from .datasets import Protect, png_records, source_paths

#: Hidden per-row flag carried between the split stages: "encode this row's image as PNG".
_PNG_FLAG = "__uetransforms_png__"
#: Hidden per-row source path carried between the split stages (decoding drops the records).
_SOURCE = "__uetransforms_source__"


def _is_numeric_batch(images: Any) -> bool:
    return isinstance(images, np.ndarray) and images.dtype != object and images.ndim == 4


def _records(images: Any) -> list[Any]:
    # Ray's numpy format hands a Parquet struct column as an object array of dicts, a binary
    # column as an object array of bytes; to_chw reads {"bytes", "path"} records.
    return [{"bytes": bytes(v), "path": None} if isinstance(v, (bytes, bytearray, memoryview)) else v
            for v in images]


def _hf_metadata(features: Any, image_column: str) -> bytes:
    """``datasets`` schema metadata: the caller's features (if any) with the image column as ``Image()``."""
    feats: dict[str, Any] = {}
    if features is not None:
        feats = features.to_dict() if hasattr(features, "to_dict") else dict(features)
    feats[image_column] = {"_type": "Image"}
    return json.dumps({"info": {"features": feats}}).encode()


def _to_block(batch: dict[str, Any], image_column: str, png: list[bytes] | None, metadata: bytes,
              sources: Any = None) -> Any:
    """Numpy batch -> Arrow table; PNG images as a typed ``{bytes, path}`` struct plus feature metadata.

    ``path`` keeps each source file's name by the rule every writer follows (:func:`png_records`)."""
    if png is None:
        return batch  # a numeric tensor column stays a tensor column: Ray converts it itself
    import pyarrow as pa
    from ray.data.block import BlockAccessor

    names = list(batch)
    rest = {k: v for k, v in batch.items() if k != image_column}
    names_ = [r["path"] for r in png_records(png, [None] * len(png) if sources is None else list(sources))]
    struct = pa.StructArray.from_arrays(
        [pa.array(png, type=pa.binary()), pa.array(names_, type=pa.string())], names=["bytes", "path"]
    )
    if rest:
        table = BlockAccessor.batch_to_block(rest)
        table = table.add_column(names.index(image_column), image_column, struct)
    else:
        table = pa.table({image_column: struct})
    meta = dict(table.schema.metadata or {})
    meta[b"huggingface"] = metadata
    return table.replace_schema_metadata(meta)


class _Fused:
    """One CPU task per batch: decode -> kernel -> PNG (the whole of ``Protect``, then encoding)."""

    def __init__(self, fn: Protect, metadata: bytes) -> None:
        self.fn = fn
        self.metadata = metadata

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        col = self.fn.image_column
        if col not in batch:
            raise KeyError(f"image_column={col!r} is not in the Ray batch (columns: {list(batch)}); "
                           "pass image_column=<name>")
        images = batch[col]
        if _is_numeric_batch(images):
            return _to_block({**batch, **self.fn(batch)}, col, None, self.metadata)
        # Protect's own PNG path (the package's one encoder): the very bytes Dataset.map stores.
        records = _records(images)
        png = self.fn.encoded({**batch, col: records})
        return _to_block(dict(batch), col, png, self.metadata, source_paths(records))


class _Decode:
    """CPU stage of the GPU pipeline: encoded images -> uint8 HWC arrays, flagged for re-encoding."""

    def __init__(self, fn: Protect) -> None:
        self.fn = fn  # its options and its marker check; the kernel runs in _Apply

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        fn = self.fn
        col = fn.image_column
        if col not in batch:
            raise KeyError(f"image_column={col!r} is not in the Ray batch (columns: {list(batch)}); "
                           "pass image_column=<name>")
        images = batch[col]
        out = dict(batch)
        if _is_numeric_batch(images):
            out[_PNG_FLAG] = np.zeros(len(images), dtype=bool)
            return out
        records = _records(images)
        fn._refuse_protected(records, col)
        hwc = [to_chw(r, channels=fn.bank.channels, convert=fn.convert, column=col).transpose(1, 2, 0)
               for r in records]
        out[col] = _stack(hwc)
        out[_PNG_FLAG] = np.ones(len(hwc), dtype=bool)
        out[_SOURCE] = np.array(source_paths(records), dtype=object)
        return out


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    if len({a.shape for a in arrays}) == 1:
        return np.stack(arrays)
    ragged = np.empty(len(arrays), dtype=object)  # mixed sizes: Ray keeps them as a ragged tensor column
    ragged[:] = arrays
    return ragged


class _Apply:
    """Accelerator stage: the kernel only. An actor, so the bank is mapped and moved to the device once."""

    def __init__(self, fn: Protect) -> None:
        self.fn = fn

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        col = self.fn.image_column
        images = batch[col]
        if _is_numeric_batch(images):
            return {**batch, **self.fn(batch)}  # Protect returns only the image column for arrays
        out = self.fn({**batch, col: list(images)})
        out[col] = _stack([np.asarray(im) for im in out[col]])  # PIL (ragged batches) -> arrays
        return out


class _Encode:
    """CPU stage of the GPU pipeline: flagged rows -> PNG records, the flag dropped."""

    def __init__(self, fn: Protect, metadata: bytes) -> None:
        self.fn = fn  # its PNG options; the kernel ran in _Apply
        self.image_column = fn.image_column
        self.metadata = metadata

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        col = self.image_column
        flag = batch[_PNG_FLAG]
        out = {k: v for k, v in batch.items() if k not in (_PNG_FLAG, _SOURCE)}
        if not flag.any():
            return _to_block(out, col, None, self.metadata)
        if not flag.all():
            raise ValueError(f"column {col!r} mixes encoded and array images within one batch; "
                             "store them one way before protecting")
        return _to_block(out, col, self.fn.png(batch[col]), self.metadata, batch.get(_SOURCE))


def _require_gpus(ray: Any, num_gpus: float) -> None:
    """Refuse up front a GPU request the cluster cannot meet: Ray would wait for ever for the actor.

    The running cluster's resources when Ray is initialised; else this machine's GPUs, which is
    what the local cluster Ray starts on first use will have.
    """
    if ray.is_initialized():
        resources = ray.cluster_resources()
        have = float(resources.get("GPU", 0))
        where = f"the Ray cluster has {have:g} (resources: {', '.join(f'{k}={v:g}' for k, v in sorted(resources.items()) if k in ('CPU', 'GPU'))})"
    else:
        import torch

        have = float(torch.cuda.device_count())
        where = f"this machine has {have:g}, and Ray is not initialised (it would start a local cluster)"
    if have < num_gpus:
        raise ValueError(
            f"num_gpus={num_gpus:g} (device='cuda') asks for a GPU per apply actor, but {where}: the job would wait "
            "for a GPU for ever. Pass device='cpu' (or num_gpus=0) to protect on CPUs, or ray.init(address=...) a "
            "cluster with GPUs."
        )


def _map_batches_kwargs() -> dict[str, Any]:
    import ray.data

    # Protection keeps the row count; newer Ray uses this to plan (older Ray lacks the keyword).
    params = inspect.signature(ray.data.Dataset.map_batches).parameters
    return {"udf_modifying_row_count": False} if "udf_modifying_row_count" in params else {}


def protect(
    ray_dataset: Any,
    bank: NoiseBank | str | os.PathLike,
    *,
    image_column: str = "image",
    batch_size: int = 256,
    num_gpus: float | None = None,
    concurrency: int | None = None,
    features: Any = None,
    split_stages: bool | None = None,
    **protect_options: Any,
) -> Any:
    """Protect the ``image_column`` of a ``ray.data.Dataset`` with ``bank``; lazy, like every Ray op.

    Args:
        ray_dataset: e.g. ``ray.data.read_parquet(...)`` of a ``datasets``-written Parquet set.
        bank: a :class:`NoiseBank` or its path. Save it to a path every node can read for cheap
            shipping; an unsaved bank travels as Arrow bytes inside the task.
        image_column: the image column (encoded ``{bytes, path}`` structs, raw bytes, or a uint8
            ``[H, W, C]`` tensor column).
        batch_size: rows per ``map_batches`` batch (one kernel launch each).
        num_gpus: GPUs per apply actor. ``None``: 1 if ``device`` asks for CUDA or the cluster has
            GPUs (then ``device`` defaults to ``"cuda"``), else 0 (CPU tasks).
        concurrency: apply actors with GPUs (default: one per GPU in the cluster), or the cap on
            concurrent CPU tasks.
        features: the source's ``datasets.Features`` (e.g. ``ds.features``) to record in the output
            schema, so ``ClassLabel`` names survive ``write_parquet``; the image column is always
            recorded as ``Image()``.
        split_stages: run decode / kernel / encode as separate stages (default: only with GPUs).
        **protect_options: ``label_column``, ``id_column``, ``device``, ``size_mismatch``, ``allow_double``,
            ``convert``, ``png_encoder``, ``png_level`` -- as for :class:`~uetransforms.Protect`.

    Returns:
        A ``ray.data.Dataset`` with the same rows and columns, the images protected.
    """
    import ray

    if not isinstance(ray_dataset, ray.data.Dataset):
        raise TypeError(f"expected a ray.data.Dataset, got {type(ray_dataset).__name__}; "
                        "for datasets.Dataset use dataset.map(Protect(bank), batched=True)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = protect_options.pop("device", None)
    wants_cuda = device is not None and str(device).startswith("cuda")
    if num_gpus is None:
        cluster_gpus = ray.cluster_resources().get("GPU", 0) if ray.is_initialized() else 0
        num_gpus = 1 if (wants_cuda or (device is None and cluster_gpus > 0)) else 0
    if num_gpus and device is None:
        device = "cuda"
    if num_gpus and not wants_cuda and str(device) != "cuda":
        raise ValueError(f"num_gpus={num_gpus} but device={device!r}; pass device='cuda' or num_gpus=0")
    if num_gpus:
        _require_gpus(ray, num_gpus)
    # Inside a GPU actor Ray sets CUDA_VISIBLE_DEVICES, so plain "cuda" is the actor's own GPU.
    fn = Protect(bank, image_column=image_column, device=device, **protect_options)
    metadata = _hf_metadata(features, image_column)
    extra = _map_batches_kwargs()
    if split_stages is None:
        split_stages = bool(num_gpus)
    if not split_stages:
        return _our_errors(ray_dataset.map_batches(_Fused(fn, metadata), batch_size=batch_size, batch_format="numpy",
                                                   concurrency=concurrency, **extra))
    if concurrency is None:
        concurrency = max(1, int(ray.cluster_resources().get("GPU", 1) // max(num_gpus, 1e-9))) if num_gpus else 1
    # Decode and encode are stateless CPU tasks Ray scales freely; only the kernel is an actor.
    decoded = ray_dataset.map_batches(_Decode(fn),
                                      batch_size=batch_size, batch_format="numpy", **extra)
    applied = decoded.map_batches(
        _Apply, fn_constructor_kwargs={"fn": fn}, batch_size=batch_size, batch_format="numpy",
        num_gpus=num_gpus, concurrency=concurrency, **extra)
    return _our_errors(applied.map_batches(_Encode(fn, metadata), batch_size=batch_size, batch_format="numpy",
                                           **extra))


def _our_errors(ds: Any) -> Any:
    """``ds`` raising our own error types from its batches (``except ue.ImageModeError`` works).

    By default Ray wraps a UDF's exception as ``RayTaskError(UserCodeException)``, with our message
    some 40 lines down; this dataset's own context (not the global one) asks Ray to raise the
    original type instead: ``RayTaskError(ImageModeError)``, an ``ImageModeError``.
    """
    ctx = getattr(ds, "context", None)
    if ctx is not None and hasattr(ctx, "raise_original_map_exception"):
        ctx.raise_original_map_exception = True
    return ds


__all__ = ["protect"]
