"""publish: hub layout, lossless PNG shards, a card that parses and leaks no secret, push, refusals."""

from __future__ import annotations

import io
import sys
import os

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

import uetransforms as ue

# Resolve the lazy ``ue.publish`` export before importing the submodule by name: a first
# ``import uetransforms.publishing.pipeline`` would bind the *module* to ``ue.publish``.
assert callable(ue.publish)
from uetransforms.algorithms import public_params  # noqa: E402
from uetransforms.publishing.pipeline import PNG_SIGNATURE, dataset_card, num_shards_for  # noqa: E402

SEED = 987654321123
SALT = 31337424242
KEY = "s3cr3t-key-material"


def _dataset(n: int = 6, size: int = 8, seed: int = 0) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    return datasets.Dataset.from_dict(
        {
            "image": list(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)),
            "label": [i % 3 for i in range(n)],
            "caption": [f"row {i}" for i in range(n)],
        },
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"]),
                                    "caption": datasets.Value("string")}),
    )


@pytest.fixture
def secret_bank(tmp_path) -> ue.NoiseBank:
    """An additive bank whose params hold every kind of secret, saved under a telling path."""
    rng = np.random.default_rng(1)
    bank = ue.NoiseBank(
        method="random", kind="additive", keying="class", keys=np.arange(3),
        tensors={"delta": rng.uniform(-8 / 255, 8 / 255, (3, 3, 8, 8)).astype(np.float32)},
        params={"epsilon": 8 / 255, "norm": "linf", "seed": SEED, "salt": SALT, "key": KEY,
                "path": "/very/secret/place/bank.arrow"},
    )
    folder = tmp_path / "hidden-bank-folder"
    folder.mkdir()
    bank.save(folder / "mybank.arrow")
    return bank


def _files(root) -> list[str]:
    return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]


def _front_matter(path) -> dict:
    text = open(path, encoding="utf-8").read()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def _png_images(parquet_path, column="image") -> list[bytes]:
    return [row["bytes"] for row in pq.read_table(parquet_path).column(column).to_pylist()]


def test_layout_rows_order_and_png_pixels(tmp_path, secret_bank):
    ds = _dataset()
    out = tmp_path / "pub"
    prot = ue.publish(ds, secret_bank, out)
    assert sorted(os.listdir(out)) == ["README.md", "data"]
    assert os.listdir(out / "data") == ["train-00000-of-00001.parquet"]
    blobs = _png_images(out / "data" / "train-00000-of-00001.parquet")
    assert len(blobs) == len(ds) and all(b.startswith(PNG_SIGNATURE) for b in blobs)
    # The written pixels are exactly what Protect produces, and they differ from the source.
    expected = ds.map(ue.Protect(secret_bank), batched=True)
    for blob, want, src in zip(blobs, expected, ds):
        pixels = np.asarray(Image.open(io.BytesIO(blob)))
        np.testing.assert_array_equal(pixels, np.asarray(want["image"]))
        assert not np.array_equal(pixels, np.asarray(src["image"]))
    # datasets reads the layout through the card's configs: same rows, same order, other columns kept.
    loaded = datasets.load_dataset(str(out))["train"]
    assert loaded["caption"] == ds["caption"] and loaded["label"] == ds["label"]
    assert loaded.features == ds.features
    assert len(prot) == len(ds)


def test_image_bytes_are_stored_plain_and_other_columns_as_pyarrow_writes_them(tmp_path, secret_bank):
    # PNG is deflated already: no Snappy, dictionary or min/max stats on it; the rest keeps the defaults.
    ds = _dataset().add_column("tags", [[i, i + 1] for i in range(6)])
    ue.publish(ds, secret_bank, tmp_path / "pub")
    shard = tmp_path / "pub" / "data" / "train-00000-of-00001.parquet"
    meta = pq.ParquetFile(shard).metadata.row_group(0)
    columns = {meta.column(i).path_in_schema: meta.column(i) for i in range(meta.num_columns)}
    assert set(columns) == {"image.bytes", "image.path", "label", "caption", "tags.list.element"}
    img = columns.pop("image.bytes")
    assert (img.compression, img.is_stats_set, img.has_dictionary_page) == ("UNCOMPRESSED", False, False)
    for name, col in columns.items():
        assert (col.compression, col.is_stats_set, col.has_dictionary_page) == ("SNAPPY", True, True), name
    back = datasets.load_dataset(str(tmp_path / "pub"), split="train")
    assert back["tags"] == ds["tags"] and back["caption"] == ds["caption"]


