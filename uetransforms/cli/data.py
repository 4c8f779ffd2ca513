"""The one data loader of the command line (``fit``, ``protect``, ``evaluate``, the demo):
DATA as a Parquet file or glob, a ``save_to_disk`` folder, an image folder or published copy, or
a Hub dataset id; and the ``--split`` / ``--splits`` / ``--limit`` rules."""

from __future__ import annotations

import glob
import os
import re
import sys
from typing import Any

DATA_HELP = ("a local Parquet file or glob, a save_to_disk directory, an image-folder or Parquet directory, "
             "or a Hub dataset id")


def load_data(spec: str, *, split: str | None = None) -> Any:
    """Open ``spec`` as a ``datasets.Dataset`` (or ``DatasetDict`` when it has several splits and none is chosen).

    ``spec`` is a Parquet file or glob, a ``save_to_disk`` directory, a directory ``load_dataset``
    understands (image folder, Parquet shards, a published copy), or a Hub dataset id.
    """
    import datasets

    if os.path.isdir(spec):
        if os.path.exists(os.path.join(spec, "dataset_dict.json")) or os.path.exists(os.path.join(spec, "state.json")):
            ds = datasets.load_from_disk(spec)
        else:
            from ..publishing.pipeline import load_local

            ds = load_local(spec)
    elif glob.has_magic(spec) or os.path.isfile(spec):
        files = sorted(glob.glob(spec))
        if not files:
            raise FileNotFoundError(f"no file matches {spec!r}")
        other = [f for f in files if not f.endswith(".parquet")]
        if other:
            raise ValueError(
                f"{other[0]!r} is not a .parquet file; DATA is a Parquet file/glob, a directory, or a Hub dataset id"
            )
        named = file_split(files)
        if split is not None and named is not None and split != named:
            raise ValueError(
                f"--split {split} does not name the split of {spec!r}: its file name{'s say' if len(files) > 1 else ' says'} "
                f"{named!r}. A Parquet file holds one split; --split cannot rename it. Leave out --split, or pass "
                f"--split {named}, or point DATA at the {split} file(s)"
            )
        ds = datasets.Dataset.from_parquet(files if len(files) > 1 else files[0], split=split or named or "train")
        return ds
    elif _looks_like_path(spec):
        raise FileNotFoundError(f"no file or directory {spec!r}")
    else:
        ds = datasets.load_dataset(spec)
    return select_split(ds, split)


_SHARD_FILE = re.compile(r"^(?P<split>\w[\w.]*?)-\d{5}-of-\d{5}\.parquet$")
_SPLIT_WORDS = {"train", "test", "validation", "valid", "val", "dev", "eval"}


def file_split(files: list[str]) -> str | None:
    """The split the Parquet ``files`` are named for (the Hub's ``<split>-00000-of-00001.parquet``,
    or ``train.parquet``/``test.parquet``...), or None when their names do not say or disagree."""
    names = set()
    for f in files:
        base = os.path.basename(f)
        m = _SHARD_FILE.match(base)
        stem = base[: -len(".parquet")]
        names.add(m.group("split") if m else stem if stem in _SPLIT_WORDS else None)
    return names.pop() if len(names) == 1 else None


def check_out_not_in_data(spec: str, out: str) -> None:
    """Refuse ``--out`` inside the DATA directory: the copy would become part of DATA (twice the rows
    on the next load, half of them protected twice by the next protect)."""
    if not os.path.isdir(spec):
        return
    src, dst = os.path.realpath(spec), os.path.realpath(out)
    if dst == src or dst.startswith(src.rstrip(os.sep) + os.sep):
        raise ValueError(
            f"--out {out!r} is inside DATA {spec!r}: the protected copy would be read back as part of DATA "
            "(twice the rows next time, and a later protect of DATA would protect those rows twice). "
            "Choose an --out outside the DATA directory"
        )


def _looks_like_path(spec: str) -> bool:
    # A Hub id is "name" or "owner/name"; anything else that does not exist is a mistyped path.
    return (spec.startswith((".", "/", "~")) or spec.endswith(".parquet") or spec.count("/") > 1
            or (os.sep != "/" and os.sep in spec))


def select_split(ds: Any, split: str | None, *, need_one: bool = False, what: str = "") -> Any:
    """``ds[split]`` for a ``DatasetDict``; with ``need_one`` pick ``train`` or the only split.

    Whenever a split is picked for the user (not named with ``--split``), ``what`` (e.g. "fit")
    is used to say so on stderr: a silent choice is how a test split gets protected by mistake.
    """
    import datasets

    if not isinstance(ds, datasets.DatasetDict):
        return ds
    if split is not None:
        if split not in ds:
            raise KeyError(f"split {split!r} not found; this dataset has splits {list(ds)} (pass --split)")
        return ds[split]
    if not need_one:
        return ds
    if len(ds) == 1:
        return next(iter(ds.values()))
    if "train" in ds:
        if what:
            print(f"{what}: using split 'train' of {list(ds)} (choose another with --split)", file=sys.stderr)
        return ds["train"]
    raise ValueError(f"this dataset has splits {list(ds)}; choose one with --split")


def choose_splits(ds: Any, splits: str | None, *, what: str) -> Any:
    """Keep the comma-separated ``--splits`` of a ``DatasetDict`` (default: all) and say which."""
    import datasets

    if not isinstance(ds, datasets.DatasetDict):
        if splits:
            raise ValueError("--splits applies only to DATA with several splits; this one has a single split")
        return ds
    names = list(ds) if not splits else [s.strip() for s in splits.split(",") if s.strip()]
    missing = [n for n in names if n not in ds]
    if missing:
        raise KeyError(f"--splits names {missing}, but this dataset has splits {list(ds)}")
    if not names:
        raise ValueError(f"--splits is empty; this dataset has splits {list(ds)}")
    print(f"{what}: splits {', '.join(f'{n} ({len(ds[n]):,} rows)' for n in names)}"
          + ("" if splits else " (all; choose with --splits)"), file=sys.stderr)
    return datasets.DatasetDict({n: ds[n] for n in names})


def limit_rows(ds: Any, limit: int | None) -> Any:
    """The first ``--limit`` rows of a Dataset (of each split of a DatasetDict), in order."""
    if limit is None:
        return ds
    if limit < 1:
        raise ValueError(f"--limit must be a positive number of rows, got {limit}")
    if hasattr(ds, "keys") and hasattr(ds, "values") and not hasattr(ds, "select"):
        return type(ds)({k: v.select(range(min(limit, len(v)))) for k, v in ds.items()})
    return ds.select(range(min(limit, len(ds))))


__all__ = ["DATA_HELP", "check_out_not_in_data", "choose_splits", "file_split", "limit_rows", "load_data",
           "select_split"]
