import pytest
import torch
from torch import nn

from uetransforms.models.networks import available_models, build_model


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("channels, size", [(3, 32), (1, 8), (3, 7)])
def test_cnn_small_shapes(channels, size):
    model = build_model("cnn-small", num_classes=5, in_channels=channels, image_size=size)
    assert model(torch.rand(2, channels, size, size)).shape == (2, 5)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000  # "small": trains in minutes on CPU


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
