"""bayes: the kernel Bayes-error estimate, its gradient, the ascent and the budgets."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch

import uetransforms as ue
from uetransforms.core.data import FitData
from uetransforms.models import surrogates as sg
from uetransforms.algorithms import bayes

EPS = 8 / 255

# Tiny fits stop on their round/step budgets on purpose; the tests that check the warning use pytest.warns.
pytestmark = pytest.mark.filterwarnings("ignore:.*stopped by its budget:UserWarning")


def tiny(n=16, hw=8, k=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, hw, hw, 3), dtype=np.uint8), (np.arange(n) % k).astype(int)


def fast(**kw):
    return {"surrogate": "cnn-tiny", "batch_size": 8, "steps": 3, "retrain_epochs": 1, **kw}


def separable(n=32, hw=8, seed=0):
    """Two classes told apart by brightness only (a 12-level gap, inside an eps of 16/255)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    base = np.where(labels == 0, 116, 128)[:, None, None, None]
    images = np.clip(base + rng.integers(-6, 7, (n, hw, hw, 3)), 0, 255).astype(np.uint8)
    return images, labels


# ------------------------------------------------------------------ the estimator
def test_estimate_on_known_configurations():
    y = torch.tensor([0, 0, 1, 1])
    far, _, far_wrong = bayes.bayes_error(torch.tensor([[0.0], [0.01], [5.0], [5.01]]), y, 2, sigma=0.3)
    same, _, _ = bayes.bayes_error(torch.zeros(4, 3), y, 2, sigma=0.3)
    assert far < 1e-6 and far_wrong == 0
    assert same == pytest.approx(1 / 3, abs=1e-6)  # each sees one same-class and two other-class twins
    huge, _, _ = bayes.bayes_error(torch.tensor([[0.0], [100.0], [200.0], [300.0]]), y, 2, sigma=0.3)
    assert np.isfinite(huge)  # no 0/0 when every kernel weight underflows


def test_chunking_changes_nothing():
    torch.manual_seed(0)
    z, y = torch.randn(37, 4, dtype=torch.float64), torch.randint(0, 3, (37,))
    a, ga, wa = bayes.bayes_error(z, y, 3, sigma=0.8, chunk=5, grad=True)
    b, gb, wb = bayes.bayes_error(z, y, 3, sigma=0.8, chunk=1000, grad=True)
    assert a == pytest.approx(b, abs=1e-12) and torch.allclose(ga, gb, atol=1e-12) and wa == wb


def test_kernel_error_is_the_leave_one_out_kernel_classifier():
    """The third value is what the authors' BayesErrorRBF reports: the share of samples whose kernel
    posterior (other samples only) puts its mode on another class. Checked against a direct loop."""
    torch.manual_seed(2)
    z, y = torch.randn(23, 3, dtype=torch.float64), torch.randint(0, 3, (23,))
    _, _, wrong = bayes.bayes_error(z, y, 3, sigma=0.6, chunk=7)
    miss = 0
    for i in range(len(z)):
        w = torch.exp(-((z - z[i]) ** 2).sum(1) / (2 * 0.6**2))
        w[i] = 0
        miss += int(torch.stack([w[y == c].sum() for c in range(3)]).argmax() != y[i])
    assert 0 < miss < len(z) and wrong == pytest.approx(miss / len(z))


def test_gradient_matches_finite_differences():
    torch.manual_seed(1)
    z, y = torch.randn(9, 2, dtype=torch.float64), torch.randint(0, 2, (9,))
    _, g, _ = bayes.bayes_error(z, y, 2, sigma=0.7, chunk=4, grad=True)
    h = 1e-6
    for i, j in [(0, 0), (3, 1), (8, 0)]:
        zp, zm = z.clone(), z.clone()
        zp[i, j] += h
        zm[i, j] -= h
        fd = (bayes.bayes_error(zp, y, 2, sigma=0.7)[0] - bayes.bayes_error(zm, y, 2, sigma=0.7)[0]) / (2 * h)
        assert g[i, j].item() == pytest.approx(fd, rel=1e-4, abs=1e-8)


