import math

import numpy as np
import pytest
import torch

from uetransforms.evaluation import quality


def _batch(seed=0, shape=(4, 3, 16, 16)):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(30, 220, shape, generator=g, dtype=torch.uint8)


def test_identical_images():
    x = _batch()
    assert quality.linf(x, x).tolist() == [0.0] * 4
    assert quality.l2(x, x).tolist() == [0.0] * 4
    assert torch.isinf(quality.psnr(x, x)).all()
    assert torch.allclose(quality.ssim(x, x), torch.ones(4, dtype=torch.float64))


def test_constant_shift_has_known_values():
    x = _batch()
    y = x + 8  # no overflow: x <= 219
    n = 3 * 16 * 16
    assert quality.linf(x, y).tolist() == [8.0] * 4
    assert torch.allclose(quality.l2(x, y), torch.full((4,), 8 / 255 * math.sqrt(n), dtype=torch.float64))
    assert torch.allclose(quality.psnr(x, y), torch.full((4,), 20 * math.log10(255 / 8), dtype=torch.float64))


def test_ssim_orders_by_noise_and_is_symmetric():
    x = _batch(shape=(2, 3, 32, 32))
    g = torch.Generator().manual_seed(1)
    small = (x.int() + torch.randint(-4, 5, x.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    large = (x.int() + torch.randint(-60, 61, x.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    s_small, s_large = quality.ssim(x, small), quality.ssim(x, large)
    assert (s_small > s_large).all() and (s_small < 1).all() and (s_large > -1).all()
    assert torch.allclose(quality.ssim(small, x), s_small)


def test_ssim_on_small_images_and_too_small_ones():
    x = _batch(shape=(2, 1, 8, 8))
    assert quality.ssim(x, x).shape == (2,)
    with pytest.raises(ValueError, match="at least 3x3"):
        quality.ssim(x[..., :2, :2], x[..., :2, :2])


@pytest.mark.parametrize("shape", [(2, 3, 20, 17), (1, 1, 9, 12)])
def test_ssim_blur_is_the_2d_gaussian_window(shape):
    # ssim blurs with banded matrix products (speed); the definition is a 2-D Gaussian window over
    # valid positions, computed here directly with a grouped convolution
    import torch.nn.functional as F

    x, y = _batch(2, shape), _batch(3, shape)
    a, b = x.double(), y.double()
    c = shape[1]
    size = min(11, *shape[-2:])
    size -= 1 - size % 2
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * (1.5 * size / 11) ** 2))
    g = g / g.sum()
    k = (g[:, None] * g[None, :]).expand(c, 1, size, size)

    def blur(t):
        return F.conv2d(t, k, groups=c)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
    ref = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    assert torch.allclose(quality.ssim(x, y), ref.flatten(1).mean(1), rtol=0, atol=1e-12)


def test_batched_equals_per_image_and_numpy_input():
    x, y = _batch(0), _batch(1)
    whole = quality.ssim(x, y)
    single = torch.cat([quality.ssim(x[i : i + 1], y[i : i + 1]) for i in range(4)])
    assert torch.allclose(whole, single)
    assert torch.allclose(quality.psnr(x.numpy(), y.numpy()), quality.psnr(x, y))


def test_bad_input_is_named():
    x = _batch()
    with pytest.raises(ValueError, match="differ in shape"):
        quality.linf(x, x[:2])
    with pytest.raises(ValueError, match="uint8"):
        quality.l2(x.float(), x.float())


def test_summary_keys_and_values():
    x = _batch()
    y = x.clone()
    y[:2] += 4  # half the images change
    s = quality.summary(x, y, batch_size=3)
    assert s["n"] == 4 and s["linf_max"] == 4.0 and s["linf_mean"] == 2.0
    assert s["changed_fraction"] == 0.5
    assert s["psnr_mean"] == pytest.approx(20 * math.log10(255 / 4))  # unchanged images are left out
    assert 0.5 < s["ssim_mean"] <= 1.0
    assert math.isinf(quality.summary(x, x)["psnr_mean"])
    with pytest.raises(ValueError):
        quality.summary(np.zeros((0, 3, 8, 8), np.uint8), np.zeros((0, 3, 8, 8), np.uint8))


def test_summary_batches_large_images_by_pixels(monkeypatch):
    """Large images go through summary a few at a time (1024 images at 224 px would need tens of GB in SSIM);
    the numbers are those of one batch, for a tensor and for a list of mixed sizes."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (5, 3, 40, 40), generator=g, dtype=torch.uint8)
    y = (x.int() + torch.randint(-9, 10, x.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    whole = quality.summary(x, y)
    seen: list[int] = []
    real = quality.ssim
    monkeypatch.setattr(quality, "ssim", lambda a, b: (seen.append(len(a)), real(a, b))[1])
    monkeypatch.setattr(quality, "_BATCH_PIXELS", 2 * 40 * 40)
    assert quality.summary(x, y) == pytest.approx(whole)
    assert seen == [2, 2, 1]
    seen.clear()
    small = torch.randint(0, 256, (3, 3, 20, 20), generator=g, dtype=torch.uint8)
    mixed = quality.summary([*x, *small], [*y, *small])
    assert seen == [2, 2, 1, 3] and mixed["n"] == 8


_DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", _DEVICES)
def test_summary_on_a_device_gives_the_same_numbers(device, monkeypatch):
    """``device=`` measures each batch there (``ue.evaluate`` passes its own): the same metrics as in
    place, and every batch really reaches that device."""
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (6, 3, 24, 24), generator=g, dtype=torch.uint8)
    y = (x.int() + torch.randint(-7, 8, x.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    seen: list[str] = []
    real = quality.ssim
    monkeypatch.setattr(quality, "ssim", lambda a, b: (seen.append(a.device.type), real(a, b))[1])
    on = quality.summary(x, y, batch_size=4, device=device)
    assert seen == [device, device]
    seen.clear()
    assert on == pytest.approx(quality.summary(x, y, batch_size=4), rel=1e-5)
