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

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import uuid
import warnings
from collections.abc import Mapping
from typing import Any

from ..core.bank import DEFAULT_LABEL, NoiseBank
from .card import _guard_secrets, dataset_card, missing_fields
from ..core.errors import PushError
from ..core.codecs import PNG_SIGNATURE
from .guard import refuse_double, refuse_marked
from .sources import Split, dataset_tables, output_features
from .writer import shard_count, write
from ..algorithms.measured import not_protecting

__all__ = ["IMAGE_FORMATS", "PNG_SIGNATURE", "PushError", "check_hub", "num_shards_for",
           "publish", "upload"]

#: Output encodings ``publish`` writes. Only lossless ones belong here, and PNG is the one
#: ``datasets`` produces for new uint8 images, so it is the one offered.
IMAGE_FORMATS = ("PNG",)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def publish(
    dataset: Any,
    bank: NoiseBank | str | os.PathLike,
    path_or_repo_id: str | os.PathLike,
    *,
    push: bool = False,
    image_column: str = "image",
    label_column: str | None = DEFAULT_LABEL,
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
    allow_double: bool = False,
    size_mismatch: str | None = None,
    convert: bool = False,
    png_encoder: str | None = None,
    png_level: int | None = None,
    threads: int | None = None,
    return_dataset: bool = True,
    progress: bool | None = None,
) -> Any:
    """Protect ``dataset`` with ``bank`` and write (or push) it as lossless Parquet shards plus a card.

    The copy is written into a temporary sibling directory and moved into place only when every
    shard and the card are complete (see :mod:`uetransforms.publishing.writer`): after a crash the output
    directory holds the previous copy or nothing, never a partial one.

    Args:
        dataset: a ``datasets.Dataset`` or ``DatasetDict`` (one shard set per split). It is read in
            batches, never copied whole.
        bank: the :class:`NoiseBank` (or its file) that protects it. Only its public parameters
            reach the card (see :func:`uetransforms.algorithms.public_params`).
        path_or_repo_id: output directory, or the Hub repo id when ``push=True``.
        push: upload to the Hub (one commit) instead of writing a local directory. The token and
            the Hub's reachability are checked before anything is protected.
        image_column / label_column / id_column: passed to :class:`~uetransforms.Protect`.
        batch_size / num_proc / device: rows protected together; ``num_proc > 1`` protects with
            ``dataset.map(num_proc=...)`` first (a cached copy), then writes it.
        max_shard_size: as ``push_to_hub``'s (default ``"500MB"``, the Hub's): the split gets
            ``ceil(total / max_shard_size)`` shards of equal row counts, where ``total`` is the
            *uncompressed Arrow* size of the output rows, estimated from protected rows sampled
            across the split. PNG bytes do not compress further, so files on disk come out close to
            it; one shard can be larger where image sizes vary along the rows. The Hub allows
            fewer than 10,000 files per folder, so a plan with more shards is refused.
        private / token: Hub repository visibility and credentials (``push=True`` only).
        card_extra: extra YAML front-matter fields (``license``, ``pretty_name``...).
        protected: the dataset is already protected (e.g. by ``map(Protect(bank))``): write it
            as it is. Its images must then already be stored as PNG.
        image_format: output image encoding; only ``"PNG"`` (lossless) is accepted.
        overwrite: replace a non-empty output directory's card and shards (files publish did not
            write are kept). The old copy is swapped out only once the new one is complete.
        allow_double: protect a dataset that already carries the uetransforms marker anyway
            (noise on top of noise). Without it such input is refused.
        size_mismatch / convert / png_encoder / png_level / threads: passed to :class:`~uetransforms.Protect`:
            ``size_mismatch="resize"`` protects images of other sizes than the bank's (photos of
            many sizes) by interpolating the noise; ``convert=True`` converts RGBA/palette/...
            images to the bank's mode; the PNG encoder and its level (default: the fastest
            installed, at its default level); slices of a batch protected in parallel (default:
            ``torch.get_num_threads()``). Only when publish protects (not ``protected=True``).

        return_dataset: ``False`` writes the shards only and returns the output path (a local
            publish) or the repo id (a push): no second, returned Arrow copy of every row (for a
            1M-image dataset it doubles the disk used).
        progress: a progress bar per split on stderr (default ``None``: when stderr is a terminal)
            and, before writing, one line estimating the output's size against the source's
            (unless ``progress=False``).

    Returns:
        With ``return_dataset=False``, the output path or repo id. Otherwise the protected ``Dataset``/``DatasetDict`` as ``datasets.load_dataset(path)`` gives it (same
        rows, features, split names and marker), memory-mapped from an Arrow copy of the rows made
        while they were written: where ``dataset.map`` puts its cache files (the datasets cache,
        or a temporary directory when caching is off or the input is in memory). A publish that
        resumed a killed run reads the folder back instead.
    """
    import datasets

    from ..integrations.datasets import Protect, _bank_ref

    if str(image_format).upper() not in IMAGE_FORMATS:
        raise ValueError(
            f"image_format={image_format!r} is refused: protection is a few intensity levels per pixel, and "
            "lossy encoding (JPEG, lossy WebP) or resizing smooths it away, so the published copy would no "
            f"longer be unlearnable. Use one of {IMAGE_FORMATS}."
        )
    bank = _bank_ref(bank)
    protect_options = {"size_mismatch": size_mismatch, "convert": convert, "png_encoder": png_encoder,
                       "png_level": png_level, "threads": threads}
    if protected and any(v not in (None, False) for v in protect_options.values()):
        given = ", ".join(f"{k}={v!r}" for k, v in protect_options.items() if v not in (None, False))
        raise ValueError(f"{given} only apply when publish protects the images; with protected=True they are "
                         "written as they are (pass these options to the Protect that protected them)")
    is_dict = isinstance(dataset, datasets.DatasetDict)
    if not is_dict and not isinstance(dataset, datasets.Dataset):
        raise TypeError(
            f"publish takes a datasets.Dataset or DatasetDict, got {type(dataset).__name__}; "
            "build one with datasets.Dataset.from_dict / load_dataset first "
            "(for an IterableDataset or a generator use uetransforms.publishing.streaming.publish_stream)"
        )
    splits: dict[str, Any] = dict(dataset) if is_dict else {_split_name(dataset): dataset}
    for name, ds in splits.items():
        if image_column not in ds.column_names:
            raise KeyError(
                f"image_column={image_column!r} is not a column of split {name!r} "
                f"(columns: {ds.column_names}); pass image_column=<name>"
            )
        if protected:
            _require_image_feature(ds, image_column, name)
        elif not allow_double:
            refuse_double(ds, image_column, where=f"split {name!r}")
    if push:
        repo_id = os.fspath(path_or_repo_id)
        if not _REPO_ID.match(repo_id):
            raise ValueError(f"push=True needs a Hub repo id like 'user/name', got {repo_id!r}")
        check_hub(repo_id, token)  # before any protection: offline or a bad token fails in seconds
    # The card is built once up front from the input, so a bad card_extra fails before any work.
    _guard_secrets(dataset_card(splits, bank, image_column=image_column, card_extra=card_extra), bank)

    from datasets.utils.py_utils import convert_file_size_to_int

    from ..core.version import __version__

    max_bytes = convert_file_size_to_int(max_shard_size)
    # What the writer would refuse, refused before any image is protected (with num_proc the
    # whole map ran first, then batch_size=0 or a non-empty output directory was reported).
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not push:
        from .target import Target

        Target(path_or_repo_id).check(overwrite)
    note = not_protecting(bank.method)
    if note:
        warnings.warn(f"publishing a copy that is not protected: {note}", UserWarning, stacklevel=2)
    # The size line is said unless progress=False; the bars only on a terminal (or progress=True).
    say, show = progress is not False, sys.stderr.isatty() if progress is None else bool(progress)
    fn = None if protected else Protect(bank, image_column=image_column, label_column=label_column,
                                        id_column=id_column, device=device, allow_double=allow_double,
                                        **protect_options)
    if fn is not None and num_proc and num_proc > 1:
        if not allow_double:  # map() protects before the writer sees a batch: look at the images first
            for name, ds in splits.items():
                refuse_marked(ds, image_column, where=f"split {name!r}")
        # One GPU per worker: Protect maps the rank to cuda:<rank % n_gpus>.
        with_rank = device is not None and str(device).startswith("cuda")
        # with_indices: an error names the dataset row, not a position in some worker's batch.
        splits = {name: ds.map(fn, batched=True, batch_size=batch_size, num_proc=num_proc, with_rank=with_rank,
                               with_indices=True, desc=f"Protecting {name} ({bank.method})")
                  for name, ds in splits.items()}
        fn = None
    job = [bank.sha256, image_column, label_column, id_column, protected, __version__]
    parts = []
    seen_sizes: list[tuple[int, int]] = []
    for name, ds in splits.items():
        size = _estimate(ds, fn, image_column)
        seen_sizes += size["sizes"] if size is not None else []
        if say and size is not None:
            print(f"publish: split {name!r}: about {_mb(size['output'])} of lossless PNG for {len(ds):,} rows "
                  f"({size['output'] / max(1, size['source']):.1f}x the source's {_mb(size['source'])}, estimated from "
                  f"{size['sampled']} rows); noise does not compress, so a protected copy is larger than its JPEGs",
                  file=sys.stderr, flush=True)
        hint = size["output"] if size is not None else (
            int(ds.data.nbytes) if fn is None and ds._indices is None else None)
        if hint is not None and len(ds):
            planned = shard_count(hint, len(ds), max_bytes)
            if planned > HUB_MAX_FILES_PER_FOLDER:
                raise ValueError(
                    f"split {name!r} would be cut into {planned:,} shards of max_shard_size={max_shard_size!r}, but the "
                    f"Hub allows fewer than {HUB_MAX_FILES_PER_FOLDER:,} files per folder; pass a larger max_shard_size")
        parts.append(Split(name=name, tables=_with_bar(dataset_tables(ds, fn, image_column, batch_size), len(ds),
                                                       f"{'protecting' if fn else 'writing'} {name}", show),
                           num_rows=len(ds), max_shard_bytes=max_bytes, nbytes_hint=hint,
                           empty_schema=output_features(ds.features, image_column).arrow_schema,
                           fingerprint=_fingerprint(ds, job),
                           arrow_copy=_arrow_copy_path(ds) if return_dataset else None))

    by_area = sorted(set(seen_sizes), key=lambda hw: (hw[0] * hw[1], hw))
    image_sizes = (by_area[0], by_area[-1]) if by_area else None
    load_id = repo_id if push else os.path.basename(os.path.abspath(os.fspath(path_or_repo_id)))
    for missing in missing_fields(card_extra, splits, image_column):
        warnings.warn(f"dataset card: {missing}", UserWarning, stacklevel=2)

    def card(written: Mapping[str, Any]) -> str:
        text = dataset_card(written, bank, image_column=image_column, card_extra=card_extra, image_sizes=image_sizes,
                            load_id=load_id)
        _guard_secrets(text, bank)
        return text

    marker_info = {"method": bank.method, "library_version": __version__}
    if not push:
        out_dir = os.fspath(path_or_repo_id)
        written = _write_with_copies(parts, out_dir, image_column=image_column, card=card, overwrite=overwrite,
                                     protected=protected, marker_info=marker_info, on_recover=_warn)
        return _result(out_dir, written, is_dict) if return_dataset else out_dir
    staging = tempfile.mkdtemp(prefix="uetransforms-push-")
    folder = os.path.join(staging, repo_id.split("/")[-1])
    try:
        written = _write_with_copies(parts, folder, image_column=image_column, card=card, overwrite=False,
                                     protected=protected, marker_info=marker_info)
        result = _result(folder, written, is_dict) if return_dataset else repo_id
        upload(folder, repo_id, token=token, private=private, splits=list(splits))
    except PushError:
        raise  # the complete copy stays in staging: the message says where and how to resume
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return result


