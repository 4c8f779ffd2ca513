"""Ray Data on a local 2-CPU cluster gives the bytes datasets.map gives, and writes loadable Parquet."""

from __future__ import annotations

import glob

import datasets
import numpy as np
import pytest

import uetransforms as ue
from uetransforms.core.bank import NoiseBank

ray = pytest.importorskip("ray")
ue_ray = pytest.importorskip("uetransforms.integrations.ray")

FEATURES = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"]),
                              "idx": datasets.Value("int64")})


@pytest.fixture(scope="module")
def cluster():
    # Ray starts in ~10-20 s: one local cluster for the whole module.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    yield
    ray.shutdown()


def make_ds(n: int = 11, seed: int = 0) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    return datasets.Dataset.from_dict(
        {"image": list(rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)), "label": [i % 3 for i in range(n)],
         "idx": list(range(n))}, features=FEATURES)


@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> NoiseBank:
    delta = np.random.default_rng(4).uniform(-8 / 255, 8 / 255, (3, 3, 8, 8)).astype("float32")
    b = NoiseBank(method="random", kind="additive", keying="class", keys=[0, 1, 2], tensors={"delta": delta},
                  params={"epsilon": 8 / 255, "norm": "linf"})
    path = tmp_path_factory.mktemp("bank") / "b.bank.arrow"
    b.save(path)
    return NoiseBank.load(path)


def png_bytes(ds) -> list[bytes]:
    return [r["bytes"] for r in ds.cast_column("image", datasets.Image(decode=False))["image"]]


@pytest.fixture(scope="module")
def source(tmp_path_factory, bank):
    ds = make_ds()
    path = str(tmp_path_factory.mktemp("src") / "src.parquet")
    ds.to_parquet(path)
    ref = png_bytes(ds.map(ue.Protect(bank), batched=True, batch_size=4, load_from_cache_file=False))
    return ds, path, ref


def by_idx(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: int(r["idx"]))


def test_ray_parquet_roundtrip_equals_datasets_map(cluster, bank, source, tmp_path):
    ds, path, ref = source
    out = ue_ray.protect(ray.data.read_parquet(path), bank, batch_size=4, features=ds.features)
    out.write_parquet(str(tmp_path / "out"))
    back = datasets.load_dataset("parquet", data_files=sorted(glob.glob(str(tmp_path / "out" / "*.parquet"))),
                                 split="train").sort("idx")
    assert back.features == FEATURES  # Image() and ClassLabel names survive the Ray round trip
    assert back["label"] == ds["label"]
    assert png_bytes(back) == ref


@pytest.mark.parametrize("split_stages", [False, True])
def test_ray_take_equals_datasets_map(cluster, bank, source, split_stages):
    # split_stages=True is the GPU pipeline (decode task -> kernel actor -> encode task), run on CPU here.
    _, path, ref = source
    out = ue_ray.protect(ray.data.read_parquet(path), bank, batch_size=3, split_stages=split_stages)
    rows = by_idx(out.take_all())
    assert [r["idx"] for r in rows] == list(range(len(ref)))
    assert [r["image"]["bytes"] for r in rows] == ref


def test_ray_numeric_tensor_column_stays_numeric(cluster, bank, source):
    ds, _, ref = source
    arrays = np.stack([np.asarray(im) for im in ds["image"]])
    rd = ray.data.from_items([{"image": a, "label": int(l), "idx": i}
                              for i, (a, l) in enumerate(zip(arrays, ds["label"]))])
    rows = by_idx(ue_ray.protect(rd, bank, batch_size=4).take_all())
    got = np.stack([r["image"] for r in rows])
    assert got.dtype == np.uint8 and got.shape == arrays.shape
    # Same pixels as the PNGs datasets.map stored.
    from PIL import Image
    import io

    want = np.stack([np.asarray(Image.open(io.BytesIO(b))) for b in ref])
    np.testing.assert_array_equal(got, want)


def test_ray_errors(cluster, bank, source):
    ds, path, _ = source
    with pytest.raises(TypeError, match="ray.data.Dataset"):
        ue_ray.protect(ds, bank)
    with pytest.raises(ValueError, match="batch_size"):
        ue_ray.protect(ray.data.read_parquet(path), bank, batch_size=0)
    with pytest.raises(Exception, match="image_column='img'"):
        ue_ray.protect(ray.data.read_parquet(path), bank, image_column="img").take_all()


