import numpy as np
import pytest
import torch

from uetransforms.models.kmeans import assign, kmeans, kmeans_plusplus

sklearn = pytest.importorskip("sklearn")
from sklearn.cluster import KMeans  # noqa: E402
from sklearn.datasets import make_blobs  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402


@pytest.fixture(scope="module")
def blobs():
    x, y = make_blobs(n_samples=1200, centers=6, n_features=8, cluster_std=1.0, random_state=0)
    return torch.tensor(x, dtype=torch.float32), y


def test_full_batch_matches_sklearn_on_blobs(blobs):
    x, y = blobs
    ref = KMeans(6, n_init=1, random_state=0).fit(x.numpy())
    res = kmeans(x, 6, seed=0)
    assert adjusted_rand_score(y, res.labels.numpy()) == pytest.approx(1.0)
    assert adjusted_rand_score(ref.labels_, res.labels.numpy()) == pytest.approx(1.0)
    assert res.inertia == pytest.approx(ref.inertia_, rel=1e-4)
    # centroids are the same set (order may differ)
    d = torch.cdist(res.centroids, torch.tensor(ref.cluster_centers_, dtype=torch.float32))
    assert float(d.min(1).values.max()) < 1e-3


def test_minibatch_finds_the_same_clusters(blobs):
    x, y = blobs
    full = kmeans(x, 6, seed=0)
    mb = kmeans(x, 6, seed=0, batch_size=128, max_iter=200)
    assert adjusted_rand_score(y, mb.labels.numpy()) == pytest.approx(1.0)
    assert mb.inertia <= full.inertia * 1.02


def test_deterministic_per_seed(blobs):
    x, _ = blobs
    a, b = kmeans(x, 6, seed=5), kmeans(x, 6, seed=5)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.centroids, b.centroids)


def test_assign_is_the_nearest_centroid():
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(500, 5, generator=g), torch.randn(7, 5, generator=g)
    labels, d = assign(x, c, chunk=64)  # several chunks
    ref = torch.cdist(x, c)
    assert torch.equal(labels, ref.argmin(1))
    assert torch.allclose(d, ref.min(1).values ** 2, atol=1e-4)


def test_kmeans_plusplus_seeds_every_separated_blob(blobs):
    x, y = blobs
    seeds = kmeans_plusplus(x, 6, generator=torch.Generator().manual_seed(1))
    lab, _ = assign(seeds, kmeans(x, 6, seed=0).centroids)
    assert len(set(lab.tolist())) == 6


def test_duplicate_points_and_k_equal_distinct_points():
    x = torch.tensor([[0.0, 0.0], [5.0, 5.0], [9.0, 0.0]]).repeat(10, 1)
    res = kmeans(x, 3, seed=0)
    assert res.inertia == pytest.approx(0.0, abs=1e-5)
    assert sorted(np.bincount(res.labels.numpy()).tolist()) == [10, 10, 10]


def test_bad_input_errors():
    with pytest.raises(ValueError, match="k=5"):
        kmeans(torch.zeros(3, 2), 5)
    with pytest.raises(ValueError, match="NaN"):
        kmeans(torch.tensor([[0.0, float("nan")], [1.0, 1.0]]), 1)
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        kmeans(torch.zeros(3), 1)