#: The Hub's recommended limits (huggingface.co/docs/hub/repositories-recommendations): files per
#: folder, and files per commit above which ``upload`` switches to ``upload_large_folder``.
HUB_MAX_FILES_PER_FOLDER = 10_000
HUB_MAX_FILES_PER_COMMIT = 100
#: Rows protected up front, spread over a split, to estimate its output size.
_SIZE_SAMPLE = 16


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB" if n < 1e9 else f"{n / 1e9:,.2f} GB"


def _estimate(ds: Any, fn: Any, image_column: str) -> dict[str, Any] | None:
    """Output and source size of a split, from up to :data:`_SIZE_SAMPLE` rows spread over it.

    ``output`` is the uncompressed Arrow size of the protected rows (what ``max_shard_size``
    counts, as ``push_to_hub`` does); ``source`` the encoded images' bytes (or files) as they are.
    ``None`` when publish does not protect (the input's own size is then exact).
    """
    if fn is None or len(ds) == 0:
        return None
    import numpy as np

    rows = sorted({int(i) for i in np.linspace(0, len(ds) - 1, min(len(ds), _SIZE_SAMPLE))})
    sample = ds.select(rows)
    # Through Dataset.map (in memory, PNG records as the writer stores them), not the writer's own
    # table source: a resumed publish must protect only the rows it still has to write.
    tables = [sample.map(fn, batched=True, batch_size=len(rows), keep_in_memory=True,
                         load_from_cache_file=False).with_format("arrow")[:]]
    out = sum(t.nbytes for t in tables)
    # (height, width) from each PNG's IHDR chunk: bytes 16-24 hold width then height.
    sizes = [(int.from_bytes(b[20:24], "big"), int.from_bytes(b[16:20], "big"))
             for t in tables for b in t.column(image_column).combine_chunks().field("bytes").to_pylist() if b]
    src = 0
    for rec in sample.with_format("arrow")[:][image_column].to_pylist():
        if isinstance(rec, dict) and rec.get("bytes") is not None:
            src += len(rec["bytes"])
        elif isinstance(rec, dict) and rec.get("path") and os.path.exists(rec["path"]):
            src += os.path.getsize(rec["path"])
    scale = len(ds) / len(rows)
    return {"output": int(out * scale), "source": int(src * scale), "sampled": len(rows), "sizes": sizes}


