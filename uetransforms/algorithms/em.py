"""Error-minimising noise (Huang et al., "Unlearnable Examples: Making Personal Data
Unexploitable", ICLR 2021), class-wise and sample-wise.

The noise solves the *min-min* problem ``min_theta E[ min_{|delta| <= eps} L(f_theta(x + delta), y) ]``:
it makes every training image *easier*, so a model trained on the protected copy learns the
noise (a shortcut that fits the labels perfectly) instead of the content. Bi-level loop:

1. train the surrogate ``train_steps`` SGD steps on the currently perturbed data;
2. PGD *descent* on the noise: ``delta <- clip_eps(delta - step_size * sign(grad))`` for
   ``steps`` steps on each batch visited (``mode="sample"``: every sample, one full pass;
   ``mode="class"``: ``class_batches`` random batches, one universal delta per class, whose
   gradient is the sum over that class's samples in the batch);
3. stop when the surrogate's error on the perturbed data, judged (eval mode) on one full pass
   over the data *after* the noise update, is below ``stop_error`` (it has found the shortcut),
   or when ``max_rounds`` / ``max_steps`` / ``max_seconds`` run out; a budget stop raises a
   ``UserWarning`` naming the parameter to raise, and ``bank.info["stopped_by"]`` says which.

The surrogate can be any name :func:`uetransforms.models.surrogates.build` knows; ``"resnet18"`` is
the paper's ResNet-18 (CIFAR stem for images up to 64 px), ``"cnn-tiny"`` the CPU-friendly one.
A tqdm bar (rounds, with the current error and an ETA to ``max_rounds``) shows on a terminal,
or always with ``progress=True``; ``progress=False`` keeps it quiet.

Sample-wise noise is keyed by each sample's stable id (``data.sample_ids``: an id column, or a
hash of the pixels), never by its row or its label, so shuffling or selecting rows of the
dataset before ``Protect`` still gives each image its own noise. While fitting, the per-sample
noise lives in a float16 work array that is memory-mapped from an anonymous temporary file
when it is large (a 50k CIFAR bank is 300 MB there, never a float32 copy in RAM); rows are
gathered per batch, updated on the device and written back.

**What the bank holds is exactly what gets applied.** Kernels add ``round(255 * delta)`` to
uint8 pixels, so the final noise is quantised to whole grey levels ``q / 255`` with
``|q| <= floor(255 * eps)``, stored as the float nearest ``q / 255`` *towards zero* (float16
for sample banks, float32 for class banks). ``255 * delta`` then rounds back to ``q`` exactly,
and no stored value exceeds ``eps`` even after float rounding. Sample-wise noise is also kept
inside the pixel box (``x + delta`` in ``[0, 1]``), so applying it never clips.

Parameters (``bank.params``): ``epsilon`` (8/255), ``norm`` ("linf" only), ``mode`` ("sample"
or "class"), ``surrogate`` (see :func:`uetransforms.models.surrogates.build`; default "cnn-small"),
``steps`` (20 PGD steps), ``step_size`` (default eps/10), ``train_steps`` (10),
``stop_error`` (0.01), ``class_batches`` (20), ``batch_size`` (128), ``lr`` (0.1),
``max_rounds`` (30), ``max_steps`` / ``max_seconds`` (budget on surrogate + PGD steps / wall time;
None), ``progress`` (None: only on a terminal). ``bank.info`` records the rounds and steps run,
the final surrogate error on the perturbed data, the error after each round and why it stopped.

Example:
    >>> import numpy as np, uetransforms as ue
    >>> rng = np.random.default_rng(0)
    >>> ds = {"image": list(rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)), "label": [0, 1] * 4}
    >>> bank = ue.fit("em", ds, mode="class", surrogate="cnn-tiny", max_rounds=2, class_batches=2, steps=2)
    >>> bank.keying, bank.tensors["delta"].shape, bool(abs(bank.tensors["delta"]).max() <= 8 / 255)
    ('class', (2, 3, 8, 8), True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..models import surrogates as sg
from ..core.bank import NoiseBank
from ..core.data import FitData
from . import Choice, Method, Number, Param, _common
from ._common import level_limit, quantise  # noqa: F401 - part of this module's API (tests, bayes)
from ._common import workspace as _workspace


METHOD = Method(
    key="em",
    paper="Unlearnable Examples: error-minimising noise (Huang et al., ICLR 2021)",
    citation="H. Huang, X. Ma, S. M. Erfani, J. Bailey, Y. Wang, Unlearnable Examples: Making Personal Data "
             "Unexploitable, ICLR 2021, arXiv:2101.04898",
    keyed_by="class/sample",
    needs="a surrogate classifier (trained on the fly)",
    kind="additive",
    summary="min-min bi-level noise that makes the training loss trivially small (class- or sample-wise)",
    order=60,
    params=(
        *_common.SURROGATE_LINF,
        _common.count("steps", 20, "PGD steps on the noise per batch visited", paper=20, public=True),
        _common.positive("step_size", None, "PGD step (None: epsilon/10)", paper="epsilon/10", none=True,
                         public=True),
        Param("mode", "sample", Choice(("sample", "class")), paper="sample", public=True,
              help="'sample' (one delta per image) or 'class' (one per class)"),
        _common.count("train_steps", 10, "surrogate SGD steps per round", lo=0, paper=10),
        Param("stop_error", 0.01, Number(0, 1, hi_open=True, cast=False), paper=0.01,
              help="stop when the surrogate's error on the perturbed data is below this"),
        _common.count("class_batches", 20, "random batches per round (mode='class')"),
        _common.BATCH_SIZE,
        _common.LR,
        _common.count("max_rounds", 30, "at most this many train/perturb rounds"),
        _common.MAX_STEPS,
        _common.MAX_SECONDS,
        _common.PROGRESS,
    ),
    resolve=_common.step_size_from_epsilon(1 / 10),
)

#: Work arrays above this size are memory-mapped (read at call time, so a test can lower it).
RAM_LIMIT_BYTES = _common.RAM_LIMIT_BYTES


def workspace(shape: tuple[int, ...], dtype: Any, *, limit: int | None = None) -> np.ndarray:
    """:func:`uetransforms.algorithms._common.workspace` with this module's :data:`RAM_LIMIT_BYTES`."""
    return _workspace(shape, dtype, limit=RAM_LIMIT_BYTES if limit is None else limit)


