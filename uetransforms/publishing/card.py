"""The dataset card (``README.md``) of a published protected dataset: YAML front matter plus prose.

It carries the method and its public budget only (see :func:`uetransforms.algorithms.public_params`);
never the bank, its path or digest, the seed, salt or key. It states what the noise is as measured
from the bank's tensors (:meth:`NoiseBank.measure`), and refuses a bank whose parameters claim less
than its tensors do. It checks its own text for the bank's secrets before it is returned.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ..core.bank import NoiseBank
from ..core.errors import BankError

_CARD_RESERVED = ("configs", "dataset_info", "tags", "uetransforms")


def dataset_card(splits: Mapping[str, Any], bank: NoiseBank, *, image_column: str = "image",
                 card_extra: Mapping[str, Any] | None = None, image_sizes: Any = None,
                 load_id: str | None = None) -> str:
    """The README.md of a published protected dataset: YAML front matter plus prose.

    It depends only on the data and the bank's public parameters, so the local and the pushed
    card are the same text. It is written for the dataset's readers: nothing in it addresses the
    publisher (what the publisher should add is :func:`missing_fields`' job).

    Args:
        image_sizes: ``(smallest, largest)`` ``(height, width)`` seen in the output (publish
            samples them); for a bank that fits any size the card gives this range instead of
            the bank's one shape.
        load_id: what ``datasets.load_dataset`` takes in the card's "how to load" snippet (the
            Hub repo id when pushing, else the output folder's name).
    """
    import yaml

    from ..core.version import __version__
    from ..algorithms import public_params

    first = next(iter(splits.values()))
    params = public_params(bank.method, bank.params)
    measured = _check_claims(bank)
    method_info = _method_info(bank.method)
    ue_block: dict[str, Any] = {
        "method": bank.method,
        "kind": bank.kind,
        "keying": bank.keying,
        **params,
        **({"measured": _measured_block(measured)} if measured else {}),
        "image_column": image_column,
        "image_format": "PNG",
        "library_version": __version__,
    }
    any_size = bank.info.get("size_mismatch") == "resize"
    if image_sizes is not None and tuple(image_sizes[0]) != tuple(image_sizes[-1]):
        # Photos of several sizes: one image_shape would be false for most rows.
        ue_block["image_sizes"] = [f"{h}x{w}" for h, w in (image_sizes[0], image_sizes[-1])]
    else:
        ue_block["image_shape"] = (list(bank.image_shape) if image_sizes is None or not any_size
                                   else [bank.channels, *image_sizes[0]])
    if method_info is not None:
        ue_block["paper"] = method_info.paper
    citation = getattr(method_info, "citation", "") or ""
    if citation:
        ue_block["citation"] = citation
    source = _source_fields(first, image_column)
    # What the Hub expects of a derived dataset; the caller's card_extra has the last word.
    front: dict[str, Any] = {key: value for key, value in source.items() if value}
    extra = dict(card_extra or {})
    clash = sorted(set(extra) & set(_CARD_RESERVED))
    if clash:
        raise ValueError(f"card_extra may not set {clash}: publish writes those fields itself")
    front.update(extra)
    front.setdefault("license", "unknown")
    total = sum(len(ds) for ds in splits.values())
    front.setdefault("size_categories", [_size_category(total)])
    srcs0 = front.get("source_datasets") or []
    front.setdefault("pretty_name", f"{srcs0[0].split('/')[-1]} (unlearnable, {bank.method})" if srcs0
                     else f"Unlearnable copy ({bank.method})")
    front["tags"] = sorted(set(front.get("tags", [])) | {"unlearnable-examples", "uetransforms"})
    front["configs"] = [{
        "config_name": "default",
        "data_files": [{"split": name, "path": f"data/{name}-*"} for name in splits],
    }]
    # Only the fields the Hub's card spec documents for dataset_info (features, splits...). The
    # "protected" marker is not here: it travels in every PNG (codecs.mark), which any loader
    # keeps, and the documented `tags` above say "uetransforms" to people and the Hub's search.
    front["dataset_info"] = {
        "features": first.features._to_yaml_list(),
        "splits": [{"name": name, "num_bytes": int(ds.data.nbytes), "num_examples": len(ds)}
                   for name, ds in splits.items()],
    }
    front["uetransforms"] = ue_block
    # LibYAML's emitter where PyYAML has it (its wheels do): the pure-Python one took 17 ms a card.
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    yaml_text = yaml.dump(front, Dumper=dumper, sort_keys=False, allow_unicode=True)

    budget = ", ".join(f"{k}={_fmt(v)}" for k, v in params.items()) or "see the method's defaults"
    paper = f" ({method_info.paper})" if method_info is not None else ""
    rows = ", ".join(f"{name}: {len(ds):,} rows" for name, ds in splits.items())
    licence = front["license"]
    if licence == "unknown":
        licence_text = ("The licence is `unknown`: the publisher did not state the source's licence. The source's "
                        "licence and terms still apply to this copy.")
    else:
        licence_text = f"Licence: `{licence}`, as the source's; the source's terms still apply to this copy."
    srcs = front.get("source_datasets") or []
    source_text = (f"Derived from {', '.join(f'`{s}`' for s in srcs)}." if srcs else
                   "The source dataset is not named on this card.")
    if ue_block.get("image_sizes"):
        lo, hi = ue_block["image_sizes"]
        size_text = f" Images keep their own sizes, from {lo} to {hi} pixels (height x width, sampled)."
    else:
        size_text = ""
    control = _control_text(bank.method)
    load = load_id or "<this dataset's repo id>"
    how_to_load = f"""
## How to load

```python
import datasets
ds = datasets.load_dataset("{load}")
ds["{next(iter(splits))}"][0]["{image_column}"]   # a PIL image, decoded from lossless PNG
```
"""
    cite = f"\n## Citation of the method\n\n```\n{citation.strip()}\n```\n" if citation else ""
    prose = f"""
# Unlearnable copy ({bank.method})
{control}
The images in column `{image_column}` carry a deliberate perturbation made with the
`{bank.method}` method{paper}: {_what_changes(bank.kind, params, measured)} ({bank.kind}, keyed by {bank.keying},
{budget}). A model trained on this copy is meant to learn the perturbation as a shortcut
instead of the content, and to do poorly on clean images. Every other column, the row count and
the row order are those of the source ({rows}).{size_text}

{source_text} {licence_text}
{how_to_load}
Made with uetransforms {__version__}.

## Keep the images lossless

Images are stored as PNG. They must not be re-encoded lossily (JPEG, lossy WebP) or resized:
that weakens the protection. Convert, crop or augment only at training time.

## Limitations

- Protection is measured, not guaranteed: it depends on the trainer. Defences published against
  unlearnable examples include adversarial training, image shortcut squeezing (grayscale,
  JPEG-10, bit-depth reduction; Liu et al., ICML 2023), heavy augmentation (UEraser; Qin et al.,
  2023), orthogonal projection against class-wise noise (Sandoval-Segura et al., 2023) and, for
  convolution-based noise, sharpening and filtering (arXiv 2411.01742). Mixing in clean images of
  the same classes weakens most methods.
- A model fine-tuned from strong pretrained features may still learn the content.
- The perturbation is not encryption: it does not hide what the pictures show.
{_measured_text(bank.method, _side(bank, image_sizes), _labels(bank))}
## How to verify

- Every image is PNG: `PIL.Image.open(io.BytesIO(row["{image_column}"]["bytes"])).format == "PNG"`
  (load with `datasets.Image(decode=False)`), and the row counts match the `dataset_info` above.
- Protection is deterministic: whoever holds the (private) noise bank gets byte-identical images
  by protecting the clean source again with `uetransforms protect`.
- How much protection it gives is measured by training on this copy and testing on clean data:
  `uetransforms evaluate --help`.

The noise bank, seed and key that made this copy are not published: with them an additive
perturbation can be subtracted again.
{cite}"""
    card = f"---\n{yaml_text}---\n{prose}"
    _guard_secrets(card, bank, card_extra)  # the card checks its own output, whoever calls it
    return card


#: Builder names that say how data was read, not which dataset it is.
_GENERIC_BUILDERS = {"", "parquet", "arrow", "csv", "json", "text", "imagefolder", "audiofolder", "generator",
                     "webdataset", "in_memory", "pandas", "sql", "default"}


def _source_fields(ds: Any, image_column: str) -> dict[str, Any]:
    """``license``, ``source_datasets`` and ``task_categories`` read from the source's own info/features."""
    info = getattr(ds, "info", None)
    fields: dict[str, Any] = {}
    licence = (getattr(info, "license", "") or "").strip()
    if licence:
        fields["license"] = licence
    name = (getattr(info, "dataset_name", "") or "").strip()
    if name and name.lower() not in _GENERIC_BUILDERS:
        fields["source_datasets"] = [name]
    features = getattr(ds, "features", None) or {}
    has_classes = any(type(f).__name__ == "ClassLabel" for k, f in features.items() if k != image_column)
    if has_classes:
        fields["task_categories"] = ["image-classification"]
    return fields


def _size_category(n: int) -> str:
    """The Hub's size bucket for ``n`` rows (n<1K, 1K<n<10K, ...)."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
    return next((label for bound, label in bounds if n < bound), "n>1T")


def _what_changes(kind: str, params: Mapping[str, Any], measured: Mapping[str, float] | None = None) -> str:
    """What a person would notice, by bank kind: honest about visible methods (a blur is not invisible).

    Where the noise was measured from the bank's tensors, the measured size is what is stated.
    """
    blur = "every image is filtered with a random per-class blur kernel, a visible change (softer, recoloured)"
    if params.get("dilation") == "auto":  # a reader of the card would otherwise not know what 'auto' means
        blur += ", its taps spaced by each image's own size (one pixel per 32 of the shorter side)"
    if kind == "conv":
        return blur
    if kind == "convadd":
        if measured and "linf" in measured:
            return f"{blur}, then each pixel changes by at most {_levels(measured['linf'])} more (measured from the noise itself)"
        return f"{blur}, then small noise is added"
    if kind == "pixel":
        if measured and "l0" in measured:
            n = int(measured["l0"])
            return f"at most {n} pixel{'s' if n != 1 else ''} per image {'are' if n != 1 else 'is'} set to fixed values"
        return "a few pixels per image are set to fixed values"
    if measured and "linf" in measured:
        return (f"every pixel changes by at most {_levels(measured['linf'])} of the intensity range (measured from "
                "the noise itself), usually hard to see")
    eps = params.get("epsilon")
    norm = params.get("norm", "linf")
    if eps is not None and str(norm).lower() in ("linf", "l-inf", "inf"):
        return f"every pixel changes by at most {_fmt(eps)} of the intensity range, usually hard to see"
    if eps is not None:
        return f"small noise of {norm} norm at most {_fmt(eps)} is added"
    return "small noise is added"


def _side(bank: NoiseBank, image_sizes: Any) -> int | None:
    """The longest side of this dataset's largest images, to quote facts measured nearest it."""
    if image_sizes is not None:
        return int(max(image_sizes[-1]))
    shape = tuple(bank.image_shape or ())
    return int(max(shape[1:])) if len(shape) == 3 else None


def _measured_text(method: str, resolution: int | None = None, labels: str | None = None) -> str:
    """Measured facts about ``method`` when the package ships them (``uetransforms.algorithms.measured``),
    the attacker rows taken nearest this dataset's image size (and a plain word when none is near),
    of the bank's own kind of fit (``labels``: ``"true"`` fitted with labels, ``"none"`` without)."""
    from ..algorithms.measured import summary

    text = summary(method, resolution=resolution, labels=labels)
    return f"- Measured with uetransforms ({_MEASURED_WHERE}): {text}\n" if text else ""


def _labels(bank: NoiseBank) -> str:
    """``"none"`` for a bank fitted without labels (keyed by clusters, or sample noise made with
    cluster ids as labels: ``info["label_agnostic"]``), else ``"true"``: the card quotes only the
    measurements of that kind of fit."""
    return "none" if bank.fitted_without_labels else "true"


_MEASURED_WHERE = ("on CIFAR-10 images at the sizes named below, not on this dataset, whose images and classes may "
                   "give different numbers; lower accuracy = stronger protection; details in "
                   "benchmarks/RESULTS.md of the uetransforms source")


def _control_text(method: str) -> str:
    """A warning at the top of the card of a method measured not to protect (the negative control)."""
    from ..algorithms.measured import not_protecting

    note = not_protecting(method)
    return f"\n**This copy is not protected.** {note[0].upper()}{note[1:]}.\n" if note else ""


def missing_fields(card_extra: Mapping[str, Any] | None, splits: Mapping[str, Any], image_column: str) -> list[str]:
    """What the publisher should state and the data did not say (licence, source), in Python terms,
    for ``publish`` to warn about: the card itself never addresses its author."""
    first = next(iter(splits.values()))
    fields = {**_source_fields(first, image_column), **dict(card_extra or {})}
    out = []
    if not fields.get("license"):
        out.append("the source's licence could not be read, so the card says `unknown`: state it with "
                   "card_extra={'license': '<Hub licence id>'} if you know it")
    if not fields.get("source_datasets"):
        out.append("the card names no source dataset: add card_extra={'source_datasets': ['<repo id>']} if it has one")
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        frac = v * 255
        if abs(frac - round(frac)) < 1e-6 and 0 < v < 1:
            return f"{int(round(frac))}/255"
        return f"{v:g}"
    return str(v)


def _method_info(key: str) -> Any:
    """The method's contract (paper, citation...), or None for a bank of a method not registered here."""
    from ..algorithms import get

    try:
        return get(key)
    except KeyError:
        return None


def _guard_secrets(card: str, bank: NoiseBank, card_extra: Mapping[str, Any] | None = None) -> None:
    """Last line of defence: the card must not name the bank file or its digest, nor hold a secret value.

    Secret values are the bank's parameters the method registry calls secret by name (seed,
    salt, key...) and its key tensors' bytes. ``card_extra``, the caller's own text, is checked
    field by field for any of them as a whole word, however short; the whole card for those
    long enough (six characters) not to occur in it by chance (a seed of 32 is also an image
    size). The error names the field and the parameter, never the value.
    """
    leaks = [s for s in (bank.sha256, bank.sha256[:12], bank.path) if s and s in card]
    if leaks:
        raise ValueError(
            "the dataset card would reveal the noise bank's identity (its path or sha256), which is secret; "
            "remove it from card_extra"
        )
    secrets = list(_secret_tokens(bank))
    for field, value in (card_extra or {}).items():
        text = json.dumps(value, default=str, ensure_ascii=False) + " " + str(field)
        for name, token in secrets:
            if _has_word(text, token):
                raise ValueError(
                    f"card_extra[{field!r}] contains the value of the bank's secret parameter {name!r}: the card "
                    "would publish it, and with it whoever reads the card can rebuild the noise. Remove it from "
                    "card_extra. (If it is a coincidence, the secret is short enough to guess: refit with "
                    "seed=None for a fresh one.)"
                )
        name = _tensor_leak(bank, value)
        if name is not None:
            raise ValueError(
                f"card_extra[{field!r}] holds values of the bank's {name!r} tensor (the key itself): the card "
                "would publish it. Remove it from card_extra."
            )
    for name, token in secrets:
        if len(token) >= 6 and _has_word(card, token):
            raise ValueError(f"the dataset card would contain the value of the bank's secret parameter {name!r}; "
                             "remove it from card_extra (or the data's names and features that carry it)")
    for name, token in _tensor_tokens(bank):
        if token in card:
            raise ValueError(f"the dataset card would contain the bytes of the bank's {name!r} tensor (the key "
                             "itself); remove them from card_extra")


def _secret_tokens(bank: NoiseBank) -> Iterator[tuple[str, str]]:
    """``(parameter, text)`` for every scalar inside a secret-named parameter (decimal and hex for integers)."""
    from ..algorithms import looks_secret  # the registry's one rule of which names are secret

    def scalars(value: Any) -> Iterator[Any]:
        if isinstance(value, Mapping):
            for v in value.values():
                yield from scalars(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                yield from scalars(v)
        elif not isinstance(value, bool) and value is not None:
            yield value

    for name, value in bank.params.items():
        if not looks_secret(name):
            continue
        for v in scalars(value):
            text = repr(v) if isinstance(v, float) else str(v)
            if text:
                yield name, text
            if isinstance(v, int) and abs(v) >= 1 << 24:
                yield name, format(abs(v), "x")


def _has_word(text: str, token: str) -> bool:
    return re.search(rf"(?<![0-9A-Za-z_.]){re.escape(token)}(?![0-9A-Za-z_]|\.[0-9])", text) is not None


def _tensor_tokens(bank: NoiseBank) -> Iterator[tuple[str, str]]:
    """The start of each payload tensor as hex and base64 (``arr.tobytes().hex()``, YAML's ``!!binary``)."""
    for name, arr in bank.tensors.items():
        head = np.ascontiguousarray(arr.reshape(-1)[:32]).tobytes()
        if len(head) >= 16 and len(set(head)) > 2:  # all zeros would match any zero padding
            yield name, head[:16].hex()
            yield name, base64.b64encode(head[:24]).decode()


def _tensor_leak(bank: NoiseBank, value: Any, run: int = 4) -> str | None:
    """The tensor whose values appear, ``run`` or more in a row, among ``value``'s numbers (``.tolist()``)."""
    numbers: list[float] = []

    def collect(v: Any) -> None:
        if isinstance(v, Mapping):
            for x in v.values():
                collect(x)
        elif isinstance(v, (list, tuple, np.ndarray)):
            for x in (v.tolist() if isinstance(v, np.ndarray) else v):
                collect(x)
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            numbers.append(float(v))

    collect(value)
    if len(numbers) < run:
        return None
    for name, arr in bank.tensors.items():
        if arr.dtype.kind != "f" or arr.nbytes > 64 * 2**20:  # the key tensors of class banks are small
            continue
        flat = np.asarray(arr, dtype=np.float32).reshape(-1)
        for i in range(len(numbers) - run + 1):
            want = np.asarray(numbers[i:i + run], dtype=np.float32)
            if not want.any():
                continue  # zeros are everywhere
            for j in np.flatnonzero(flat[: len(flat) - run + 1] == want[0])[:1000]:
                if np.array_equal(flat[j:j + run], want):
                    return name
    return None


def _check_claims(bank: NoiseBank) -> dict[str, float]:
    """The bank's measured facts, after refusing parameters that claim less than the tensors do.

    ``bank.replace(params={**b.params, "epsilon": 1 / 255})`` on an 8/255 bank would otherwise
    publish a card that understates the change by 8x. The tolerance covers float16 storage
    (a relative 2**-11) and nothing more.
    """
    measured = dict(bank.measure())
    params = bank.params
    eps = params.get("epsilon")
    norm = str(params.get("norm", "linf")).lower()
    norm = "linf" if norm in ("linf", "l-inf", "inf") else norm
    claims: list[tuple[str, str, Any, float]] = []
    if isinstance(eps, (int, float)) and not isinstance(eps, bool) and norm in measured:
        claims.append(("epsilon", norm, eps, measured[norm]))
    if "kernel_size" in measured and "kernel_size" in params and params["kernel_size"] != measured["kernel_size"]:
        raise BankError(
            f"the bank's params say kernel_size={params['kernel_size']} but its weight tensor holds "
            f"{measured['kernel_size']}x{measured['kernel_size']} filters: the parameters do not describe the "
            "bank (edited with bank.replace(params=...)?). Publish the bank as it was fitted, or refit it."
        )
    for field, what, claimed, actual in claims:
        if actual > float(claimed) * (1 + 1e-3) + 1e-9:
            shown = (lambda v: _grey(v)) if what == "linf" else (lambda v: f"{v:g}")
            raise BankError(
                f"the bank's params say {field}={shown(float(claimed))} ({what}) but its tensors change images by up "
                f"to {shown(actual)} ({what}, measured): the card would understate the noise. The parameters do not "
                "describe the bank (edited with bank.replace(params=...)?); publish the bank as it was fitted, or "
                f"refit it with {field}={shown(actual)}."
            )
    return measured


def _measured_block(measured: Mapping[str, float]) -> dict[str, Any]:
    """The card's ``measured`` YAML block: the largest L-inf change as the whole grey levels a pixel
    really moves (``"8/255"``), the others as numbers."""
    out: dict[str, Any] = {}
    for key, value in measured.items():
        out[key] = _levels(value) if key == "linf" else (int(value) if float(value).is_integer() else round(value, 4))
    return out


def _levels(fraction: float) -> str:
    """The largest change an 8-bit pixel gets from noise of L-inf ``fraction``: the kernel rounds
    ``x + 255 * delta`` for whole ``x``, so ``round(255 * fraction)`` grey levels out of 255."""
    return f"{round(float(fraction) * 255)}/255"


def _grey(fraction: float) -> str:
    """A change as grey levels out of 255 (``"8/255"``; ``"7.65/255"`` when not whole)."""
    levels = float(fraction) * 255
    return f"{round(levels):d}/255" if abs(levels - round(levels)) < 5e-3 else f"{levels:.2f}/255"
