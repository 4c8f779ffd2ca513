import json
import warnings

import pytest
import torch

from uetransforms.models import clip


@pytest.fixture(scope="module")
def tiny():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", clip.RandomInitWarning)
        return clip.load("uet-tiny-vit", None, init_seed=3)


def test_random_init_warns_loudly():
    with pytest.warns(clip.RandomInitWarning, match="weak surrogate"):
        clip.load("uet-tiny-rn", None)


def test_encode_image_resizes_normalises_and_is_differentiable(tiny):
    x = torch.rand(2, 3, 20, 24, requires_grad=True)  # not the model's 32x32: resized inside
    f = tiny.encode_image(x)
    assert f.shape == (2, tiny.embed_dim)
    f.pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in tiny.parameters())  # the surrogate stays frozen
    # normalisation happens inside: a constant 0.5 image and its preprocessed form differ
    pre = tiny.preprocess(torch.full((1, 3, 32, 32), 0.5))
    assert torch.allclose(pre[0, :, 0, 0], (0.5 - tiny.mean.flatten()) / tiny.std.flatten())


def test_encode_text_shape_and_distinct(tiny):
    e = tiny.encode_text(["a photo of a cat.", "a photo of a dog."])
    assert e.shape == (2, tiny.embed_dim)
    assert not torch.allclose(e[0], e[1])
    with pytest.raises(TypeError, match="list of strings"):
        tiny.encode_text("a photo of a cat.")


def test_same_init_seed_same_weights_and_global_rng_untouched(tiny):
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", clip.RandomInitWarning)
        again = clip.load("uet-tiny-vit", None, init_seed=3)
        other = clip.load("uet-tiny-vit", None, init_seed=4)
    assert torch.equal(torch.rand(3), before)  # building the model did not consume the caller's RNG
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(tiny.encode_image(x), again.encode_image(x))
    assert not torch.allclose(tiny.encode_image(x), other.encode_image(x))


def test_identity_is_json_and_rebuilds_the_same_model(tiny):
    ident = tiny.identity()
    assert json.loads(json.dumps(ident)) == ident
    assert ident["model"] == "uet-tiny-vit" and ident["pretrained"] is None and ident["init_seed"] == 3
    assert ident["image_size"] == 32 and len(ident["mean"]) == 3 and len(ident["std"]) == 3
    rebuilt = clip.from_identity(ident)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(rebuilt.encode_image(x), tiny.encode_image(x))


def test_local_checkpoint_loads_offline_and_is_identified_by_sha256(tiny, tmp_path):
    path = tmp_path / "tiny-clip.pt"
    torch.save(tiny.model.state_dict(), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", clip.RandomInitWarning)  # a checkpoint is not random init
        loaded = clip.load("uet-tiny-vit", str(path))
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded.encode_image(x), tiny.encode_image(x))
    ident = loaded.identity()
    assert ident["pretrained"] == "tiny-clip.pt"
    assert ident["checkpoint_sha256"] == clip.file_sha256(path)
    assert torch.equal(clip.from_identity(ident).encode_image(x), tiny.encode_image(x))
    with pytest.raises(clip.ClipWeightsError, match="sha256"):
        clip.load("uet-tiny-vit", str(path), expect_sha256="0" * 64)
    moved = tmp_path / "moved.pt"
    path.rename(moved)
    with pytest.raises(clip.ClipWeightsError, match="checkpoint="):
        clip.from_identity(ident)
    assert torch.equal(clip.from_identity(ident, checkpoint=moved).encode_image(x), tiny.encode_image(x))


def test_bad_names_and_missing_weights_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="open_clip.list_models"):
        clip.load("no-such-model")
    with pytest.raises(clip.ClipWeightsError, match="does not exist"):
        clip.load("uet-tiny-vit", str(tmp_path / "missing.pt"))
    with pytest.raises(clip.ClipWeightsError, match="no published weights"):
        clip.load("uet-tiny-vit", "openai")


def test_unreachable_tag_names_the_offline_fix(monkeypatch):
    import open_clip

    def offline(*args, **kwargs):  # what open_clip raises when the Hub cannot be reached
        raise RuntimeError("Failed to download weights for tag 'openai'")

    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(clip.ClipWeightsError, match="local checkpoint path") as err:
        clip.load("RN50", "openai")
    assert "openai" in str(err.value) and "network" in str(err.value)
