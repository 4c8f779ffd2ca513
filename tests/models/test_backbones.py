"""Backbone loading by spec, offline: local checkpoints made here, random models where only shapes matter."""

from __future__ import annotations

import pytest
import torch

from uetransforms.models import surrogates
from uetransforms.models.backbones import Backbone, BackboneError, load_backbone, parse_spec
from uetransforms.models.encoders import save_small_cnn
from uetransforms.models.networks import SmallCNN


def test_parse_spec_forms(tmp_path):
    f = tmp_path / "b.safetensors"
    f.write_bytes(b"x")
    assert parse_spec("tv:resnet18@IMAGENET1K_V1") == ("tv", "resnet18", "IMAGENET1K_V1")
    assert parse_spec("timm:resnet18.a1_in1k") == ("timm", "resnet18.a1_in1k", None)
    assert parse_spec("clip:RN50@openai") == ("clip", "RN50", "openai")
    assert parse_spec(f"small-cnn@{f}") == ("small-cnn", "small-cnn", str(f))
    assert parse_spec(str(f)) == ("small-cnn", "small-cnn", str(f))
    for bad in ("", "resnet18", "foo:bar", "tv:@x", "tv:resnet18@", "small-cnn"):
        with pytest.raises(BackboneError):
            parse_spec(bad)


def test_random_weights_refused_unless_asked():
    with pytest.raises(ValueError, match="RANDOM"):
        load_backbone("tv:resnet18@random")
    bb = load_backbone("tv:resnet18@random", allow_random=True, image_size=32)
    assert bb.feature_dim == 512 and bb(torch.rand(2, 3, 32, 32)).shape == (2, 512)
    assert bb.identity()["random_init"] is True


