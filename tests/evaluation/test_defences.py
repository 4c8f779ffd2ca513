import numpy as np
import pytest
import torch
from PIL import Image

import torch.nn.functional as F

from uetransforms.core.errors import DefenceError
from uetransforms.evaluation.defences import Defence, defences, known_specs, parse_defence, register
from uetransforms.evaluation.defences.bdr import bit_depth_reduce
from uetransforms.evaluation.defences.cutmix import cutmix
from uetransforms.evaluation.defences.cutout import cutout
from uetransforms.evaluation.defences.grayscale import to_grayscale
from uetransforms.evaluation.defences.jpeg import jpeg
from uetransforms.evaluation.defences.lowpass import lowpass_dct
from uetransforms.evaluation.defences.mixup import mixup
from uetransforms.evaluation.defences.orthogonal import fit_linear_directions, orthogonal_projection
from uetransforms.evaluation.defences.pgd import pgd
from uetransforms.evaluation.defences.sharpen import random_sharpen
from uetransforms.evaluation.defences.ueraser import plasma, ueraser_augment


def _images(n=4, c=3, size=16, seed=0):
    return torch.randint(0, 256, (n, c, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.mark.parametrize("spec, part, field, value", [
    ("grayscale", "grayscale", None, None),
    ("jpeg75", "jpeg", "quality", 75),
    ("jpeg:quality=10", "jpeg", "quality", 10),
    ("cutout8", "cutout", "size", 8),
    ("cutout", "cutout", "size", 0),
    ("mixup0.4", "mixup", "alpha", 0.4),
    ("cutmix", "cutmix", "alpha", 1.0),
    ("pgd", "pgd", "epsilon", 8 / 255),
    ("pgd:eps=4,steps=3,alpha=1", "pgd", "steps", 3),
    ("jpeg10", "jpeg", "quality", 10),
    ("jpeg33", "jpeg", "quality", 33),
    ("bdr", "bdr", "bits", 2),
    ("bdr:bits=3", "bdr", "bits", 3),
    ("bdr5", "bdr", "bits", 5),
    ("iss", "jpeg", "quality", 10),
    ("iss", "grayscale", None, None),
    ("ueraser", "ueraser", "repeats", 1),
    ("ueraser:repeats=5", "ueraser", "repeats", 5),
    ("orthogonal", "orthogonal", None, None),
    ("sharpen+lowpass", "sharpen", "center", 2.5),
    ("sharpen+lowpass", "lowpass", "keep", 30.0),
    ("rskff:center=3,keep=50", "lowpass", "keep", 50.0),
    ("pgd:norm=l2,eps=0.5", "pgd", "epsilon", 0.5),
    ("pgd:norm=l2", "pgd", "norm", "l2"),
])
def test_parse(spec, part, field, value):
    d = parse_defence(spec)
    assert part in d
    if field is not None:
        got = getattr(d[part], field)
        assert got == pytest.approx(value) if isinstance(value, float) else got == value


def test_parse_combines_and_rejects():
    d = parse_defence("grayscale+jpeg50+cutout")
    assert ([p.key for p in d], d["jpeg"].quality, d["cutout"].size, d.name) == (
        ["grayscale", "jpeg", "cutout"], 50, 0, "grayscale+jpeg50+cutout")
    assert parse_defence("pgd:eps=4,steps=3,alpha=1")["pgd"].step_size == pytest.approx(1 / 255)
    assert parse_defence(d) is d
    assert parse_defence("sharpen+lowpass").name == "sharpen+lowpass"
    assert "lowpass" not in parse_defence("sharpen")
    assert parse_defence("none").parts == [] and parse_defence("clean").name == "none"
    for bad, msg in [("bdr:bits=0", "1..7"), ("bdr9", "1..7"), ("ueraser:repeats=0", "repeats"),
                     ("lowpass:keep=0", "percentage"), ("pgd:norm=l1", "linf or l2"), ("iss+jpeg50", "twice"),
                     ("blur", "unknown defence"), ("jpeg0", "1..100"), ("jpeg101", "1..100"), ("pgd:steps=0", "step"),
                     ("jpeg50+jpeg75", "twice"), ("pgd:eps", "key=value"), ("", "non-empty"), ("mixup0", "positive"),
                     ("jpeg:qualty=5", "no parameter"), ("grayscale3", "takes no parameters")]:
        with pytest.raises(DefenceError, match=msg):
            parse_defence(bad)


def test_unknown_defence_lists_the_registry():
    with pytest.raises(DefenceError) as err:
        parse_defence("blur")
    for row in defences():
        assert row["spec"] in str(err.value)


def test_hooks_run_in_order_whatever_the_spec_order():
    assert [p.key for p in parse_defence("cutmix+orthogonal+jpeg50+cutout+grayscale")] == [
        "grayscale", "jpeg", "orthogonal", "cutout", "cutmix"]


# ---------------------------------------------------------------------------- adding a defence is one file
class _Invert(Defence):
    """A toy defence, as a user would write one: invert every training image, and count batches."""

    key, spec, paper, summary = "toyinvert", "toyinvert", "none (a test)", "invert the training images"
    stage = "augment"
    seen = 0

    def prepare_train(self, images, labels, *, generator):
        return 255 - images

    def generate_parameters(self, x, generator):
        return {"flip": bool(torch.rand(1, generator=generator) < 2)}

    def apply_transform(self, x, targets, params):
        type(self).seen += 1
        return (x.flip(-1) if params["flip"] else x), targets


def test_a_toy_defence_is_one_class_registered_and_runs_in_the_training_loop():
    import uetransforms as ue
    from uetransforms.evaluation import defences as registry

    register(_Invert)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register(type("Again", (Defence,), {"key": "toyinvert"}))
        assert "toyinvert" in [row["key"] for row in defences()] and "toyinvert" in known_specs()
        d = parse_defence("toyinvert+grayscale")
        x = _images()
        assert torch.equal(d.prepare_train(x), to_grayscale(255 - x))
        rng = np.random.default_rng(0)
        data = {"image": list(rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)), "label": [i % 2 for i in range(40)]}
        _Invert.seen = 0
        report = ue.evaluate(data, data, epochs=1, batch_size=8, defences=["toyinvert"], progress=False, baseline=False)
        assert _Invert.seen == 40 // 8  # the loop called its hooks once per batch, knowing nothing of it
        assert report.rows[0].defence == "toyinvert"
    finally:
        for name in ("toyinvert",):
            registry._REGISTERED.pop(name, None)
    with pytest.raises(DefenceError, match="unknown defence"):
        parse_defence("toyinvert")


def test_grayscale_matches_pil_luma_and_keeps_shape():
    x = _images()
    g = to_grayscale(x)
    assert g.shape == x.shape and g.dtype == torch.uint8
    assert (g[:, 0] == g[:, 1]).all() and (g[:, 1] == g[:, 2]).all()
    pil = np.asarray(Image.fromarray(x[0].permute(1, 2, 0).numpy()).convert("L")).astype(int)
    assert np.abs(g[0, 0].numpy().astype(int) - pil).max() <= 1
    one = _images(c=1)
    assert torch.equal(to_grayscale(one), one)


def test_jpeg_removes_fine_noise_at_low_quality():
    # A smooth ramp plus i.i.d. +-24 noise: JPEG at quality 10 quantises the noise away, 100 keeps most of it.
    ramp = torch.linspace(60, 190, 16).round().to(torch.uint8)
    base = ramp.view(1, 1, 1, 16).expand(2, 3, 16, 16).contiguous()
    noise = torch.randint(-24, 25, base.shape, generator=torch.Generator().manual_seed(0))
    noisy = (base.int() + noise).clamp(0, 255).to(torch.uint8)
    err = lambda t: (t.float() - base.float()).pow(2).mean().item()  # noqa: E731
    low, high = jpeg(noisy, 10), jpeg(noisy, 100)
    assert low.shape == noisy.shape and low.dtype == torch.uint8
    assert err(low) < 0.2 * err(noisy)
    assert err(high) > 0.3 * err(noisy)
    assert jpeg(_images(c=1), 75).shape == (4, 1, 16, 16)
    with pytest.raises(DefenceError):
        jpeg(noisy.float(), 75)


def test_cutout_zeroes_one_square_and_is_seeded():
    x = torch.ones(8, 3, 16, 16)
    out = cutout(x, 4, torch.Generator().manual_seed(0))
    zeros = (out[:, 0] == 0).flatten(1).sum(1)
    assert (zeros <= 16).all() and (zeros > 0).all()
    assert (out[:, 0] == out[:, 2]).all()  # the same square in every channel
    assert torch.equal(out, cutout(x, 4, torch.Generator().manual_seed(0)))


def test_mixup_and_cutmix_mix_images_and_labels_alike():
    # Image k is constant k, target is one-hot k: a mixed image's mean must equal its target's mean class.
    n = 6
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 8, 8).contiguous()
    t = torch.eye(n)
    for fn in (mixup, cutmix):
        xm, tm = fn(x, t, 1.0, torch.Generator().manual_seed(3))
        assert torch.allclose(tm.sum(1), torch.ones(n))
        assert torch.allclose(xm.mean((1, 2, 3)), (tm * torch.arange(n)).sum(1), atol=1e-5)
        assert not torch.equal(xm, x)