# ------------------------------------------------------------------ the method
def test_ascent_respects_the_budget_and_is_applied_as_stored():
    images, labels = tiny(24, k=2)
    data = FitData.from_arrays(images, labels)
    bank = ue.fit("bayes", data, seed=0, **fast(steps=4, sigma=0.5))
    info = bank.info
    assert [s for s, _ in info["bayes_error_history"]] == [0, 1, 2, 3] and info["steps"] == 4
    assert [s for s, _ in info["kernel_error_history"]] == [0, 1, 2, 3]
    assert all(0 <= e <= 1 for _, e in info["kernel_error_history"]) and 0 <= info["kernel_error_final"] <= 1
    assert info["stopped_by"] == "completed" and info["retrains"] == 4  # a fresh extractor every step
    assert bank.params["profile"] == "cpu"  # "auto" on a CPU device
    d = bank.tensors["delta"]
    assert d.dtype == np.float16 and (np.abs(d.astype(np.float64)) <= EPS).all() and np.abs(d).max() > 0
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    out = ue.apply(bank, x, data.sample_ids)
    change = out.int() - x.int()
    assert change.abs().max() <= 8
    rows = bank.rows_for(data.sample_ids)
    assert torch.equal(change, torch.from_numpy(np.rint(d[rows].astype(np.float64) * 255)).int())  # never clipped


@pytest.mark.parametrize("fresh", [True, False])
def test_retraining_uses_the_current_perturbed_set_and_changes_the_extractor(monkeypatch, fresh):
    images, labels = separable()
    data = FitData.from_arrays(images, labels)
    seen = []  # (model object, weights after training, noise it was trained on)
    real = bayes.train_extractor

    def spy(model, src, delta, **kw):
        out = real(model, src, delta, **kw)
        seen.append((model, torch.cat([q.detach().flatten().clone() for q in model.parameters()]),
                     np.asarray(delta, np.float32).copy()))
        return out

    monkeypatch.setattr(bayes, "train_extractor", spy)
    bank = ue.fit("bayes", data, seed=0, epsilon=16 / 255, fresh=fresh, **fast(steps=3, retrain_every=1))
    assert len(seen) == 3 == bank.info["retrains"]
    assert not np.abs(seen[0][2]).any()  # step 0: the extractor learns the clean data
    assert np.abs(seen[1][2]).max() > 0 and np.abs(seen[2][2] - seen[1][2]).max() > 0  # then the perturbed set
    assert not torch.equal(seen[1][1], seen[2][1])  # a retrained extractor, not the same weights
    assert (seen[1][0] is not seen[2][0]) == fresh  # fresh: new weights each time; else trained on


def test_cadence_of_retraining(monkeypatch):
    images, labels = tiny(12)
    calls = []
    real = bayes.train_extractor
    monkeypatch.setattr(bayes, "train_extractor", lambda *a, **k: calls.append(1) or real(*a, **k))
    bank = ue.fit("bayes", FitData.from_arrays(images, labels), seed=0, **fast(steps=5, retrain_every=2))
    assert len(calls) == 3 == bank.info["retrains"]  # steps 0, 2, 4


@pytest.mark.parametrize("protected", [1.0, 0.5])
def test_noise_raises_the_estimate_also_when_mixed_with_clean_rows(one_thread, protected):
    """The estimate under a fresh extractor trained on the (partly) protected set, against clean.

    Partial protection is the paper's headline setting: half the rows keep their clean pixels. On
    this toy the clean classes are separable (estimate ~0); a fully protected set is learnt again
    by the fresh extractor, so the rise there is small (0.03-0.13 across thread counts), while
    mixed with clean rows the protected half overlaps the other class (0.17-0.31)."""
    images, labels = separable(48)
    data = FitData.from_arrays(images, labels)
    bank = ue.fit("bayes", data, seed=0, epsilon=16 / 255, sigma=0.5,
                  **fast(steps=10, retrain_epochs=3, step_size=4 / 255))
    delta = bank.tensors["delta"][bank.rows_for(data.sample_ids)].astype(np.float32)
    delta[np.random.default_rng(1).permutation(len(delta))[: int(round((1 - protected) * len(delta)))]] = 0
    kw = dict(surrogate="cnn-tiny", epochs=3, sigma=0.5, batch_size=8, seed=5)
    clean = bayes.estimate(data, None, **kw)
    mixed = bayes.estimate(data, delta, **kw)
    assert mixed > clean + (0.01 if protected == 1 else 0.1), (clean, mixed)