def test_shard_count_follows_max_shard_size(tmp_path, secret_bank):
    ds = _dataset(n=10)
    prot = ds.map(ue.Protect(secret_bank), batched=True)
    per_row = prot.data.nbytes / len(prot)
    limit = int(per_row * 3.5)  # about 3 rows per shard
    out = tmp_path / "pub"
    ue.publish(prot, secret_bank, out, protected=True, max_shard_size=limit)
    n = num_shards_for(prot, limit)
    assert n == 3
    names = sorted(os.listdir(out / "data"))
    assert names == [f"train-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
    loaded = datasets.load_dataset(str(out))["train"]
    assert loaded["caption"] == ds["caption"]


def test_card_parses_and_carries_public_params_only(tmp_path, secret_bank):
    out = tmp_path / "pub"
    ue.publish(_dataset(), secret_bank, out, card_extra={"license": "cc-by-4.0", "pretty_name": "Tiny"})
    meta = _front_matter(out / "README.md")
    assert {"unlearnable-examples", "uetransforms"} <= set(meta["tags"])
    assert meta["license"] == "cc-by-4.0"
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    assert meta["dataset_info"]["splits"][0]["num_examples"] == 6
    block = meta["uetransforms"]
    assert block["method"] == "random" and block["kind"] == "additive" and block["keying"] == "class"
    assert block["epsilon"] == pytest.approx(8 / 255) and block["norm"] == "linf"
    assert block["library_version"] == ue.__version__
    assert not {"seed", "salt", "key", "path", "sha256"} & set(block)
    text = open(out / "README.md", encoding="utf-8").read()
    assert "re-encoded lossily" in text and "How to verify" in text


@pytest.mark.parametrize("method", ["own", "cuda", "ar"])
def test_no_secret_anywhere_in_output(tmp_path, secret_bank, method):
    ds = _dataset()
    if method == "own":
        bank = secret_bank
        secrets = [str(SEED), str(SALT), KEY, "/very/secret/place", "hidden-bank-folder", "mybank"]
    else:
        bank = ue.fit(method, ds, seed=SEED)
        bank.save(tmp_path / "hidden-bank-folder" / f"{method}.arrow")
        secrets = [str(SEED), "hidden-bank-folder"] + [str(v) for k, v in bank.params.items() if k in ("salt", "seed")]
    secrets += [bank.sha256, bank.sha256[:12]]
    if bank.path:
        secrets.append(bank.path)
    payload = next(iter(bank.tensors.values()))
    secrets_b = [s.encode() for s in secrets] + [payload[0].tobytes()[:16]]
    out = tmp_path / "pub"
    ue.publish(ds, bank, out)
    files = _files(out)
    assert files
    for path in files:
        data = open(path, "rb").read()
        for s in secrets_b:
            assert s not in data, f"{s!r} leaked into {path}"


def test_public_params_allow_list():
    bank = ue.NoiseBank(method="cuda", kind="conv", keying="class", keys=[0],
                        tensors={"weight": np.zeros((1, 3, 3, 3), np.float32)}, image_shape=(3, 8, 8),
                        params={"blur_parameter": 0.3, "kernel_size": 3, "seed": 5, "weights": [1, 2],
                                "normalise": "max", "secret_thing": "x"})
    assert public_params(bank.method, bank.params) == {"kernel_size": 3, "blur_parameter": 0.3, "normalise": "max"}
    synth = ue.NoiseBank(method="ar", kind="synth", keying="class", keys=[0],
                         tensors={"coef": np.zeros((1, 3, 8), np.float32)}, image_shape=(3, 8, 8),
                         params={"synth": "ar", "epsilon": 1.0, "norm": "l2", "salt": 99, "seed": 7})
    assert public_params(synth.method, synth.params) == {"epsilon": 1.0, "norm": "l2", "synth": "ar"}


def test_dataset_dict_one_shard_set_per_split(tmp_path, secret_bank):
    dd = datasets.DatasetDict({"train": _dataset(6, seed=0), "test": _dataset(4, seed=1)})
    out = tmp_path / "pub"
    prot = ue.publish(dd, secret_bank, out)
    assert isinstance(prot, datasets.DatasetDict) and set(prot) == {"train", "test"}
    assert sorted(os.listdir(out / "data")) == ["test-00000-of-00001.parquet", "train-00000-of-00001.parquet"]
    meta = _front_matter(out / "README.md")
    assert meta["configs"][0]["data_files"] == [{"split": "train", "path": "data/train-*"},
                                                {"split": "test", "path": "data/test-*"}]
    loaded = datasets.load_dataset(str(out))
    assert {k: len(v) for k, v in loaded.items()} == {"train": 6, "test": 4}


class FakeHub:
    """Stands in for huggingface_hub.HfApi: records calls, never touches the network."""

    def __init__(self, monkeypatch, *, whoami=None, upload=None):
        import huggingface_hub

        self.calls: list[tuple[str, dict]] = []
        self.uploaded: dict[str, bytes] = {}
        hub = self

        def fake_whoami(api, *a, **kw):
            hub.calls.append(("whoami", {"token": api.token}))
            if whoami is not None:
                raise whoami
            return {"name": "me", "auth": {"accessToken": {"role": "write"}}}

        def fake_create(api, repo_id, **kw):
            hub.calls.append(("create_repo", {"repo_id": repo_id, "token": api.token, **kw}))

        def fake_upload(api, *, folder_path, **kw):
            hub.calls.append(("upload_folder", {"token": api.token, **kw}))
            if upload is not None:
                raise upload
            for root, _, files in os.walk(folder_path):
                for f in files:
                    full = os.path.join(root, f)
                    hub.uploaded[os.path.relpath(full, folder_path)] = open(full, "rb").read()

        monkeypatch.setattr(huggingface_hub.HfApi, "whoami", fake_whoami)
        monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", fake_create)
        monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", fake_upload)


def test_push_uploads_the_local_layout_in_one_commit(tmp_path, secret_bank, monkeypatch):
    hub = FakeHub(monkeypatch)
    ds = _dataset()
    monkeypatch.chdir(tmp_path)
    prot = ue.publish(ds, secret_bank, "me/tiny-unlearnable", push=True, private=True, token="hf_test_token")
    assert os.listdir(tmp_path) == ["hidden-bank-folder"]  # pushing writes nothing in the working directory
    assert [c[0] for c in hub.calls] == ["whoami", "create_repo", "upload_folder"]
    create, up = hub.calls[1][1], hub.calls[2][1]
    assert create["repo_id"] == "me/tiny-unlearnable" and create["private"] is True
    assert create["repo_type"] == "dataset" and create["token"] == "hf_test_token"
    assert up["repo_id"] == "me/tiny-unlearnable" and up["repo_type"] == "dataset"
    assert up["delete_patterns"] == ["data/train-*"]  # a stale shard set on the Hub is replaced, not mixed in
    assert sorted(hub.uploaded) == ["README.md", "data/train-00000-of-00001.parquet"]
    assert len(prot) == 6
    local = tmp_path / "local"
    ue.publish(ds, secret_bank, local)
    # Byte for byte what a local publish writes: card and shard; the card's how-to-load snippet
    # names the repo id when pushed and the folder when written locally, nothing else differs.
    assert b'load_dataset("me/tiny-unlearnable")' in hub.uploaded["README.md"]
    assert hub.uploaded["README.md"].replace(b'"me/tiny-unlearnable"', b'"local"') == (local / "README.md").read_bytes()
    assert hub.uploaded["data/train-00000-of-00001.parquet"] == (local / "data/train-00000-of-00001.parquet").read_bytes()


@pytest.mark.parametrize("failure", ["offline", "no-token", "unreachable", "read-only"])
def test_push_fails_fast_before_protecting(tmp_path, secret_bank, monkeypatch, failure):
    """Offline, no token, DNS failure, read-only token: a clear error before any image is protected."""
    import huggingface_hub
    from huggingface_hub import errors

    raised = {"offline": errors.OfflineModeIsEnabled("offline mode is enabled"),
              "no-token": errors.LocalTokenNotFoundError("no token"),
              "unreachable": OSError(-2, "Name or service not known")}.get(failure)
    hub = FakeHub(monkeypatch, whoami=raised)
    if failure == "read-only":
        monkeypatch.setattr(huggingface_hub.HfApi, "whoami",
                            lambda api, *a, **kw: {"name": "me", "auth": {"accessToken": {"role": "read"}}})
    protected = []
    real_call = ue.Protect.__call__
    monkeypatch.setattr(ue.Protect, "__call__", lambda self, *a, **kw: protected.append(1) or real_call(self, *a, **kw))
    from uetransforms.publishing.pipeline import PushError

    with pytest.raises(PushError) as info:
        ue.publish(_dataset(), secret_bank, "me/x", push=True)
    msg = str(info.value)
    want = {"offline": "HF_HUB_OFFLINE", "no-token": "token=", "unreachable": "cannot reach", "read-only": "read-only"}
    assert want[failure] in msg and "push=True" in msg and "Nothing was protected" in msg.replace("nothing", "Nothing")
    assert not protected and not [c for c in hub.calls if c[0] != "whoami"]


def test_push_failure_says_what_was_uploaded_and_how_to_resume(tmp_path, secret_bank, monkeypatch):
    FakeHub(monkeypatch, upload=ConnectionError("connection reset"))
    from uetransforms.publishing.pipeline import PushError

    with pytest.raises(PushError) as info:
        ue.publish(_dataset(), secret_bank, "me/x", push=True)
    msg = str(info.value)
    assert "none of this copy's files are on the Hub" in msg and "upload_folder(folder_path=" in msg
    folder = msg.split("The complete protected copy is in '")[1].split("'")[0]
    try:  # the kept copy is complete: it loads with every row, ready to upload without protecting again
        assert len(datasets.load_dataset(folder, split="train")) == 6
    finally:
        import shutil

        shutil.rmtree(os.path.dirname(folder))


def test_push_needs_a_repo_id(secret_bank):
    with pytest.raises(ValueError, match="repo id"):
        ue.publish(_dataset(), secret_bank, "/tmp/not a repo/", push=True)


def test_refuses_lossy_image_format(tmp_path, secret_bank):
    with pytest.raises(ValueError, match="lossy"):
        ue.publish(_dataset(), secret_bank, tmp_path / "pub", image_format="JPEG")
    assert not (tmp_path / "pub").exists()


def test_refuses_jpeg_stored_protected_dataset(tmp_path, secret_bank):
    ds = _dataset()
    prot = ds.map(ue.Protect(secret_bank), batched=True)

    def to_jpeg(batch):
        out = []
        for im in batch["image"]:
            buf = io.BytesIO()
            im.save(buf, format="JPEG")
            out.append({"bytes": buf.getvalue(), "path": None})
        return {"image": out}

    lossy = prot.map(to_jpeg, batched=True)
    with pytest.raises(ValueError, match="JPEG"):
        ue.publish(lossy, secret_bank, tmp_path / "pub", protected=True)


def test_refuses_non_empty_dir_unless_overwrite(tmp_path, secret_bank):
    out = tmp_path / "pub"
    ue.publish(_dataset(10), secret_bank, out, max_shard_size=1)  # one row per shard
    assert len(os.listdir(out / "data")) == 10
    with pytest.raises(FileExistsError, match="not empty"):
        ue.publish(_dataset(), secret_bank, out)
    (out / "notes.txt").write_text("mine")
    ue.publish(_dataset(), secret_bank, out, overwrite=True)
    assert os.listdir(out / "data") == ["train-00000-of-00001.parquet"]  # stale shards gone
    assert (out / "notes.txt").read_text() == "mine"  # files publish did not write are kept
    assert len(datasets.load_dataset(str(out))["train"]) == 6


def test_card_extra_cannot_override_or_leak(tmp_path, secret_bank):
    with pytest.raises(ValueError, match="configs"):
        ue.publish(_dataset(), secret_bank, tmp_path / "a", card_extra={"configs": []})
    with pytest.raises(ValueError, match="secret"):
        ue.publish(_dataset(), secret_bank, tmp_path / "b", card_extra={"source": secret_bank.path})


def test_card_is_a_function_of_data_and_public_params(secret_bank):
    prot = _dataset().map(ue.Protect(secret_bank), batched=True)
    a = dataset_card({"train": prot}, secret_bank)
    b = dataset_card({"train": prot}, ue.NoiseBank.load(secret_bank.path))
    assert a == b


def test_output_carries_the_non_secret_marker(tmp_path, secret_bank):
    from uetransforms.core.codecs import MARKER, SCHEMA_KEY, is_marked

    out = tmp_path / "pub"
    prot = ue.publish(_dataset(), secret_bank, out)
    front = _front_matter(out / "README.md")
    # Only fields the Hub's card spec documents (issue 24, point 11): no dataset_info.description;
    # the marker travels in every PNG and the Parquet schema, and the card says so in its tags.
    assert set(front["dataset_info"]) <= {"features", "config_name", "splits", "download_size", "dataset_size"}
    assert "uetransforms" in front["tags"] and MARKER not in (out / "README.md").read_text()
    meta = pq.read_schema(out / "data" / "train-00000-of-00001.parquet").metadata
    assert MARKER in meta[SCHEMA_KEY].decode() and b"huggingface" in meta
    assert all(is_marked(r["bytes"]) for r in prot.cast_column("image", datasets.Image(decode=False))["image"])
    loaded = datasets.load_dataset(str(out), split="train", download_mode="force_redownload")
    assert all(is_marked(r["bytes"]) for r in loaded.cast_column("image", datasets.Image(decode=False))["image"])


@pytest.mark.parametrize("streaming", [False, True])
def test_refuses_to_protect_a_published_copy_twice(tmp_path, secret_bank, streaming):
    from uetransforms.publishing.streaming import publish_stream

    out = tmp_path / "pub"
    ue.publish(_dataset(), secret_bank, out)
    again = datasets.load_dataset(str(out), split="train", streaming=streaming)
    run = (lambda **kw: publish_stream(again, secret_bank, tmp_path / "twice", **kw)) if streaming else \
        (lambda **kw: ue.publish(again, secret_bank, tmp_path / "twice", **kw))
    with pytest.raises(ValueError, match="already protected.*protected=True.*allow_double=True"):
        run()
    assert not (tmp_path / "twice").exists()
    run(protected=True)  # as it is: the same bytes
    first = _png_images(out / "data" / "train-00000-of-00001.parquet")
    twice = _png_images(tmp_path / "twice" / "data" / "train-00000-of-00001.parquet")
    assert first == twice
    run(allow_double=True, overwrite=True)  # really meant: a second layer
    assert _png_images(tmp_path / "twice" / "data" / "train-00000-of-00001.parquet") != first


def test_refuses_bank_files_in_the_output_directory(tmp_path, secret_bank):
    out = tmp_path / "pub"
    ue.publish(_dataset(), secret_bank, out)
    secret_bank.save(out / "key.arrow")  # named innocently, found by its metadata
    with pytest.raises(ValueError, match="noise bank"):
        ue.publish(_dataset(), secret_bank, out, overwrite=True)
    os.remove(out / "key.arrow")
    (out / "x.bank.arrow").write_bytes(b"not even arrow")  # found by its name
    with pytest.raises(ValueError, match="x.bank.arrow"):
        ue.publish(_dataset(), secret_bank, out, overwrite=True)


@pytest.mark.parametrize("streaming", [False, True])
def test_refuses_images_carrying_the_codec_marker(tmp_path, secret_bank, streaming):
    """Protected images keep the PNG marker wherever they travel (a concatenation, a re-saved copy)."""
    from uetransforms.core import codecs
    from uetransforms.publishing.streaming import publish_stream

    ds = _dataset()
    rows = [np.asarray(im) for im in ds["image"]]
    marked = [{"bytes": codecs.mark(codecs.encode_png(r)), "path": None} for r in rows]
    tainted = ds.cast_column("image", datasets.Image(decode=False))
    tainted = datasets.Dataset.from_dict({"image": [marked[0]] + [{"bytes": codecs.encode_png(r), "path": None}
                                                                  for r in rows[1:]],
                                          "label": ds["label"], "caption": ds["caption"]}, features=tainted.features)
    tainted = tainted.cast_column("image", datasets.Image())
    with pytest.raises(ValueError, match="marker.*protected=True.*allow_double=True"):
        if streaming:
            publish_stream(tainted.to_iterable_dataset(), secret_bank, tmp_path / "x")
        else:
            ue.publish(tainted, secret_bank, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    if not streaming:  # num_proc > 1 protects in map() workers: the images are looked at before
        with pytest.raises(ValueError, match="marker"):
            ue.publish(tainted, secret_bank, tmp_path / "x", num_proc=2)


def test_republishing_into_the_same_folder_returns_and_loads_the_new_copy(tmp_path):
    """datasets caches a folder with YAML configs by its card: a second copy with the same card
    (same sizes, other pixels) must not come back as the first one."""
    def bank(seed):
        rng = np.random.default_rng(seed)
        return ue.NoiseBank(method="random", kind="additive", keying="class", keys=np.arange(3),
                            tensors={"delta": rng.uniform(-8 / 255, 8 / 255, (3, 3, 8, 8)).astype(np.float32)},
                            params={"epsilon": 8 / 255, "norm": "linf"})

    from uetransforms.cli import load_data

    ds, out = _dataset(), tmp_path / "pub"
    first = ue.publish(ds, bank(1), out)
    assert load_data(str(out))["train"][0]["image"].tobytes() == first[0]["image"].tobytes()
    second = ue.publish(ds, bank(2), out, overwrite=True)
    expected = [np.asarray(r["image"]) for r in ds.map(ue.Protect(bank(2)), batched=True)]
    assert not np.array_equal(np.asarray(first[0]["image"]), expected[0])
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(expected, second["image"]))
    again = load_data(str(out))["train"]  # the CLI's loader: also the new copy
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(expected, again["image"]))