def test_torchvision_named_weights_read_from_the_cache(tmp_path, monkeypatch):
    """The real name -> file path: torchvision looks for IMAGENET1K_V1's file in $TORCH_HOME; a state dict
    placed there under that name is what gets loaded (no network)."""
    from torchvision import models as tvm

    w = tvm.ResNet18_Weights.IMAGENET1K_V1
    torch.manual_seed(5)
    ref = tvm.resnet18()
    ckpt = tmp_path / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.save(ref.state_dict(), ckpt / w.url.rsplit("/", 1)[1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    bb = load_backbone("tv:resnet18@IMAGENET1K_V1", image_size=32)
    assert bb.identity()["weights"] == "IMAGENET1K_V1"
    assert torch.equal(bb.net.conv1.weight, ref.conv1.weight)
    with pytest.raises(BackboneError, match="has no weights 'NOPE'"):
        load_backbone("tv:resnet18@NOPE")
    with pytest.raises(BackboneError, match="unknown torchvision model"):
        load_backbone("tv:resnet181@IMAGENET1K_V1")


def test_torchvision_local_checkpoint_and_wrong_arch(tmp_path):
    from torchvision import models as tvm

    torch.manual_seed(1)
    net = tvm.resnet18()
    path = tmp_path / "r18.pth"
    torch.save(net.state_dict(), path)
    bb = load_backbone(f"tv:resnet18@{path}", image_size=32)
    assert torch.equal(bb.net.conv1.weight, net.conv1.weight) and bb.identity()["checkpoint"] == "r18.pth"
    with pytest.raises(BackboneError, match="not a torchvision resnet34 state dict"):
        load_backbone(f"tv:resnet34@{path}")
    with pytest.raises(BackboneError, match="does not exist"):
        load_backbone(f"tv:resnet18@{tmp_path / 'missing.pth'}")


def test_small_cnn_file_frozen_and_trainable(tmp_path):
    torch.manual_seed(0)
    net = SmallCNN(10, 3, width=8)
    path = tmp_path / "cnn.safetensors"
    save_small_cnn(net, path)
    frozen = load_backbone(str(path))
    assert frozen.feature_dim == 64 and not any(p.requires_grad for p in frozen.parameters())
    x = torch.rand(4, 3, 32, 32)
    ref = net.eval().features((x - 0.5) * 4.0)
    assert torch.allclose(frozen.eval()(x), ref, atol=1e-5)
    frozen.train()
    assert not frozen.net.training  # a frozen backbone keeps its BatchNorm statistics
    tuned = load_backbone(frozen, trainable=True)
    assert all(p.requires_grad for p in tuned.parameters())
    tuned.train()
    tuned(x).sum().backward()
    assert frozen.net[0].weight.grad is None  # the copy, not the caller's backbone, trained


def test_timm_local_file(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(2)
    net = timm.create_model("test_resnet", pretrained=False)
    path = tmp_path / "test_resnet.pth"
    torch.save(net.state_dict(), path)
    bb = load_backbone(f"timm:test_resnet@{path}", image_size=32)
    first = next(p for n, p in bb.net.named_parameters() if n.endswith("weight"))
    ref = next(p for n, p in net.named_parameters() if n.endswith("weight"))
    assert torch.equal(first, ref) and bb(torch.rand(2, 3, 32, 32)).shape == (2, bb.feature_dim)


def test_clip_tower_random_tiny():
    bb = load_backbone("clip:uet-tiny-rn@random", allow_random=True)
    assert bb(torch.rand(2, 3, 32, 32)).shape == (2, bb.feature_dim)


def test_surrogate_through_a_frozen_backbone(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "cnn.safetensors"
    save_small_cnn(SmallCNN(10, 3, width=8), path)
    s = surrogates.build(f"backbone:small-cnn@{path}", num_classes=3, image_shape=(3, 16, 16))
    assert isinstance(s.backbone, Backbone) and s.frozen_backbone
    assert s(torch.rand(2, 3, 16, 16)).shape == (2, 3)
    assert [p.shape for p in s.trainable()] == [torch.Size([3, 64]), torch.Size([3])]


def test_torchvision_checkpoint_with_any_head_reads_224_px_unresized(tmp_path):
    """A ResNet-18 pretrained here on another task (a 7-way head, safetensors, as
    benchmarks/build_backbone.py --arch resnet18 writes it) loads as 'tv:resnet18@FILE': the head is
    dropped, the trunk is the file's, and 224-px inputs reach the ImageNet stem at 224 px."""
    from safetensors.torch import save_file
    from torchvision import models as tvm

    torch.manual_seed(3)
    net = tvm.resnet18(num_classes=7).eval()
    path = tmp_path / "r18-7way.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path), metadata={"trained_on": "7 shapes"})
    bb = load_backbone(f"tv:resnet18@{path}").eval()
    assert bb.image_size == 224 and bb.identity()["image_size"] == 224 and bb.feature_dim == 512
    assert bb.identity()["trained_on"] == "7 shapes"
    assert torch.equal(bb.net.layer4[1].conv2.weight, net.layer4[1].conv2.weight)
    x = torch.rand(2, 3, 224, 224)
    assert bb.preprocess(x).shape == (2, 3, 224, 224)
    mean = torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)
    net.fc = torch.nn.Identity()
    with torch.no_grad():
        assert torch.allclose(bb(x), net((x - mean) / std), atol=1e-5)
    # 32-px inputs are upscaled to the weights' 224, not read at 32
    assert bb.preprocess(torch.rand(1, 3, 32, 32)).shape == (1, 3, 224, 224)


def test_small_cnn_read_at_another_side_says_so(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "cnn.safetensors"
    save_small_cnn(SmallCNN(10, 3, width=8), path)
    bb = load_backbone(str(path), image_size=224)
    x = torch.rand(1, 3, 224, 224)
    assert bb.preprocess(x).shape == (1, 3, 224, 224) and bb(x).shape == (1, 64)
    assert bb.identity()["image_size"] == 224 and bb.identity()["trained_image_size"] == 32
    assert "trained_image_size" not in load_backbone(str(path)).identity()


def test_a_random_weights_control_file_says_so_in_its_identity(tmp_path):
    """A control written on purpose with random weights (metadata random_init='true', as
    benchmarks/run_cls04.sh writes RAND04) is a random backbone in every report, so the measured
    facts list it as a control and never quote it; a trained file says nothing of the kind."""
    from safetensors.torch import save_file
    from torchvision import models as tvm

    torch.manual_seed(0)
    small = tmp_path / "rand.safetensors"
    save_small_cnn(SmallCNN(5, 3, width=8), small, extra={"trained_on": "nothing: random init", "random_init": "true"})
    trained = tmp_path / "trained.safetensors"
    save_small_cnn(SmallCNN(5, 3, width=8), trained, extra={"trained_on": "rows 1-2"})
    assert load_backbone(f"small-cnn@{small}").identity()["random_init"] is True
    assert "random_init" not in load_backbone(f"small-cnn@{trained}").identity()
    tv = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in tvm.resnet18(num_classes=5).state_dict().items()}, str(tv),
              metadata={"trained_on": "nothing", "random_init": "true"})
    assert load_backbone(f"tv:resnet18@{tv}").identity()["random_init"] is True