def _torch_adamw_replay(data, *, seed, sigma, lr, steps, factor):
    """torch.optim.AdamW(maximize=True) on x' = x + delta under the fit's step-0 extractor, the gradient of
    ``factor`` x the mean estimate, then the eps-ball / box projection; the grey levels it reaches."""
    src = sg.ImageSource(data, torch.device("cpu"))
    y = torch.from_numpy(data.labels.astype(np.int64))
    x = torch.cat([xb for _, xb in src.batches(len(data))])
    model = sg.build("cnn-tiny", num_classes=2, image_shape=data.image_shape, seed=seed)  # as the fit's step 0
    bayes.train_extractor(model, src, np.zeros(x.shape, np.float32), epochs=1, batch_size=8, lr=0.1,
                          rng=np.random.default_rng([seed, 0]))
    xp = x.clone().requires_grad_(True)
    opt = torch.optim.AdamW([xp], lr=lr, weight_decay=0.01, maximize=True)
    for _ in range(steps):
        opt.zero_grad()
        z = model.features(xp)
        scale = z.detach().abs().max()
        _, gz, _ = bayes.bayes_error(z.detach() / scale, y, 2, sigma=sigma, grad=True)
        (z / scale * gz * factor).sum().backward()
        opt.step()
        with torch.no_grad():
            xp.copy_(torch.minimum(torch.maximum(xp, x - EPS), x + EPS).clamp(0, 1))
            xp.copy_(x + (xp - x).half().float())  # the fit keeps delta in float16 between steps
    return np.rint((xp.detach() - x).numpy() * 255)


@pytest.mark.parametrize("sigma", [0.5, 40.0])
def test_adamw_ascent_is_torch_adamw_on_the_summed_estimate(sigma):
    """The ascent replays torch.optim.AdamW(maximize=True, lr, weight_decay=0.01) on the pixels with the
    gradient of the *summed* estimate, as the authors' autograd function returns it, and the gradient
    reaches saturated pixels (0 or 255; tiny() has some). sigma=40 flattens the kernel so the gradients
    are small enough for AdamW's eps 1e-8 to matter: there the mean-estimate gradient gives other steps."""
    images, labels = tiny(16, k=2)
    data = FitData.from_arrays(images, labels)
    kw = dict(seed=4, sigma=sigma, lr=2 / 255, steps=3)
    bank = ue.fit("bayes", data, seed=4, sigma=sigma, ascent="adamw", step_size=2 / 255, surrogate="cnn-tiny",
                  batch_size=8, steps=3, retrain_every=3, retrain_epochs=1)  # one extractor, trained at step 0
    got = np.rint(bank.tensors["delta"][bank.rows_for(data.sample_ids)].astype(np.float64) * 255)
    want = _torch_adamw_replay(data, factor=len(data), **kw)
    assert np.abs(want).max() > 0 and np.array_equal(got, want)
    if sigma == 40.0:
        assert (_torch_adamw_replay(data, factor=1, **kw) != got).mean() > 0.05


def test_profiles():
    paper = bayes.METHOD.check({"profile": "paper"})
    assert (paper["surrogate"], paper["steps"], paper["retrain_every"], paper["retrain_epochs"], paper["ascent"],
            paper["step_size"]) == ("resnet18", 2000, 1, 30, "adamw", 1e-3)
    cpu = bayes.METHOD.check({"profile": "cpu"})
    assert (cpu["profile"], cpu["surrogate"], cpu["fresh"], cpu["retrain_every"], cpu["retrain_epochs"], cpu["steps"],
            cpu["step_size"]) == ("cpu", "cnn-small", True, 1, 10, 12, 2 / 255)
    assert bayes.METHOD.check({})["profile"] == "auto"  # settled by fit, which knows the device
    assert bayes.METHOD.check({"profile": "paper", "steps": 3})["steps"] == 3  # explicit values win


