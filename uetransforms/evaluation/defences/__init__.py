"""What a trainer may do against unlearnable data: one file per defence, one registry.

A defence is a subclass of :class:`Defence` in this package (or any module of yours, see
:func:`register`) with a ``key``, its paper, a one-line summary and the hooks it needs. The
training loop (:mod:`uetransforms.evaluation.harness`) knows no defence by name: it calls the
hooks of a :class:`DefencePipeline`, in this order, each part in its ``order``:

=======================  ==============================================================  ==================
hook                     when                                                            who uses it
=======================  ==============================================================  ==================
``prepare_train``        once, on the uint8 training set                                 grayscale, jpeg, bdr, orthogonal
``prepare_test``         once, on the clean test set (what the deployed model sees)      grayscale
``generate_parameters``  every batch, stage ``"pre_augment"`` (before crop + flip) or     sharpen, lowpass, cutout,
 + ``apply_transform``   ``"augment"`` (after): random draws apart from the maths, as     mixup, cutmix, ueraser,
                         kornia's augmentation base does                                 coin
``perturb``              every batch, after augmentation: change the inputs (PGD)        pgd
``loss``                 every batch: change the loss                                    ueraser (Max)
=======================  ==============================================================  ==================

A spec names parts joined with ``+``, each ``key[number][:name=value,...]``:
``"grayscale+jpeg50"``, ``"pgd:eps=4,steps=3"``, ``"ueraser:repeats=5"``. :func:`defences`
lists what is registered (the CLI help and the README table are built from it).

Example:
    >>> d = parse_defence("grayscale+jpeg50")
    >>> d.name, [p.key for p in d.parts], d["jpeg"].quality
    ('grayscale+jpeg50', ['grayscale', 'jpeg'], 50)
    >>> import torch
    >>> x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    >>> g = d.prepare_test(x)
    >>> bool((g[:, 0] == g[:, 1]).all())
    True
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ...core.errors import DefenceError


# ---------------------------------------------------------------------------- the base class
class Defence:
    """One defence. Subclasses set the class attributes and override only the hooks they need.

    ``parse(number, options)`` turns the spec's number and ``name=value`` options into keyword
    arguments of ``__init__`` (raise :class:`DefenceError` naming the valid range); every hook
    has a do-nothing default, so a defence is a few lines.
    """

    #: the spec name, and other names that mean the same
    key: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    #: the paper (or "standard"), and one line on what the trainer does
    paper: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    #: how to write it in a spec, for the help and errors ("jpeg<quality>")
    spec: ClassVar[str] = ""
    #: where this part runs relative to the others (lower first). The built-ins use 10-40 for
    #: prepare_train, 1xx before crop + flip, 2xx after it, 3xx for perturb/loss.
    order: ClassVar[int] = 500
    #: per-batch stage of generate_parameters/apply_transform: None, "pre_augment" or "augment"
    stage: ClassVar[str | None] = None
    #: the part mixes labels: the loop hands it one-hot float targets
    soft_targets: ClassVar[bool] = False

    @classmethod
    def parse(cls, number: str, options: Mapping[str, str]) -> dict[str, Any]:
        if number or options:
            raise DefenceError(f"defence {cls.key!r} takes no parameters (write {cls.spec or cls.key!r})")
        return {}

    def params(self) -> dict[str, Any]:
        """What the report records of this part (its parsed parameters)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    # -- hooks ----------------------------------------------------------------------------
    def prepare_train(self, images: torch.Tensor, labels: torch.Tensor | None, *,
                      generator: torch.Generator | None) -> torch.Tensor:
        return images

    def prepare_test(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def generate_parameters(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        """The random draws of one batch (shapes only are read from ``x``)."""
        return {}

    def apply_transform(self, x: torch.Tensor, targets: torch.Tensor, params: Mapping[str, Any]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """The maths of one batch, given its draws: float ``x`` in [0, 1] and its targets."""
        return x, targets

    def perturb(self, model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor,
                generator: torch.Generator) -> torch.Tensor:
        return x

    def loss(self, model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor,
             generator: torch.Generator) -> torch.Tensor | None:
        """A replacement training loss, or ``None`` for cross-entropy."""
        return None

    def expand(self) -> list[Defence]:
        """The parts this defence stands for (a composite such as ``iss`` returns several)."""
        return [self]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


# ---------------------------------------------------------------------------- a parsed spec
class DefencePipeline:
    """A parsed spec: its parts in hook order, and the hooks the training loop calls."""

    def __init__(self, name: str, parts: Sequence[Defence]) -> None:
        self.name = name
        self.parts = sorted(parts, key=lambda p: p.order)  # stable: equal orders keep spec order
        keys = [p.key for p in self.parts]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise DefenceError(f"defence {name!r} uses {twice} twice; give each part once")
        if sum(type(p).loss is not Defence.loss for p in self.parts) > 1:
            raise DefenceError(f"defence {name!r} combines two parts that each replace the training loss")
        self.soft_targets = any(p.soft_targets for p in self.parts)
        self._staged = {s: [p for p in self.parts if p.stage == s] for s in ("pre_augment", "augment")}

    def __getitem__(self, key: str) -> Defence:
        for p in self.parts:
            if p.key == key:
                return p
        raise KeyError(f"defence {self.name!r} has no part {key!r}; its parts: {[p.key for p in self.parts]}")

    def __contains__(self, key: str) -> bool:
        return any(p.key == key for p in self.parts)

    def __iter__(self) -> Iterator[Defence]:
        return iter(self.parts)

    def __repr__(self) -> str:
        return f"DefencePipeline({self.name!r}, {self.parts!r})"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "parts": [{"key": p.key, **p.params()} for p in self.parts]}

    # -- the hooks, in the loop's order ---------------------------------------------------
    def prepare_train(self, images: torch.Tensor, labels: torch.Tensor | None = None, *,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        for p in self.parts:
            images = p.prepare_train(images, labels, generator=generator)
        return images

    def prepare_test(self, images: torch.Tensor) -> torch.Tensor:
        for p in self.parts:
            images = p.prepare_test(images)
        return images

    def has_stage(self, stage: str) -> bool:
        return bool(self._staged[stage])

    def run_stage(self, stage: str, x: torch.Tensor, targets: torch.Tensor,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        for p in self._staged[stage]:
            x, targets = p.apply_transform(x, targets, p.generate_parameters(x, generator))
        return x, targets

    def perturb(self, model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor,
                generator: torch.Generator) -> torch.Tensor:
        for p in self.parts:
            x = p.perturb(model, x, targets, generator)
        return x

    def loss(self, model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor,
             generator: torch.Generator) -> torch.Tensor:
        for p in self.parts:
            out = p.loss(model, x, targets, generator)
            if out is not None:
                return out
        return F.cross_entropy(model(x), targets)


# ---------------------------------------------------------------------------- the registry
_REGISTERED: dict[str, type[Defence]] = {}
_BUILTIN: dict[str, type[Defence]] | None = None


def register(cls: type[Defence], *, replace: bool = False) -> type[Defence]:
    """Register a :class:`Defence` subclass under its key and aliases (usable as a decorator).

    Registering a taken name raises unless ``replace=True``.
    """
    if not (isinstance(cls, type) and issubclass(cls, Defence)) or not cls.key:
        raise TypeError("register() takes a Defence subclass with a key")
    table = _table()
    for name in (cls.key, *cls.aliases):
        if name in table and table[name] is not cls and not replace:
            raise ValueError(f"a defence named {name!r} is already registered ({table[name].__name__})")
    for name in (cls.key, *cls.aliases):
        _REGISTERED[name] = cls
    return cls


def _table() -> dict[str, type[Defence]]:
    global _BUILTIN
    if _BUILTIN is None:
        found: dict[str, type[Defence]] = {}
        for mod in pkgutil.iter_modules(__path__):
            if mod.name.startswith("_"):
                continue
            module = importlib.import_module(f"{__name__}.{mod.name}")
            cls = getattr(module, "DEFENCE", None)
            if not (isinstance(cls, type) and issubclass(cls, Defence)):
                raise TypeError(f"{module.__name__} must declare DEFENCE = <its Defence subclass>")
            for name in (cls.key, *cls.aliases):
                if name in found:
                    raise ValueError(f"defence name {name!r} is declared twice ({module.__name__})")
                found[name] = cls
        _BUILTIN = found
    return {**_BUILTIN, **_REGISTERED}


def defences() -> list[dict[str, Any]]:
    """One row per registered defence: key, aliases, spec, paper, summary (sorted by key)."""
    seen: dict[str, type[Defence]] = {}
    for cls in _table().values():
        seen.setdefault(cls.key, cls)
    return [{"key": c.key, "aliases": list(c.aliases), "spec": c.spec or c.key, "paper": c.paper, "summary": c.summary}
            for c in sorted(seen.values(), key=lambda c: c.key)]


def markdown_table() -> str:
    """The registry as the README's defences table (the README is tested against this)."""
    lines = ["| spec | what the trainer does | from |", "|---|---|---|"]
    for row in defences():
        names = f"`{row['spec']}`" + (" (" + ", ".join(f"`{a}`" for a in row["aliases"]) + ")" if row["aliases"] else "")
        lines.append(f"| {names.replace('|', chr(92) + '|')} | {row['summary']} | {row['paper']} |")
    return "\n".join(lines)


def known_specs() -> str:
    """The registered specs in one line, for help texts and errors."""
    return ", ".join(["none", *(row["spec"] for row in defences())]) + "; joined with '+'"


_SPEC = re.compile(r"^([a-z]+)([0-9.]*)(?::(.*))?$")


def parse_defence(spec: str | DefencePipeline | Defence) -> DefencePipeline:
    """Parse ``"grayscale"``, ``"jpeg75"``, ``"pgd:eps=4,steps=3"``, ``"grayscale+cutout"``...

    Raises:
        DefenceError: unknown name or bad parameter, listing what is registered.
    """
    if isinstance(spec, DefencePipeline):
        return spec
    if isinstance(spec, Defence):
        return DefencePipeline(spec.key, spec.expand())
    if not isinstance(spec, str) or not spec.strip():
        raise DefenceError(f"a defence is a non-empty string such as 'jpeg75', got {spec!r}")
    table = _table()
    parts: list[Defence] = []
    names: list[str] = []
    for raw in spec.lower().replace(" ", "").split("+"):
        m = _SPEC.match(raw)
        if m and m.group(1) in ("none", "clean") and not m.group(2) and not m.group(3):
            continue
        if not m or m.group(1) not in table:
            raise DefenceError(f"unknown defence {raw!r} in {spec!r}; known: {known_specs()}")
        options: dict[str, str] = {}
        for item in filter(None, (m.group(3) or "").split(",")):
            if "=" not in item:
                raise DefenceError(f"defence parameter {item!r} in {spec!r} is not key=value")
            k, v = item.split("=", 1)
            options[k] = v
        cls = table[m.group(1)]
        try:
            part = cls(**cls.parse(m.group(2), options))
        except DefenceError:
            raise
        except (ValueError, TypeError) as err:
            raise DefenceError(f"bad parameter in defence {raw!r}: {err} (write {cls.spec or cls.key!r})") from err
        parts += part.expand()
        names.append(raw)
    return DefencePipeline("+".join(names) or "none", parts)


# ---------------------------------------------------------------------------- helpers for parts
def number(options: Mapping[str, str], name: str, num: str, default: float) -> float:
    """A part's parameter: ``name=value`` if given, else the spec's number, else ``default``."""
    return float(options.get(name, num or default))


def positive(v: float, what: str) -> float:
    if not v > 0:
        raise DefenceError(f"{what} must be positive, got {v}")
    return v


def only(options: Mapping[str, str], allowed: Sequence[str], key: str) -> None:
    extra = sorted(set(options) - set(allowed))
    if extra:
        raise DefenceError(f"defence {key!r} has no parameter(s) {extra}; it takes {list(allowed) or 'none'}")


__all__ = ["Defence", "DefenceError", "DefencePipeline", "defences", "known_specs", "markdown_table", "parse_defence",
           "register"]