def test_pgd_stays_in_the_ball_and_raises_the_loss():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
    x = torch.rand(16, 3, 8, 8)
    y = model(x).argmax(1)  # labels the model gets right
    eps = 8 / 255
    adv = pgd(model, x, y, epsilon=eps, steps=5, generator=torch.Generator().manual_seed(0))
    assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    ce = torch.nn.functional.cross_entropy
    assert ce(model(adv), y) > ce(model(x), y)
    assert all(p.grad is None for p in model.parameters())  # the attack leaves parameter grads alone


def test_prepare_train_and_test():
    x = _images()
    d = parse_defence("grayscale+jpeg50")
    tr, te = d.prepare_train(x), d.prepare_test(x)
    assert torch.equal(te, to_grayscale(x))  # gray at test time too ...
    assert not torch.equal(tr, te)  # ... but JPEG only on the training images
    assert torch.equal(parse_defence("none").prepare_train(x), x)


# ---------------------------------------------------------------------------- the literature's defences
def test_bdr_has_exactly_two_to_the_bits_levels():
    ramp = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(2, 3, 16, 16).contiguous()
    for bits in (1, 2, 3, 5):
        out = bit_depth_reduce(ramp, bits)
        assert out.shape == ramp.shape and out.dtype == torch.uint8
        levels = torch.unique(out)
        assert len(levels) == 2 ** bits and levels[0] == 0 and levels[-1] == 255
        assert torch.equal(bit_depth_reduce(out, bits), out)  # idempotent: levels map to themselves
        assert (out.int() - ramp.int()).abs().max() <= 255 / (2 ** bits - 1) / 2 + 0.5  # nearest level
    assert torch.equal(parse_defence("bdr:bits=3").prepare_train(ramp), bit_depth_reduce(ramp, 3))
    with pytest.raises(DefenceError, match="uint8"):
        bit_depth_reduce(ramp.float(), 2)


