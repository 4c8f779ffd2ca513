"""The class-subset options of the benchmark scripts (issue 22's "other data" backbone from a disjoint
label set): ``build_surrogate.py --classes`` trains on some CIFAR-10 classes only and records which,
``bench_protection.py --classes`` keeps the other classes' rows as a k-way task. Tiny synthetic
parquet files in CIFAR-10's layout, no network, a few seconds."""

from __future__ import annotations

import importlib
import io
import json
import os

import numpy as np
import pytest

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "benchmarks")
NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture
def scripts(monkeypatch):
    """The two scripts as modules (bench_protection imports build_surrogate from its own folder)."""
    monkeypatch.syspath_prepend(os.path.normpath(BENCH))
    return importlib.import_module("build_surrogate"), importlib.import_module("bench_protection")


def _png(colour: tuple[int, int, int], seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = np.clip(np.asarray(colour, np.int16) + rng.integers(-40, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _write(path: str, labels: list[int]) -> None:
    import datasets

    # one image per class (a class colour plus noise), reused: encoding 10k PNGs would cost seconds
    pngs = [_png((25 * c, 255 - 25 * c, (80 * c) % 256), c) for c in range(10)]
    feats = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)})
    ds = datasets.Dataset.from_dict({"img": [{"bytes": pngs[y], "path": None} for y in labels], "label": labels},
                                    features=feats)
    ds.to_parquet(path)


@pytest.fixture(scope="module")
def cifar_like(tmp_path_factory) -> str:
    """CIFAR-10's file layout, row i labelled i % 10: 10,060 train rows (build_surrogate only reads rows
    >= 10000) and 60 test rows."""
    d = tmp_path_factory.mktemp("cifar")
    _write(str(d / "train-00000-of-00001.parquet"), [i % 10 for i in range(10_060)])
    _write(str(d / "test-00000-of-00001.parquet"), [i % 10 for i in range(60)])
    return str(d)


# -- the spec and the row filter -------------------------------------------------------------------

def test_a_classes_spec_reads_ranges_and_lists_sorted(scripts):
    bs, _ = scripts
    assert bs.parse_classes("0-4") == [0, 1, 2, 3, 4]
    assert bs.parse_classes("9,5,7") == [5, 7, 9]
    assert bs.parse_classes("0-2, 8") == [0, 1, 2, 8]


@pytest.mark.parametrize("spec, words", [("4-0", "backwards"), ("cat", "class ids"), ("0-10", "0..9"),
                                         ("3,1-3", "twice"), ("5", "at least two"), ("", "class ids")])
def test_a_bad_classes_spec_says_what_is_wrong(scripts, spec, words):
    bs, _ = scripts
    with pytest.raises(SystemExit, match=words):
        bs.parse_classes(spec)


def test_class_rows_keeps_the_order_and_renumbers_in_class_order(scripts):
    bs, _ = scripts
    idx, labels = bs.class_rows(np.array([9, 0, 5, 3, 7, 9, 5]), [5, 7, 9], "rows")
    assert idx.tolist() == [0, 2, 4, 5, 6]
    assert labels.tolist() == [2, 0, 1, 2, 0]


def test_class_rows_refuses_a_class_with_no_row(scripts):
    bs, _ = scripts
    with pytest.raises(SystemExit, match=r"no row of class\(es\) \[8\]"):
        bs.class_rows(np.array([5, 7, 9]), [5, 8], "test rows [0, 3)")


# -- build_surrogate.py --classes -----------------------------------------------------------------

def test_build_surrogate_trains_on_the_named_classes_and_records_them(scripts, cifar_like, tmp_path, one_thread):
    bs, _ = scripts
    from uetransforms.models.backbones import load_backbone
    from uetransforms.models.encoders import file_metadata

    out = str(tmp_path / "cls.safetensors")
    assert bs.main(["--data", cifar_like, "--train-rows", "10000:10060", "--val-rows", "0:60", "--classes", "0-2",
                    "--width", "4", "--epochs", "1", "--batch-size", "16", "--out", out]) == 0
    meta = file_metadata(out)
    assert meta["num_classes"] == "3"  # the head is sized to the subset
    assert json.loads(meta["classes"]) == [0, 1, 2]
    assert "classes 0-2 only (airplane, automobile, bird)" in meta["trained_on"]
    assert "classes 0-2 only" in meta["validation"]
    assert json.loads(meta["recipe"])["classes"] == "0-2"
    bb = load_backbone(out)
    assert "classes 0-2 only" in bb.identity()["trained_on"]