def _same_as_loaded(result, loaded) -> None:
    """publish's result and ``load_dataset(out)``: same rows, order, features, marker and split."""
    assert result.with_format("arrow")[:].equals(loaded.with_format("arrow")[:])
    assert result.features == loaded.features and result.split == loaded.split
    assert result.info.description == loaded.info.description
    assert result.info.splits.keys() == loaded.info.splits.keys()
    assert all(result.info.splits[k].num_examples == loaded.info.splits[k].num_examples for k in loaded.info.splits)


@pytest.mark.parametrize("as_dict", [False, True])
def test_result_is_what_loading_the_folder_gives_without_reading_it_back(tmp_path, secret_bank, monkeypatch, as_dict):
    """The returned copy is mapped from the rows as they were written (no second pass over the
    Parquet files) and equals what datasets loads from the folder."""
    from uetransforms.publishing.pipeline import load_local

    ds = _dataset(n=7)
    data = datasets.DatasetDict({"train": ds, "test": _dataset(n=3, seed=1)}) if as_dict else ds
    calls = []
    real = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **kw: calls.append(a) or real(*a, **kw))
    out = ue.publish(data, secret_bank, tmp_path / "pub", max_shard_size=2000, batch_size=3)
    assert calls == []  # nothing was read back
    monkeypatch.setattr(datasets, "load_dataset", real)
    assert len(_files(tmp_path / "pub" / "data")) >= (3 if as_dict else 2)  # the copy spans shards and batches
    if as_dict:
        loaded = load_local(str(tmp_path / "pub"))
        assert list(out) == list(loaded) == ["train", "test"]
        for name in loaded:
            _same_as_loaded(out[name], loaded[name])
    else:
        _same_as_loaded(out, load_local(str(tmp_path / "pub"), split="train"))
    # The copy lives where ds.map would put a cache file, never in the published folder.
    copies = [f["filename"] for d in (out.values() if as_dict else [out]) for f in d.cache_files]
    assert copies and all(os.path.basename(c).startswith("cache-") for c in copies)
    assert not any(str(tmp_path / "pub") in c for c in copies)


