import pytest
import torch
from torch import nn

from uetransforms.models.networks import SmallCNN, available_models, build_model, cnn_small_stem_stride


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("channels, size", [(3, 32), (1, 8), (3, 7)])
def test_cnn_small_shapes(channels, size):
    model = build_model("cnn-small", num_classes=5, in_channels=channels, image_size=size)
    assert model(torch.rand(2, channels, size, size)).shape == (2, 5)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000  # "small": trains in minutes on CPU


def _first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def test_cnn_small_stem_strided_above_64_px_only():
    assert [cnn_small_stem_stride(s) for s in (8, 32, 64, 65, 95, 96, 224, 1024)] == [1, 1, 1, 2, 2, 3, 3, 3]
    small, at64, photo = (build_model("cnn-small", num_classes=10, image_size=s) for s in (32, 64, 96))
    assert _first_conv(small).stride == (1, 1) and _first_conv(at64).stride == (1, 1)
    assert _first_conv(photo).stride == (3, 3)
    # the 96-px first block sees 32x32, the layout of the 32-px network
    x = torch.rand(2, 3, 96, 96)
    assert photo[1].features[0](x).shape == (2, 32, 32, 32)
    assert small[1].features[0](x).shape == (2, 32, 96, 96)
    assert photo(x).shape == (2, 10)
    assert _first_conv(build_model("cnn-small", num_classes=3, image_size=80)).stride == (2, 2)
    for odd in (65, 97):  # odd sides: padding 1 and ceil pooling keep every border pixel's block
        assert build_model("cnn-small", num_classes=3, image_size=odd)(torch.rand(1, 3, odd, odd)).shape == (1, 3)


def test_cnn_small_32px_network_unchanged():
    # The stride has no weights: the parameter count of the network before the rule (391,466, read
    # off main), and at 32 px the very same function as SmallCNN's constructor default (every 32-px
    # number in RESULTS.md was measured with that network).
    torch.manual_seed(0)
    built = build_model("cnn-small", num_classes=10, image_size=32)
    torch.manual_seed(0)
    plain = SmallCNN(10, 3)
    assert sum(p.numel() for p in built.parameters()) == sum(p.numel() for p in plain.parameters()) == 391_466
    photo = build_model("cnn-small", num_classes=10, image_size=96)
    assert sum(p.numel() for p in photo.parameters()) == 391_466
    x = torch.rand(2, 3, 32, 32)
    built.eval(), plain.eval()
    with torch.no_grad():
        assert torch.equal(built[1](x), plain(x))
    with pytest.raises(ValueError, match="stem_stride"):
        SmallCNN(10, 3, stem_stride=0)


def test_resnet18_cifar_stem():
    model = build_model("resnet18", num_classes=10, in_channels=3, image_size=32)
    net = model[1]
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, nn.Identity)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    big = build_model("resnet18", num_classes=10, image_size=224)[1]
    assert big.conv1.kernel_size == (7, 7) and isinstance(big.maxpool, nn.MaxPool2d)
    assert build_model("resnet18", num_classes=3, in_channels=1, image_size=16)(torch.rand(2, 1, 16, 16)).shape == (2, 3)


def test_other_torchvision_model_one_channel():
    model = build_model("mobilenet_v3_small", num_classes=4, in_channels=1, image_size=32)
    model.eval()
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 4)


def test_inputs_are_normalised_inside():
    model = build_model("cnn-small", num_classes=2)
    assert torch.allclose(model[0](torch.full((1, 3, 2, 2), 0.5)), torch.zeros(1, 3, 2, 2))


def test_unknown_and_listing():
    with pytest.raises(ValueError, match="resnet18"):
        build_model("resnet81", num_classes=10)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("cnn-small", num_classes=0)
    names = available_models()
    assert names[0] == "cnn-small" and "resnet18" in names