def test_build_surrogate_without_classes_records_no_subset(scripts, cifar_like, tmp_path, one_thread):
    bs, _ = scripts
    from uetransforms.models.encoders import file_metadata

    out = str(tmp_path / "all.safetensors")
    bs.main(["--data", cifar_like, "--train-rows", "10000:10030", "--val-rows", "0:20", "--width", "4",
             "--epochs", "1", "--batch-size", "16", "--out", out])
    meta = file_metadata(out)
    assert meta["num_classes"] == "10" and "classes" not in meta and "only" not in meta["trained_on"]
    recipe = json.loads(meta["recipe"])
    assert "classes" not in recipe and "resolution" not in recipe  # the recipe of a 32-px ten-class file is as before
    assert meta["image_size"] == "32" and "stem_stride" not in meta


def test_build_surrogate_at_a_photo_size_trains_the_strided_network_and_records_the_side(scripts, cifar_like, tmp_path,
                                                                                        one_thread):
    # a 64-px surrogate read at 32 px would see half the detail it learned from: the file must say 64
    bs, _ = scripts
    import torch

    from uetransforms.models.backbones import load_backbone
    from uetransforms.models.encoders import file_metadata

    out = str(tmp_path / "r64.safetensors")
    assert bs.main(["--data", cifar_like, "--train-rows", "10000:10030", "--val-rows", "0:20", "--width", "4",
                    "--epochs", "1", "--batch-size", "16", "--resolution", "72", "--out", out]) == 0
    meta = file_metadata(out)
    assert meta["image_size"] == "72" and meta["stem_stride"] == "2"  # cnn_small_stem_stride(72)
    assert "upscaled to 72 px" in meta["trained_on"]
    assert json.loads(meta["recipe"])["resolution"] == 72
    bb = load_backbone(out)
    assert bb.image_size == 72
    seen = []
    bb.net.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape[-2:])))
    with torch.no_grad():
        bb(torch.rand(2, 3, 144, 144))
    assert seen == [(72, 72)]  # a bigger image is resized to the side the network learned at


def test_build_surrogate_refuses_a_side_below_the_rows(scripts, cifar_like, tmp_path):
    bs, _ = scripts
    with pytest.raises(SystemExit):
        bs.main(["--data", cifar_like, "--resolution", "16", "--out", str(tmp_path / "x.safetensors")])


def test_build_surrogate_refuses_validation_rows_without_a_named_class(scripts, cifar_like, tmp_path):
    bs, _ = scripts
    with pytest.raises(SystemExit, match=r"--val-rows 0:5 hold no row of class\(es\) \[7\]"):
        bs.main(["--data", cifar_like, "--train-rows", "10000:10060", "--val-rows", "0:5", "--classes", "0,7",
                 "--epochs", "1", "--out", str(tmp_path / "x.safetensors")])


# -- bench_protection.py --classes ----------------------------------------------------------------

def _bench(bp, cifar_like, out, *extra):
    return bp.main(["--data", cifar_like, "--threads", "1", "--train-size", "40", "--test-size", "30",
                    "--defences", "none", "--epochs", "1", "--batch-size", "16", "--out", out, *extra])


def test_bench_protection_keeps_the_named_classes_relabelled(scripts, cifar_like, tmp_path, one_thread):
    _, bp = scripts
    out = str(tmp_path / "r.json")
    assert _bench(bp, cifar_like, out, "--classes", "5-9", "--methods", "clean", "cuda") == 0
    doc = json.load(open(out))
    cfg = doc["config"]
    # rows [0, 40) have labels i % 10: 20 of classes 5-9; test rows [0, 30): 15
    assert cfg["classes"] == [5, 6, 7, 8, 9] and cfg["class_names"] == NAMES[5:]
    assert (cfg["train_rows_kept"], cfg["test_rows_kept"]) == (20, 15)
    assert [r["classes"] for r in doc["results"]] == [[5, 6, 7, 8, 9]] * 2
    cuda = doc["results"][1]
    assert cuda["quality"]["n"] == 20  # the protected rows are the kept ones


