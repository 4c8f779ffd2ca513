import warnings

import numpy as np
import pytest
import torch

from uetransforms.models import clip
from uetransforms.models.assign import ClusterAssigner, embed_images, encoder_identity, normalise
from uetransforms.core.bank import BankError, NoiseBank


def _groups(n, size=16, seed=0):
    """Two visually distinct kinds of image: dark-red textures and bright-blue textures."""
    rng = np.random.default_rng(seed)
    red = rng.integers(0, 40, (n, 3, size, size)).astype(np.uint8)
    red[:, 0] += 150
    blue = rng.integers(200, 256, (n, 3, size, size)).astype(np.uint8)
    blue[:, 0] //= 4
    return red, blue


@pytest.fixture(scope="module")
def surrogate():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", clip.RandomInitWarning)
        return clip.load("uet-tiny-vit", None, init_seed=1)


def _bank(encoder, size=16):
    red, blue = _groups(6, size)
    f = normalise(embed_images(encoder, np.concatenate([red, blue]), device=torch.device("cpu")), "l2")
    centroids = torch.stack([f[:6].mean(0), f[6:].mean(0)]).numpy()
    delta = np.stack([np.full((3, size, size), 4 / 255, np.float32), np.full((3, size, size), -4 / 255, np.float32)])
    return NoiseBank(method="clusters", kind="additive", keying="cluster", keys=np.arange(2),
                     tensors={"delta": delta, "centroid": centroids}, params={"epsilon": 4 / 255},
                     info={"surrogate": encoder_identity(encoder), "feature_norm": "l2", "size_mismatch": "resize"})


def test_unseen_images_go_to_their_groups_centroid(surrogate):
    bank = _bank(surrogate)
    red, blue = _groups(4, seed=99)  # new images, never embedded before
    ids = ClusterAssigner(bank)(list(red) + list(blue))
    assert ids.dtype == np.int64
    assert ids.tolist() == [0] * 4 + [1] * 4


def test_images_of_another_size_and_mixed_sizes(surrogate):
    bank = _bank(surrogate)
    red, blue = _groups(2, size=24, seed=5)
    red16, _ = _groups(1, size=16, seed=6)
    ids = ClusterAssigner(bank)([blue[0], red16[0], red[1], blue[1]])
    assert ids.tolist() == [1, 0, 0, 1]
    assert ClusterAssigner(bank)([]).shape == (0,)


def test_assigner_rebuilds_surrogate_from_saved_bank(surrogate, tmp_path):
    bank = _bank(surrogate)
    bank.save(tmp_path / "c.arrow")
    loaded = NoiseBank.load(tmp_path / "c.arrow")
    red, blue = _groups(3, seed=7)
    imgs = list(red) + list(blue)
    assert np.array_equal(ClusterAssigner(str(tmp_path / "c.arrow"))(imgs), ClusterAssigner(bank)(imgs))
    assert np.array_equal(ClusterAssigner(loaded)(imgs), ClusterAssigner(bank)(imgs))


def test_protect_without_labels_assigns_clusters(surrogate):
    datasets = pytest.importorskip("datasets")
    import uetransforms as ue

    bank = _bank(surrogate)
    red, blue = _groups(2, seed=11)
    imgs = [im.transpose(1, 2, 0) for im in (red[0], blue[0], red[1], blue[1])]
    ds = datasets.Dataset.from_dict({"image": imgs}, features=datasets.Features({"image": datasets.Image()}))
    prot = ds.map(ue.Protect(bank, label_column=None), batched=True, batch_size=4)
    for src, out, sign in zip(imgs, prot["image"], [1, -1, 1, -1]):
        expect = np.clip(src.astype(int) + sign * 4, 0, 255)
        assert np.array_equal(np.asarray(out).astype(int), expect)


def test_custom_module_encoder_needs_the_module():
    enc = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    bank = _bank(enc)
    assert bank.info["surrogate"]["kind"] == "module"
    with pytest.raises(BankError, match="encoder="):
        ClusterAssigner(bank)
    red, blue = _groups(2, seed=3)
    assert ClusterAssigner(bank, encoder=enc)([red[0], blue[0]]).tolist() == [0, 1]
    wrong = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    with pytest.raises(BankError, match="centroids are 12-d"):
        ClusterAssigner(bank, encoder=wrong)([red[0]])


