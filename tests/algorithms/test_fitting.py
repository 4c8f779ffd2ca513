"""``ue.fit``'s front-door rules: the private key is fresh unless given, and recorded in the bank."""

from __future__ import annotations

import numpy as np
import pytest

import uetransforms as ue


def _ds(n: int = 4) -> dict:
    return {"image": list(np.full((n, 8, 8, 3), 128, np.uint8)), "label": [i % 2 for i in range(n)]}


def test_omitted_seed_is_a_fresh_secret_recorded_in_the_bank():
    a, b = ue.fit("random", _ds()), ue.fit("random", _ds())
    assert a.params["seed"] != b.params["seed"]  # two users who omit the seed get different keys
    assert not np.array_equal(a.tensors["delta"], b.tensors["delta"])
    # The recorded seed reproduces the bank: the bank is the backup of the key.
    again = ue.fit("random", _ds(), seed=a.params["seed"])
    np.testing.assert_array_equal(again.tensors["delta"], a.tensors["delta"])


def test_explicit_seed_is_deterministic():
    a, b = ue.fit("cuda", _ds(), seed=1234), ue.fit("cuda", _ds(), seed=1234)
    np.testing.assert_array_equal(a.tensors["weight"], b.tensors["weight"])


@pytest.mark.parametrize("bad", [-1, 1.5, "7", True])
def test_bad_seed_is_refused(bad):
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        ue.fit("random", _ds(), seed=bad)


# ------------------------------------------------------------------ label-free keying (issue 25)
def _groups(n: int = 8, size: int = 16, seed: int = 0) -> np.ndarray:
    """Two kinds of image (dark red, bright blue textures), ``n`` of each, uint8 [2n, H, W, 3]."""
    rng = np.random.default_rng(seed)
    red = rng.integers(0, 40, (n, size, size, 3)).astype(np.uint8)
    red[..., 0] += 150
    blue = rng.integers(200, 256, (n, size, size, 3)).astype(np.uint8)
    blue[..., 0] //= 4
    return np.concatenate([red, blue])


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    """A small-cnn encoder file (random weights, rebuildable from the file alone, as a user's would be)."""
    import torch

    from uetransforms.models.encoders import save_small_cnn
    from uetransforms.models.networks import SmallCNN

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("enc") / "enc.safetensors"
    save_small_cnn(SmallCNN(10, 3, width=8), path)
    return str(path)


def _image_ds(images):
    datasets = pytest.importorskip("datasets")
    return datasets.Dataset.from_dict({"image": list(images)}, features=datasets.Features({"image": datasets.Image()}))


@pytest.mark.parametrize("method", ["cuda", "random", "ops"])
def test_class_keyed_method_fits_without_labels_keyed_by_clusters(method, encoder_file):
    import torch

    from uetransforms.models.assign import fit_clusters
    from uetransforms.models.encoders import encoder_file as load_file

    imgs = _groups()
    ds = _image_ds(imgs)
    bank = ue.fit(method, ds, label_column=None, encoder=encoder_file, n_clusters=3, seed=7)
    assert bank.keying == "cluster" and bank.num_keys == 3 and bank.method == method
    assert bank.tensors["centroid"].shape[0] == 3
    assert bank.info["surrogate"]["kind"] == "small-cnn" and bank.info["surrogate"]["checkpoint_sha256"]
    assert sum(bank.info["cluster_sizes"]) == len(imgs) and bank.params["n_clusters"] == 3
    # Protect without labels assigns each training image the cluster fitting gave it.
    enc = load_file(encoder_file)
    chw = imgs.transpose(0, 3, 1, 2).copy()
    fitted = fit_clusters(enc, chw, 3, seed=7, feature_norm="l2", device=torch.device("cpu")).labels.numpy()
    datasets = pytest.importorskip("datasets")
    with_ids = datasets.Dataset.from_dict({"image": list(imgs), "cluster": fitted.tolist()},
                                          features=datasets.Features({"image": datasets.Image(),
                                                                      "cluster": datasets.Value("int64")}))
    by_fit = with_ids.map(ue.Protect(bank, label_column="cluster"), batched=True, batch_size=5)
    assigned = ds.map(ue.Protect(bank, label_column=None), batched=True, batch_size=3)
    assert [np.asarray(a).tobytes() for a in assigned["image"]] == [np.asarray(a).tobytes() for a in by_fit["image"]]
    assert any(not np.array_equal(np.asarray(a), b) for a, b in zip(assigned["image"], imgs))