def test_select_classes_gives_the_methods_a_k_class_task(scripts, cifar_like):
    _, bp = scripts
    import datasets

    import uetransforms as ue

    train = datasets.Dataset.from_parquet(os.path.join(cifar_like, "train-00000-of-00001.parquet")).select(range(40))
    kept = bp.select_classes(train, "label", [6, 8], "rows")
    assert kept["label"] == [0, 1] * 4 and kept.features["label"].names == ["frog", "ship"]
    # a class-wise method keys one filter per kept class, not per CIFAR-10 class
    assert ue.fit("cuda", kept, image_column="img", label_column="label", seed=3).num_keys == 2


def test_bench_protection_without_classes_writes_no_subset_keys(scripts, cifar_like, tmp_path, one_thread):
    _, bp = scripts
    out = str(tmp_path / "r.json")
    _bench(bp, cifar_like, out, "--methods", "clean")
    doc = json.load(open(out))
    assert "classes" not in doc["config"] and "classes" not in doc["results"][0]
    assert doc["config"]["train_size"] == 40 and doc["results"][0]["quality"] is None


@pytest.mark.parametrize("extra, words", [
    (["--classes", "5-"], "class ids"),
    (["--classes", "5-9", "--test-size", "7"], r"test rows \[0, 7\) \(--test-size\) hold no row of class\(es\) \[7, 8, 9\]"),
    (["--classes", "5-9", "--label-map", "animal-vehicle"], "cannot be combined with --classes"),
])
def test_bench_protection_refuses_a_bad_subset(scripts, cifar_like, tmp_path, extra, words):
    _, bp = scripts
    args = ["--data", cifar_like, "--train-size", "40", "--test-size", "30", "--methods", "clean",
            "--defences", "none", "--epochs", "1", "--out", str(tmp_path / "r.json")]
    with pytest.raises(SystemExit, match=words):
        bp.main(args + extra)


def test_bench_protection_refuses_a_saved_bank_of_other_classes(scripts, cifar_like, tmp_path):
    _, bp = scripts
    import datasets

    import uetransforms as ue

    train = datasets.Dataset.from_parquet(os.path.join(cifar_like, "train-00000-of-00001.parquet")).select(range(40))
    path = str(tmp_path / "cuda.bank.arrow")
    ue.fit("cuda", train, image_column="img", label_column="label", seed=3).save(path)  # ten classes
    with pytest.raises(SystemExit, match="keyed by the classes"):
        _bench(bp, cifar_like, str(tmp_path / "r.json"), "--classes", "5-9", "--methods", "cuda",
               "--bank", f"cuda={path}")


# -- build_tv_surrogate.py --classes --upscale (RN04: a strided-stem ResNet-18 on classes 0-4) ----

@pytest.fixture
def tv_script(scripts):
    return importlib.import_module("build_tv_surrogate")


def test_upscale_rows_is_the_harness_resampler(scripts):
    bs, _ = scripts
    from PIL import Image

    x = np.random.default_rng(0).integers(0, 256, (2, 3, 8, 8), dtype=np.uint8)
    up = bs.upscale_rows(x, 20)
    assert up.shape == (2, 3, 20, 20) and up.dtype == np.uint8
    want = np.asarray(Image.fromarray(x[1].transpose(1, 2, 0)).resize((20, 20), Image.BICUBIC)).transpose(2, 0, 1)
    assert np.array_equal(up[1], want)
    assert bs.upscale_rows(x, 8) is x


def test_train_cifar_crops_upscaled_rows_at_their_own_side(scripts, one_thread):
    bs, _ = scripts
    import argparse

    import torch

    seen = set()

    class Probe(torch.nn.Module):  # a linear model over 16x16 pixels: a crop of another side would not fit
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3 * 16 * 16, 2)

        def forward(self, x):
            seen.add(tuple(x.shape[-2:]))
            return self.fc(x.flatten(1))

    net = Probe()
    x = np.random.default_rng(0).integers(0, 256, (12, 3, 16, 16), dtype=np.uint8)
    y = np.arange(12) % 2
    epochs = []
    args = argparse.Namespace(lr=0.01, epochs=2, batch_size=4, seed=0, val_rows="0:12")
    acc, _ = bs.train_cifar(net, net, x, y, x, y, args, on_epoch=lambda e, s: epochs.append((e, net.training)))
    assert seen == {(16, 16)} and 0.0 <= acc <= 1.0
    assert epochs == [(1, False), (2, False)]  # after every epoch, in eval mode


