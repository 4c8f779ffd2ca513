"""em: error-minimising noise, class- and sample-wise, on tiny random images."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch

import uetransforms as ue
from uetransforms.core.bank import NoiseBank
from uetransforms.core.data import FitData
from uetransforms.core.images import content_id
from uetransforms.algorithms import em

EPS = 8 / 255

# Tiny fits stop on their round/step budgets on purpose; the tests that check the warning use pytest.warns.
pytestmark = pytest.mark.filterwarnings("ignore:.*stopped by its budget:UserWarning")


def tiny(n=24, hw=8, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, hw, hw, 3), dtype=np.uint8), (np.arange(n) % k).astype(int)


def hf(images, labels):
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=int(max(labels)) + 1)})
    return datasets.Dataset.from_dict({"image": list(images), "label": list(labels)}, features=feats)


def chw(images):
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def fast(**kw):
    return {"surrogate": "cnn-tiny", "batch_size": 8, "steps": 3, "train_steps": 3, "max_rounds": 3,
            "class_batches": 2, **kw}


# ------------------------------------------------------------------ quantisation and storage
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("eps", [8 / 255, 0.01, 16 / 255])
def test_quantise_gives_whole_levels_inside_the_ball(dtype, eps):
    rng = np.random.default_rng(0)
    raw = rng.uniform(-2 * eps, 2 * eps, (50, 3, 4, 4))
    raw[0, 0, 0, :] = [eps, -eps, em.level_limit(eps) / 255, -em.level_limit(eps) / 255]
    q = em.quantise(raw, eps, dtype)
    assert q.dtype == dtype
    levels = q.astype(np.float64) * 255
    assert np.abs(levels - np.rint(levels)).max() < 1e-2  # whole grey levels (float rounding aside)
    assert (np.abs(q.astype(np.float64)) <= eps).all()  # exact, in float64, after the cast
    assert np.abs(np.rint(levels)).max() == em.level_limit(eps)
    # the applied change is exactly the stored level: round(x + 255 * delta) - x == q
    x = 100.0
    assert np.array_equal(np.rint(x + q.astype(np.float32) * np.float32(255)) - x, np.rint(levels))


def test_quantise_in_place_on_a_memory_map():
    ws = em.workspace((5, 3, 4, 4), np.float16, limit=0)
    assert isinstance(ws, np.memmap)
    ws[:] = np.random.default_rng(0).uniform(-0.1, 0.1, ws.shape)
    out = em.quantise(ws, EPS, np.float16, out=ws)
    assert out is ws and (np.abs(ws.astype(np.float64)) <= EPS).all()
    assert isinstance(em.workspace((2, 2), np.float16), np.ndarray)


# ------------------------------------------------------------------ the objective
@pytest.mark.parametrize("mode", ["class", "sample"])
def test_min_min_drives_the_training_error_down(mode):
    images, labels = tiny(32, k=4)  # random pixels, labels by position: nothing to learn but the noise
    bank = ue.fit("em", FitData.from_arrays(images, labels), seed=0, mode=mode,
                  **fast(max_rounds=12, steps=5, step_size=2 / 255, class_batches=4, stop_error=0.01))
    hist = bank.info["train_error_history"]
    assert hist[-1] < hist[0]
    assert bank.info["final_train_error"] == hist[-1] and bank.info["rounds"] == len(hist)
    if bank.info["stopped_by"] == "error":
        assert hist[-1] < 0.01


def test_noise_lowers_the_surrogate_loss_against_random_noise():
    """The loss of a surrogate trained on the protected data is lower with EM noise than with
    uniform noise of the same budget (what error-minimising means)."""
    images, labels = tiny(24, k=3)
    data = FitData.from_arrays(images, labels)
    bank = ue.fit("em", data, seed=1, mode="sample", **fast(max_rounds=6, steps=5, step_size=2 / 255))
    d_em = torch.from_numpy(bank.tensors["delta"].astype(np.float32))
    d_rand = torch.from_numpy(np.random.default_rng(1).uniform(-EPS, EPS, d_em.shape).astype(np.float32))
    x = chw(images).float() / 255
    y = torch.from_numpy(labels)
    from uetransforms.models import surrogates as sg

    losses = {}
    for name, d in (("em", d_em), ("random", d_rand)):
        s = sg.build("cnn-tiny", num_classes=3, image_shape=(3, 8, 8), seed=3)
        tr = sg.Trainer(s, lr=0.05)
        for _ in range(15):
            tr.step((x + d).clamp(0, 1), y)
        s.eval()
        with torch.no_grad():
            losses[name] = float(torch.nn.functional.cross_entropy(s((x + d).clamp(0, 1)), y))
    assert losses["em"] < losses["random"]


# ------------------------------------------------------------------ budgets
@pytest.mark.parametrize("mode", ["class", "sample"])
def test_linf_budget_is_exact_and_applied_as_stored(mode):
    images, labels = tiny(12)
    bank = ue.fit("em", FitData.from_arrays(images, labels), seed=0, mode=mode, **fast(max_rounds=1))
    d = bank.tensors["delta"]
    assert d.dtype == (np.float32 if mode == "class" else np.float16)
    assert (np.abs(d.astype(np.float64)) <= EPS).all()
    assert np.abs(d).max() > 0
    x = chw(images)
    keys = labels if mode == "class" else FitData.from_arrays(images, labels).sample_ids
    out = ue.apply(bank, x, keys)
    change = out.int() - x.int()
    assert change.abs().max() <= 8
    rows = bank.rows_for(keys)
    levels = torch.from_numpy(np.rint(d[rows].astype(np.float64) * 255)).int()
    if mode == "sample":  # kept inside the pixel box, so the applied change is the stored one
        assert torch.equal(change, levels)
    else:  # class noise is clipped at the pixel range only
        unclipped = ((x.int() + levels) >= 0) & ((x.int() + levels) <= 255)
        assert torch.equal(change[unclipped], levels[unclipped])
    assert bank.params["epsilon"] == EPS and bank.params["norm"] == "linf"


def test_smaller_budget_is_respected():
    images, labels = tiny(8)
    bank = ue.fit("em", FitData.from_arrays(images, labels), seed=0, epsilon=4 / 255, **fast(max_rounds=1))
    out = ue.apply(bank, chw(images), FitData.from_arrays(images, labels).sample_ids)
    assert (out.int() - chw(images).int()).abs().max() <= 4


# ------------------------------------------------------------------ keying
def test_sample_noise_is_keyed_by_id_and_survives_shuffle_and_select():
    images, labels = tiny(16, k=2)
    ds = hf(images, labels)
    bank = ue.fit("em", ds, seed=0, mode="sample", **fast(max_rounds=1))
    assert bank.keying == "sample" and bank.num_keys == 16
    d = bank.tensors["delta"]
    # same label, different images -> different noise (it is not indexed by label)
    assert not np.array_equal(d[0], d[2])
    full = ds.map(ue.Protect(bank), batched=True, batch_size=5)
    by_content = {content_id(np.asarray(a).transpose(2, 0, 1)): np.asarray(b)
                  for a, b in zip(ds["image"], full["image"])}
    sub = ds.shuffle(seed=3).select([7, 1, 12, 4])
    prot = sub.map(ue.Protect(bank), batched=True, batch_size=3)
    for a, b in zip(sub["image"], prot["image"]):
        assert np.array_equal(np.asarray(b), by_content[content_id(np.asarray(a).transpose(2, 0, 1))])


def test_id_column_keys():
    images, labels = tiny(8)
    ds = hf(images, labels).add_column("uid", [f"img-{i}" for i in range(8)])
    bank = ue.fit("em", ds, id_column="uid", seed=0, **fast(max_rounds=1))
    assert sorted(bank.keys.tolist()) == sorted(f"img-{i}" for i in range(8))
    sub = ds.select([5, 2])
    prot = sub.map(ue.Protect(bank, id_column="uid"), batched=True)
    rows = bank.rows_for(["img-5", "img-2"])
    expect = np.clip(np.asarray(sub["image"]).astype(int).transpose(0, 3, 1, 2)
                     + np.rint(bank.tensors["delta"][rows].astype(np.float64) * 255).astype(int), 0, 255)
    got = np.asarray(prot["image"]).transpose(0, 3, 1, 2)
    assert np.array_equal(got, expect)


def test_memory_mapped_work_array_round_trip(tmp_path, monkeypatch):
    monkeypatch.setattr(em, "RAM_LIMIT_BYTES", 0)  # force the >50k-image path on tiny data
    images, labels = tiny(8)
    bank = ue.fit("em", FitData.from_arrays(images, labels), seed=0, **fast(max_rounds=1))
    d = bank.tensors["delta"]
    assert isinstance(d, np.memmap) or isinstance(d.base, np.memmap)
    bank.save(tmp_path / "em.arrow")
    back = NoiseBank.load(tmp_path / "em.arrow")
    assert np.array_equal(back.tensors["delta"], d) and back.keys.tolist() == bank.keys.tolist()


# ------------------------------------------------------------------ determinism, budget, errors
def test_same_seed_same_bank():
    images, labels = tiny(8)
    a = ue.fit("em", FitData.from_arrays(images, labels), seed=4, mode="class", **fast(max_rounds=2))
    b = ue.fit("em", FitData.from_arrays(images, labels), seed=4, mode="class", **fast(max_rounds=2))
    assert np.array_equal(a.tensors["delta"], b.tensors["delta"])


def test_time_budget_still_perturbs_every_sample_and_warns():
    images, labels = tiny(12)
    with pytest.warns(UserWarning, match=r"max_seconds=0\).*stop_error=0\.01"):
        bank = ue.fit("em", FitData.from_arrays(images, labels), seed=0, max_seconds=0, **fast(max_rounds=5))
    assert bank.info["stopped_by"] == "time" and bank.info["rounds"] == 1
    assert (np.abs(bank.tensors["delta"].astype(np.float32)).reshape(12, -1).max(1) > 0).all()


@pytest.mark.parametrize("budget, match", [({"max_rounds": 1}, "max_rounds=1"), ({"max_steps": 2}, "max_steps=2")])
def test_round_and_step_budgets_warn(budget, match):
    images, labels = tiny(8)
    with pytest.warns(UserWarning, match=match):
        bank = ue.fit("em", FitData.from_arrays(images, labels), seed=0, stop_error=0.0, **{**fast(), **budget})
    assert bank.info["stopped_by"] == {"max_rounds": "max_rounds", "max_steps": "steps"}[next(iter(budget))]


class _Brightness(torch.nn.Module):
    """A fixed classifier: class 0 when the mean red value is above 0.5 (the scale is ~frozen by lr)."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(1000.0))

    def forward(self, x):
        s = self.scale * (x[:, 0].mean((1, 2)) - 0.5)
        return torch.stack([s, -s], 1)