def test_label_free_keying_is_deterministic_and_saved_banks_assign_alike(encoder_file, tmp_path):
    ds = _image_ds(_groups())
    a = ue.fit("cuda", ds, label_column=None, encoder=encoder_file, n_clusters=2, seed=3)
    b = ue.fit("cuda", ds, label_column=None, encoder=encoder_file, n_clusters=2, seed=3)
    assert a.sha256 == b.sha256
    a.save(tmp_path / "a.bank.arrow")
    loaded = ue.NoiseBank.load(tmp_path / "a.bank.arrow")
    out1 = ds.map(ue.Protect(a, label_column=None), batched=True)["image"]
    out2 = ds.map(ue.Protect(loaded, label_column=None), batched=True)["image"]
    assert [np.asarray(x).tobytes() for x in out1] == [np.asarray(x).tobytes() for x in out2]


def test_cuda_without_labels_takes_its_label_free_kernel_size(encoder_file):
    """Keyed by clusters, cuda's filters are 5 x 5 unless the caller says otherwise (RESULTS.md, "Label-free
    protection, session 8"); with labels it keeps the paper's 3 x 3. The bank records the size used."""
    ds = _image_ds(_groups())
    labelled = ue.fit("cuda", _ds(), seed=3)
    free = ue.fit("cuda", ds, label_column=None, encoder=encoder_file, n_clusters=2, seed=3)
    mine = ue.fit("cuda", ds, label_column=None, encoder=encoder_file, n_clusters=2, seed=3, kernel_size=3)
    assert labelled.params["kernel_size"] == 3 and labelled.tensors["weight"].shape[-2:] == (3, 3)
    assert free.params["kernel_size"] == 5 and free.tensors["weight"].shape == (2, 3, 5, 5)
    assert mine.params["kernel_size"] == 3 and mine.tensors["weight"].shape == (2, 3, 3, 3)
    # the bank says how it was fitted (what the card and the benchmarks key their quotes on)
    assert free.fitted_without_labels and mine.fitted_without_labels and not labelled.fitted_without_labels
    # the same clusters either way: only the filters differ
    assert free.info["cluster_sizes"] == mine.info["cluster_sizes"]
    assert np.array_equal(free.tensors["centroid"], mine.tensors["centroid"])


def test_cuda_without_labels_on_photos_keeps_the_photo_filters(encoder_file):
    """On 64-px images the photo-size defaults (7 x 7, reflect, taps spaced by the size) come before the
    label-free kernel_size=5; what the caller passes still wins."""
    ds = _image_ds(_groups(size=64))
    free = ue.fit("cuda", ds, label_column=None, encoder=encoder_file, n_clusters=2, seed=3)
    assert (free.params["kernel_size"], free.params["padding"], free.params["dilation"]) == (7, "reflect", "auto")
    assert free.keying == "cluster" and free.info["size_defaults"]["values"]["kernel_size"] == 7
    mine = ue.fit("cuda", ds, label_column=None, encoder=encoder_file, n_clusters=2, seed=3, kernel_size=5)
    assert (mine.params["kernel_size"], mine.params["padding"]) == (5, "reflect")


def test_em_class_wise_without_labels(encoder_file):
    ds = _image_ds(_groups(4))
    bank = ue.fit("em", ds, label_column=None, encoder=encoder_file, n_clusters=2, seed=1, mode="class",
                  surrogate="cnn-tiny", max_rounds=1, class_batches=1, steps=1)
    assert bank.keying == "cluster" and bank.tensors["delta"].shape[0] == 2 and "centroid" in bank.tensors


def test_a_module_encoder_works_and_protect_needs_it_back():
    import torch

    enc = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    ds = _image_ds(_groups())
    bank = ue.fit("cuda", ds, label_column=None, encoder=enc, n_clusters=2, seed=1)
    assert bank.info["surrogate"]["kind"] == "module"
    # colour means split the red and the blue images
    assert sorted(bank.info["cluster_sizes"]) == [8, 8]
    out = ds.map(ue.Protect(bank, label_column=None, encoder=enc), batched=True)
    assert len(out) == 16