def test_build_tv_surrogate_trains_a_strided_resnet_on_the_classes_upscaled(tv_script, cifar_like, tmp_path, one_thread):
    from safetensors.torch import load_file

    from uetransforms.models.backbones import load_backbone
    from uetransforms.models.encoders import file_metadata

    out = str(tmp_path / "rn.safetensors")
    assert tv_script.main(["--data", cifar_like, "--train-rows", "10000:10060", "--val-rows", "0:60", "--classes", "0-4",
                           "--image-size", "48", "--upscale", "--epochs", "2", "--batch-size", "16",
                           "--out", out]) == 0
    assert load_file(out)["fc.weight"].shape == (5, 512)  # the head is sized to the subset
    meta = file_metadata(out)
    for words in ("CIFAR-10 train rows [10000, 10060)", "classes 0-4 only (airplane, automobile, bird, cat, deer)",
                  "upscaled to 48 px (Pillow bicubic)", "2 of 2 epochs"):
        assert words in meta["trained_on"]
    assert meta["epochs_done"] == "2" and json.loads(meta["classes"]) == [0, 1, 2, 3, 4]
    assert meta["image_size"] == "48" and json.loads(meta["recipe"])["upscale"] is True
    assert not os.path.exists(out + ".partial")
    bb = load_backbone("tv:resnet18@" + out, image_size=48)
    assert "classes 0-4 only" in bb.identity()["trained_on"]
    import torch

    conv1 = next(m for m in bb.net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv1.stride == (2, 2) and conv1.kernel_size == (7, 7)  # the ImageNet stem, strided


def test_build_tv_surrogate_leaves_the_last_finished_epoch_when_stopped(tv_script, cifar_like, tmp_path, monkeypatch,
                                                                       one_thread):
    from uetransforms.models.encoders import file_metadata

    real = tv_script.train_cifar

    class Stop(Exception):
        pass

    def stopped_after_one(*a, on_epoch, **k):
        def cb(epoch, seconds):
            on_epoch(epoch, seconds)
            raise Stop

        return real(*a, on_epoch=cb, **k)

    monkeypatch.setattr(tv_script, "train_cifar", stopped_after_one)
    out = str(tmp_path / "rn.safetensors")
    with pytest.raises(Stop):
        tv_script.main(["--data", cifar_like, "--train-rows", "10000:10060", "--val-rows", "0:60", "--classes", "0-4",
                        "--image-size", "40", "--upscale", "--epochs", "3", "--batch-size", "16", "--out", out])
    meta = file_metadata(out)
    assert meta["epochs_done"] == "1" and "1 of 3 epochs" in meta["trained_on"]
    assert not os.path.exists(out + ".partial")


def test_build_tv_surrogate_refuses_validation_rows_without_a_named_class(tv_script, cifar_like, tmp_path):
    with pytest.raises(SystemExit, match=r"--val-rows 0:5 hold no row of class\(es\) \[7\]"):
        tv_script.main(["--data", cifar_like, "--train-rows", "10000:10060", "--val-rows", "0:5", "--classes", "0,7",
                        "--epochs", "1", "--out", str(tmp_path / "x.safetensors")])


def test_fit_bank_on_a_class_subset_at_a_size_is_the_bank_bench_protection_accepts(scripts, cifar_like, tmp_path,
                                                                                     one_thread):
    # fit_bank.py --classes --resolution fits on the very rows bench_protection.py --classes --resolution keeps,
    # so one fit serves several attacks; the bank is keyed by the subset's classes, at the upscaled size.
    _, bp = scripts
    import uetransforms as ue

    fb = importlib.import_module("fit_bank")
    path = str(tmp_path / "cuda.bank.arrow")
    fb.main(["cuda", "--data", cifar_like, "--train-size", "40", "--classes", "5-9", "--resolution", "64",
             "--bank-seed", "4", "--out", path])
    bank = ue.NoiseBank.load(path)
    assert bank.info["class_names"] == NAMES[5:] and bank.image_shape == (3, 64, 64)
    assert bank.params["dilation"] == "auto"  # cuda's photo-size defaults at 64 px
    out = str(tmp_path / "r.json")
    _bench(bp, cifar_like, out, "--classes", "5-9", "--resolution", "64", "--methods", "cuda", "--bank", f"cuda={path}")
    with open(out) as f:
        row = json.load(f)["results"][0]
    assert row["method"] == "cuda" and row["resolution"] == 64 and row["fit_seconds"] == 0
