"""Surrogates: building each kind, training steps, budgets and the batch source."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch
from torch import nn

from uetransforms.models import surrogates as sg
from uetransforms.core.data import FitData

HAS_CLIP = os.path.exists(os.path.join(os.path.dirname(sg.__file__), "clip.py")) and importlib.util.find_spec("open_clip")


@pytest.mark.parametrize("name", ["cnn-tiny", "cnn-small", "resnet18"])
def test_builtin_and_torchvision_shapes(name):
    s = sg.build(name, num_classes=4, image_shape=(3, 16, 16), seed=0)
    x = torch.rand(2, 3, 16, 16)
    s.eval()
    assert s(x).shape == (2, 4)
    f = s.features(x)
    assert f.ndim == 2 and f.shape[0] == 2
    assert torch.allclose(s.head(f), s(x), atol=1e-5)  # head(features) is the classifier
    assert s.name == name


def test_same_seed_same_weights():
    a = sg.build("cnn-tiny", num_classes=3, image_shape=(3, 8, 8), seed=5)
    b = sg.build("cnn-tiny", num_classes=3, image_shape=(3, 8, 8), seed=5)
    c = sg.build("cnn-tiny", num_classes=3, image_shape=(3, 8, 8), seed=6)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_cnn_small_surrogate_at_photo_size():
    # em / salm / tap fit through build("cnn-small") at the images' size: above 64 px its stem is strided
    # (networks.cnn_small_stem_stride), and features + head still make the classifier.
    s = sg.build("cnn-small", num_classes=3, image_shape=(3, 80, 72), seed=0)
    first = next(m for m in s.modules() if isinstance(m, nn.Conv2d))
    assert first.stride == (2, 2)  # 80 // 32
    x = torch.rand(2, 3, 80, 72)
    s.eval()
    assert s(x).shape == (2, 3) and torch.allclose(s.head(s.features(x)), s(x), atol=1e-5)


def test_grayscale_input():
    s = sg.build("cnn-small", num_classes=2, image_shape=(1, 8, 8))
    assert s(torch.rand(3, 1, 8, 8)).shape == (3, 2)


def test_user_module_is_copied_not_trained_in_place():
    user = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    before = [p.detach().clone() for p in user.parameters()]
    s = sg.build(user, num_classes=3, image_shape=(3, 8, 8))
    tr = sg.Trainer(s, lr=0.5)
    tr.step(torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0]))
    assert all(torch.equal(a, b) for a, b in zip(before, user.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(before, s.parameters()))
    assert s.name == "module:Sequential"


def test_user_module_with_wrong_output_is_refused():
    with pytest.raises(ValueError, match=r"logits \[B, 5\]"):
        sg.build(nn.Sequential(nn.Flatten(), nn.Linear(192, 3)), num_classes=5, image_shape=(3, 8, 8))


def test_unknown_name_is_refused():
    with pytest.raises(ValueError, match="unknown architecture"):
        sg.build("resnet-eighteen", num_classes=2, image_shape=(3, 8, 8))
    with pytest.raises(TypeError, match="surrogate must be"):
        sg.build(3, num_classes=2, image_shape=(3, 8, 8))  # type: ignore[arg-type]


def test_trainer_fits_a_fixed_batch():
    torch.manual_seed(0)
    s = sg.build("cnn-tiny", num_classes=2, image_shape=(3, 8, 8), seed=0)
    tr = sg.Trainer(s, lr=0.05)
    x, y = torch.rand(16, 3, 8, 8), torch.tensor([0, 1] * 8)
    first, _ = tr.step(x, y)
    for _ in range(30):
        last, acc = tr.step(x, y)
    assert last < first and acc == 1.0 and tr.steps == 31


def test_budget_steps_and_time():
    b = sg.Budget(max_steps=2)
    assert b.exhausted() is None
    b.tick(2)
    assert b.exhausted() == "steps"
    assert sg.Budget(max_seconds=0).exhausted() == "time"
    assert sg.Budget().exhausted() is None


def _data(n=10, hw=8):
    rng = np.random.default_rng(0)
    return FitData.from_arrays(rng.integers(0, 256, (n, hw, hw, 3), dtype=np.uint8), labels=rng.integers(0, 3, n))


def test_image_source_streams_the_same_batches_as_resident():
    data = _data()
    res = sg.ImageSource(data, torch.device("cpu"))
    stream = sg.ImageSource(data, torch.device("cpu"), max_resident_bytes=0)
    assert res.resident and not stream.resident
    a = list(res.batches(4))
    b = list(stream.batches(4))
    assert [r.tolist() for r, _ in a] == [r.tolist() for r, _ in b]
    for (_, xa), (_, xb) in zip(a, b):
        assert torch.equal(xa, xb) and xa.dtype == torch.float32 and xa.max() <= 1


@pytest.mark.parametrize("resident", [True, False])
def test_shuffled_pass_covers_every_row_once_with_its_own_pixels(resident):
    data = _data(11)
    src = sg.ImageSource(data, torch.device("cpu"), max_resident_bytes=2**40 if resident else 0)
    seen = []
    for rows, x in src.batches(4, shuffle=True, rng=np.random.default_rng(1)):
        ref = torch.from_numpy(data.images()[rows]).float() / 255
        assert torch.equal(x, ref)
        assert torch.equal(src.labels(rows), torch.from_numpy(data.labels[rows]))
        seen.extend(rows.tolist())
    assert sorted(seen) == list(range(11))


@pytest.mark.skipif(not HAS_CLIP, reason="uetransforms/clip.py or open_clip not available")
@pytest.mark.filterwarnings("ignore:.*RANDOM weights")  # offline: the random-init tiny CLIP is expected
def test_clip_surrogate_is_frozen_with_a_trainable_head():
    s = sg.build("clip:uet-tiny-vit", num_classes=3, image_shape=(3, 32, 32), seed=0)
    assert s.name == "clip:uet-tiny-vit" and s.frozen_backbone
    trainable = s.trainable()
    assert trainable and all(any(p is q for q in s.head.parameters()) for p in trainable)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    s(x).sum().backward()  # gradients reach the pixels through the frozen encoder
    assert x.grad is not None and x.grad.abs().sum() > 0
    frozen = [p.detach().clone() for p in s.backbone.parameters()]
    sg.Trainer(s, lr=0.01).step(torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]))
    assert all(torch.equal(a, b) for a, b in zip(frozen, s.backbone.parameters()))
