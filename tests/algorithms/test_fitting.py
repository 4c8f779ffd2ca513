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
