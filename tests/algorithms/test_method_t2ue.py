import numpy as np
import pytest
import torch

import uetransforms as ue
from uetransforms.models import clip
from uetransforms.core.data import DataError
from uetransforms.models.encoders import RandomSurrogateError
from uetransforms.algorithms import t2ue

datasets = pytest.importorskip("datasets")
TINY = {"surrogate": "clip:uet-tiny-vit", "weights": None, "allow_random_surrogate": True}
SMALL = {"channels": 16, "z_dim": 8, "cond_dim": 16}  # a tiny generator: behaviour, not the paper's capacity
NAMES = ["cat", "dog", "ship"]


def _ds(n=12, size=16, captions=False):
    rng = np.random.default_rng(0)
    d = {"image": list(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)), "label": [i % 3 for i in range(n)]}
    feats = {"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)}
    if captions:
        d["caption"] = [f"a {NAMES[i % 3]} number {i // 3}" for i in range(n)]
        d["id"] = [f"s{i}" for i in range(n)]
        feats.update(caption=datasets.Value("string"), id=datasets.Value("string"))
    return datasets.Dataset.from_dict(d, features=datasets.Features(feats))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    path = tmp_path_factory.mktemp("t2ue") / "g.safetensors"
    bank = ue.fit("t2ue", _ds(), seed=7, epochs=1.5, batch_size=6, generator_path=str(path), **SMALL, **TINY)
    return bank, path


def test_class_wise_bank_layout_and_budget(fitted):
    bank, _ = fitted
    assert (bank.method, bank.kind, bank.keying) == ("t2ue", "additive", "class")
    assert bank.keys.tolist() == [0, 1, 2]
    assert bank.tensors["delta"].shape == (3, 3, 16, 16)
    eps = bank.params["epsilon"]
    assert eps == pytest.approx(8 / 255)
    assert np.abs(bank.tensors["delta"]).max() <= eps + 1e-7
    assert bank.info["prompts"] == [f"a photo of a {n}." for n in NAMES]
    assert bank.info["template"] == "a photo of a {}."
    assert bank.params["seed"] == 7 and "seed" not in bank.info  # the z-seed stays with the secret params
    assert bank.info["generator_file"]["sha256"] == clip.file_sha256(fitted[1])
    assert bank.info["variant"] == "protector-data" and bank.info["random_surrogate"] is True
    assert bank.params["iterations"] == 3  # 1.5 epochs of 12 images, batch 6


def test_different_texts_give_different_noise(fitted):
    _, path = fitted
    d = t2ue.noise_from_text(path, ["a photo of a cat.", "a photo of a dog.", "a photo of a cat."], [5, 5, 6])
    assert not np.allclose(d[0], d[1])  # other text, same seed
    assert not np.allclose(d[0], d[2])  # same text, other seed
    assert np.abs(d).max() <= 8 / 255 + 1e-7


def test_same_text_and_seed_same_noise_whatever_the_batch(fitted):
    _, path = fitted
    alone = t2ue.noise_from_text(path, ["a photo of a dog."], [11])
    in_batch = t2ue.noise_from_text(path, ["a photo of a cat.", "a photo of a dog.", "a red ship"], [3, 11, 4])
    assert np.allclose(alone[0], in_batch[1], atol=1e-6)
    assert np.array_equal(alone, t2ue.noise_from_text(path, ["a photo of a dog."], [11]))


def test_text_only_bank_reproduces_the_fitted_bank(fitted):
    bank, path = fitted
    again = t2ue.text_bank(path, bank.info["prompts"], seed=7)
    assert again.keying == "class" and again.info["from_text_only"]
    assert np.allclose(again.tensors["delta"], bank.tensors["delta"], atol=1e-6)
    other_seed = t2ue.text_bank(path, bank.info["prompts"], seed=8)
    assert not np.allclose(other_seed.tensors["delta"], bank.tensors["delta"])


def test_generator_conditioning_directly():
    torch.manual_seed(0)
    g = t2ue.TextNoiseGenerator(16, z_dim=8, channels=16, cond_dim=8, out_size=(12, 12)).eval()
    for p in g.parameters():  # move off the identity init so the text reaches every layer
        torch.nn.init.normal_(p, std=0.3)
    e = torch.randn(2, 16)
    z = torch.randn(1, 8).expand(2, 8)
    y = g(e, z)
    assert y.shape == (2, 3, 12, 12) and y.abs().max() <= 1
    assert not torch.allclose(y[0], y[1])
    assert torch.equal(g(e[:1], z[:1]), g(e[:1], z[:1]))


def test_sample_wise_from_captions(tmp_path):
    ds = _ds(6, captions=True)
    bank = ue.fit("t2ue", ds, label_column=None, id_column="id", seed=1, mode="sample", caption_column="caption",
                  epochs=1, batch_size=4, generator_path=str(tmp_path / "g.safetensors"), **SMALL, **TINY)
    assert bank.keying == "sample" and bank.keys.tolist() == [f"s{i}" for i in range(6)]
    assert bank.tensors["delta"].shape == (6, 3, 16, 16)
    assert np.abs(bank.tensors["delta"]).max() <= 8 / 255 + 1e-7
    assert len({bank.tensors["delta"][i].tobytes() for i in range(6)}) == 6
    again = t2ue.text_bank(tmp_path / "g.safetensors", ds["caption"], seed=1, keys=ds["id"], keying="sample")
    assert np.allclose(again.tensors["delta"], bank.tensors["delta"], atol=1e-6)
    prot = ds.map(ue.Protect(bank, id_column="id"), batched=True, batch_size=3)
    src, out = np.asarray(ds[4]["image"]).astype(np.float32), np.asarray(prot[4]["image"])
    expect = np.clip(np.round(src + 255 * bank.tensors["delta"][4].transpose(1, 2, 0)), 0, 255).astype(np.uint8)
    assert np.array_equal(out, expect)  # sample s4 got its own caption's noise


def test_clear_errors(tmp_path):
    with pytest.raises(DataError, match="label_column"):
        ue.fit("t2ue", _ds(), label_column=None, **TINY)
    with pytest.raises(DataError, match="caption_column"):
        ue.fit("t2ue", _ds(), mode="sample", **TINY)
    with pytest.raises(ValueError, match="template"):
        ue.fit("t2ue", _ds(), template="a photo", **TINY)
    with pytest.raises(DataError, match="class names"):
        ue.fit("t2ue", {"image": list(np.zeros((3, 8, 8, 3), np.uint8)), "label": [0, 1, 0]}, **TINY)
    with pytest.raises(TypeError, match="unknown parameter"):
        ue.fit("t2ue", _ds(), stepz=1, **TINY)
    with pytest.raises(RandomSurrogateError, match="allow_random_surrogate=True"):
        ue.fit("t2ue", _ds(), surrogate="clip:uet-tiny-vit", weights=None)
    with pytest.raises(ValueError, match="CLIP surrogate"):
        ue.fit("t2ue", _ds(), surrogate="resnet50")
    with pytest.raises(FileNotFoundError, match="generator_path"):
        t2ue.load_generator(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="one seed per text"):
        t2ue.noise_from_text(tmp_path / "missing.safetensors", ["a"], [1, 2])


class _NoPixels:
    """A dataset whose text columns read fine and whose image column raises on any access."""

    def __init__(self, n, names, captions=None):
        self.n, self._names, self._captions = n, names, captions
        self.column_names = ["image", "label", "caption", "id"]
        self.features = {"label": datasets.ClassLabel(names=names)}

    def __len__(self):
        return self.n

    def __getitem__(self, key):
        if key == "image" or not isinstance(key, str):
            raise AssertionError("the protected images were read")
        return {"label": [i % len(self._names) for i in range(self.n)], "caption": self._captions,
                "id": [f"p{i}" for i in range(self.n)]}[key]


def test_zero_contact_bank_never_reads_the_protected_pixels(tmp_path):
    # 1. the generator is trained once on a public corpus with captions (disjoint from the protected set)
    rng = np.random.default_rng(5)
    corpus = {"image": list(rng.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)),
              "caption": [[f"a photo of a {NAMES[i % 3]}.", f"a picture of a {NAMES[i % 3]}."] for i in range(10)]}
    path = tmp_path / "public.safetensors"
    net, info = t2ue.train_generator(corpus, caption_column="caption", epochs=1, batch_size=5, seed=2, path=path,
                                     **SMALL, **TINY)
    assert info["iterations"] == 2 and info["generator_file"]["sha256"] == clip.file_sha256(path)
    _, meta = t2ue.load_generator(path)
    assert meta["surrogate"]["kind"] == "open_clip" and meta["surrogate"]["model"] == "uet-tiny-vit"
    # 2. the protected set's bank comes from its text alone
    bank = t2ue.bank_from_text(_NoPixels(9, NAMES), path, seed=3)
    assert bank.keying == "class" and bank.keys.tolist() == [0, 1, 2]
    assert bank.info["prompts"] == [f"a photo of a {n}." for n in NAMES] and bank.info["from_text_only"]
    assert np.abs(bank.tensors["delta"]).max() <= 8 / 255 + 1e-7
    assert np.allclose(bank.tensors["delta"], t2ue.text_bank(path, bank.info["prompts"], seed=3).tensors["delta"])
    caps = [f"a {NAMES[i % 3]} in the snow" for i in range(4)]
    sample = t2ue.bank_from_text(_NoPixels(4, NAMES, caps), path, seed=3, mode="sample", caption_column="caption",
                                 id_column="id")
    assert sample.keys.tolist() == ["p0", "p1", "p2", "p3"] and sample.tensors["delta"].shape == (4, 3, 16, 16)
    with pytest.raises(DataError, match="id_column"):
        t2ue.bank_from_text(_NoPixels(4, NAMES, caps), path, seed=3, mode="sample", caption_column="caption")
    # 3. through ue.fit (FitData learns the image size lazily): the same noise as the text-only
    # bank, no generator trained, and still no protected pixel read
    via_fit = ue.fit("t2ue", _NoPixels(9, NAMES), seed=3, generator=str(path))
    assert via_fit.info["variant"] == "zero-contact"
    assert np.allclose(via_fit.tensors["delta"], bank.tensors["delta"])
    assert np.allclose(ue.fit("t2ue", _ds(), seed=3, generator=str(path)).tensors["delta"], bank.tensors["delta"])