def test_result_copy_goes_next_to_the_inputs_cache_files(tmp_path, secret_bank):
    """With caching on, the copy sits beside the input's own cache files (as ds.map's would) and
    cleanup_cache_files removes it."""
    _dataset().save_to_disk(str(tmp_path / "src"))
    ds = datasets.load_from_disk(str(tmp_path / "src"))
    out = ue.publish(ds, secret_bank, tmp_path / "pub")
    (copy,) = [f["filename"] for f in out.cache_files]
    assert os.path.dirname(copy) == os.path.dirname(ds.cache_files[0]["filename"])
    assert out.cleanup_cache_files() == 0  # the dataset's own file is in use: kept
    del out
    assert ds.cleanup_cache_files() == 1 and not os.path.exists(copy)


def test_failed_publish_leaves_no_copy_behind(tmp_path, secret_bank, monkeypatch):
    from uetransforms.publishing import target
    from uetransforms.publishing.pipeline import _arrow_copy_path

    made = []
    real_path = _arrow_copy_path
    monkeypatch.setattr(sys.modules["uetransforms.publishing.pipeline"], "_arrow_copy_path",
                        lambda ds: made.append(real_path(ds)) or made[-1])

    def fail(event, **info):
        if event == "card":
            raise OSError("disk full")

    monkeypatch.setattr(target, "checkpoint", fail)
    with pytest.raises(OSError, match="disk full"):
        ue.publish(_dataset(), secret_bank, tmp_path / "pub")
    assert made and not any(os.path.exists(p) for p in made)