def test_ray_every_kind_and_mixed_sizes_equal_datasets_map(cluster, tmp_path):
    """conv / pixel / synth / sample-keyed banks on images of several sizes: Ray gives datasets.map's bytes."""
    import kind_banks as tp  # the kind banks and the mixed-size dataset of the Protect tests

    src = tp.mixed_ds().add_column("idx", list(range(len(tp.SIZES))))
    path = str(tmp_path / "mixed.parquet")
    src.to_parquet(path)
    # Fused tasks for every kind (additive-class is covered above; the cluster bank keys on the "cluster"
    # column, not the label); the split (GPU) pipeline once.
    runs = [("conv-class", False), ("pixel-class", False), ("additive-cluster", False), ("additive-sample", False),
            ("synth-class", True)]
    banks = tp._kind_banks()
    for name, split_stages in runs:
        bank = banks[name]
        bank_path = str(bank.save(tmp_path / f"{name}.arrow"))
        opts = tp._options(name)
        ref = png_bytes(src.map(ue.Protect(bank_path, **opts), batched=True, batch_size=3))
        out = ue_ray.protect(ray.data.read_parquet(path), bank_path, batch_size=3, split_stages=split_stages, **opts)
        rows = by_idx(out.take_all())
        assert [r["image"]["bytes"] for r in rows] == ref, name


@pytest.mark.parametrize("options", [{"num_gpus": 1}, {"device": "cuda"}, {"device": "cuda", "num_gpus": 0.5}])
def test_gpu_request_on_a_cpu_only_cluster_fails_up_front(cluster, bank, options):
    """It used to hang (an actor waiting for a GPU that never comes)."""
    rd = ray.data.from_items([{"image": np.zeros((8, 8, 3), np.uint8), "label": 0}])
    with pytest.raises(ValueError, match=r"asks for a GPU per apply actor, but the Ray cluster has 0 .*device='cpu'"):
        ue_ray.protect(rd, bank, **options)


# ------------------------------------------------------------------ issue 23: clear errors at the door
def test_ray_raises_our_error_type_for_a_corrupt_row(cluster, bank, tmp_path):
    """A corrupt row surfaced as RayTaskError(UserCodeException), our message 40 lines down."""
    ds = make_ds(4).cast_column("image", datasets.Image(decode=False))
    ds = ds.map(lambda r, i: {"image": {"bytes": b"\x89PNG bad" if i == 2 else r["image"]["bytes"], "path": None}},
                with_indices=True)
    path = str(tmp_path / "bad.parquet")
    ds.to_parquet(path)
    for split_stages in (False, True):
        with pytest.raises(ue.ImageModeError, match="not a readable image"):
            ue_ray.protect(ray.data.read_parquet(path), bank, split_stages=split_stages).take_all()
    assert not ray.data.DataContext.get_current().raise_original_map_exception  # the global context is untouched


@pytest.mark.parametrize("split_stages", [False, True])
def test_ray_keeps_source_file_names_as_datasets_map_does(cluster, bank, tmp_path, split_stages):
    """Issue 24, point 9: a protected image names its source file (base name, no folder) on every path."""
    import io

    from PIL import Image

    def png(a):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        return buf.getvalue()

    rng = np.random.default_rng(1)
    arrays = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": png(a), "path": f"/home/owner/photos/IMG_{i}.png" if i != 2 else None}
                   for i, a in enumerate(arrays)], "label": [i % 3 for i in range(5)], "idx": list(range(5))},
        features=FEATURES)
    path = str(tmp_path / "named.parquet")
    ds.to_parquet(path)
    want = ds.map(ue.Protect(bank), batched=True, batch_size=2, load_from_cache_file=False)
    want = [r["path"] for r in want.cast_column("image", datasets.Image(decode=False))["image"]]
    assert want == ["IMG_0.png", "IMG_1.png", None, "IMG_3.png", "IMG_4.png"]
    rows = by_idx(ue_ray.protect(ray.data.read_parquet(path), bank, batch_size=2, split_stages=split_stages).take_all())
    assert [r["image"]["path"] for r in rows] == want
    assert "__uetransforms_source__" not in rows[0]  # the hidden stage column never reaches the output