def test_stop_is_judged_on_a_full_pass_after_the_update():
    """Class-wise noise fixes every image but one, which no eps-bounded noise can fix. The error
    on the few batches just perturbed is often 0; on the full set it is 1/24, so the fit must not
    stop on the error criterion, and must say that its round budget stopped it."""
    n = 24
    labels = np.arange(n) % 2
    images = np.where(labels == 0, 126, 129)[:, None, None, None].repeat(8, 1).repeat(8, 2).repeat(3, 3)
    images = images.astype(np.uint8)
    images[0] = 60  # a class-0 image far below the threshold: unfixable within 8/255
    with pytest.warns(UserWarning, match="max_rounds=4"):
        bank = ue.fit("em", FitData.from_arrays(images, labels), seed=0, mode="class", surrogate=_Brightness(),
                      lr=1e-12, batch_size=4, class_batches=1, steps=5, step_size=4 / 255, train_steps=1,
                      max_rounds=4, stop_error=0.01)
    assert bank.info["stopped_by"] == "max_rounds"
    assert bank.info["train_error_history"] == [round(1 / n, 4)] * 4
    # and with a criterion the full set can meet, it stops on the error at once
    bank = ue.fit("em", FitData.from_arrays(images, labels), seed=0, mode="class", surrogate=_Brightness(),
                  lr=1e-12, batch_size=4, class_batches=1, steps=5, step_size=4 / 255, train_steps=1,
                  max_rounds=4, stop_error=0.05)
    assert bank.info["stopped_by"] == "error" and bank.info["rounds"] == 1