def test_paper_profile_runs_on_a_tiny_shape_and_a_step_budget_warns():
    images, labels = tiny(8)
    with pytest.warns(UserWarning, match=r"max_steps=1"):
        bank = ue.fit("bayes", FitData.from_arrays(images, labels), seed=0, profile="paper", max_steps=1,
                      batch_size=8)
    assert bank.info["surrogate"] == "resnet18" and bank.info["steps"] == 1 and bank.info["stopped_by"] == "steps"
    assert bank.params["retrain_epochs"] == 30 and len(bank.info["bayes_error_history"]) == 1
    # one AdamW step of the paper's lr 1e-3 moves a pixel by about 1e-3 < half a grey level: the
    # quantised bank is still zero (the paper takes 2000 such steps)
    assert not np.abs(bank.tensors["delta"]).any()


def test_keys_survive_shuffle_and_select():
    images, labels = tiny(12)
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=2)})
    ds = datasets.Dataset.from_dict({"image": list(images), "label": list(labels)}, features=feats)
    bank = ue.fit("bayes", ds, seed=0, **fast(steps=1))
    assert bank.keying == "sample" and bank.num_keys == 12
    full = ds.map(ue.Protect(bank), batched=True, batch_size=4)
    ref = {np.asarray(a).tobytes(): np.asarray(b) for a, b in zip(ds["image"], full["image"])}
    sub = ds.shuffle(seed=2).select([3, 0, 9])
    prot = sub.map(ue.Protect(bank), batched=True, batch_size=2)
    for a, b in zip(sub["image"], prot["image"]):
        assert np.array_equal(np.asarray(b), ref[np.asarray(a).tobytes()])


def test_time_budget_warns_and_bad_parameters():
    images, labels = tiny(8)
    data = FitData.from_arrays(images, labels)
    with pytest.warns(UserWarning, match="max_seconds=0"):
        bank = ue.fit("bayes", data, seed=0, max_seconds=0, **fast())
    assert bank.info["stopped_by"] == "time" and bank.info["steps"] == 0
    assert not np.abs(bank.tensors["delta"]).any()  # no step taken: no noise, and it says so
    for bad, match in (({"sigma": 0}, "sigma"), ({"chunk": 0}, "chunk"), ({"norm": "l2"}, "linf"),
                       ({"profile": "gpu"}, "profile"), ({"ascent": "adam"}, "ascent"), ({"fresh": 1}, "fresh"),
                       ({"retrain_every": 0}, "retrain_every")):
        with pytest.raises(ValueError, match=match):
            ue.fit("bayes", data, **bad)


@pytest.mark.parametrize("fresh", [True, False])
def test_a_stopped_fit_resumes_from_its_checkpoint_to_the_same_bank(tmp_path, fresh):
    images, labels = tiny(12)
    data = FitData.from_arrays(images, labels)
    kw = dict(seed=3, fresh=fresh, **fast(steps=4, retrain_every=2, step_size=2 / 255))
    straight = ue.fit("bayes", data, **kw)
    ckpt = tmp_path / "bayes.ckpt.npz"
    with pytest.warns(UserWarning, match="max_steps=2"):
        part = ue.fit("bayes", data, checkpoint=ckpt, max_steps=2, **kw)
    assert part.info["steps"] == 2 and ckpt.exists()
    resumed = ue.fit("bayes", data, checkpoint=ckpt, **kw)
    assert resumed.info["steps"] == 4 and resumed.info["stopped_by"] == "completed"
    assert np.array_equal(resumed.tensors["delta"], straight.tensors["delta"])
    assert resumed.info["bayes_error_history"] == straight.info["bayes_error_history"]
    assert resumed.info["kernel_error_history"] == straight.info["kernel_error_history"]
    with pytest.raises(ValueError, match="another fit"):
        ue.fit("bayes", data, checkpoint=ckpt, **{**kw, "sigma": 0.5})