def test_head_keys_are_the_encoders_own_predictions(encoder_file):
    """cluster_by='head': each image's key is the class the encoder file's classifier predicts, at fit
    and at apply time (K = its 10 classes, whatever the number of images)."""
    import torch
    from safetensors.torch import load_file

    from uetransforms.models.encoders import encoder_file as load_encoder
    from uetransforms.models.networks import SmallCNN

    imgs = _groups(3)
    ds = _image_ds(imgs)
    bank = ue.fit("cuda", ds, label_column=None, encoder=encoder_file, cluster_by="head", seed=2)
    assert bank.keying == "cluster" and bank.num_keys == 10 and bank.params["n_clusters"] == 10
    assert "centroid" not in bank.tensors and bank.tensors["head"].shape == (10, 65)
    assert bank.info["cluster_by"] == "head" and bank.info["feature_norm"] == "none"
    # the whole classifier, run independently of the keying code, predicts the same classes
    net = SmallCNN(10, 3, width=8)
    net.load_state_dict(load_file(encoder_file))
    enc = load_encoder(encoder_file)
    x = torch.from_numpy(imgs.transpose(0, 3, 1, 2).copy()).float().div(255)
    with torch.no_grad():
        pred = net.eval()(enc.preprocess(x)).argmax(1).numpy()
    assert bank.info["cluster_sizes"] == np.bincount(pred, minlength=10).tolist()
    from uetransforms.models.assign import ClusterAssigner

    assert ClusterAssigner(bank)(list(imgs.transpose(0, 3, 1, 2))).tolist() == pred.tolist()
    # Protect without labels applies the predicted class's noise
    datasets = pytest.importorskip("datasets")
    keyed = datasets.Dataset.from_dict({"image": list(imgs), "k": pred.tolist()},
                                       features=datasets.Features({"image": datasets.Image(),
                                                                   "k": datasets.Value("int64")}))
    by_pred = keyed.map(ue.Protect(bank, label_column="k"), batched=True)
    assigned = ds.map(ue.Protect(bank, label_column=None), batched=True, batch_size=4)
    assert [np.asarray(a).tobytes() for a in assigned["image"]] == [np.asarray(a).tobytes() for a in by_pred["image"]]


def test_head_keying_errors(encoder_file):
    import torch

    ds = _image_ds(_groups(2))
    with pytest.raises(ue.ParameterError, match="cluster_by='centroids' is not valid"):
        ue.fit("cuda", ds, label_column=None, encoder=encoder_file, cluster_by="centroids")
    with pytest.raises(ue.ParameterError, match="n_clusters=3 but cluster_by='head' keys by the encoder's 10 classes"):
        ue.fit("cuda", ds, label_column=None, encoder=encoder_file, cluster_by="head", n_clusters=3)
    module = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    with pytest.raises(ValueError, match="has none: pass such a file as encoder=, or use cluster_by='kmeans'"):
        ue.fit("cuda", ds, label_column=None, encoder=module, cluster_by="head")


def test_label_free_keying_errors(encoder_file):
    ds = _image_ds(_groups(2))
    with pytest.raises(ValueError, match=r"label_column=None plus encoder="):
        ue.fit("cuda", ds, label_column=None)
    with pytest.raises(ue.ParameterError, match=r"n_clusters=5 .*between 2 and the number of images \(4\)"):
        ue.fit("cuda", ds, label_column=None, encoder=encoder_file, n_clusters=5)
    with pytest.raises(ue.ParameterError, match="n_clusters=1"):
        ue.fit("cuda", ds, label_column=None, encoder=encoder_file, n_clusters=1)
    with pytest.raises(ue.ParameterError, match="feature_norm"):
        ue.fit("cuda", ds, label_column=None, encoder=encoder_file, n_clusters=2, feature_norm="l1")
    with pytest.raises(ue.ParameterError, match="blur_parameter"):  # the method's own check, before embedding
        ue.fit("cuda", ds, label_column=None, encoder="/no/such/encoder.safetensors", n_clusters=2,
               blur_parameter=-1)
    with pytest.raises(ValueError, match="label_column=None as well"):
        ue.fit("cuda", _ds(), encoder=encoder_file)
    with pytest.raises(ValueError, match="keyed by sample and needs labels"):
        ue.fit("bayes", ds, label_column=None, encoder=encoder_file)