# ---------------------------------------------------------------------------- the min-min engine
#: ``mask_rule(x, grad) -> [b, 1, H, W]`` 0/1 mask (SALM); ``grad`` is dL/dx of the clean batch.
MaskRule = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class _Noise:
    """The noise being fitted: class rows on the device, or sample rows in a (mapped) float16 array."""

    def __init__(self, mode: str, n: int, num_classes: int, shape: tuple[int, int, int], eps: float,
                 device: torch.device, rng: np.random.Generator, masked: bool, random_start: bool = True) -> None:
        self.mode, self.eps, self.device, self.rng = mode, eps, device, rng
        # sparse (SALM) noise starts at zero, or inside its mask (_draw_masks): never dense
        self.random_start = random_start and not masked
        rows = num_classes if mode == "class" else n
        if mode == "class":
            init = rng.uniform(-eps, eps, (rows, *shape)).astype(np.float32)
            if not random_start:
                init[:] = 0
            self.table: Any = torch.from_numpy(init).to(device)
        else:
            self.table = workspace((rows, *shape), np.float16)
        # SALM: a 0/1 mask per row, drawn at the row's first visit; the noise stays inside it.
        self.mask = workspace((rows, 1, *shape[1:]), np.uint8) if masked else None
        self.has_mask = np.zeros(rows, bool) if masked else None
        self.visited = np.zeros(rows, bool)

    def keys(self, rows: np.ndarray, y: torch.Tensor) -> np.ndarray:
        return y.cpu().numpy() if self.mode == "class" else rows

    def read(self, keys: np.ndarray) -> torch.Tensor:
        if self.mode == "class":
            return self.table
        d = torch.from_numpy(np.asarray(self.table[keys], np.float32)).to(self.device)
        fresh = ~self.visited[keys]
        if fresh.any() and self.random_start:  # random start inside the ball, as in the paper
            idx = torch.from_numpy(np.flatnonzero(fresh)).to(self.device)
            init = self.rng.uniform(-self.eps, self.eps, (int(fresh.sum()), *d.shape[1:])).astype(np.float32)
            d[idx] = torch.from_numpy(init).to(self.device)
        return d

    def write(self, keys: np.ndarray, d: torch.Tensor) -> None:
        if self.mode == "class":
            self.table = d.detach()
            self.visited[np.unique(keys)] = True
            return
        self.table[keys] = d.detach().cpu().numpy().astype(np.float16)
        self.visited[keys] = True

    def masks(self, keys: np.ndarray) -> torch.Tensor | None:
        if self.mask is None:
            return None
        uk = np.unique(keys) if self.mode == "class" else keys
        m = torch.from_numpy(np.asarray(self.mask[uk], np.float32)).to(self.device)
        if self.mode == "class":  # scatter back to a full [K, 1, H, W] table
            full = torch.zeros((len(self.mask), *m.shape[1:]), device=self.device)
            full[torch.from_numpy(uk).to(self.device)] = m
            return full
        return m


