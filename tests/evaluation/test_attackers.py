"""The evaluation's attackers on tiny data: scratch, linear-probe and finetune from a local backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uetransforms.evaluation import attackers
from uetransforms.evaluation.harness import evaluate
from uetransforms.models.backbones import load_backbone


def _split(n: int, seed: int, size: int = 16) -> dict:
    """Two classes a pretrained backbone and a probe can tell apart: bright vs dark images."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    base = np.where(labels[:, None, None, None] == 1, 170, 70)
    imgs = np.clip(base + rng.integers(-40, 40, (n, size, size, 3)), 0, 255).astype(np.uint8)
    return {"image": list(imgs), "label": labels.tolist()}


def test_registry_lists_the_three():
    assert attackers.keys() == ["scratch", "linear-probe", "finetune"]
    with pytest.raises(ValueError, match="unknown attacker 'probe'; choose one of scratch, linear-probe, finetune"):
        attackers.get("probe")


def test_linear_probe_learns_and_records_its_setting(backbone_file):
    train, test = _split(64, 0), _split(32, 1)
    report = evaluate(train, test, clean_train=train, epochs=3, progress=False, attacker="linear-probe",
                      backbone=backbone_file)
    assert report.config["attacker"] == "linear-probe"
    assert report.config["backbone"]["kind"] == "small-cnn" and report.config["backbone"]["checkpoint_sha256"]
    assert report.config["arch"] is None and "features computed once" in report.config["augmentation"]
    row = report.rows[0]
    assert len(row.curve) == 3 and row.test_accuracy > 0.9  # brightness is linear in any CNN's pooled features


def test_linear_probe_learns_a_shortcut_and_fails_on_clean_data(backbone_file):
    """A probe on data where a pixel pattern, not the content, carries the label: clean test accuracy drops."""
    train, test = _split(64, 0), _split(64, 1)
    imgs = np.stack(train["image"]).astype(np.int16)
    labels = np.asarray(train["label"])
    # the shortcut: the label is written as a strong stripe; the brightness cue is flipped in training
    imgs = 240 - imgs
    imgs[labels == 1, :, :4] = 255
    imgs[labels == 0, :, :4] = 0
    prot = {"image": list(np.clip(imgs, 0, 255).astype(np.uint8)), "label": train["label"]}
    report = evaluate(prot, test, clean_train=train, epochs=4, progress=False, attacker="linear-probe",
                      backbone=backbone_file)
    assert report.accuracy("clean") > 0.9 and report.accuracy("protected") < 0.5


def test_finetune_trains_a_copy_of_the_backbone(backbone_file):
    bb = load_backbone(backbone_file)
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    train, test = _split(64, 0), _split(32, 1)
    report = evaluate(train, test, epochs=2, batch_size=16, progress=False, attacker="finetune", backbone=bb)
    assert report.config["lr"] == 0.01  # the fine-tuning default, not scratch's 0.1
    assert report.rows[0].test_accuracy > 0.9
    assert all(torch.equal(before[k], v) for k, v in bb.state_dict().items())  # the caller's weights untouched


def test_attacker_and_backbone_must_agree(backbone_file):
    train, test = _split(16, 0), _split(8, 1)
    with pytest.raises(ValueError, match="pass backbone=<spec>"):
        evaluate(train, test, epochs=1, progress=False, attacker="finetune")
    with pytest.raises(ValueError, match="takes no backbone"):
        evaluate(train, test, epochs=1, progress=False, backbone=backbone_file)
    with pytest.raises(ValueError, match="unknown attacker"):
        evaluate(train, test, epochs=1, progress=False, attacker="fine-tune", backbone=backbone_file)
    with pytest.raises(ValueError, match="cannot apply"):
        evaluate(train, test, epochs=1, progress=False, attacker="linear-probe", backbone=backbone_file,
                 defences=["cutout"])


def test_scratch_is_the_default_and_unchanged():
    train, test = _split(32, 0), _split(16, 1)
    report = evaluate(train, test, epochs=1, progress=False)
    assert report.config["attacker"] == "scratch" and report.config["lr"] == 0.1 and report.config["backbone"] is None


def test_cli_flags(backbone_file, tmp_path, capsys):
    import datasets

    from uetransforms.cli import main

    rng = np.random.default_rng(0)
    ds = datasets.Dataset.from_dict({"image": list(rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)),
                                     "label": [0, 1] * 4}, features=datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])}))
    path = str(tmp_path / "tiny.parquet")
    ds.to_parquet(path)
    base = ["evaluate", "--train", path, "--test", path, "--epochs", "1", "--quiet", "--out-dir", str(tmp_path / "r")]
    assert main([*base, "--attacker", "finetune"]) != 0
    assert "add --backbone" in capsys.readouterr().err
    assert main([*base, "--backbone", backbone_file]) != 0
    assert "--backbone is for --attacker linear-probe or finetune" in capsys.readouterr().err
    assert main([*base, "--attacker", "linear-probe", "--backbone", backbone_file]) == 0
    import json

    report = json.load(open(tmp_path / "r" / "report.json"))
    assert report["config"]["attacker"] == "linear-probe" and report["config"]["backbone"]["kind"] == "small-cnn"


def test_linear_probe_at_224_px_through_a_local_torchvision_checkpoint(tmp_path):
    """The 224-px probe of a ResNet-18 pretrained elsewhere (a local file, head of another task): the
    ImageNet stem sees the images at 224 px, not resized, and the report names the checkpoint and side."""
    from safetensors.torch import save_file
    from torchvision import models as tvm

    torch.manual_seed(0)
    path = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in tvm.resnet18(num_classes=5).state_dict().items()}, str(path))
    bb = load_backbone(f"tv:resnet18@{path}")
    seen: list[tuple[int, ...]] = []
    bb.net.conv1.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape[-2:])))
    train, test = _split(6, 0, size=224), _split(4, 1, size=224)
    report = evaluate(train, test, clean_train=train, epochs=2, progress=False, attacker="linear-probe", backbone=bb)
    assert report.data["image_shape"][-1] == 224
    assert seen and set(seen) == {(224, 224)}  # the attacker's copy keeps the hook: every batch entered at 224
    ident = report.config["backbone"]
    assert ident["kind"] == "torchvision" and ident["image_size"] == 224 and ident["checkpoint"] == "r18.safetensors"
    assert len(report.rows[0].curve) == 2
