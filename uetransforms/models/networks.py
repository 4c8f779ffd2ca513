"""Classifiers the evaluation harness trains from scratch: a fast small CNN and torchvision's zoo.

Every model takes float images in ``[0, 1]`` (``[B, C, H, W]``) and normalises them itself, so
attacks such as PGD adversarial training work in pixel space with an L-inf budget in 0..1 units.

* ``"cnn-small"`` (default): four 3x3 conv + BatchNorm + ReLU blocks and a linear head; about
  0.4 M parameters, trains on 10k CIFAR-sized images in a minute or two on two CPU cores. Above
  64 px its first convolution is strided (:func:`cnn_small_stem_stride`), the way photo-size
  networks shrink the image in their stem; up to 64 px it is the same network as before.
* any torchvision classification model by name (``"resnet18"``, ``"resnet50"``, ``"vgg11_bn"``,
  ``"mobilenet_v3_small"``...), randomly initialised (never downloaded weights). ``cifar_stem=True``
  (the default for images up to 64 px) gives ResNets the usual CIFAR stem: a 3x3 stride-1 first
  convolution and no max-pool, so 32x32 inputs are not shrunk to 8x8 before the first block.

Example:
    >>> import torch
    >>> model = build_model("cnn-small", num_classes=10, in_channels=3)
    >>> model(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import torch
from torch import nn

#: Names ``build_model`` knows besides torchvision's classification models.
CUSTOM_MODELS = ("cnn-small",)


class Normalise(nn.Module):
    """``(x - 0.5) / 0.25``: centred inputs for the network, pixel-space inputs for its callers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.5) * 4.0


class SmallCNN(nn.Module):
    """Four conv blocks (widths ``w, 2w, 4w, 8w``), a 2x2 max-pool after each of the first three,
    global average pooling and a linear head. Pooling early keeps a CPU epoch over 10k 32x32
    images in seconds; 8 epochs reach about 0.7 clean CIFAR-10 accuracy from 10k images.

    ``stem_stride`` is the stride of the first convolution (1: every pixel, the 32-px network;
    :func:`build_model` picks it from the image size with :func:`cnn_small_stem_stride`). It has no
    weights of its own, so a checkpoint does not say it: :func:`uetransforms.models.encoders.save_small_cnn`
    records it beside the weights.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 32, stem_stride: int = 1) -> None:
        super().__init__()
        if stem_stride < 1:
            raise ValueError(f"stem_stride must be at least 1, got {stem_stride}")
        self.stem_stride = stem_stride

        def block(cin: int, cout: int, pool: bool, stride: int = 1) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                                       nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))  # ceil: odd sizes (7x7) keep their border
            return layers

        w = width
        self.features = nn.Sequential(
            *block(in_channels, w, True, stem_stride), *block(w, 2 * w, True), *block(2 * w, 4 * w, True), *block(4 * w, 8 * w, False),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(8 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


#: Above this side ``cnn-small`` strides its first convolution (the ResNet rule's threshold too).
SMALL_IMAGE_MAX = 64


def cnn_small_stem_stride(image_size: int) -> int:
    """The first convolution's stride of ``build_model("cnn-small", image_size=...)``: 1 up to
    :data:`SMALL_IMAGE_MAX` px (the 32-px network, unchanged); above, ``image_size // 32`` capped
    at 3 (2 for 65-95 px, 3 from 96 px on).

    Why: ``cnn-small`` has no downsampling before its first 3x3 conv, so a 96-px image costs about 9x
    a 32-px one and, on a CPU budget, a from-scratch attacker learns almost nothing (clean 0.337 from
    2000 rows and 4 epochs; benchmarks/RESULTS.md, "Photo sizes and cuda's frame"). Photo-size
    networks downsample in their stem (ResNet: a stride-2 7x7 conv and a max-pool; ViT: 16-px
    patches). The stride keeps the first block at least 32 px wide, the side the network was built
    for, and never exceeds the 3x3 kernel, so no pixel is skipped. Measured at 96 px (CIFAR-10
    upscaled, 2000 rows, 4 epochs; RESULTS.md, "96 px from scratch at a learning budget (session 8)"):
    stride 3 reached clean 0.392 at about 25 s an epoch, stride 2 0.375 at about 31 s, stride 1
    0.337 at 150-290 s.
    """
    return 1 if image_size <= SMALL_IMAGE_MAX else min(3, image_size // 32)


def available_models() -> list[str]:
    """``"cnn-small"`` plus every torchvision classification model name."""
    from torchvision import models as tvm

    return list(CUSTOM_MODELS) + sorted(tvm.list_models(module=tvm))


def build_model(
    arch: str = "cnn-small",
    *,
    num_classes: int,
    in_channels: int = 3,
    image_size: int = 32,
    cifar_stem: bool | None = None,
) -> nn.Module:
    """A randomly initialised classifier ``arch`` for ``in_channels`` x ``image_size`` images.

    Args:
        arch: ``"cnn-small"`` or a torchvision model name (see :func:`available_models`).
        num_classes: size of the output layer.
        in_channels: 1 (grayscale) or 3; a torchvision model's first convolution is rebuilt for 1.
        image_size: the input side length (used to choose the stem: ``cnn-small`` strides its first
            convolution above 64 px, see :func:`cnn_small_stem_stride`).
        cifar_stem: ResNet-style models only: 3x3 stride-1 stem without max-pool. Default: on for
            images of at most 64 px, where the ImageNet stem would throw most pixels away.

    Raises:
        ValueError: unknown name, naming the close matches and where to find the full list.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if arch == "cnn-small":
        model: nn.Module = SmallCNN(num_classes, in_channels, stem_stride=cnn_small_stem_stride(image_size))
    else:
        model = _torchvision_model(arch, num_classes, in_channels, image_size, cifar_stem)
    return nn.Sequential(Normalise(), model)