# ------------------------------------------------------------------ every bank kind through publish, mixed sizes
from kind_banks import KIND_BANKS, _kind_banks, _options, _want, mixed_ds  # noqa: E402  (the shared kind banks)


@pytest.mark.parametrize("name", KIND_BANKS)
def test_every_kind_through_publish_gives_the_reference_pixels(tmp_path, name):
    bank = _kind_banks()[name]
    src = mixed_ds()
    out = ue.publish(src, bank, tmp_path / "pub", batch_size=3, **_options(name))
    for got, ref in zip(out["image"], _want(bank, src)):
        assert got.format == "PNG"
        np.testing.assert_array_equal(np.asarray(got), ref)
    assert out["uid"] == src["uid"] and out["label"] == src["label"] and out.features == src.features
    if name in ("additive-cluster", "conv-class", "synth-class"):  # the process pool is slow to start: three kinds
        again = ue.publish(src, bank, tmp_path / "pub2", batch_size=3, num_proc=2, **_options(name))
        assert _stored(again) == _stored(out)
    # The stream writer (one writer behind both): the same bytes from an IterableDataset.
    from uetransforms.publishing.streaming import publish_stream

    publish_stream(src.to_iterable_dataset(), bank, tmp_path / "stream", batch_size=2, shard_rows=4, **_options(name))
    streamed = datasets.load_dataset(str(tmp_path / "stream"), split="train", download_mode="force_redownload")
    assert _stored(streamed) == _stored(out) and streamed["uid"] == src["uid"]


