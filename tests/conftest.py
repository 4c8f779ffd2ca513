"""Fixtures shared across the test suite."""

import pytest
import torch


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
