"""Fixtures shared across the test suite.

``device`` and ``bank_dtype`` parametrise kernel tests the way kornia's conftest does: a test
that takes ``device`` runs once per device this machine has (the CUDA leg is collected and
skipped where there is no GPU, so the promise "same bytes on CPU and GPU" is one test that runs
its GPU leg wherever a GPU exists); ``bank_dtype`` runs it once per float dtype a bank may store.
"""

import pytest
import torch

_DEVICES = [pytest.param("cpu", id="cpu"),
            pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                     reason="needs a CUDA GPU"))]


@pytest.fixture(params=_DEVICES)
def device(request) -> torch.device:
    """Each device kernels run on: the CPU always, a CUDA GPU where one exists."""
    return torch.device(request.param)


@pytest.fixture(params=["float16", "float32"], ids=["float16", "float32"])
def bank_dtype(request) -> str:
    """Each float dtype a bank's payload may be stored in (numpy names: banks are Arrow/numpy)."""
    return request.param


@pytest.fixture
def one_thread():
    """One torch thread for the test: tiny CNNs train faster that way, above all on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="session")
def fresh_datasets_cache(tmp_path_factory):
    """A private ``datasets`` cache for the run: ``load_dataset`` of a local folder whose card has
    YAML ``configs`` hashes only the card, not the files, so a cache left by an earlier run (the same
    folder name, the same card, other bytes) would be served instead of what a test just wrote."""
    import os

    import datasets

    path = str(tmp_path_factory.mktemp("hf-datasets-cache"))
    before_env, before = os.environ.get("HF_DATASETS_CACHE"), datasets.config.HF_DATASETS_CACHE
    os.environ["HF_DATASETS_CACHE"] = path  # subprocesses (the CLI tests) too
    datasets.config.HF_DATASETS_CACHE = path
    yield
    datasets.config.HF_DATASETS_CACHE = before
    if before_env is None:
        os.environ.pop("HF_DATASETS_CACHE", None)
    else:
        os.environ["HF_DATASETS_CACHE"] = before_env


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory) -> str:
    """A tiny random small-CNN backbone file (tap, cudatap and the attackers load backbones by path)."""
    from uetransforms.models.encoders import save_small_cnn
    from uetransforms.models.networks import SmallCNN

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bb") / "cnn.safetensors"
    save_small_cnn(SmallCNN(10, 3, width=8), path)
    return str(path)
