"""The method contract (uetransforms.algorithms.Method / Param): one declaration per method, read by
the registry, ``ue.methods()``, the CLI listing, the validation path and the card allow-list."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import warnings

import datasets
import numpy as np
import pytest
import yaml

import uetransforms as ue
from uetransforms import cli
from uetransforms import algorithms as registry
from uetransforms.algorithms import Method, Number, Param, ParameterError, UnknownParameterError

# A third-party method, written as its own module file: nothing in the package is touched.
TOY_SOURCE = '''
"""toy_stripes: adds a fixed +/- stripe pattern per class (a test method, not a protection)."""
import numpy as np

from uetransforms.core.bank import NoiseBank
from uetransforms.algorithms import Choice, Method, Number, Param

METHOD = Method(
    key="toy-stripes",
    paper="Toy stripes (a test method)",
    citation="Nobody, Toy Stripes, Nowhere 2026",
    keyed_by="class",
    needs="nothing",
    kind="additive",
    summary="one stripe pattern per class",
    params=(
        Param("epsilon", 4 / 255, Number(0, 1, lo_open=True), paper=4 / 255, public=True, budget="linf",
              help="stripe amplitude in [0, 1] pixel units"),
        Param("period", 2, Number(1, integer=True), paper=2, public=True, help="stripe period in pixels"),
        Param("phase", 0, Number(0, integer=True), help="a private offset: stays in the bank"),
        Param("axis", "rows", Choice(("rows", "cols")), public=False, help="stripe direction"),
    ),
)


@METHOD.fitter
def fit(data, *, seed, device, epsilon, period, phase, axis):
    k = data.num_classes
    c, h, w = data.image_shape
    n = h if axis == "rows" else w
    sign = np.where(((np.arange(n) + phase) // period) % 2 == 0, 1.0, -1.0)
    line = sign[:, None] if axis == "rows" else sign[None, :]
    delta = np.stack([np.broadcast_to(line * (1 if j % 2 == 0 else -1), (c, h, w)) for j in range(k)])
    delta = (epsilon * delta).astype(np.float32)
    return NoiseBank(method="toy-stripes", kind="additive", keying="class", keys=np.arange(k),
                     tensors={"delta": delta}, image_shape=data.image_shape,
                     params={"epsilon": epsilon, "period": period, "phase": phase, "axis": axis, "seed": seed})
'''


@pytest.fixture
def toy(tmp_path, monkeypatch):
    (tmp_path / "toy_stripes.py").write_text(textwrap.dedent(TOY_SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("toy_stripes")
    method = registry.register(module)
    yield method
    registry.unregister(method.key)
    sys.modules.pop("toy_stripes", None)


def _dataset(n: int = 4, size: int = 8) -> datasets.Dataset:
    rng = np.random.default_rng(0)
    imgs = rng.integers(40, 200, (n, size, size, 3), dtype=np.uint8)  # no clipping at +-4 levels
    return datasets.Dataset.from_dict(
        {"image": list(imgs), "label": [i % 2 for i in range(n)]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}))


def test_toy_method_lists_fits_applies_and_publishes(toy, tmp_path, capsys):
    # listed by the CLI, after the built-ins
    assert cli.main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "toy-stripes" in out and out.index("cuda") < out.index("toy-stripes")
    assert [r["key"] for r in ue.methods()][-1] == "toy-stripes"

    # fits through ue.fit, with validated, defaulted parameters
    ds = _dataset()
    bank = ue.fit("toy-stripes", ds, seed=3, period=1, phase=5)
    assert bank.params == {"epsilon": 4 / 255, "period": 1, "phase": 5, "axis": "rows", "seed": 3}

    # applies through ue.Protect: class 0 gets +4 levels on even rows, class 1 the opposite
    prot = ds.map(ue.Protect(bank), batched=True)
    src = np.stack([np.asarray(im, np.int16) for im in ds["image"]])
    got = np.stack([np.asarray(im, np.int16) for im in prot["image"]])
    diff = got - src
    row_sign = np.where(((np.arange(8) + 5) // 1) % 2 == 0, 4, -4)
    assert np.array_equal(diff[0, :, 0, 0], row_sign) and np.array_equal(diff[1, :, 0, 0], -row_sign)

    # published: the public parameters reach the card, the private ones do not
    ue.publish(ds, bank, tmp_path / "pub")
    text = (tmp_path / "pub" / "README.md").read_text(encoding="utf-8")
    block = yaml.safe_load(text.split("---\n")[1])["uetransforms"]
    assert block["method"] == "toy-stripes"
    assert block["epsilon"] == pytest.approx(4 / 255) and block["period"] == 1
    assert not {"phase", "axis", "seed"} & set(block)


def test_toy_method_validation_goes_through_the_contract(toy):
    ds = _dataset()
    with pytest.raises(UnknownParameterError, match=r"unknown parameter\(s\) \['perod'\].*valid: \['axis', 'epsilon'"):
        ue.fit("toy-stripes", ds, perod=2)
    with pytest.raises(ParameterError, match=r"period=0 .*an integer >= 1; the paper uses 2"):
        ue.fit("toy-stripes", ds, period=0)
    with pytest.warns(UserWarning, match=r"epsilon=32/255 .* 8.0x the paper's budget: .*32 of 255 grey levels"):
        ue.fit("toy-stripes", ds, epsilon=32 / 255)


def test_unknown_parameters_are_value_and_type_errors_for_every_method():
    """One validation path: built-ins that once raised TypeError (clusters, t2ue) and those that
    raised ValueError now raise the same error, which ``except`` of either kind catches."""
    for method in registry.all_methods():
        with pytest.raises(UnknownParameterError) as info:
            method.check({"no_such_parameter": 1})
        assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)
        assert all(p.name in str(info.value) for p in method.params)


def test_range_errors_name_the_paper_value():
    with pytest.raises(ParameterError, match=r"kernel_size=4 .*odd integer >= 1; the paper uses 3"):
        registry.get("cuda").check({"kernel_size": 4})
    with pytest.raises(ParameterError, match=r"epsilon=5 .*\(0, 1\]; the paper uses 16/255"):
        registry.get("clusters").check({"epsilon": 5})


@pytest.mark.parametrize("key, eps", [("random", 8 / 255), ("em", 8 / 255), ("clusters", 16 / 255), ("lsp", 6 / 255)])
def test_budget_above_the_paper_warns_how_visible(key, eps):
    method = registry.get(key)
    with pytest.warns(UserWarning, match=r"epsilon=0.5 .*up to 127 of 255 grey levels.*plainly visible"):
        method.check({"epsilon": 0.5})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        method.check({"epsilon": eps})  # the paper's own budget: silent
        method.check({})


def test_budget_warning_follows_the_norm():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        registry.get("lsp").check({"norm": "l2", "epsilon": 0.5})  # an L2 budget, not an L-inf one
    with pytest.warns(UserWarning, match=r"L2 norm of 3"):
        registry.get("ar").check({"epsilon": 3.0})


def test_every_builtin_declares_one_method_in_display_order():
    keys = [m.key for m in registry.all_methods()]
    assert keys == ["cuda", "clusters", "t2ue", "salm", "bayes", "em", "tap", "cudatap", "ar", "lsp", "ops", "random"]
    for m in registry.all_methods():
        assert m.fit_function is not None and m.citation and m.summary
        assert m.public_names, f"{m.key} publishes no parameter at all"
        assert not {"seed", "salt", "key"} & set(m.public_names)
        for p in m.params:
            assert p.help, f"{m.key}.{p.name} has no help line"
            m.check({p.name: p.default})  # every default is valid


def test_card_allow_list_is_read_from_the_declarations():
    assert registry.public_names("cuda") == ("blur_parameter", "center_parameter", "kernel_size", "normalise", "padding",
                                              "dilation")
    assert "synth" in registry.public_names("ar") and "salt" not in registry.public_names("ar")
    assert registry.public_params("not-installed", {"epsilon": 0.1}) == {}  # an unknown method publishes nothing


def test_the_public_secret_rule_has_one_owner():
    """Cards, suite results and the shipped measured facts all call the registry's rule."""
    import inspect

    from uetransforms.algorithms import measured
    from uetransforms.evaluation import suite
    from uetransforms.publishing import card

    for module in (card, suite, measured):
        src = inspect.getsource(module)
        assert "public_params(" in src, module.__name__
        assert "def public_params" not in src and "SECRET" not in src, f"{module.__name__} keeps its own rule"
    for m, profiles in measured.load()["methods"].items():
        for facts in profiles.values():
            assert set(facts.get("bank_params") or {}) <= set(registry.public_names(m)), m