def test_resnet18_surrogate_by_name():
    images, labels = tiny(8)
    bank = ue.fit("em", FitData.from_arrays(images, labels), seed=0, mode="class", stop_error=0.9,
                  **fast(surrogate="resnet18", max_rounds=1, steps=1, train_steps=1))
    assert bank.info["surrogate"] == "resnet18" and bank.params["surrogate"] == "resnet18"


@pytest.mark.parametrize("bad, match", [
    ({"epsilon": 0}, "epsilon"), ({"epsilon": 0.5 / 255}, "one grey level"), ({"norm": "l2"}, "linf"),
    ({"mode": "pixel"}, "mode"), ({"steps": 0}, "steps"), ({"stepz": 3}, "unknown parameter"),
])
def test_bad_parameters(bad, match):
    images, labels = tiny(4)
    with pytest.raises(ValueError, match=match):
        ue.fit("em", FitData.from_arrays(images, labels), **bad)


def test_needs_labels():
    images, _ = tiny(4)
    with pytest.raises(ValueError, match="needs labels"):
        ue.fit("em", {"image": list(images)}, label_column=None)


@pytest.mark.parametrize("show", [True, False])
def test_progress_bar_with_eta_or_quiet(capsys, show):
    images, labels = tiny(8)
    ue.fit("em", FitData.from_arrays(images, labels), seed=0, progress=show, **fast(max_rounds=2))
    err = capsys.readouterr().err
    if show:
        assert "em rounds" in err and "/2 [" in err and "<" in err  # n/total [elapsed<remaining]
    else:
        assert "em rounds" not in err