def _with_bar(tables: Any, total: int, desc: str, show: bool) -> Any:
    """``tables`` (a from-row -> tables function) counting its rows on a tqdm bar when ``show``."""
    if not show:
        return tables

    def counted(start: int) -> Any:
        from tqdm.auto import tqdm

        with tqdm(total=total, initial=start, desc=desc, unit="img", file=sys.stderr) as bar:
            for table in tables(start):
                yield table
                bar.update(table.num_rows)

    return counted


def num_shards_for(ds: Any, max_shard_bytes: int) -> int:
    """How many Parquet shards keep each under ``max_shard_bytes`` (uncompressed), as ``push_to_hub`` counts."""
    return shard_count(ds.data.nbytes, len(ds), max_shard_bytes)


def _fingerprint(ds: Any, job: list[Any]) -> str | None:
    """What identifies this input and job for a resume: datasets' own fingerprint of ``ds``."""
    fp = getattr(ds, "_fingerprint", None)
    return None if fp is None else json.dumps([fp, *job], default=str)


def load_local(path: str, **kwargs: Any) -> Any:
    """``datasets.load_dataset`` of a local folder, always from the files as they are now.

    For a folder whose card declares YAML ``configs`` (every published copy), ``datasets`` keys
    its Arrow cache on the card alone, not on the data files, so after a re-publish into the same
    folder (``overwrite=True``) a plain ``load_dataset`` can return the *previous* copy from the
    cache whenever the card did not change (huggingface/datasets#2956 is the same family).
    Rebuilding the cache costs one pass over local files; a stale copy would be a wrong result.
    """
    import datasets

    return datasets.load_dataset(path, download_mode="force_redownload", **kwargs)