def _stored(ds) -> list[bytes]:
    return [r["bytes"] for r in ds.cast_column("image", datasets.Image(decode=False))["image"]]


def test_publish_takes_the_size_policy_and_png_options(tmp_path):
    """Photos of many sizes with a fixed-size bank: refused by default, with the argument that fixes it."""
    from uetransforms.core.errors import SizeMismatchError

    bank = _kind_banks()["additive-class"].replace(info={})  # no size policy of its own: "error"
    src = mixed_ds()
    with pytest.raises(SizeMismatchError, match="size_mismatch='resize'"):
        ue.publish(src, bank, tmp_path / "a")
    out = ue.publish(src, bank, tmp_path / "b", size_mismatch="resize")
    want = _want(bank, src)
    assert all(np.array_equal(np.asarray(g), w) for g, w in zip(out["image"], want))
    pil = ue.publish(src, bank, tmp_path / "c", size_mismatch="resize", png_encoder="pil", png_level=9)
    assert all(np.array_equal(np.asarray(g), w) for g, w in zip(pil["image"], want))
    assert _stored(pil) != _stored(out)  # another encoder: other bytes, same pixels
    from uetransforms.core import codecs

    assert _stored(pil)[0] == codecs.encode_png(want[0], encoder="pil", level=9, marked=True, method=bank.method)
    with pytest.raises(ValueError, match="level must be an integer 0..3"):
        ue.publish(src, bank, tmp_path / "d", size_mismatch="resize", png_encoder="isal", png_level=7)
    assert not os.path.exists(tmp_path / "d")  # refused before anything was written
    with pytest.raises(ValueError, match="only apply when publish protects"):
        ue.publish(out, bank, tmp_path / "e", protected=True, png_level=2)


@pytest.mark.parametrize("name", KIND_BANKS)
def test_threads_give_the_same_bytes(name):
    """Slices of a batch run decode -> kernel -> encode on threads: the bytes do not depend on how many."""
    bank = _kind_banks()[name]
    batch = mixed_ds().with_format("arrow")[:].to_pydict()
    by_threads = {}
    for threads in (1, 2, 3, 7, 16):
        fn = ue.Protect(bank, threads=threads, **_options(name))  # a fresh Applier: its caches fill on threads
        by_threads[threads] = fn.encoded(batch)
    assert all(v == by_threads[1] for v in by_threads.values())
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        ue.Protect(bank, threads=0)


def test_slices_run_torch_single_threaded_and_restore_it(tmp_path, monkeypatch):
    import torch

    from uetransforms.core.apply import Applier

    seen = []
    real = Applier.protect_chunks
    monkeypatch.setattr(Applier, "protect_chunks",
                        lambda self, *a, **kw: seen.append(torch.get_num_threads()) or real(self, *a, **kw))
    bank = _kind_banks()["conv-class"]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        a = ue.publish(mixed_ds(), bank, tmp_path / "a", batch_size=4)
        assert torch.get_num_threads() == 3  # restored
        assert len(seen) >= 3 and set(seen) == {1}  # 3 slices of each batch, each with one torch thread
        seen.clear()
        b = ue.publish(mixed_ds(), bank, tmp_path / "b", batch_size=4, threads=1)
        assert seen and set(seen) == {3}  # one slice: torch keeps its threads
        seen.clear()
        m = mixed_ds().map(ue.Protect(bank), batched=True, batch_size=4)  # the same rule in a map
        assert set(seen) == {1} and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    assert _stored(a) == _stored(b) == _stored(m)


def test_publish_reads_images_stored_as_paths(tmp_path, secret_bank):
    """Rows whose Image() record holds only a path (no bytes) are read from the file, mixed with byte rows."""
    rng = np.random.default_rng(3)
    arrays = list(rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8))
    records = []
    for i, a in enumerate(arrays):
        path = tmp_path / f"im{i}.png"
        Image.fromarray(a).save(path)
        records.append({"bytes": None, "path": str(path)} if i % 2 else {"bytes": path.read_bytes(), "path": None})
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    ds = datasets.Dataset.from_dict({"image": records, "label": [0, 1, 2, 0]}, features=feats)
    assert ds.with_format("arrow")[:]["image"].combine_chunks().field("bytes").null_count == 2
    out = ue.publish(ds, secret_bank, tmp_path / "pub")
    by_bytes = ue.publish(datasets.Dataset.from_dict({"image": arrays, "label": [0, 1, 2, 0]}, features=feats),
                          secret_bank, tmp_path / "pub2")
    assert _stored(out) == _stored(by_bytes)


