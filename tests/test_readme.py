"""The README's "first five minutes", Quickstart and "Protect your own photos", executed in order as a
new user would type them, and its tables checked against their one source (the registry and
``uetransforms/assets/measured.json``).

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
import yaml

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
    blocks = _blocks(text, "## The first five minutes", "## Protect your own photos")
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


def make_photos(root, *, per_class: int = 4) -> None:
    """A small folder of ordinary JPEG "photos" of mixed sizes (300x400 ... 1024x768), one
    subfolder per class, with train/ and test/ splits: what a user points the README at."""
    from PIL import Image

    rng = np.random.default_rng(1)
    sizes = [(400, 300), (300, 400), (640, 480), (1024, 768)]  # (width, height)
    for split, n in (("train", per_class), ("test", max(2, per_class // 2))):
        for c, name in enumerate(("cats", "dogs")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                w, h = sizes[(i + c) % len(sizes)]
                # smooth gradients + texture, a class-dependent tint: JPEG-like content, not noise
                yy, xx = np.mgrid[0:h, 0:w]
                base = np.stack([xx * 255 / w, yy * 255 / h, np.full((h, w), 80 + 90 * c)], -1)
                img = (base * 0.8 + rng.normal(0, 12, (h, w, 3))).clip(0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"IMG_{c}{i:03d}.jpg", quality=90)


def test_readme_photo_section_runs_on_mixed_size_photos(tmp_path, monkeypatch, capsys):
    text = open(README, encoding="utf-8").read()
    blocks = _blocks(text, "## Protect your own photos", "## Which method for which need")
    assert [kind for kind, _ in blocks] == ["bash"]
    work = tmp_path / "work"
    work.mkdir()
    make_photos(work / "my-photos")
    monkeypatch.chdir(work)
    outputs = []
    for argv in _commands(blocks[0][1]):
        assert argv[0] == "uetransforms", argv
        rc = main(argv[1:])
        out = capsys.readouterr()
        assert rc == 0, f"`{' '.join(argv)}` failed: {out.err[-2000:]}"
        outputs.append(out)
    assert len(outputs) == 3
    fit, protect, evaluate = outputs
    # 1. the quality line is shown for photos of mixed sizes (it crashed on np.stack before)
    assert "quality: PSNR" in fit.out and "to 768x1024 px" in fit.out
    # 2. the size of the lossless copy is said before writing
    assert "of lossless PNG" in protect.err and "the source's" in protect.err
    # 3. a verdict with the numbers it rests on (these tinted toy photos are easy to tell apart,
    # with or without cuda's blur: the verdict is whatever the run measured)
    from uetransforms.evaluation.verdict import WORDS

    verdicts = [line for line in evaluate.out.splitlines() if line.startswith("verdict")]
    assert len(verdicts) == 1 and any(f"verdict: {w}:" in verdicts[0] for w in WORDS)
    assert "clean training" in verdicts[0] and "protected training" in verdicts[0]
    # the card: a size range, not one image_shape; no instructions to its author; a how-to-load
    card = (work / "my-photos-protected" / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["uetransforms"]["image_sizes"] == ["300x400", "768x1024"] and "image_shape" not in front["uetransforms"]
    assert "pretty_name" in front
    assert "card_extra" not in card and "--license" not in card and "## How to load" in card
    assert "may give different numbers" in card
    # the facts are quoted with the size they were measured at, and the card says none is near these photos
    assert "nothing was measured near 1024 px (the nearest measured size is" in card
    # evaluate's perturbation line says it compares the resized images, not the published ones
    assert "after --resize" in evaluate.out
    # the stored path keeps the source file name, not its folder
    ds = datasets.load_dataset(str(work / "my-photos-protected"), split="train")
    records = ds.cast_column("image", datasets.Image(decode=False))["image"]
    assert {r["path"] for r in records} == {p.name for p in (work / "my-photos" / "train").rglob("*.jpg")}
    assert {Image_format(r["bytes"]) for r in records} == {"PNG"}


def Image_format(data: bytes) -> str:
    import io

    from PIL import Image

    return Image.open(io.BytesIO(data)).format


def _fenced_after(text: str, heading: str, fence: str) -> str:
    body = text[text.index(heading):]
    start = body.index(fence) + len(fence)
    return body[start:body.index("```", start)].strip()


def test_readme_tables_come_from_the_registry_and_measured_json():
    from uetransforms.cli import guide_text, measured_markdown, methods_markdown

    text = open(README, encoding="utf-8").read()
    assert methods_markdown() in text, "README methods table differs from `uetransforms methods`: regenerate it"
    assert measured_markdown() in text, "README measured table differs from measured.json: regenerate it"
    assert _fenced_after(text, "## Which method for which need", "```text\n") == guide_text()


def test_readme_quotes_no_measured_number_that_measured_json_lacks():
    """Every 0.xxx accuracy and NN.N dB in the README is one measured.json holds (issue 24: 0.303
    vs 0.312, 18.9 dB vs 19.5 dB disagreed); the benchmark speed section quotes no such figure."""
    from uetransforms.algorithms import measured

    def numbers(node):
        if isinstance(node, dict):
            for v in node.values():
                yield from numbers(v)
        elif isinstance(node, list):
            for v in node:
                yield from numbers(v)
        elif isinstance(node, float):
            yield node

    known = set()
    for x in numbers(measured.load()):  # the suite's facts and the attacker rows
        known |= {f"{x:.3f}", f"{x:.2f}x", f"{x:.1f} dB"}
    text = open(README, encoding="utf-8").read()
    for found in re.findall(r"\b0\.\d{3}\b", text) + re.findall(r"\b\d+\.\d dB\b", text):
        assert found in known, f"README quotes {found}, which measured.json does not hold"


def test_first_five_minutes_protects_and_names_no_false_licence():
    text = open(README, encoding="utf-8").read()
    walk = text[text.index("## The first five minutes"):text.index("## Quickstart")]
    assert "uetransforms fit cuda" in walk and "fit random" not in walk
    assert "--license mit" not in text


def test_readme_no_labels_section_runs_offline(tmp_path, slice_parquet, monkeypatch, capsys):
    """The "No labels" path end to end: make an encoder file, fit cuda without labels, protect."""
    import uetransforms as ue

    text = open(README, encoding="utf-8").read()
    blocks = _blocks(text, "### No labels", "## Methods")
    assert [kind for kind, _ in blocks] == ["python", "bash"]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    exec(compile(blocks[0][1], "README.md", "exec"), {})  # noqa: S102 - the README is ours
    for argv in _commands(blocks[1][1].replace(CIFAR, slice_parquet)):
        assert argv[0] == "uetransforms", argv
        assert main(argv[1:]) == 0, capsys.readouterr().err[-2000:]
    bank = ue.NoiseBank.load(work / "nolabels.bank.arrow")
    assert bank.keying == "cluster" and "centroid" in bank.tensors
    assert bank.info["surrogate"]["arch"] == "resnet18"
    assert len(datasets.load_dataset(str(work / "nolabels-protected"))["train"]) == 40