def _arrow_copy_path(ds: Any) -> str:
    """Where the returned split's rows go: where ``ds.map`` would put its cache file.

    That is next to ``ds``'s own cache files when caching is on (the datasets cache, which has
    room for a copy of the dataset), else datasets' temporary directory, deleted when the
    process exits. The ``cache-`` prefix lets ``Dataset.cleanup_cache_files`` remove it.
    """
    import datasets
    from datasets.fingerprint import get_temporary_cache_files_directory

    files = ds.cache_files if datasets.is_caching_enabled() else []
    folder = os.path.dirname(files[0]["filename"]) if files else get_temporary_cache_files_directory()
    return os.path.join(folder, f"cache-uetransforms-publish-{uuid.uuid4().hex}.arrow")


def _write_with_copies(parts: list[Split], out_dir: str, **kwargs: Any) -> dict[str, Any]:
    """``writer.write``, removing the splits' Arrow copies when it fails (nobody will map them)."""
    try:
        return write(parts, out_dir, **kwargs)
    except BaseException:
        for part in parts:
            if part.arrow_copy:
                with contextlib.suppress(OSError):
                    os.remove(part.arrow_copy)
        raise


def _result(out_dir: str, written: Mapping[str, Any], is_dict: bool) -> Any:
    """What ``load_local(out_dir)`` returns, mapped from the Arrow copies the writer made of the rows.

    Same rows, order, features, split names and info as reading the shards back, without the second pass over them. A split resumed after a dead
    run's shards has no complete copy: then the folder is read back as before.
    """
    import datasets

    if not all(w.arrow_copy for w in written.values()):
        for w in written.values():
            if w.arrow_copy:
                with contextlib.suppress(OSError):
                    os.remove(w.arrow_copy)
        return load_local(out_dir) if is_dict else load_local(out_dir, split=next(iter(written)))
    from datasets.table import MemoryMappedTable

    name_of_dir = os.path.basename(os.path.abspath(out_dir))
    tables = {name: MemoryMappedTable.from_file(w.arrow_copy) for name, w in written.items()}
    splits = datasets.SplitDict(dataset_name=name_of_dir)
    for name, table in tables.items():
        splits.add(datasets.SplitInfo(name=name, num_bytes=table.nbytes, num_examples=table.num_rows))
    stored = sum(os.path.getsize(p) for w in written.values() for p in w.shards)
    size = sum(t.nbytes for t in tables.values())
    out = {}
    for name, w in written.items():
        # The fields load_dataset fills for a local Parquet folder, so the two are interchangeable.
        info = datasets.DatasetInfo(features=w.features, splits=splits, builder_name="parquet",
                                    config_name="default", dataset_name=name_of_dir, version="0.0.0",
                                    dataset_size=size, download_size=stored, size_in_bytes=size + stored)
        out[name] = datasets.Dataset(tables[name], info=info, split=datasets.NamedSplit(name))
    return datasets.DatasetDict(out) if is_dict else out[next(iter(out))]