def test_jpeg_quality_changes_the_bytes_and_the_error():
    x = _images(n=4, size=32, seed=1)
    q10, q90 = jpeg(x, 10), jpeg(x, 90)
    assert q10.dtype == torch.uint8 and q10.shape == x.shape
    assert not torch.equal(q10, q90)
    err = lambda t: (t.float() - x.float()).abs().mean().item()  # noqa: E731
    assert err(q10) > err(q90)
    assert torch.equal(parse_defence("jpeg10").prepare_train(x), q10)


def test_iss_is_gray_and_jpeg10_on_train_gray_on_test():
    x = _images(n=4, size=32, seed=2)
    d = parse_defence("iss")
    tr, te = d.prepare_train(x), d.prepare_test(x)
    assert tr.shape == x.shape and tr.dtype == torch.uint8
    assert torch.equal(tr[:, 0], tr[:, 1]) and torch.equal(tr[:, 1], tr[:, 2])  # exactly gray
    assert torch.equal(tr[:, :1], jpeg(to_grayscale(x)[:, :1].contiguous(), 10))  # JPEG-10 of the luma
    assert torch.equal(te, to_grayscale(x))  # test images gray, not compressed


def _planted(n=600, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 8, 8, generator=g) * 0.6 + 0.2
    pats = torch.sign(torch.randn(k, 3, 8, 8, generator=g)) * (16 / 255)
    y = torch.arange(n) % k
    x = ((base + pats[y]).clamp(0, 1) * 255).round().to(torch.uint8)
    return x, y, pats


