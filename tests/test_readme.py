"""The README's "first five minutes" and Quickstart, executed in order as a new user would type them.

Every ``bash`` block's ``uetransforms ...`` lines run through the CLI and every ``python`` block is
executed, top to bottom, in one fresh directory and one namespace, so a clash between sections
(a bank file written twice, a name used before it is defined) fails here. The CIFAR-10 path is
replaced by a small synthetic slice with the same columns, so the test needs no data files.
"""

from __future__ import annotations

import os
import re
import shlex

import datasets
import numpy as np
import pytest

from uetransforms.cli import main

README = os.path.join(os.path.dirname(__file__), "..", "README.md")
CIFAR = "../shared/data/cifar10/train-00000-of-00001.parquet"

pytestmark = pytest.mark.usefixtures("one_thread")


def _blocks(text: str, start: str, stop: str) -> list[tuple[str, str]]:
    body = text[text.index(start):text.index(stop)]
    return re.findall(r"```(bash|python)\n(.*?)```", body, flags=re.S)


def _commands(block: str) -> list[list[str]]:
    joined = block.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(shlex.split(line))
    return out


@pytest.fixture
def slice_parquet(tmp_path) -> str:
    rng = np.random.default_rng(0)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    ds = datasets.Dataset.from_dict(
        {"img": list(rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)), "label": [i % 10 for i in range(40)]},
        features=datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=names)}),
    )
    path = tmp_path / "cifar-slice.parquet"
    ds.to_parquet(str(path))
    return str(path)


def test_readme_first_five_minutes_and_quickstart_run_in_order(tmp_path, slice_parquet, monkeypatch, capsys):
    text = open(README, encoding="utf-8").read()
    blocks = _blocks(text, "## The first five minutes", "## Methods")
    assert [kind for kind, _ in blocks].count("python") >= 3 and [kind for kind, _ in blocks].count("bash") >= 2
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    namespace: dict = {}
    ran = 0
    for kind, block in blocks:
        block = block.replace(CIFAR, slice_parquet)
        if kind == "python":
            exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README is ours
            ran += 1
            continue
        for argv in _commands(block):
            assert argv[0] == "uetransforms", f"README bash line is not a uetransforms command: {argv}"
            rc = main(argv[1:])
            assert rc == 0, f"`{' '.join(argv)}` failed: {capsys.readouterr().err[-2000:]}"
            ran += 1
    assert ran >= 8
    # What the sections promise: lossless PNG, a private bank, one card, nothing written twice.
    published = datasets.load_dataset(str(work / "first-try-protected"))["train"]
    assert len(published) == 40 and {im.format for im in published["img"]} == {"PNG"}
    for made in ("first-try.bank.arrow", "first-try-protected/README.md", "cifar10-cuda.bank.arrow",
                 "cifar10-unlearnable/README.md", "cifar10-cuda-cli.bank.arrow", "cifar10-unlearnable-cli/README.md"):
        assert (work / made).exists(), made
    assert namespace["img"].shape == (3, 32, 32) and namespace["label"] == 0


def test_readme_defences_table_is_the_registry():
    from uetransforms.evaluation.defences import markdown_table

    text = open(README).read()
    block = text.split("<!-- defences-table -->\n", 1)[1].split("\n<!-- /defences-table -->", 1)[0]
    assert block == markdown_table()


def test_readme_lists_the_public_names():
    import uetransforms as ue

    text = open(README).read()
    section = text.split("## How the package is laid out", 1)[1]
    for name in ue.__all__:
        if name == "__version__" or name.endswith(("Error", "Warning", "Conflict")):
            continue
        assert f"`{name}`" in section, name

