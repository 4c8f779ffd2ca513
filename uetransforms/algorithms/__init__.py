"""Protection methods: one file each, one declaration each.

A method is a module in this package (or any module of yours, see :func:`register`) that
declares exactly one :class:`Method` named ``METHOD``: what the method is (paper, citation,
keying, bank kind), its parameters (each a :class:`Param` with default, valid range, the
paper's value, whether it is safe on a public dataset card, and one line of help) and its
fitting function. Everything else reads that declaration: :func:`get` and ``ue.fit``, the
table of ``ue.methods()`` and ``uetransforms methods [KEY]``, the display order, and the card's
allow-list (:func:`public_names`). A method only produces bank rows; it never touches the
apply path.

Declaring a method (the fitting function receives every parameter, validated, with defaults
filled in):

    >>> import numpy as np
    >>> from uetransforms.core.bank import NoiseBank
    >>> from uetransforms.algorithms import Method, Number, Param
    >>> TOY = Method(
    ...     key="toy-doc", paper="A toy", citation="Nobody, A toy, 2026", keyed_by="class", needs="nothing",
    ...     kind="additive", params=(Param("epsilon", 4 / 255, Number(0, 1, lo_open=True), paper=4 / 255,
    ...                                    public=True, help="L-inf budget in [0, 1] pixel units"),))
    >>> @TOY.fitter
    ... def fit(data, *, seed, device, epsilon):
    ...     delta = np.full((data.num_classes, *data.image_shape), epsilon, np.float32)
    ...     return NoiseBank(method="toy-doc", kind="additive", keying="class", keys=np.arange(data.num_classes),
    ...                      tensors={"delta": delta}, params={"epsilon": epsilon, "seed": seed})
    >>> TOY.check({})
    {'epsilon': 0.01568627450980392}
    >>> TOY.check({"epsilon": 2})
    Traceback (most recent call last):
    ...
    uetransforms.core.errors.ParameterError: epsilon=2 is not valid for method 'toy-doc': expected a number in (0, 1]; the paper uses 4/255

``ue.methods()`` is :func:`table` (one row per method), and ``import uetransforms.algorithms.cuda``
reaches a method's module.

Example:
    >>> import uetransforms as ue
    >>> "cuda" in [m["key"] for m in ue.methods()]
    True
"""

from __future__ import annotations

import importlib
import math
import numbers
import pkgutil
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..core.errors import ParameterError, UnknownMethodError, UnknownParameterError

if TYPE_CHECKING:  # pragma: no cover
    from ..core.bank import NoiseBank
    from ..core.data import FitData


# ---------------------------------------------------------------------------- validators
class Check:
    """A parameter's valid values: ``check(value) -> normalised value`` or :class:`ValueError`.

    ``describe()`` says what is valid in words ("a number in (0, 1]"); the generic error and the
    CLI listing print it. A ``ValueError`` raised inside may carry a more specific reason.
    """

    def __call__(self, value: Any) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError


