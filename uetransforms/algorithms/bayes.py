"""Bayes-error maximisation ("Towards Provably Unlearnable Examples via Bayes Error
Optimisation", AAAI 2026, arXiv 2511.08191).

If the perturbed data's *Bayes error* is high, even the best classifier trained on it does
poorly, and, unlike error-minimising noise, the effect does not need every training image to
carry a shortcut: protected samples push the class posteriors of their clean neighbours too, so
the method is meant to stay effective when protected and clean data are mixed.

The Bayes error is estimated on extractor features by local averaging of the class posteriors
(a Gaussian kernel over the other samples, as in the authors' estimator):

    z_i = phi(x_i + delta_i) / max |z|          (features, scaled to [-1, 1] by the global max)
    w_ij = exp(-|z_i - z_j|^2 / (2 sigma^2)),  j != i
    eta_c(i) = sum_j w_ij [y_j = c] / sum_j w_ij
    BE = mean_i (1 - max_c eta_c(i))

**The loop, as the authors run it** (their script ``cifar10-retrain.py``, METHOD-NOTES section 4):
at every ascent step a *fresh* extractor is trained from scratch on the *current perturbed set*
(ResNet-18, 30 epochs, SGD lr 0.1, momentum 0.9, weight decay 5e-4, cosine, batch 128, no
augmentation); its penultimate features give ``BE`` and, back through the extractor, the full
gradient over every pixel of the set; one AdamW step (``maximize``, lr 1e-3, weight decay 0.01 on
the pixels) follows, projected onto the eps-ball around the clean image and the pixel box. As in
the authors' autograd function, AdamW is handed the gradient of the *summed* estimate
``N * BE`` (the logged ``BE`` is the mean), and the gradient reaches saturated pixels. Here:

* ``retrain_every`` (1) sets the cadence of the retraining, ``retrain_epochs`` its length and
  ``fresh`` (True) whether each extractor starts from new random weights (``False``: keep
  training the previous one, cheaper);
* ``ascent="adamw"`` is the authors' optimiser on the pixels (``step_size`` is its lr);
  ``ascent="sign"`` is projected sign-gradient ascent;
* ``profile="paper"`` gives the authors' settings (ResNet-18, 30 epochs every step, 2000 AdamW
  steps of lr 1e-3): GPU work, days for CIFAR-10 (use ``checkpoint``). ``profile="cpu"`` is the
  same loop scaled down to fit a CPU: a fresh cnn-small trained 10 epochs (about 0.88 training
  accuracy on clean 10k CIFAR) before each of 12 AdamW steps of lr 2/255; about half an hour for
  10k CIFAR images on one CPU thread. ``profile="auto"`` (the default) picks "paper" on a CUDA
  device and "cpu" elsewhere.
  Any parameter given explicitly overrides its profile's value; ``bank.params["profile"]``
  records the one used.

Each ascent step streams over the data: ``dBE/dz`` is computed from the current features in
row chunks of ``chunk`` (O(N^2 D) time, O(chunk * N) memory, never the N x N matrix), then every
batch goes through ``phi`` once with that gradient (a vector-Jacobian product). The AdamW state
and the noise live in work arrays that are memory-mapped when large. Noise is sample-wise, keyed
by stable sample ids and quantised to whole grey levels exactly like ``em`` sample-wise banks
(float16, ``|q| <= floor(255 eps)``).

A tqdm bar (steps, current estimate, ETA) shows on a terminal or with ``progress=True``.
``max_steps`` / ``max_seconds`` stop the fit early (checked between steps and between the
retraining epochs) with a ``UserWarning``; the bank then holds the noise reached so far.
``checkpoint="path.npz"`` saves the ascent's state after every step (noise, AdamW moments, the
extractor's weights, the history; NumPy arrays, no pickle) and a later fit with the same data,
seed and parameters resumes from it (``steps``, the budgets and ``progress`` may change).
Every step draws its randomness from ``(seed, step)``, so a stopped-and-resumed fit gives the
same bank as one run straight through.

``bank.info`` records the estimate at every step (``bayes_error_history``: ``[step, BE]``
pairs, thinned to at most 100), the estimate of the final quantised noise under the last
extractor (``bayes_error_final``), the same for the leave-one-out error of the kernel
classifier (``kernel_error_history`` / ``kernel_error_final``: the number the authors' code
prints at each step, near 0 for their extractors trained to 100% training accuracy), the
clean estimate (step 0, an extractor trained on clean
data), the extractors' training accuracy, the steps taken and why the fit stopped.

Example:
    >>> import numpy as np, uetransforms as ue
    >>> rng = np.random.default_rng(0)
    >>> ds = {"image": list(rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)), "label": [0, 1] * 4}
    >>> bank = ue.fit("bayes", ds, seed=0, steps=2, retrain_epochs=1)
    >>> bank.keying, bank.tensors["delta"].dtype, [s for s, _ in bank.info["bayes_error_history"]]
    ('sample', dtype('float16'), [0, 1])
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..models import surrogates as sg
from ..core.bank import NoiseBank
from ..core.data import FitData
from . import Choice, Flag, Method, Number, Param, Rule, _common

#: Values a profile gives to the parameters left at ``None``. "paper": the authors' script
#: (cifar10-retrain.py); "cpu": the same loop scaled down to one CPU thread (10k CIFAR images: ~25 min).
#: Why these "cpu" values (benchmarks/RESULTS.md, "bayes, session 4"): on the harness (10k CIFAR,
#: cnn-small victim, clean 0.663) the extractor's strength is what moved the victim. Fresh cnn-small
#: extractors trained 10 epochs before each of 12 steps: 0.555 at 100% protected, 0.609 at 50/50 with
#: clean rows; 3 epochs: 0.589 / 0.641; the former profile (fresh cnn-tiny, 4 epochs, lr eps/6):
#: 0.604 / 0.667, no effect at 50/50. Longer extractor training costs time linearly.
PROFILES: dict[str, dict[str, Any]] = {
    "paper": {"surrogate": "resnet18", "steps": 2000, "ascent": "adamw", "step_size": 1e-3,
              "retrain_every": 1, "retrain_epochs": 30},
    "cpu": {"surrogate": "cnn-small", "steps": 12, "ascent": "adamw", "step_size": 2 / 255,
            "retrain_every": 1, "retrain_epochs": 10},
}

ASCENTS = ("adamw", "sign")
HISTORY_MAX = 100


def _path_or_none(value: Any) -> Any:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"checkpoint must be a file path or None, got {type(value).__name__}")
    return value


def _fill_profile(p: dict[str, Any], data: Any) -> dict[str, Any]:
    """Parameters left at ``None`` take their profile's value; explicit ones override it.

    ``profile="auto"`` is settled by :func:`fit`, which knows the device.
    """
    if p["profile"] == "auto":
        return p
    for name, value in PROFILES[p["profile"]].items():
        if p[name] is None:
            p[name] = value
    return p


_PAPER = PROFILES["paper"]
_FROM_PROFILE = " (None: the profile's value)"

METHOD = Method(
    key="bayes",
    paper="Towards Provably Unlearnable Examples via Bayes Error Optimisation (AAAI 2026, arXiv 2511.08191)",
    citation="R. Zhang, J. Sun, E.-P. Lim, P. Zhang, Towards Provably Unlearnable Examples via Bayes Error "
             "Optimisation, AAAI 2026, arXiv:2511.08191",
    keyed_by="sample",
    needs="a feature extractor (surrogate, retrained on the fly)",
    kind="additive",
    summary="projected gradient ascent on a kernel estimate of the Bayes error of surrogate features",
    order=50,
    params=(
        *_common.LINF_BUDGET,
        Param("profile", "auto", Choice(("auto", *PROFILES)), paper="paper",
              help="'auto' (default): 'paper' on a CUDA device, else 'cpu'; 'cpu': the loop scaled down for a CPU; "
                   "'paper': the authors' settings, for a GPU"),
        Param("surrogate", None, _common.SURROGATE_CHECK, paper=_PAPER["surrogate"],
              help="feature extractor, a uetransforms.models.surrogates.build name or an nn.Module" + _FROM_PROFILE),
        _common.positive("sigma", 0.3, "Gaussian kernel width on features scaled to [-1, 1]"),
        Param("steps", None, Number(1, integer=True, none=True, cast=False), paper=_PAPER["steps"], public=True,
              help="ascent steps" + _FROM_PROFILE),
        Param("ascent", None, Choice((*ASCENTS, None)), paper=_PAPER["ascent"],
              help="'adamw' (the authors' optimiser on the pixels) or 'sign' (projected sign ascent)" + _FROM_PROFILE),
        _common.positive("step_size", None, "ascent step (AdamW's lr)" + _FROM_PROFILE, paper=_PAPER["step_size"],
                         none=True, public=True),
        Param("ascent_weight_decay", 0.01, Number(0, cast=False), help="AdamW weight decay on the pixels"),
        Param("retrain_every", None, Number(1, integer=True, none=True, cast=False), paper=_PAPER["retrain_every"],
              help="retrain the extractor every N ascent steps" + _FROM_PROFILE),
        Param("retrain_epochs", None, Number(1, integer=True, none=True, cast=False),
              paper=_PAPER["retrain_epochs"], help="epochs of each retraining" + _FROM_PROFILE),
        Param("fresh", True, Flag(), paper=True, help="each extractor starts from new random weights"),
        _common.BATCH_SIZE,
        _common.count("chunk", 512, "rows per chunk of the kernel estimate (memory O(chunk * N))"),
        _common.LR,
        _common.MAX_STEPS,
        _common.MAX_SECONDS,
        Param("checkpoint", None, Rule(_path_or_none, "a file path (.npz) or None"),
              help="save the ascent's state here after every step and resume from it (None: no checkpoint)"),
        _common.PROGRESS,
    ),
    resolve=_fill_profile,
)


def bayes_error(z: torch.Tensor, y: torch.Tensor, num_classes: int, *, sigma: float, chunk: int = 1024,
                grad: bool = False) -> tuple[float, torch.Tensor | None, float]:
    """The kernel Bayes-error estimate of features ``z`` ``[N, D]`` with labels ``y``, ``dBE/dz``, and the
    leave-one-out error of the kernel classifier.

    The estimate is ``mean_i (1 - max_c eta_c(i))`` (module docs); its gradient is that of the
    authors' autograd function. The third value, the share of samples whose ``argmax_c eta_c(i)``
    is not their label, is the number the authors' ``BayesErrorRBF`` *reports* as its forward
    value (its backward is the gradient of the estimate): kept to compare logs with theirs.

    Rows are processed ``chunk`` at a time; each chunk's share of the mean is backpropagated at
    once, so memory is O(chunk * N). The kernel is computed in log space with each row shifted
    by its maximum (the shift cancels in the posterior), so far-apart points cannot underflow
    every weight to zero.

    Example:
        >>> z = torch.tensor([[0.0], [0.1], [1.0], [1.1]])
        >>> separated, _, wrong = bayes_error(z, torch.tensor([0, 0, 1, 1]), 2, sigma=0.3)
        >>> overlapping, _, _ = bayes_error(torch.zeros(4, 1), torch.tensor([0, 0, 1, 1]), 2, sigma=0.3)
        >>> round(separated, 2), wrong, round(overlapping, 3)   # each point sees 1 same-class and 2 other-class twins
        (0.01, 0.0, 0.333)
    """
    n = len(z)
    if n < 2:
        raise ValueError("the Bayes-error estimate needs at least two samples")
    zd = z.detach().clone().requires_grad_(grad)
    onehot = F.one_hot(y, num_classes).to(z.dtype)
    total = 0.0
    wrong = 0
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        with torch.set_grad_enabled(grad):
            zi = zd[s:e]
            d2 = ((zi * zi).sum(1, keepdim=True) + (zd * zd).sum(1)[None, :] - 2 * zi @ zd.T).clamp_min(0)
            logw = -d2 / (2 * sigma**2)
            diag = torch.arange(s, e, device=z.device)
            logw[torch.arange(e - s, device=z.device), diag] = float("-inf")  # j != i
            logw = logw - logw.max(1, keepdim=True).values.detach()
            w = logw.exp()
            post = (w @ onehot) / w.sum(1, keepdim=True)
            top = post.max(1)
            part = (1 - top.values).sum() / n
        if grad:
            part.backward()
        total += float(part.detach())
        wrong += int((top.indices != y[s:e]).sum())
    return total, (zd.grad if grad else None), wrong / n


def _perturbed(x: torch.Tensor, delta: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    d = torch.from_numpy(np.asarray(delta[rows], np.float32)).to(x.device)
    return (x + d).clamp(0, 1)


def embed(model: sg.Surrogate, src: sg.ImageSource, delta: np.ndarray, batch_size: int) -> torch.Tensor:
    """Features ``[N, D]`` of every ``x + delta`` (eval mode, no gradient)."""
    model.eval()
    parts = []
    with torch.no_grad():
        for rows, x in src.batches(batch_size):
            parts.append(model.features(_perturbed(x, delta, rows)))
    return torch.cat(parts)


def train_extractor(model: sg.Surrogate, src: sg.ImageSource, delta: np.ndarray, *, epochs: int, batch_size: int,
                    lr: float, rng: np.random.Generator, budget: sg.Budget | None = None) -> tuple[float, bool]:
    """Train ``model`` ``epochs`` epochs on ``x + delta`` (SGD, cosine per epoch, no augmentation).

    Returns (training accuracy of the last epoch, whether it finished: ``False`` when
    ``budget`` ran out between epochs).
    """
    trainer = sg.Trainer(model, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(trainer.opt, T_max=epochs)
    acc = 0.0
    for _ in range(epochs):
        if budget is not None and budget.exhausted():
            return acc, False
        correct = seen = 0
        for rows, x in src.batches(batch_size, shuffle=True, rng=rng):
            _, a = trainer.step(_perturbed(x, delta, rows), src.labels(rows))
            correct += a * len(rows)
            seen += len(rows)
        sched.step()
        acc = correct / max(1, seen)
    model.eval()
    return acc, True


def estimate(data: FitData, delta: np.ndarray | None = None, *, surrogate: Any = "cnn-tiny", epochs: int = 4,
             sigma: float = 0.3, batch_size: int = 128, lr: float = 0.1, seed: int = 0, chunk: int = 512,
             device: torch.device | str | None = None) -> float:
    """The Bayes-error estimate of ``x + delta`` under a fresh extractor trained ``epochs`` on it.

    ``delta`` is ``[N, C, H, W]`` in rows of ``data`` (``None``: the clean data). This is how the
    fit judges each step, offered on its own to compare, e.g., a 50/50 mix of protected and
    clean rows with the clean set.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    n, k = len(data), data.num_classes
    if delta is None:
        delta = np.zeros((n, *data.image_shape), np.float32)
    src = sg.ImageSource(data, device)
    labels = torch.from_numpy(data.labels.astype(np.int64)).to(device)
    model = sg.build(surrogate, num_classes=k, image_shape=data.image_shape, device=device, seed=seed)
    train_extractor(model, src, delta, epochs=epochs, batch_size=batch_size, lr=lr, rng=np.random.default_rng(seed))
    z = embed(model, src, delta, batch_size)
    be, _, _ = bayes_error(z / z.abs().max().clamp_min(1e-12), labels, k, sigma=sigma, chunk=chunk)
    return be