# ------------------------------------------------------------------ issue 23: one marker that survives
def _smooth(n: int = 32, size: int = 32, seed: int = 0) -> datasets.Dataset:
    """Photo-like images (smooth shapes, a little grain): the content test is about natural images."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    imgs = []
    for _ in range(n):
        f = rng.uniform(0.5, 3, (3, 2))
        ph = rng.uniform(0, 6.3, (3, 2))
        chans = [127 + 90 * np.sin(f[c, 0] * 6.3 * yy + ph[c, 0]) * np.cos(f[c, 1] * 6.3 * xx + ph[c, 1]) for c in range(3)]
        img = np.stack(chans, -1) + rng.normal(0, 2, (size, size, 3))
        imgs.append(np.clip(img, 0, 255).astype(np.uint8))
    return datasets.Dataset.from_dict(
        {"image": imgs, "label": [i % 3 for i in range(n)]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=3)}))


def _white_bank(size: int = 32, seed: int = 3) -> ue.NoiseBank:
    rng = np.random.default_rng(seed)
    return ue.NoiseBank(method="random", kind="additive", keying="class", keys=np.arange(3),
                        tensors={"delta": rng.choice([-8 / 255, 8 / 255], (3, 3, size, size)).astype(np.float32)},
                        params={"epsilon": 8 / 255, "norm": "linf"})


def test_every_published_png_carries_the_marker(tmp_path, secret_bank):
    from uetransforms.core.codecs import is_marked

    out = tmp_path / "pub"
    ue.publish(_dataset(), secret_bank, out)
    shard = out / "data" / "train-00000-of-00001.parquet"
    assert all(is_marked(b) for b in _png_images(shard))
    # publish(protected=True) of images protected elsewhere (datasets encoded them: no marker) marks them too.
    prot = _dataset().map(ue.Protect(secret_bank), batched=True)
    plain = prot.cast_column("image", datasets.Image(decode=False)).map(
        lambda r: {"image": {"bytes": _pil_png(r["image"]["bytes"]), "path": None}})
    ue.publish(plain.cast_column("image", datasets.Image()), secret_bank, tmp_path / "p2", protected=True)
    assert all(is_marked(b) for b in _png_images(tmp_path / "p2" / "data" / "train-00000-of-00001.parquet"))


def _pil_png(png: bytes) -> bytes:
    """The same pixels re-encoded losslessly by PIL: the marker chunk is gone (what a download/re-upload does)."""
    buf = io.BytesIO()
    Image.open(io.BytesIO(png)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("route", ["from_parquet", "load_dataset_parquet", "map_then_publish"])
def test_publishing_protected_data_again_is_refused(tmp_path, secret_bank, route):
    """Three of issue 23's six routes that added the noise twice without a word."""
    out = tmp_path / "pub"
    ue.publish(_dataset(), secret_bank, out)
    if route == "from_parquet":
        again = datasets.Dataset.from_parquet(str(out / "data" / "train-00000-of-00001.parquet"))
    elif route == "load_dataset_parquet":
        again = datasets.load_dataset("parquet", data_dir=str(out / "data"))["train"]
    else:
        again = _dataset().map(ue.Protect(secret_bank), batched=True)  # then publish without protected=True
    for num_proc in (None, 2):
        with pytest.raises(ue.DoubleProtectionError, match="protected=True"):
            ue.publish(again, secret_bank, tmp_path / f"twice{num_proc}", num_proc=num_proc)
        assert not (tmp_path / f"twice{num_proc}").exists()
    if route == "load_dataset_parquet":
        with pytest.raises(ue.DoubleProtectionError):
            again.map(ue.Protect(secret_bank), batched=True)
    # The overrides keep working.
    ue.publish(again, secret_bank, tmp_path / "as-is", protected=True)
    ue.publish(again, secret_bank, tmp_path / "double", allow_double=True)


def test_protection_that_lost_its_marker_is_found_in_the_pixels(tmp_path):
    """Downloaded to a folder and re-encoded losslessly: no PNG marker, no schema, no card; the
    additive bank's own noise is still in the pixels, and Protect finds it (kernels.carried_score)."""
    bank = _white_bank()
    src = _smooth()
    prot = src.map(ue.Protect(bank), batched=True)
    stripped = prot.cast_column("image", datasets.Image(decode=False)).map(
        lambda r: {"image": {"bytes": _pil_png(r["image"]["bytes"]), "path": None}}).cast_column("image", datasets.Image())
    from uetransforms.core.codecs import is_marked

    assert not any(is_marked(r["bytes"]) for r in stripped.cast_column("image", datasets.Image(decode=False))["image"])
    with pytest.raises(ue.DoubleProtectionError, match="already carry this bank's noise") as err:
        stripped.map(ue.Protect(bank), batched=True, batch_size=16)
    assert "row(s)" in str(err.value) and "allow_double=True" in str(err.value)
    with pytest.raises(ue.DoubleProtectionError, match="already carry this bank's noise"):
        ue.publish(stripped, bank, tmp_path / "twice")
    # Clean images, and images protected by another bank, are protected as usual.
    src.map(ue.Protect(bank), batched=True, batch_size=16)
    other = src.map(ue.Protect(_white_bank(seed=4)), batched=True).cast_column(
        "image", datasets.Image(decode=False)).map(
        lambda r: {"image": {"bytes": _pil_png(r["image"]["bytes"]), "path": None}}).cast_column("image", datasets.Image())
    other.map(ue.Protect(bank), batched=True, batch_size=16)
    # allow_double=True protects them twice, as asked.
    stripped.map(ue.Protect(bank, allow_double=True), batched=True, batch_size=16)