def format_value(v: Any) -> str:
    """Numbers as a person writes them: whole grey levels as ``8/255``, the rest with ``%g``."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return repr(v)
    if isinstance(v, numbers.Integral):
        return str(int(v))
    v = float(v)
    levels = v * 255
    if 0 < abs(v) < 1 and abs(levels - round(levels)) < 1e-6:
        return f"{int(round(levels))}/255"
    return repr(v) if len(repr(v)) <= 8 else f"{v:g}"


@dataclass(frozen=True)
class Number(Check):
    """A finite real (or integer) number in a range; ``none=True`` also accepts ``None``.

    ``cast`` converts to ``float``/``int`` (numpy scalars included). It is off where a method
    has always stored the value exactly as given, so existing banks keep their bytes.
    """

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False
    odd: bool = False
    none: bool = False
    cast: bool = True

    def __call__(self, value: Any) -> Any:
        if value is None and self.none:
            return None
        kind = numbers.Integral if self.integer else numbers.Real
        if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
            raise ValueError
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            raise ValueError
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            raise ValueError
        if self.odd and int(value) % 2 == 0:
            raise ValueError
        if not self.cast:
            return value
        return int(value) if self.integer else float(value)

    def describe(self) -> str:
        what = ("an odd integer" if self.odd else "an integer") if self.integer else "a number"
        if self.lo is not None and self.hi is not None:
            rng = f" in {'(' if self.lo_open else '['}{format_value(self.lo)}, {format_value(self.hi)}{')' if self.hi_open else ']'}"
        elif self.lo is not None:
            rng = f" {'>' if self.lo_open else '>='} {format_value(self.lo)}"
        elif self.hi is not None:
            rng = f" {'<' if self.hi_open else '<='} {format_value(self.hi)}"
        else:
            rng = ""
        return what + rng + (" or None" if self.none else "")


@dataclass(frozen=True)
class Choice(Check):
    """One of a fixed set of values (compared with ``==``)."""

    options: tuple[Any, ...]

    def __call__(self, value: Any) -> Any:
        try:
            ok = not isinstance(value, bool) and any(value == o for o in self.options)
        except Exception:  # an array or an odd object: not one of the options
            ok = False
        if not ok:
            raise ValueError
        return value

    def describe(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)


@dataclass(frozen=True)
class Flag(Check):
    """``True`` or ``False`` (not 0/1: a number here is more likely a mistake); ``none=True`` also
    accepts ``None``."""

    none: bool = False

    def __call__(self, value: Any) -> Any:
        if value is None and self.none:
            return None
        if not isinstance(value, bool) and type(value).__name__ != "bool_":  # numpy's bool too
            raise ValueError
        return bool(value)

    def describe(self) -> str:
        return "True or False" + (" (None: automatic)" if self.none else "")


@dataclass(frozen=True)
class Free(Check):
    """Anything; the method checks it where it is used (a model name or module, a path...)."""

    text: str = "any value"

    def __call__(self, value: Any) -> Any:
        return value

    def describe(self) -> str:
        return self.text


@dataclass(frozen=True)
class Rule(Check):
    """A custom rule: ``fn(value) -> value`` raising ``ValueError(reason)``; ``text`` for listings."""

    fn: Callable[[Any], Any]
    text: str

    def __call__(self, value: Any) -> Any:
        return self.fn(value)

    def describe(self) -> str:
        return self.text


@dataclass(frozen=True)
class SizeDefaults:
    """Defaults that replace a method's declared ones on images whose shorter side is at least
    ``min_side`` pixels: a setting measured to work at photo sizes where the paper's (measured on
    32-px CIFAR) does not. A parameter the caller passes still wins; the bank records the values
    used (``bank.params``) and which were taken from here (``bank.info["size_defaults"]``).
    """

    min_side: int
    values: Mapping[str, Any]

    @staticmethod
    def side(image_shape: tuple[int, ...]) -> int:
        """The shorter side of ``image_shape`` (``[..., H, W]``): what the rule is about."""
        return min(int(image_shape[-2]), int(image_shape[-1]))

    def applies(self, image_shape: tuple[int, ...]) -> bool:
        """Whether images of ``image_shape`` (``[..., H, W]``) take these defaults."""
        return self.side(image_shape) >= self.min_side

    def describe(self) -> str:
        return (f"on images of {self.min_side} px or more (shorter side): "
                + ", ".join(f"{k}={format_value(v)}" for k, v in self.values.items()))


# ---------------------------------------------------------------------------- the contract
@dataclass(frozen=True)
class Param:
    """One method parameter.

    Attributes:
        name: keyword of ``ue.fit`` / ``--param NAME=VALUE``.
        default: used when the caller gives none (``None`` may mean "derived", see ``help``).
        check: the valid values (:class:`Number`, :class:`Choice`, :class:`Flag`, :class:`Free`,
            :class:`Rule`).
        paper: the paper's value (``None``: the paper gives none or it is ours).
        public: safe on a public dataset card (a budget, a kernel size). Never a seed, salt, key
            or path: those stay in the bank.
        help: one line for ``uetransforms methods KEY``.
        budget: ``"linf"`` / ``"l2"`` marks a perturbation budget in that norm: a value above
            ``paper`` (while the bank's ``norm`` is that norm) warns how visible it will be.
    """

    name: str
    default: Any
    check: Check
    paper: Any = None
    public: bool = False
    help: str = ""
    budget: str | None = None

    def validate(self, value: Any, method: str) -> Any:
        try:
            return self.check(value)
        except ValueError as exc:
            reason = f" ({exc})" if str(exc) else ""
            paper = f"; the paper uses {format_value(self.paper)}" if self.paper is not None else ""
            raise ParameterError(
                f"{self.name}={value!r} is not valid for method {method!r}: expected {self.check.describe()}"
                f"{reason}{paper}"
            ) from None


#: ``resolve(params, data) -> params``: rules across parameters and data-dependent defaults.
Resolve = Callable[[dict[str, Any], "FitData | None"], dict[str, Any]]
FitFunction = Callable[..., "NoiseBank"]


@dataclass(frozen=True)
class Method:
    """Everything about one protection method, declared once (``METHOD = Method(...)``).

    Attributes:
        key: registry key (``ue.fit(key, ...)``); the bank's ``method``.
        paper: short title for tables.
        citation: "Authors, Title, Venue Year, arXiv id" (printed on the dataset card).
        keyed_by: "class", "cluster", "sample", "class/sample"...
        needs: what fitting needs besides the data ("a private key only", "a surrogate"...).
        kind: bank kind it produces (additive, conv, pixel, synth, convadd).
        summary: one line for ``uetransforms methods``.
        label_free: fits without labels (``label_column=None``).
        label_free_defaults: defaults that replace the declared ones when this class-keyed method is
            fitted without labels, keyed by clusters (``ue.fit(..., label_column=None, encoder=...)``):
            keys that are only partly the classes may need a stronger setting than labels do. A
            parameter the caller passes still wins; the bank records the values used.
        size_defaults: defaults that replace the declared ones on large images
            (:class:`SizeDefaults`; ``cuda``'s photo-size filters), the ``label_free_defaults`` too where
            both name a parameter; parameters the caller passes win.
        order: position in listings (built-ins 10, 20...; others after them, by key).
        params: the parameters, in the order listings show them.
        public_extra: names the fit adds to ``bank.params`` that are not parameters but are
            safe on the card (AR's ``synth``, random's fixed ``norm``).
        resolve: optional ``(params, data) -> params`` for rules across parameters and
            data-dependent defaults; ``data`` is ``None`` when checking without data.
        fit_function: ``fit(data, *, seed, device, **params) -> NoiseBank``, usually attached
            with the :meth:`fitter` decorator below the declaration.
    """

    key: str
    paper: str
    citation: str
    keyed_by: str
    needs: str
    kind: str
    summary: str = ""
    label_free: bool = False
    label_free_defaults: Mapping[str, Any] = field(default_factory=dict, compare=False)
    size_defaults: SizeDefaults | None = field(default=None, compare=False)
    order: int = 1000
    params: tuple[Param, ...] = ()
    public_extra: tuple[str, ...] = ()
    resolve: Resolve | None = field(default=None, repr=False, compare=False)
    fit_function: FitFunction | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"method {self.key!r} declares parameter(s) {dup} twice")
        bad = [p.name for p in self.params if p.public and looks_secret(p.name)]
        if bad:
            raise ValueError(f"method {self.key!r}: parameter(s) {bad} look like secrets and cannot be public")
        stray = sorted(set(self.label_free_defaults) - set(names))
        if stray:
            raise ValueError(f"method {self.key!r}: label_free_defaults names undeclared parameter(s) {stray}")
        stray = sorted(set(self.size_defaults.values if self.size_defaults else ()) - set(names))
        if stray:
            raise ValueError(f"method {self.key!r}: size_defaults names undeclared parameter(s) {stray}")

    # -- the one validation path ------------------------------------------------------------
    def check(self, params: Mapping[str, Any], data: FitData | None = None) -> dict[str, Any]:
        """Validate ``params``: every declared parameter (defaults filled in), normalised.

        Unknown names raise :class:`UnknownParameterError` listing the valid ones; a value out of
        range raises :class:`ParameterError` naming the range and the paper's value; a budget
        above the paper's gives a :class:`UserWarning` saying how visible it will be.
        """
        unknown = sorted(set(params) - {p.name for p in self.params})
        if unknown:
            raise UnknownParameterError(
                f"unknown parameter(s) {unknown} for method {self.key!r}; valid: {sorted(p.name for p in self.params)}"
                f" (see `uetransforms methods {self.key}`)"
            )
        out = {p.name: p.validate(params.get(p.name, p.default), self.key) for p in self.params}
        if self.resolve is not None:
            out = self.resolve(out, data)
        for p in self.params:
            if p.budget and p.name in params:
                _warn_budget(self.key, p, out)
        return out

    def sized(self, params: Mapping[str, Any], image_shape: tuple[int, ...]) -> dict[str, Any]:
        """The :attr:`size_defaults` images of ``image_shape`` take, less the ``params`` the caller passed
        (``{}`` when none apply)."""
        sd = self.size_defaults
        if sd is None or not sd.applies(image_shape):
            return {}
        return {k: v for k, v in sd.values.items() if k not in params}

    def fit(self, data: FitData, *, seed: int, device: Any, **params: Any) -> NoiseBank:
        """Validate ``params`` (:meth:`check`), the :attr:`size_defaults` of ``data``'s image size filled
        in, and run the method's fitting function."""
        if self.fit_function is None:
            raise TypeError(f"method {self.key!r} has no fitting function; decorate one with @METHOD.fitter")
        # only a method with size defaults reads the first image's shape here (t2ue's zero-contact fit reads none)
        sized = {} if self.size_defaults is None else self.sized(params, tuple(data.image_shape))
        bank = self.fit_function(data, seed=seed, device=device, **self.check({**sized, **params}, data))
        if not sized:
            return bank
        # which values the size chose, so the card and a reader of the bank can tell them from the caller's
        sd = self.size_defaults
        return bank.replace(info={**bank.info, "size_defaults": {"side": sd.side(data.image_shape),
                                                                 "min_side": sd.min_side, "values": dict(sized)}})

    def fitter(self, fn: FitFunction) -> Callable[..., NoiseBank]:
        """Decorator attaching the fitting function; returns the validating :meth:`fit`."""
        if self.fit_function is not None:
            raise ValueError(f"method {self.key!r} already has a fitting function")
        object.__setattr__(self, "fit_function", fn)  # set once, right below the declaration
        return self.fit

    # -- what listings and the card read ----------------------------------------------------
    @property
    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    @property
    def public_names(self) -> tuple[str, ...]:
        """``bank.params`` names allowed on a public card, in declaration order."""
        return tuple(p.name for p in self.params if p.public) + tuple(self.public_extra)

    def row(self) -> dict[str, Any]:
        """The row of ``ue.methods()``; ``measured`` is :func:`uetransforms.algorithms.measured.summary` (or None)."""
        from .measured import summary

        return {"key": self.key, "paper": self.paper, "keyed_by": self.keyed_by, "needs": self.needs,
                "kind": self.kind, "summary": self.summary, "label_free": self.label_free, "citation": self.citation,
                "measured": summary(self.key)}


_SECRET_WORDS = ("seed", "salt", "key", "secret", "token", "path")


def looks_secret(name: str) -> bool:
    """Whether a parameter name is a secret's (seed, salt, key, secret, token, path): such a parameter
    can never be declared public, and the card refuses its value anywhere in its text."""
    return any(w in name.lower() for w in _SECRET_WORDS)


def _warn_budget(method: str, p: Param, params: dict[str, Any]) -> None:
    value, paper = params.get(p.name), p.paper
    if not isinstance(value, numbers.Real) or not isinstance(paper, numbers.Real) or value <= paper * (1 + 1e-9):
        return
    if params.get("norm", p.budget) != p.budget:
        return
    if p.budget == "linf":
        levels = min(255, math.floor(255 * value + 1e-6))
        how = (f"pixels may change by up to {levels} of 255 grey levels (the paper: {format_value(paper)}, "
               f"{math.floor(255 * paper + 1e-6)} levels)")
        seen = "plainly visible" if levels > 16 else "visible to a careful eye"
    else:
        how = f"an {p.budget.upper()} norm of {value:g} per image in [0, 1] pixel units (the paper: {format_value(paper)})"
        seen = "more visible than the paper's"
    warnings.warn(
        f"{p.name}={format_value(value)} for method {method!r} is {value / paper:.1f}x the paper's budget: {how}; the noise "
        f"will be {seen}. Keep {p.name} <= {format_value(paper)} for pictures a person sees as unchanged.",
        UserWarning, stacklevel=5)  # the caller of ue.fit


# ---------------------------------------------------------------------------- the registry
_builtin: dict[str, Method] | None = None
_registered: dict[str, Method] = {}
_ENTRY_POINTS = "uetransforms.methods"  # the plugin entry-point group: a public name, kept


def _method_of(obj: Any, where: str) -> Method:
    method = getattr(obj, "METHOD", obj) if isinstance(obj, ModuleType) else obj
    if not isinstance(method, Method):
        raise TypeError(f"{where} must declare METHOD = uetransforms.algorithms.Method(...), got {type(method).__name__}")
    if method.fit_function is None:
        raise TypeError(f"{where}: method {method.key!r} has no fitting function (decorate one with @METHOD.fitter)")
    return method


#: Modules of this package that serve the registry rather than declare a method: ``ue.fit``'s front
#: door and the measured facts shipped with the package.
_NOT_METHODS = ("fitting", "measured")


def _discover() -> dict[str, Method]:
    global _builtin
    if _builtin is None:
        found: dict[str, Method] = {}
        for mod in pkgutil.iter_modules(__path__):
            if mod.name.startswith("_") or mod.name in _NOT_METHODS:
                continue
            name = f"{__name__}.{mod.name}"
            method = _method_of(importlib.import_module(name), name)
            if method.key in found:
                raise ValueError(f"method key {method.key!r} is declared twice ({name})")
            found[method.key] = method
        _builtin = found
        _load_entry_points()
    return {**_builtin, **_registered}


def _load_entry_points() -> None:
    """Methods other packages declare under the ``uetransforms.algorithms`` entry-point group."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=_ENTRY_POINTS):
        try:
            method = _method_of(ep.load(), f"entry point {ep.name!r} ({ep.value})")
            if method.key not in _registered:
                register(method)
        except Exception as exc:  # a broken plug-in must not take the built-in methods down with it
            warnings.warn(f"skipping uetransforms method plug-in {ep.name!r}: {exc}", RuntimeWarning, stacklevel=2)


def register(method: Method | ModuleType, *, replace: bool = False) -> Method:
    """Make a method of yours available to ``ue.fit``, ``ue.methods()``, the CLI and the card.

    ``method`` is a :class:`Method` (with its fitting function attached) or a module declaring
    ``METHOD``. A key already taken raises unless ``replace=True`` (built-ins cannot be replaced).
    Packages can instead declare an entry point in the ``uetransforms.algorithms`` group.
    """
    m = _method_of(method, "register()")
    builtin = _discover_builtin_keys()
    if m.key in builtin:
        raise ValueError(f"method key {m.key!r} is a built-in method; choose another key")
    if m.key in _registered and not replace and _registered[m.key] is not m:
        raise ValueError(f"method key {m.key!r} is already registered; pass replace=True to replace it")
    _registered[m.key] = m
    return m


def unregister(key: str) -> None:
    """Remove a method added with :func:`register` (built-ins stay)."""
    if key not in _registered:
        raise KeyError(f"no registered method {key!r}; registered: {sorted(_registered)}")
    del _registered[key]


def _discover_builtin_keys() -> Iterable[str]:
    _discover()
    return _builtin or {}


def all_methods() -> list[Method]:
    """Every method, in display order."""
    return sorted(_discover().values(), key=lambda m: (m.order, m.key))


def get(key: str) -> Method:
    """The method ``key``; a clear error lists the known keys."""
    found = _discover()
    if key not in found:
        raise UnknownMethodError(f"unknown method {key!r}; available: {', '.join(m.key for m in all_methods())} "
                       f"(see `uetransforms methods`)")
    return found[key]


def table() -> list[dict[str, Any]]:
    """One row per method: key, paper, keyed_by, needs, kind, summary, label_free, citation, measured."""
    return [m.row() for m in all_methods()]


def public_names(key: str) -> tuple[str, ...]:
    """The ``bank.params`` names of method ``key`` allowed on a public card (empty if unknown)."""
    try:
        return get(key).public_names
    except KeyError:
        return ()


def public_params(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of a ``method`` bank that may be shared: the package's one public/secret rule.

    An allow-list, not a deny-list: a parameter is secret unless its method declares it
    ``Param(public=True)``, and a bank of a method this installation does not know shares none.
    Seeds, salts, keys and paths can never be declared public (:class:`Method` refuses them), and
    only scalar values pass (arrays could be payload: kernel weights, coefficients). Cards, the
    suite's result files and the shipped measured facts all read this function.

    Example:
        >>> public_params("random", {"epsilon": 0.03, "norm": "linf", "seed": 7})
        {'epsilon': 0.03, 'norm': 'linf'}
        >>> public_params("no-such-method", {"epsilon": 0.03})
        {}
    """
    out: dict[str, Any] = {}
    for name in public_names(method):
        value = params.get(name)
        if isinstance(value, (bool, int, float, str)):
            out[name] = value
    return out