def _class_separation(z, y, pats):
    """Mean gap between each class's own pattern coefficient and the average over classes."""
    u = pats.flatten(1) / pats.flatten(1).norm(dim=1, keepdim=True)
    m = torch.stack([z.flatten(1)[y == c].mean(0) for c in range(len(pats))]) @ u.t()
    return float((m.diag() - m.mean(0)).abs().mean())


def test_orthogonal_projection_removes_a_planted_class_wise_direction(one_thread):
    x, y, pats = _planted(n=300)
    w = fit_linear_directions(x, y, epochs=60, batch_size=32, generator=torch.Generator().manual_seed(1))
    cos = (w / w.norm(dim=1, keepdim=True) * (pats.flatten(1) / pats.flatten(1).norm(dim=1, keepdim=True))).sum(1)
    assert (cos > 0.6).all()  # the linear model finds the planted patterns
    proj = orthogonal_projection(x, y, epochs=60, batch_size=32, generator=torch.Generator().manual_seed(1))
    assert proj.shape == x.shape and proj.dtype == torch.float32
    before, after = _class_separation(x.float(), y, pats), _class_separation(proj, y, pats)
    assert after < 0.1 * before
    # The image content orthogonal to the directions survives.
    assert (proj - x.float()).flatten(1).norm(dim=1).mean() < 0.5 * x.float().flatten(1).norm(dim=1).mean()
    d = parse_defence("orthogonal")
    with pytest.raises(DefenceError, match="labels"):
        d.prepare_train(x)
    assert d.prepare_train(x[:40], y[:40]).dtype == torch.float32


def _blur(z, kernel):
    w = kernel.view(1, 1, 3, 3).repeat(3, 1, 1, 1)
    return F.conv2d(F.pad(z, (1, 1, 1, 1), mode="replicate"), w, groups=3).clamp(0, 1)


def test_sharpen_lowpass_shrinks_the_difference_between_class_blurs(one_thread):
    # CUDA's shortcut is the class-wise blur: the same image under two class kernels differs. After
    # sharpening + DCT low-pass the two versions (and the blurred vs clean image) are much closer.
    g = torch.Generator().manual_seed(0)
    imgs = F.avg_pool2d(torch.rand(32, 3, 32, 32, generator=g), 3, 1, 1)
    k1, k2 = torch.rand(3, 3, generator=g), torch.rand(3, 3, generator=g)
    b1, b2 = _blur(imgs, k1 / k1.sum()), _blur(imgs, k2 / k2.sum())

    def t(z):
        return lowpass_dct(random_sharpen(z, 2.5, torch.Generator().manual_seed(0), std=0.0), 30)

    rel = lambda a, b, ref: float((a - b).norm() / ref.norm())  # noqa: E731
    assert rel(t(b1), t(imgs), t(imgs)) < 0.5 * rel(b1, imgs, imgs)  # the blur is largely undone
    assert rel(t(b1), t(b2), t(imgs)) < 0.8 * rel(b1, b2, imgs)  # and the classes' blurs differ less
    d = parse_defence("sharpen+lowpass")
    out, _ = d.run_stage("pre_augment", imgs, imgs, torch.Generator().manual_seed(1))
    assert out.shape == imgs.shape and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, d.run_stage("pre_augment", imgs, imgs, torch.Generator().manual_seed(1))[0])  # seeded


def test_random_sharpen_draws_one_kernel_per_image():
    flat = torch.full((4, 3, 8, 8), 0.5)
    assert torch.allclose(random_sharpen(flat, 2.5, torch.Generator().manual_seed(0)), flat, atol=0.3)
    dot = torch.zeros(2, 3, 9, 9)
    dot[:, :, 4, 4] = 0.2
    out = random_sharpen(dot, 2.5, torch.Generator().manual_seed(0))
    assert out[0, 0, 4, 4] != out[1, 0, 4, 4]  # different centres drawn
    assert torch.equal(out[:, 0], out[:, 2])  # the same kernel on every channel
    assert out[0, 0, 0, 0] == 0 and out[0, 0, 3, 3] == 0  # corners of the cross stay 0


def test_lowpass_dct_keeps_low_and_removes_high_frequencies():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(lowpass_dct(x, 100), x, atol=1e-5)  # orthonormal DCT round trip
    checker = ((torch.arange(16).view(-1, 1) + torch.arange(16)) % 2).float().expand(1, 1, 16, 16) * 0.5 + 0.25
    out = lowpass_dct(checker, 30)
    # the checkerboard is (nearly) the highest DCT frequency: 95% of its contrast is gone
    assert out.std() < 0.05 * checker.std() and abs(out.mean() - 0.5) < 1e-3


