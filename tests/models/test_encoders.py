import numpy as np
import pytest
import torch

from uetransforms.models import encoders
from uetransforms.models.assign import ClusterAssigner
from uetransforms.core.bank import NoiseBank
from uetransforms.models.networks import SmallCNN


@pytest.fixture(scope="module")
def resnet50_state():
    """A random-init ResNet-50 state dict standing in for ImageNet weights (no network here)."""
    from torchvision import models as tvm

    torch.manual_seed(0)
    return tvm.resnet50(weights=None).state_dict()


def test_resnet50_weights_by_name_through_torchvisions_cache(resnet50_state, tmp_path, monkeypatch):
    # The real path, torchvision.models.resnet50(weights="IMAGENET1K_V2"), reads torchvision's cache
    # first; a file placed there under the weights' own file name is what a download would leave.
    from torchvision import models as tvm

    url = tvm.ResNet50_Weights.IMAGENET1K_V2.url
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(resnet50_state, cache / url.rsplit("/", 1)[1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    enc = encoders.load("resnet50")
    assert enc.identity()["weights"] == "IMAGENET1K_V2" and not encoders.is_random(enc.identity())
    x = torch.rand(2, 3, 32, 32)
    f = enc(x)
    assert f.shape == (2, 2048)  # the penultimate layer: the input of fc
    # the same weights from a local checkpoint file give the same features
    torch.save(resnet50_state, tmp_path / "r50.pth")
    local = encoders.resnet50(checkpoint=tmp_path / "r50.pth")
    assert torch.allclose(local(x), f, atol=1e-5)
    assert local.identity()["checkpoint_sha256"] == encoders.file_sha256(tmp_path / "r50.pth")
    rebuilt = encoders.from_identity(enc.identity())
    assert torch.allclose(rebuilt(x), f, atol=1e-5)
    # gradients reach the pixels (methods optimise through the frozen surrogate)
    x.requires_grad_(True)
    enc(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in enc.parameters())


def test_missing_weights_name_the_offline_fix(tmp_path):
    with pytest.raises(encoders.SurrogateWeightsError, match="does not exist"):
        encoders.load("resnet50", checkpoint=tmp_path / "nope.pth")
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(encoders.SurrogateWeightsError, match="could not read"):
        encoders.load("resnet50", checkpoint=tmp_path / "bad.pth")


def test_random_init_is_an_explicit_opt_in():
    with pytest.raises(encoders.RandomSurrogateError, match="allow_random_surrogate=True"):
        encoders.load("resnet18", weights=None)
    with pytest.raises(encoders.RandomSurrogateError):
        encoders.load("clip:uet-tiny-vit", weights=None)
    enc = encoders.load("resnet18", weights=None, allow_random_surrogate=True, image_size=32)
    assert encoders.is_random(enc.identity()) and enc(torch.rand(1, 3, 16, 16)).shape == (1, 512)
    clip_enc = encoders.load("clip:uet-tiny-vit", weights=None, allow_random_surrogate=True)
    assert encoders.is_random(clip_enc.identity())


def test_small_cnn_file_round_trip_and_bank_rebuild(tmp_path):
    torch.manual_seed(1)
    net = SmallCNN(10, 3, width=8)
    path = tmp_path / "s.safetensors"
    sha = encoders.save_small_cnn(net, path, extra={"trained_on": "nothing (test)"})
    enc = encoders.load("small-cnn", checkpoint=path)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        expect = net.eval().features((x - 0.5) * 4)
    assert torch.allclose(enc(x), expect, atol=1e-6)
    ident = enc.identity()
    assert ident["checkpoint_sha256"] == sha and ident["trained_on"] == "nothing (test)"
    # a cluster bank that records this encoder rebuilds it by itself
    f = enc(x).detach()
    bank = NoiseBank(method="clusters", kind="additive", keying="cluster", keys=np.arange(3),
                     tensors={"delta": np.zeros((3, 3, 32, 32), np.float32), "centroid": f.numpy()},
                     params={"epsilon": 0.0}, info={"surrogate": ident, "feature_norm": "none"})
    imgs = list((x * 255).round().to(torch.uint8).numpy())
    assert ClusterAssigner(bank)(imgs).tolist() == [0, 1, 2]
    moved = tmp_path / "moved.safetensors"
    path.rename(moved)
    with pytest.raises(encoders.SurrogateWeightsError, match="checkpoint=<its new path>"):
        ClusterAssigner(bank)
    assert ClusterAssigner(bank, checkpoint=moved)(imgs).tolist() == [0, 1, 2]
    other = tmp_path / "other.safetensors"
    encoders.save_small_cnn(SmallCNN(10, 3, width=8), other)
    with pytest.raises(encoders.SurrogateWeightsError, match="sha256"):
        ClusterAssigner(bank, checkpoint=other)
    with pytest.raises(encoders.SurrogateWeightsError, match="build_surrogate"):
        encoders.load("small-cnn")


def test_small_cnn_file_keeps_the_stem_stride(tmp_path):
    # the stride has no weights: the file must say it, or a photo-size network loads as the 32-px one
    torch.manual_seed(2)
    net = SmallCNN(10, 3, width=8, stem_stride=2)
    path = tmp_path / "strided.safetensors"
    encoders.save_small_cnn(net, path)
    enc = encoders.load("small-cnn", checkpoint=path)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expect = net.eval().features((x - 0.5) * 4)
    assert torch.allclose(enc(x), expect, atol=1e-6)


def test_small_cnn_file_keeps_the_side_it_was_trained_at(tmp_path):
    # a 96-px network (strided stem) is read at 96 px: the encoder resizes every input to the recorded side
    torch.manual_seed(3)
    net = SmallCNN(10, 3, width=8, stem_stride=3)
    path = tmp_path / "photo.safetensors"
    encoders.save_small_cnn(net, path, image_size=96)
    enc = encoders.load("small-cnn", checkpoint=path)
    assert enc.image_size == 96
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        expect = net.eval().features((x - 0.5) * 4)
    assert torch.allclose(enc(x), expect, atol=1e-6)


@pytest.mark.parametrize("side", [0, -32, 32.0, True, "96"])
def test_save_small_cnn_refuses_a_side_that_is_not_a_positive_int(tmp_path, side):
    with pytest.raises(ValueError, match="image_size must be a positive int"):
        encoders.save_small_cnn(SmallCNN(10, 3, width=4), tmp_path / "x.safetensors", image_size=side)