def _thin(history: list[list[float]]) -> list[list[float]]:
    """At most HISTORY_MAX entries, evenly spread, first and last kept."""
    if len(history) <= HISTORY_MAX:
        return history
    pick = np.unique(np.linspace(0, len(history) - 1, HISTORY_MAX).round().astype(int))
    return [history[i] for i in pick]


#: Parameters that may differ between a checkpointed fit and the one resuming it.
_RESUMABLE = ("steps", "max_steps", "max_seconds", "checkpoint", "progress")


def _fingerprint(data: FitData, p: dict[str, Any], seed: int) -> str:
    import hashlib

    h = hashlib.sha256()
    h.update(json.dumps({k: (v if isinstance(v, (str, int, float, bool, type(None))) else repr(v))
                         for k, v in sorted(p.items()) if k not in _RESUMABLE}, sort_keys=True).encode())
    h.update(f"{seed}|{data.image_shape}|".encode())
    h.update("\n".join(data.sample_ids).encode())
    h.update(np.ascontiguousarray(data.labels).tobytes())
    return h.hexdigest()


def _save_checkpoint(path: str, state: dict[str, Any], arrays: dict[str, np.ndarray], model: sg.Surrogate) -> None:
    """Write the ascent's state to ``path`` (.npz, no pickle) through a temporary file and a rename."""
    tensors = {f"model/{k}": v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    meta = np.frombuffer(json.dumps(state).encode(), np.uint8)
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    np.savez(tmp, meta=meta, **arrays, **tensors)
    os.replace(tmp, path)


def _load_checkpoint(path: str, fingerprint: str) -> tuple[dict[str, Any], Any] | None:
    if not os.path.exists(path):
        return None
    z = np.load(path, allow_pickle=False)
    state = json.loads(bytes(z["meta"]).decode())
    if state.get("fingerprint") != fingerprint:
        raise ValueError(f"checkpoint {path!r} belongs to another fit (other data, seed or parameters); "
                         "delete it or pass another checkpoint path")
    return state, z


@METHOD.fitter
def fit(data: FitData, *, seed: int, device: torch.device, **p: Any) -> NoiseBank:
    """Maximise the kernel Bayes-error estimate with a periodically retrained extractor (module docs)."""
    if p["profile"] == "auto":  # the paper's loop where a GPU can run it, the scaled-down one elsewhere
        p = _fill_profile({**p, "profile": "paper" if device.type == "cuda" else "cpu"}, data)
    n, k = len(data), data.num_classes
    if n < 2:
        raise ValueError("bayes needs at least two samples: the estimate compares each sample with the others")
    src = sg.ImageSource(data, device)
    labels = torch.from_numpy(data.labels.astype(np.int64)).to(device)
    if int(labels.max()) >= k:
        raise ValueError(f"label {int(labels.max())} is outside the {k} classes the dataset declares")
    shape = (n, *data.image_shape)
    delta = _common.workspace(shape, np.float16)
    adam = p["ascent"] == "adamw"
    if adam:  # AdamW state over every pixel of the set, as torch.optim.AdamW keeps it
        m1, m2 = _common.workspace(shape, np.float32), _common.workspace(shape, np.float32)
    eps, lr_px, wd, sigma, chunk, bs = (p["epsilon"], p["step_size"], p["ascent_weight_decay"], p["sigma"],
                                        p["chunk"], p["batch_size"])
    b1, b2, adam_eps = 0.9, 0.999, 1e-8  # torch.optim.AdamW's defaults, which the authors keep
    budget = sg.Budget(p["max_steps"], p["max_seconds"])
    history: list[list[float]] = []
    kernel_errors: list[list[float]] = []  # the authors' logged number, per step (bayes_error docs)
    extractor_acc: list[float] = []
    retrains = 0
    model: sg.Surrogate | None = None
    stopped = "completed"
    first = model_step = 0  # model_step: the step whose seed built the current extractor
    ckpt = os.fspath(p["checkpoint"]) if p["checkpoint"] is not None else None
    fingerprint = _fingerprint(data, p, seed) if ckpt else ""
    resumed = _load_checkpoint(ckpt, fingerprint) if ckpt else None
    if resumed is not None:  # every step draws its randomness from (seed, step): resuming is exact
        state, z = resumed
        first, history, extractor_acc, retrains = (state["next_step"], state["history"], state["extractor_acc"],
                                                   state["retrains"])
        kernel_errors = state.get("kernel_errors", [])  # absent from checkpoints written before it was logged
        delta[:] = z["delta"]
        if adam:
            m1[:], m2[:] = z["m1"], z["m2"]
        model = sg.build(p["surrogate"], num_classes=k, image_shape=data.image_shape, device=device,
                         seed=seed + 7919 * state["model_step"])
        model.load_state_dict({name[len("model/"):]: torch.from_numpy(z[name]) for name in z.files
                               if name.startswith("model/")})
        model.eval()
        model_step = state["model_step"]
        budget.tick(first)  # max_steps counts every step of the fit, before and after the resume

    def save(next_step: int) -> None:
        if ckpt and model is not None:
            state = {"fingerprint": fingerprint, "next_step": next_step, "history": history,
                     "kernel_errors": kernel_errors, "extractor_acc": extractor_acc, "retrains": retrains,
                     "model_step": model_step}
            _save_checkpoint(ckpt, state, {"delta": delta, **({"m1": m1, "m2": m2} if adam else {})}, model)

    bar = sg.progress(total=p["steps"], initial=first, desc="bayes ascent", enabled=p["progress"], unit="step")
    for step in range(first, p["steps"]):
        why = budget.exhausted()
        if why:
            stopped = why
            break
        rng = np.random.default_rng([seed, step])  # per step: a resumed or re-run step draws the same
        if model is None or step % p["retrain_every"] == 0:
            if model is None or p["fresh"]:
                model = sg.build(p["surrogate"], num_classes=k, image_shape=data.image_shape, device=device,
                                 seed=seed + 7919 * step)
                model_step = step
            acc, done = train_extractor(model, src, delta, epochs=p["retrain_epochs"], batch_size=bs, lr=p["lr"],
                                        rng=rng, budget=budget)
            retrains += 1
            extractor_acc.append(round(acc, 4))
            if not done:
                stopped = budget.exhausted() or "time"
                break
        z = embed(model, src, delta, bs)
        scale = z.abs().max().clamp_min(1e-12)  # the estimator's global scaling, held fixed for the step
        be, gz, wrong = bayes_error(z / scale, labels, k, sigma=sigma, chunk=chunk, grad=True)
        del z
        history.append([step, round(be, 5)])
        kernel_errors.append([step, round(wrong, 5)])
        t = step + 1  # AdamW's bias correction counts the steps taken
        for rows, x in src.batches(bs):
            d = torch.from_numpy(np.asarray(delta[rows], np.float32)).to(device).requires_grad_(True)
            xp = x + d
            # The projection keeps x + d inside [0, 1] (up to float16 rounding, clamped here by value
            # only): torch's clamp passes no gradient at 0 and 1, which would freeze every saturated
            # pixel and every pixel the ascent took to the box, where the authors' x' moves freely.
            feats = model.features(xp + (xp.clamp(0, 1) - xp).detach())
            sel = torch.from_numpy(rows).to(device)
            (g,) = torch.autograd.grad((feats / scale * gz[sel]).sum(), d)
            with torch.no_grad():
                if adam:
                    # The authors' autograd function hands AdamW the gradient of the *summed* error
                    # (their forward reports the mean). AdamW is scale-free except for its eps 1e-8,
                    # which a 1/N-smaller mean gradient runs into: at N=2000 already 14% of the pixel
                    # gradients are below 1e-7, so those pixels would take damped steps.
                    g = g * n
                    # torch.optim.AdamW(maximize=True) on the perturbed pixels x' = x + d
                    m = torch.from_numpy(np.asarray(m1[rows])).to(device).mul_(b1).add_(g, alpha=1 - b1)
                    v = torch.from_numpy(np.asarray(m2[rows])).to(device).mul_(b2).addcmul_(g, g, value=1 - b2)
                    m1[rows], m2[rows] = m.cpu().numpy(), v.cpu().numpy()
                    xp = (x + d) * (1 - lr_px * wd)
                    xp = xp + lr_px * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + adam_eps)
                    d = xp - x
                else:
                    d = d + lr_px * g.sign()
                d = d.clamp_(-eps, eps)
                d = (x + d).clamp_(0, 1) - x  # stay inside the pixel box: applying never clips
                delta[rows] = d.cpu().numpy().astype(np.float16)
        budget.tick()
        save(step + 1)
        bar.update(1)
        bar.set_postfix(bayes_error=f"{be:.3f}")
    bar.close()
    _common.quantise(delta, eps, np.float16, out=delta)
    final = final_wrong = None
    if model is not None:  # the estimate for what the bank actually holds, under the last extractor
        z = embed(model, src, delta, bs)
        final, _, final_wrong = bayes_error(z / z.abs().max().clamp_min(1e-12), labels, k, sigma=sigma, chunk=chunk)
        final, final_wrong = round(final, 5), round(final_wrong, 5)
    if stopped != "completed":
        limit = p["max_seconds"] if stopped == "time" else p["max_steps"]
        sg.warn_budget_stop("bayes", stopped, wanted=f"its {p['steps']} ascent steps",
                            reached=f"{budget.steps} step(s)", limit=limit, stacklevel=4)
    stored = {name: v for name, v in p.items() if name not in ("progress", "checkpoint")}  # how, not what
    if not isinstance(stored["surrogate"], str):
        stored["surrogate"] = model.name if model is not None else type(stored["surrogate"]).__name__
    return NoiseBank(
        method="bayes", kind="additive", keying="sample", keys=data.sample_ids, tensors={"delta": delta},
        params={**stored, "seed": int(seed)}, image_shape=data.image_shape,
        info={
            "steps": budget.steps,
            "stopped_by": stopped,
            "retrains": retrains,
            "extractor_train_accuracy": extractor_acc[-HISTORY_MAX:],
            "bayes_error_clean": history[0][1] if history else None,
            "bayes_error_final": final,
            "bayes_error_history": _thin(history),
            "kernel_error_history": _thin(kernel_errors),
            "kernel_error_final": final_wrong,
            "surrogate": model.name if model is not None else str(stored["surrogate"]),
            "quantised": "whole grey levels q/255, |q| <= floor(255*epsilon)",
        },
    )