def test_ueraser_augment_changes_images_within_range_and_is_seeded():
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    state = torch.get_rng_state()
    a = ueraser_augment(x, torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left as it was
    b = ueraser_augment(x, torch.Generator().manual_seed(5))
    assert a.shape == x.shape and a.dtype == torch.float32 and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    assert (a - x).abs().mean() > 0.05  # heavy: far beyond an 8/255 perturbation
    p = plasma((3, 16, 16), torch.tensor([0.1, 0.4, 0.7]), torch.Generator().manual_seed(0))
    assert p.shape == (3, 16, 16) and p.min() == 0 and p.max() == pytest.approx(1)
    # rougher maps carry more high-frequency energy
    hf = (p[:, :, 1:] - p[:, :, :-1]).abs().mean((1, 2))
    assert hf[2] > hf[0]


def test_pgd_l2_stays_in_the_ball_and_raises_the_loss(one_thread):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
    x = torch.rand(16, 3, 8, 8)
    y = model(x).argmax(1)
    adv = pgd(model, x, y, epsilon=0.5, steps=5, norm="l2", generator=torch.Generator().manual_seed(0))
    norms = (adv - x).flatten(1).norm(dim=1)
    assert (norms <= 0.5 + 1e-5).all() and norms.max() > 0.3
    assert adv.min() >= 0 and adv.max() <= 1
    ce = torch.nn.functional.cross_entropy
    assert ce(model(adv), y) > ce(model(x), y)
    d = parse_defence("pgd:norm=l2,eps=0.5,steps=2")
    assert (d["pgd"].norm, d["pgd"].epsilon, d["pgd"].steps) == ("l2", 0.5, 2)
    with pytest.raises(DefenceError, match="norm"):
        pgd(model, x, y, epsilon=0.5, steps=1, norm="l1")


def test_coin_resamples_at_the_drawn_offsets():
    from uetransforms.evaluation.defences.coin import coin_displacements, coin_resample

    x = torch.rand(2, 3, 6, 5, generator=torch.Generator().manual_seed(0))
    zero = torch.zeros(2, 6, 5)
    assert torch.allclose(coin_resample(x, zero, zero), x)  # no offset: the image itself
    one = torch.ones(2, 6, 5)
    # A whole-pixel offset reads the next row/column, wrapping at the border.
    assert torch.allclose(coin_resample(x, one, zero), torch.roll(x, -1, dims=2))
    assert torch.allclose(coin_resample(x, zero, -one), torch.roll(x, 1, dims=3))
    # Half a pixel: the mean of the two neighbours (bilinear), the same field in every channel.
    assert torch.allclose(coin_resample(x, zero, one / 2), (x + torch.roll(x, -1, dims=3)) / 2)
    dy, dx = coin_displacements(x, 2.0, torch.Generator().manual_seed(1))
    assert dy.shape == (2, 6, 5) and dy.abs().max() <= 2 and dx.abs().max() <= 2 and dy.std() > 0.5
    assert not torch.equal(dy[0], dy[1])  # one field per image
    again = coin_displacements(x, 2.0, torch.Generator().manual_seed(1))
    assert torch.equal(dy, again[0]) and torch.equal(dx, again[1])


def test_coin_in_the_pipeline_moves_pixels_and_keeps_range():
    d = parse_defence("coin")
    assert d["coin"].alpha == 2.0 and d["coin"].stage == "augment"
    assert parse_defence("coin:alpha=1.5")["coin"].alpha == 1.5
    x = _images(size=16).float() / 255
    t = torch.arange(4)
    out, targets = d.run_stage("augment", x, t, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.equal(targets, t)
    assert 0 <= out.min() and out.max() <= 1
    assert (out - x).abs().mean() > 0.05  # random pixels moved by up to 2 px change a lot
    same, _ = d.run_stage("augment", x, t, torch.Generator().manual_seed(0))
    assert torch.equal(out, same)
    for bad in ("coin:alpha=0", "coin:alpha=-1", "coin:beta=2"):
        with pytest.raises(DefenceError, match="alpha|beta"):
            parse_defence(bad)