def test_contract_refuses_secret_public_params_and_duplicates():
    base = dict(paper="p", citation="c", keyed_by="class", needs="n", kind="additive")
    with pytest.raises(ValueError, match="look like secrets"):
        Method(key="x", params=(Param("salt", 0, Number(), public=True, help="h"),), **base)
    with pytest.raises(ValueError, match="twice"):
        Method(key="x", params=(Param("a", 0, Number(), help="h"), Param("a", 1, Number(), help="h")), **base)
    with pytest.raises(ValueError, match=r"label_free_defaults names undeclared parameter\(s\) \['b'\]"):
        Method(key="x", params=(Param("a", 0, Number(), help="h"),), label_free_defaults={"b": 1}, **base)
    bare = Method(key="cuda", **base)
    with pytest.raises(TypeError, match="fitting function"):
        registry.register(bare)
    bare.fitter(lambda data, *, seed, device: None)
    with pytest.raises(ValueError, match="built-in"):
        registry.register(bare)


def test_method_modules_are_importable_by_name():
    import uetransforms.algorithms.cuda as cuda_module

    assert cuda_module.METHOD is registry.get("cuda")
    assert ue.methods is registry.table


# ------------------------------------------------------------------ `uetransforms methods KEY`
def test_cli_lists_one_methods_parameters(capsys):
    assert cli.main(["methods", "cuda"]) == 0
    out = capsys.readouterr().out
    assert registry.get("cuda").citation in out and registry.get("cuda").summary in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("blur_", "kernel_"))}
    assert rows["kernel_size"][:6] == ["kernel_size", "3", "an", "odd", "integer", ">="]
    assert "public" in rows["kernel_size"] and "public" in rows["blur_parameter"]
    assert cli.main(["methods", "ar"]) == 0
    ar_rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line}
    assert "secret" not in ar_rows["epsilon"] and "1.0" in ar_rows["epsilon"]  # the paper's L2 budget
    assert cli.main(["methods", "em"]) == 0
    em_rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line}
    assert "secret" in em_rows["max_seconds"] and "8/255" in em_rows["epsilon"]


def test_cli_lists_a_registered_methods_secret_and_public_params(toy, capsys):
    assert cli.main(["methods", "toy-stripes"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "public" in lines["period"] and "secret" in lines["phase"] and "secret" in lines["axis"]
    assert "Nobody, Toy Stripes, Nowhere 2026" in out


def test_cli_unknown_method_names_the_known_ones(capsys):
    assert cli.main(["methods", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'nope'" in err and "cuda" in err and "random" in err


# ------------------------------------------------------------------ a plug-in package (entry point)
def test_entry_point_plugin_is_found_by_a_fresh_process(tmp_path):
    """A package of yours declares ``[uetransforms.algorithms] toy = toy_stripes`` and the CLI lists
    it in a new process, with no register() call anywhere."""
    (tmp_path / "toy_stripes.py").write_text(textwrap.dedent(TOY_SOURCE))
    info = tmp_path / "toy_stripes-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-stripes\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[uetransforms.methods]\ntoy = toy_stripes\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "uetransforms", "methods"], capture_output=True, text=True, env=env,
                         check=True).stdout
    assert [line.split()[0] for line in out.splitlines()[2:]][-1] == "toy-stripes"