def _torchvision_model(arch: str, num_classes: int, in_channels: int, image_size: int,
                       cifar_stem: bool | None) -> nn.Module:
    from torchvision import models as tvm

    names = tvm.list_models(module=tvm)
    if arch not in names:
        import difflib

        close = difflib.get_close_matches(arch, list(CUSTOM_MODELS) + names, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"unknown architecture {arch!r}.{hint} Use 'cnn-small' or a torchvision classification model "
            "name (uetransforms.models.networks.available_models() lists them)."
        )
    # weights=None: the harness trains from scratch, and this machine may be offline anyway.
    model = tvm.get_model(arch, weights=None, num_classes=num_classes)
    if cifar_stem is None:
        cifar_stem = image_size <= SMALL_IMAGE_MAX
    conv1 = getattr(model, "conv1", None)
    if isinstance(conv1, nn.Conv2d) and (cifar_stem or in_channels != conv1.in_channels):
        # ResNet / ResNeXt / Wide-ResNet: a small-image stem keeps the spatial resolution.
        k, s, p = ((3, 1, 1) if cifar_stem else (conv1.kernel_size, conv1.stride, conv1.padding))
        model.conv1 = nn.Conv2d(in_channels, conv1.out_channels, k, s, p, bias=conv1.bias is not None)
        if cifar_stem and isinstance(getattr(model, "maxpool", None), nn.MaxPool2d):
            model.maxpool = nn.Identity()
    elif in_channels != 3:
        _replace_first_conv(model, in_channels)
    return model


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    """Rebuild the first 3-channel convolution of any torchvision model for ``in_channels``."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d) and child.in_channels == 3:
                setattr(parent, name, nn.Conv2d(
                    in_channels, child.out_channels, child.kernel_size, child.stride, child.padding,
                    child.dilation, child.groups if child.groups == 1 else in_channels, child.bias is not None,
                ))
                return
    raise ValueError(f"cannot adapt {type(model).__name__} to {in_channels}-channel images; use 'cnn-small'")


__all__ = ["SmallCNN", "available_models", "build_model", "cnn_small_stem_stride"]