def _perturbed(x: torch.Tensor, d: torch.Tensor, idx: torch.Tensor | None, m: torch.Tensor | None) -> torch.Tensor:
    dd = d if idx is None else d[idx]
    if m is not None:
        dd = dd * (m if idx is None else m[idx])
    return (x + dd).clamp(0, 1)


def minmin(data: FitData, p: dict[str, Any], *, seed: int, device: torch.device, method: str,
           mask_rule: MaskRule | None = None,
           step_rule: Callable[[torch.Tensor], torch.Tensor] | None = None,
           augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
           tie: Callable[[torch.Tensor], torch.Tensor] | None = None,
           start: tuple[np.ndarray, np.ndarray] | None = None,
           project: Callable[[torch.Tensor], torch.Tensor] | None = None,
           ) -> tuple[Any, dict[str, Any], Any]:
    """Run the min-min loop; returns (noise table, info, masks or None). Used by ``em`` and ``salm``.

    ``mask_rule`` fixes each row's mask at its first visit (the noise stays inside it);
    ``step_rule(grad) -> [rows, 1, H, W]`` instead masks every PGD update afresh, from the
    gradient of that step (rows: the batch's samples, or the whole class table).
    ``augment(x, gen)`` (differentiable) is applied to every perturbed batch the surrogate trains
    on and every one the PGD steps see (an expectation over the attacker's views); masks and the
    stop error are judged on the unaugmented images. Its generator is seeded apart from the
    loop's, so a fit without it is unchanged.
    ``tie(t) -> t`` (class mode; salm's periodic pattern) is a linear projection of the class
    table onto a subspace: it is applied to the starting table and to every PGD gradient before
    its sign, so the noise stays in that subspace (the L-inf clip is per element and keeps it).
    ``start=(masks, table)`` (class mode with a ``mask_rule``; salm's tile design) gives every class its
    mask ``[K, 1, H, W]`` and starting noise ``[K, C, H, W]`` up front: the masks are never drawn from
    the surrogate, and the table replaces the random start.
    ``project(d) -> d`` (class mode; salm's zero-sum colours) maps the class table back into a set
    inside the L-inf ball after the start and after every PGD step's clip; it must keep a zero entry zero
    (masked positions) and act per position (so a periodic table stays periodic).
    """
    rng = np.random.default_rng(seed)
    src = sg.ImageSource(data, device)
    k = data.num_classes
    labels = data.labels
    if labels.max() >= k:
        raise ValueError(f"label {int(labels.max())} is outside the {k} classes the dataset declares")
    model = sg.build(p["surrogate"], num_classes=k, image_shape=data.image_shape, device=device, seed=seed)
    trainer = sg.Trainer(model, lr=p["lr"])
    noise = _Noise(p["mode"], len(data), k, data.image_shape, p["epsilon"], device, rng, mask_rule is not None,
                   random_start=step_rule is None)
    if start is not None:
        if p["mode"] != "class" or mask_rule is None:
            raise ValueError("internal error: start needs class-wise noise with a mask_rule")
        masks, table = start
        noise.mask[:] = masks
        noise.has_mask[:] = True
        noise.table = torch.from_numpy(np.asarray(table * masks, np.float32)).to(device)
    if tie is not None:
        if p["mode"] != "class":
            raise ValueError("internal error: tie needs class-wise noise (sample noise is clipped to each image's box)")
        noise.table = tie(noise.table)
    if project is not None:
        if p["mode"] != "class":
            raise ValueError("internal error: project needs class-wise noise")
        noise.table = project(noise.table)
    budget = sg.Budget(p["max_steps"], p["max_seconds"])
    eps, alpha = p["epsilon"], p["step_size"]
    feed = src.cycle(p["batch_size"], rng)
    gen = torch.Generator().manual_seed((int(seed) * 7919 + 26) % 2**63) if augment is not None else None
    view = (lambda z: augment(z, gen)) if augment is not None else (lambda z: z)
    history: list[float] = []
    stopped = "max_rounds"
    bs = p["batch_size"]
    visits_per_round = -(-len(data) // bs) if p["mode"] == "sample" else p["class_batches"]
    # One unit per round; each round advances in visits_per_round pieces, so the ETA moves within
    # a (long) sample-wise round too. It is the time to max_rounds: an error stop comes earlier.
    bar = sg.progress(total=p["max_rounds"], desc=f"{method} rounds", enabled=p["progress"], unit="round")
    for _ in range(p["max_rounds"]):
        # (1) the surrogate learns from the current noise
        for _ in range(p["train_steps"]):
            rows, x = next(feed)
            y = src.labels(rows)
            keys = noise.keys(rows, y)
            d = noise.read(keys)
            idx = torch.from_numpy(keys).to(device) if p["mode"] == "class" else None
            with torch.no_grad():
                xa = _perturbed(x, d, idx, noise.masks(keys))
            trainer.step(view(xa), y)
            budget.tick()
        # (2) the noise descends the surrogate's loss
        model.eval()
        visits = (src.batches(bs) if p["mode"] == "sample" else (next(feed) for _ in range(p["class_batches"])))
        for rows, x in visits:
            if budget.exhausted() and (p["mode"] == "class" or noise.visited.all()):
                break  # out of budget mid-pass; a first pass always completes so every sample has noise
            y = src.labels(rows)
            keys = noise.keys(rows, y)
            if mask_rule is not None and not noise.has_mask[np.unique(keys)].all():
                _draw_masks(noise, model, mask_rule, keys, x, y, rng)
            d = noise.read(keys)
            m = noise.masks(keys)
            idx = torch.from_numpy(keys).to(device) if p["mode"] == "class" else None
            for _ in range(p["steps"]):
                d = d.detach().requires_grad_(True)
                logits = model(view(_perturbed(x, d, idx, m)))
                loss = F.cross_entropy(logits, y, reduction="sum")
                (g,) = torch.autograd.grad(loss, d)
                with torch.no_grad():
                    step = (g if tie is None else tie(g)).sign()
                    if m is not None:
                        step = step * m
                    if step_rule is not None:  # rows of g: samples, or the class table
                        step = step * step_rule(g)
                    d = (d - alpha * step).clamp_(-eps, eps)
                    if project is not None:
                        d = project(d)
                    if idx is None:  # sample-wise noise stays inside the pixel box: no clipping later
                        d = (x + d).clamp_(0, 1) - x
                budget.tick()
            noise.write(keys, d)
            bar.update(1 / visits_per_round)
        # (3) the stop is judged on the whole perturbed set *after* the update, as Huang et al.
        # evaluate it: the error on the batch just perturbed is optimistic and could stop too early.
        error = full_error(model, src, noise, bs)
        history.append(round(error, 4))
        bar.set_postfix(error=f"{error:.3f}")
        if error < p["stop_error"]:
            stopped = "error"
            break
        why = budget.exhausted()
        if why:
            stopped = why
            break
    bar.close()
    if stopped != "error":
        limit = {"max_rounds": p["max_rounds"], "steps": p["max_steps"], "time": p["max_seconds"]}[stopped]
        sg.warn_budget_stop(method, stopped, wanted=f"the surrogate error on the perturbed set fell below "
                            f"stop_error={p['stop_error']}", reached=f"error {history[-1]:.4f} after "
                            f"{len(history)} round(s)", limit=limit)
    info = {
        "rounds": len(history),
        "steps": budget.steps,
        "surrogate_steps": trainer.steps,
        "final_train_error": history[-1] if history else None,
        "train_error_history": history,
        "stopped_by": stopped,
        "surrogate": model.name,
    }
    if noise.mode == "sample" and not noise.visited.all():
        raise RuntimeError("internal error: some samples were never perturbed")
    return noise.table, info, noise.mask


def full_error(model: sg.Surrogate, src: sg.ImageSource, noise: _Noise, batch_size: int) -> float:
    """The surrogate's error (eval mode) on one full pass over the data with the current noise."""
    model.eval()
    wrong = seen = 0
    with torch.no_grad():
        for rows, x in src.batches(batch_size):
            y = src.labels(rows)
            keys = noise.keys(rows, y)
            idx = torch.from_numpy(keys).to(x.device) if noise.mode == "class" else None
            xa = _perturbed(x, noise.read(keys), idx, noise.masks(keys))
            wrong += int((model(xa).argmax(1) != y).sum())
            seen += len(y)
    return wrong / max(1, seen)


def _draw_masks(noise: _Noise, model: sg.Surrogate, rule: MaskRule, keys: np.ndarray, x: torch.Tensor,
                y: torch.Tensor, rng: np.random.Generator) -> None:
    """Give every row of this batch that has none its mask (and, sample-wise, a random start in it)."""
    xg = x.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(model(xg), y, reduction="sum")
    (gx,) = torch.autograd.grad(loss, xg)
    m = rule(x, gx)  # [b, 1, H, W]
    if noise.mode == "class":
        for c in np.unique(keys):
            if noise.has_mask[c]:
                continue
            sel = torch.from_numpy(np.flatnonzero(keys == c)).to(x.device)
            # class score: the per-sample rule applied to the class's mean image and mean gradient
            mc = rule(x[sel].mean(0, keepdim=True), gx[sel].mean(0, keepdim=True))
            noise.mask[c] = mc[0].to(torch.uint8).cpu().numpy()
            noise.has_mask[c] = True
            noise.table[c] = noise.table[c] * mc[0]
        return
    new = ~noise.has_mask[keys]
    rows = keys[new]
    mk = m[torch.from_numpy(np.flatnonzero(new)).to(x.device)]
    noise.mask[rows] = mk.to(torch.uint8).cpu().numpy()
    noise.has_mask[rows] = True
    init = rng.uniform(-noise.eps, noise.eps, (len(rows), *x.shape[1:])).astype(np.float32)
    start = torch.from_numpy(init).to(x.device) * mk
    start = (x[torch.from_numpy(np.flatnonzero(new)).to(x.device)] + start).clamp(0, 1) - x[
        torch.from_numpy(np.flatnonzero(new)).to(x.device)]
    noise.table[rows] = start.cpu().numpy().astype(np.float16)
    noise.visited[rows] = True


def to_bank(method: str, data: FitData, p: dict[str, Any], table: Any, info: dict[str, Any], seed: int,
            extra: dict[str, np.ndarray] | None = None) -> NoiseBank:
    """Quantise the fitted noise (see the module docs) and wrap it in a bank keyed by class or sample id."""
    eps = p["epsilon"]
    if p["mode"] == "class":
        delta = quantise(table.detach().cpu().numpy(), eps, np.float32)
        keys: Any = np.arange(len(delta))
    else:
        delta = quantise(table, eps, np.float16, out=table)  # in place: no second N-row copy
        keys = data.sample_ids
    stored = {n: v for n, v in p.items() if n != "progress"}
    if not isinstance(stored["surrogate"], str):
        stored["surrogate"] = info["surrogate"]
    return NoiseBank(
        method=method, kind="additive", keying=p["mode"], keys=keys, tensors={"delta": delta, **(extra or {})},
        params={**stored, "seed": int(seed)}, image_shape=data.image_shape,
        info={**info, "quantised": "whole grey levels q/255, |q| <= floor(255*epsilon)"},
    )


@METHOD.fitter
def fit(data: FitData, *, seed: int, device: torch.device, **p: Any) -> NoiseBank:
    """Fit class-wise or sample-wise error-minimising noise (see the module docs)."""
    table, info, _ = minmin(data, p, seed=seed, device=device, method="em")
    return to_bank("em", data, p, table, info, seed)