def _warn(note: str) -> None:
    warnings.warn(f"uetransforms publish: {note}", stacklevel=3)


def _split_name(ds: Any) -> str:
    split = getattr(ds, "split", None)
    name = str(split) if split is not None else "train"
    return name if re.fullmatch(r"[\w.-]+", name) else "train"


def _require_image_feature(ds: Any, column: str, split: str) -> None:
    import datasets

    feature = ds.features[column]
    if not isinstance(feature, datasets.Image):
        raise TypeError(
            f"column {column!r} of split {split!r} is {type(feature).__name__}, not a datasets Image column; "
            "protect it with Protect (it writes PNG images) before publishing with protected=True"
        )


# ---------------------------------------------------------------------------- hub
def _terms(cli: bool) -> dict[str, str]:
    if cli:
        # Said before anything is written: the copy in --out does not exist yet.
        return {"push": "--push", "token": "--token <hf_...>", "local": "leave out --push to write the copy to --out "
                "only, and upload it later with `hf upload <repo> <out> --repo-type dataset`"}
    return {"push": "push=True", "token": "token='hf_...'", "local": "publish to a local directory (push=False) "
            "and upload it later with HfApi().upload_folder(..., repo_type='dataset')"}


def check_hub(repo_id: str, token: str | None = None, *, cli: bool = False) -> dict[str, Any]:
    """Fail fast, before anything is protected, when a push cannot work; return ``whoami``'s answer.

    Checks that the Hub is reachable (not offline), and that the token exists, is valid and may
    write. ``cli=True`` words the errors in the command line's flags.
    """
    from huggingface_hub import HfApi
    from huggingface_hub import errors as hub_errors

    t = _terms(cli)
    try:
        who = HfApi(token=token).whoami()
    except hub_errors.OfflineModeIsEnabled:
        raise PushError(
            f"{t['push']} needs the Hugging Face Hub, but huggingface_hub is in offline mode (HF_HUB_OFFLINE is "
            f"set); nothing was protected or uploaded. Unset HF_HUB_OFFLINE, or {t['local']}"
        ) from None
    except hub_errors.LocalTokenNotFoundError:
        raise PushError(
            f"{t['push']} needs a Hugging Face token with write access and none was found; pass {t['token']} or "
            "log in once with `hf auth login`. Nothing was protected or uploaded."
        ) from None
    except hub_errors.HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status == 401:
            raise PushError(
                f"the Hugging Face token was rejected (401: invalid or expired); pass a valid {t['token']} or run "
                "`hf auth login`. Nothing was protected or uploaded."
            ) from None
        raise PushError(f"the Hugging Face Hub answered {status or err}; nothing was protected or uploaded. "
                        f"Try again later, or {t['local']}") from err
    except Exception as err:  # DNS, refused connection, TLS, proxy: all mean "cannot reach it"
        raise PushError(
            f"{t['push']}: cannot reach the Hugging Face Hub ({type(err).__name__}: {err}); nothing was protected "
            f"or uploaded. Check the network, or {t['local']}"
        ) from None
    role = ((who.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise PushError(f"the Hugging Face token is read-only; {t['push']} needs a token with write access "
                        f"({t['token']}). Nothing was protected or uploaded.")
    return who


def upload(folder: str | os.PathLike, repo_id: str, *, token: str | None = None, private: bool = True,
           splits: list[str] | None = None, cli: bool = False) -> None:
    """Upload a published folder to the Hub dataset repo ``repo_id``: one commit up to
    :data:`HUB_MAX_FILES_PER_COMMIT` files, else ``upload_large_folder`` (several commits, resumable).

    One commit is all or nothing; it replaces the card and, for each split written, the repo's old
    ``data/<split>-*`` shards (a stale shard would otherwise be read with the new ones).
    """
    from huggingface_hub import HfApi

    folder = os.fspath(folder)
    api = HfApi(token=token)
    t = _terms(cli)
    if splits is None:
        splits = sorted({n.rsplit("-", 3)[0] for n in os.listdir(os.path.join(folder, "data"))
                         if n.endswith(".parquet") and "-of-" in n})
    resume = (f"`hf upload {repo_id} {folder} . --repo-type dataset`" if cli else
              f"HfApi().upload_folder(folder_path={folder!r}, repo_id={repo_id!r}, repo_type='dataset')")
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    except Exception as err:
        raise PushError(
            f"could not create or open the dataset repo {repo_id!r} ({type(err).__name__}: {err}); nothing was "
            f"uploaded. The complete protected copy is in {folder!r}: upload it with {resume} (no need to "
            "protect again)"
        ) from err
    files = [os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs]
    try:
        # huggingface_hub >= 2 has no upload_large_folder: its upload_folder commits a large folder
        # in batches itself and resumes when rerun.
        if len(files) <= HUB_MAX_FILES_PER_COMMIT or not hasattr(api, "upload_large_folder"):
            api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type="dataset",
                              commit_message="uetransforms: publish a protected copy",
                              delete_patterns=[f"data/{name}-*" for name in splits])
        else:
            # The Hub recommends < 100 files per commit: upload_large_folder commits in pieces and
            # resumes where it stopped when rerun. It cannot delete, so stale shards of the written
            # splits go in one more commit afterwards (never before: the repo keeps a loadable copy).
            api.upload_large_folder(repo_id=repo_id, folder_path=folder, repo_type="dataset", private=private)
            local = {f.replace(os.sep, "/") for f in files}
            stale = [f for f in api.list_repo_files(repo_id, repo_type="dataset")
                     if f not in local and any(f.startswith(f"data/{name}-") for name in splits)]
            if stale:
                api.delete_files(repo_id, delete_patterns=stale, repo_type="dataset",
                                 commit_message="uetransforms: remove the previous copy's shards")
    except Exception as err:
        raise PushError(
            f"uploading to {repo_id!r} failed ({type(err).__name__}: {err}). A Hub commit is all or nothing, so "
            f"none of this copy's files are on the Hub (the repo exists, as before or created empty; {t['push']} "
            f"changed nothing else). The complete protected copy is in {folder!r}: upload it with {resume} (no need "
            "to protect again)"
        ) from err
