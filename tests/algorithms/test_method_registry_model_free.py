"""The five model-free methods are discovered with their kinds."""

import uetransforms as ue


def test_methods_lists_the_model_free_methods_with_their_kind():
    rows = {r["key"]: r for r in ue.methods()}
    expected = {"cuda": "conv", "random": "additive", "lsp": "additive", "ar": "synth", "ops": "pixel"}
    for key, kind in expected.items():
        assert key in rows, f"{key} not discovered"
        assert rows[key]["kind"] == kind
        assert rows[key]["keyed_by"] == "class" and rows[key]["paper"] and rows[key]["summary"]
        assert rows[key]["label_free"] is False
