"""The dataset card (``README.md``) of a published protected dataset: YAML front matter plus prose.

It carries the method and its public budget only (see :func:`uetransforms.publish.public_params`);
never the bank, its path or digest, the seed, salt or key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .bank import NoiseBank

_CARD_RESERVED = ("configs", "dataset_info", "tags", "uetransforms")


def dataset_card(splits: Mapping[str, Any], bank: NoiseBank, *, image_column: str = "image",
                 card_extra: Mapping[str, Any] | None = None) -> str:
    """The README.md of a published protected dataset: YAML front matter plus prose.

    It depends only on the data and the bank's public parameters, so the local and the pushed
    card are the same text.
    """
    import yaml

    from . import __version__
    from .publish import public_params  # lazy: publish imports this module

    first = next(iter(splits.values()))
    params = public_params(bank)
    method_info = _method_info(bank.method)
    ue_block: dict[str, Any] = {
        "method": bank.method,
        "kind": bank.kind,
        "keying": bank.keying,
        **params,
        "image_column": image_column,
        "image_shape": list(bank.image_shape),
        "image_format": "PNG",
        "library_version": __version__,
    }
    if method_info is not None:
        ue_block["paper"] = method_info.paper
    front: dict[str, Any] = {}
    extra = dict(card_extra or {})
    clash = sorted(set(extra) & set(_CARD_RESERVED))
    if clash:
        raise ValueError(f"card_extra may not set {clash}: publish writes those fields itself")
    front.update(extra)
    front["tags"] = sorted(set(front.get("tags", [])) | {"unlearnable-examples", "uetransforms"})
    front["configs"] = [{
        "config_name": "default",
        "data_files": [{"split": name, "path": f"data/{name}-*"} for name in splits],
    }]
    front["dataset_info"] = {
        "features": first.features._to_yaml_list(),
        "splits": [{"name": name, "num_bytes": int(ds.data.nbytes), "num_examples": len(ds)}
                   for name, ds in splits.items()],
    }
    front["uetransforms"] = ue_block
    yaml_text = yaml.safe_dump(front, sort_keys=False, allow_unicode=True)

    budget = ", ".join(f"{k}={_fmt(v)}" for k, v in params.items()) or "see the method's defaults"
    paper = f" ({method_info.paper})" if method_info is not None else ""
    rows = ", ".join(f"{name}: {len(ds):,} rows" for name, ds in splits.items())
    prose = f"""
# Unlearnable copy ({bank.method})

The images in column `{image_column}` carry a small, deliberate perturbation made with the
`{bank.method}` method{paper}: a {bank.kind} perturbation keyed by {bank.keying}, {budget}.
A person sees the same pictures, but a model trained on this copy learns the perturbation as a
shortcut instead of the content, and does poorly on clean images. Every other column, the row
count and the row order are those of the source ({rows}).

Made with uetransforms {__version__}.

## Keep the images lossless

Images are stored as PNG. They must not be re-encoded lossily (JPEG, lossy WebP) or resized:
that weakens the protection. Convert, crop or augment only at training time.

## How to verify

- Every image is PNG: `PIL.Image.open(io.BytesIO(row["{image_column}"]["bytes"])).format == "PNG"`
  (load with `datasets.Image(decode=False)`), and the row counts match the `dataset_info` above.
- Protection is deterministic: whoever holds the (private) noise bank gets byte-identical images
  by protecting the clean source again with `uetransforms protect`.
- How much protection it gives is measured by training on this copy and testing on clean data:
  `uetransforms evaluate --help`.

The noise bank, seed and key that made this copy are not published: with them an additive
perturbation can be subtracted again.
"""
    return f"---\n{yaml_text}---\n{prose}"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        frac = v * 255
        if abs(frac - round(frac)) < 1e-6 and 0 < v < 1:
            return f"{int(round(frac))}/255"
        return f"{v:g}"
    return str(v)


def _method_info(key: str) -> Any:
    # ``uetransforms.methods`` the attribute is the ``methods()`` function; the registry is the subpackage.
    from .methods import get

    try:
        return get(key).INFO
    except KeyError:
        return None


def _guard_secrets(card: str, bank: NoiseBank) -> None:
    """Last line of defence: the card must not name the bank file or its digest."""
    leaks = [s for s in (bank.sha256, bank.sha256[:12], bank.path) if s and s in card]
    if leaks:
        raise ValueError(
            "the dataset card would reveal the noise bank's identity (its path or sha256), which is secret; "
            "remove it from card_extra"
        )