# ------------------------------------------------------------------ issue 23: clear errors at the door
def test_a_corrupt_image_is_named_by_its_row_on_every_path(tmp_path, secret_bank):
    from uetransforms.publishing.streaming import publish_stream

    src = _dataset(n=40).cast_column("image", datasets.Image(decode=False))
    src = src.map(lambda r, i: {"image": {"bytes": b"\x89PNG broken" if i == 27 else r["image"]["bytes"], "path": None}},
                  with_indices=True).cast_column("image", datasets.Image())
    calls = {
        "map": lambda: src.map(ue.Protect(secret_bank), batched=True, batch_size=8, with_indices=True),
        "publish": lambda: ue.publish(src, secret_bank, tmp_path / "a", batch_size=8),
        "publish num_proc": lambda: ue.publish(src, secret_bank, tmp_path / "b", batch_size=8, num_proc=2),
        "publish_stream": lambda: publish_stream(src.to_iterable_dataset(), secret_bank, tmp_path / "c", batch_size=8),
    }
    for what, call in calls.items():
        with pytest.raises(ue.ImageModeError, match=r"row 27\b.*not a readable image") as err:
            call()
        assert "check that the column holds encoded images" in str(err.value), what
    # Without indices, map names the position in the batch and how to get dataset rows.
    with pytest.raises(ue.ImageModeError, match=r"row 3 of this batch.*with_indices=True"):
        src.map(ue.Protect(secret_bank), batched=True, batch_size=8)


def test_num_proc_refusals_come_before_the_map(tmp_path, secret_bank, monkeypatch):
    """batch_size=0 and a non-empty output were reported only after the whole map(num_proc=2) had run."""
    src = _dataset()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("mine")

    def no_map(*a, **k):
        raise AssertionError("map ran before the refusal")

    monkeypatch.setattr(datasets.Dataset, "map", no_map)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        ue.publish(src, secret_bank, tmp_path / "o", num_proc=2, batch_size=0)
    with pytest.raises(FileExistsError, match="not empty"):
        ue.publish(src, secret_bank, tmp_path / "full", num_proc=2)


# ------------------------------------------------------------------ issue 23: crashes
def test_output_that_is_a_symlink_to_a_directory(tmp_path, secret_bank):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    ue.publish(_dataset(), secret_bank, link)
    assert link.is_symlink() and os.readlink(link) == str(real)  # the link is kept, pointing at the data
    assert sorted(os.listdir(real)) == ["README.md", "data"]
    ue.publish(_dataset(seed=1), secret_bank, link, overwrite=True)  # the swap replaces the directory it names
    assert link.is_symlink() and sorted(os.listdir(link)) == ["README.md", "data"]
    assert not [n for n in os.listdir(tmp_path) if "uetransforms" in n]  # no .link.uetransforms-old/-tmp left


def test_refused_publishes_leave_no_hidden_folder(tmp_path, secret_bank):
    out = tmp_path / "pub"
    out.mkdir()
    (out / "x.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        ue.publish(_dataset(), secret_bank, out)
    once = tmp_path / "once"
    ue.publish(_dataset(), secret_bank, once)
    with pytest.raises(ue.DoubleProtectionError):
        ue.publish(datasets.Dataset.from_parquet(str(once / "data" / "train-00000-of-00001.parquet")), secret_bank,
                   tmp_path / "twice")
    assert sorted(os.listdir(tmp_path)) == ["hidden-bank-folder", "once", "pub"]


@pytest.mark.parametrize("progress", [True, False])
def test_publish_says_its_size_first_and_shows_a_bar_per_split(tmp_path, secret_bank, capfd, progress):
    """Issue 24, points 6 and 10: a progress bar (on a terminal by default, or progress=True) and,
    before any image is written, how large the lossless copy will be; progress=False: silent."""
    ue.publish(_dataset(n=6), secret_bank, tmp_path / "pub", progress=progress)
    err = capfd.readouterr().err
    if progress:
        assert "protecting train" in err and "6/6" in err
        assert err.index("of lossless PNG") < err.index("protecting train")  # the size is said before writing
    else:
        assert "protecting train" not in err and "of lossless PNG" not in err


def test_hub_file_limits_shape_the_shards_and_the_upload(tmp_path, secret_bank, monkeypatch):
    """Issue 24, point 8: a shard plan over the Hub's files-per-folder limit is refused before any
    image is written, naming max_shard_size; more files than one commit should hold go through
    upload_large_folder (resumable), fewer through one upload_folder commit."""
    import huggingface_hub

    from uetransforms.publishing import pipeline

    monkeypatch.setattr(pipeline, "HUB_MAX_FILES_PER_FOLDER", 2)
    with pytest.raises(ValueError, match="6 shards of max_shard_size=1, .*fewer than 2 files per folder.*larger max_shard_size"):
        ue.publish(_dataset(n=6), secret_bank, tmp_path / "refused", max_shard_size=1, progress=False)
    assert not (tmp_path / "refused").exists()
    monkeypatch.setattr(pipeline, "HUB_MAX_FILES_PER_FOLDER", 10_000)
    ue.publish(_dataset(n=6), secret_bank, tmp_path / "pub", max_shard_size=1, progress=False)
    files = sorted(os.listdir(tmp_path / "pub" / "data"))
    assert len(files) == 6  # one row per shard: more files than the commit limit set below
    hub = FakeHub(monkeypatch)
    large: list[dict] = []
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_large_folder", lambda api, **kw: large.append(kw), raising=False)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", lambda api, *a, **kw: [], raising=False)
    pipeline.upload(tmp_path / "pub", "me/x", token="hf_test_token")
    assert [c[0] for c in hub.calls if c[0] == "upload_folder"] == ["upload_folder"] and not large
    monkeypatch.setattr(pipeline, "HUB_MAX_FILES_PER_COMMIT", 2)
    pipeline.upload(tmp_path / "pub", "me/x", token="hf_test_token")
    assert len(large) == 1 and large[0]["repo_id"] == "me/x"