def test_non_cluster_bank_is_refused():
    bank = NoiseBank(method="random", kind="additive", keying="class", keys=[0, 1],
                     tensors={"delta": np.zeros((2, 3, 4, 4), np.float32)})
    with pytest.raises(BankError, match="cluster-keyed"):
        ClusterAssigner(bank)


# ------------------------------------------------------------------ label-free banks on every path (issue 25)
@pytest.fixture(scope="module", params=["kmeans", "head"])
def label_free(tmp_path_factory, request):
    """A cuda bank fitted without labels (keyed by 3 K-means clusters of a small-cnn encoder file, or
    by that encoder's own 10-class head), saved, and a dataset of 11 images (two colour groups plus
    noise) to protect with it."""
    datasets = pytest.importorskip("datasets")
    import uetransforms as ue
    from uetransforms.models.encoders import save_small_cnn
    from uetransforms.models.networks import SmallCNN

    torch.manual_seed(0)
    where = tmp_path_factory.mktemp("labelfree")
    save_small_cnn(SmallCNN(10, 3, width=8), where / "enc.safetensors")
    red, blue = _groups(4, seed=3)
    noise = np.random.default_rng(4).integers(0, 256, (3, 3, 16, 16), dtype=np.uint8)
    imgs = [im.transpose(1, 2, 0) for im in np.concatenate([red, blue, noise])]
    feats = datasets.Features({"image": datasets.Image(), "idx": datasets.Value("int64")})
    ds = datasets.Dataset.from_dict({"image": imgs, "idx": list(range(len(imgs)))}, features=feats)
    keying = {"n_clusters": 3} if request.param == "kmeans" else {"cluster_by": "head"}
    bank = ue.fit("cuda", ds, label_column=None, encoder=str(where / "enc.safetensors"), seed=5, **keying)
    assert ("head" in bank.tensors) == (request.param == "head")
    assert bank.params["kernel_size"] == 5  # cuda's label-free default: every path below runs 5 x 5 filters
    bank.save(where / "cuda-clusters.bank.arrow")
    bank = ue.NoiseBank.load(where / "cuda-clusters.bank.arrow")
    ref = [r["bytes"] for r in ds.map(ue.Protect(bank, label_column=None), batched=True, batch_size=4)
           .cast_column("image", datasets.Image(decode=False))["image"]]
    return ds, bank, ref


def _stored_bytes(ds):
    import datasets

    return [r["bytes"] for r in ds.cast_column("image", datasets.Image(decode=False))["image"]]


def test_label_free_bank_same_bytes_through_publish_and_publish_stream(label_free, tmp_path):
    import datasets
    import uetransforms as ue

    ds, bank, ref = label_free
    assert bank.keying == "cluster" and len(set(ref)) == len(ref)
    ue.publish(ds, bank, tmp_path / "pub", label_column=None, batch_size=5)
    assert _stored_bytes(datasets.load_dataset(str(tmp_path / "pub"), split="train")) == ref
    ue.publish_stream(ds.to_iterable_dataset(num_shards=2), bank, tmp_path / "stream", label_column=None,
                      batch_size=3)
    assert _stored_bytes(datasets.load_dataset(str(tmp_path / "stream"), split="train")) == ref


def test_label_free_bank_same_bytes_through_ray(label_free, tmp_path):
    ray = pytest.importorskip("ray")
    ue_ray = pytest.importorskip("uetransforms.integrations.ray")
    ds, bank, ref = label_free
    path = str(tmp_path / "src.parquet")
    ds.to_parquet(path)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        rows = ue_ray.protect(ray.data.read_parquet(path), bank, batch_size=3, label_column=None).take_all()
    finally:
        ray.shutdown()
    rows = sorted(rows, key=lambda r: int(r["idx"]))
    assert [r["image"]["bytes"] for r in rows] == ref


def test_publish_default_label_column_assigns_clusters_not_classes(label_free, tmp_path):
    """A dataset's "label" is its class: ue.publish / publish_stream left at their default must not
    read it as cluster ids (classes 0..2 would all be valid keys of this 3-cluster bank)."""
    import datasets
    import uetransforms as ue

    ds, bank, ref = label_free
    labelled = ds.add_column("label", [i % 3 for i in range(len(ds))])
    ue.publish(labelled, bank, tmp_path / "pub")
    assert _stored_bytes(datasets.load_dataset(str(tmp_path / "pub"), split="train")) == ref
    ue.publish_stream(labelled.to_iterable_dataset(), bank, tmp_path / "stream")
    assert _stored_bytes(datasets.load_dataset(str(tmp_path / "stream"), split="train")) == ref
