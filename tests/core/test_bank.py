"""NoiseBank: Arrow IPC round trip, plain-pyarrow readability, memory mapping, tamper detection, pickling."""

from __future__ import annotations

import json
import os
import pickle
import stat
import weakref

import numpy as np
import pyarrow as pa
import pytest

import uetransforms as ue
from uetransforms.core.bank import FORMAT_VERSION, META_KEY, BankError, NoiseBank


def additive_bank(k: int = 3, shape=(3, 8, 8), dtype="float32", seed: int = 0) -> NoiseBank:
    rng = np.random.default_rng(seed)
    delta = (rng.uniform(-1, 1, (k, *shape)) * 8 / 255).astype(dtype)
    return NoiseBank(method="random", kind="additive", keying="class", keys=np.arange(k),
                     tensors={"delta": delta}, params={"epsilon": 8 / 255, "norm": "linf", "seed": 7},
                     info={"class_names": [f"c{i}" for i in range(k)], "note": "unit test"})


def all_kinds() -> list[NoiseBank]:
    rng = np.random.default_rng(1)
    return [
        additive_bank(),
        NoiseBank(method="cuda", kind="conv", keying="class", keys=[0, 1],
                  tensors={"weight": rng.uniform(0, 1, (2, 3, 3, 3)).astype("float32")},
                  image_shape=(3, 8, 8), params={"kernel_size": 3}),
        NoiseBank(method="ops", kind="pixel", keying="class", keys=[0, 1],
                  tensors={"mask": rng.uniform(size=(2, 1, 8, 8)) > 0.9,
                           "value": rng.integers(0, 256, (2, 3, 8, 8), dtype=np.uint8)}),
        NoiseBank(method="ar", kind="synth", keying="class", keys=[0, 1],
                  tensors={"coef": rng.normal(size=(2, 3, 8)).astype("float32")},
                  image_shape=(3, 8, 8), params={"synth": "ar", "epsilon": 1.0, "norm": "l2", "salt": 3}),
    ]


def assert_same_bank(a: NoiseBank, b: NoiseBank) -> None:
    assert (a.method, a.kind, a.keying) == (b.method, b.kind, b.keying)
    assert a.keys.tolist() == b.keys.tolist()
    assert a.params == b.params
    assert a.info == b.info
    assert a.image_shape == b.image_shape
    assert sorted(a.tensors) == sorted(b.tensors)
    for name in a.tensors:
        assert a.tensors[name].dtype == b.tensors[name].dtype
        np.testing.assert_array_equal(a.tensors[name], b.tensors[name])
    assert a.sha256 == b.sha256


@pytest.mark.parametrize("bank", all_kinds(), ids=lambda b: b.kind)
def test_round_trip_every_kind(tmp_path, bank):
    sha = bank.sha256
    path = tmp_path / "b.arrow"
    assert bank.save(path) == os.fspath(path)
    loaded = NoiseBank.load(path)
    assert_same_bank(bank, loaded)
    assert loaded.sha256 == sha
    assert loaded.path == os.path.abspath(path)
    # Saving again gives the same digest: it covers content only, not time or path.
    bank.save(tmp_path / "c.arrow")
    assert NoiseBank.load(tmp_path / "c.arrow").sha256 == sha


def test_sha256_depends_on_content():
    a, b = additive_bank(seed=0), additive_bank(seed=1)
    assert a.sha256 != b.sha256
    c = additive_bank(seed=0).replace(params={"epsilon": 4 / 255})
    assert c.sha256 != a.sha256


def test_float16_payload_round_trips(tmp_path):
    bank = additive_bank(dtype="float16")
    bank.save(tmp_path / "h.arrow")
    loaded = NoiseBank.load(tmp_path / "h.arrow")
    assert loaded.tensors["delta"].dtype == np.float16
    np.testing.assert_array_equal(loaded.tensors["delta"], bank.tensors["delta"])


def test_bool_mask_is_stored_as_uint8(tmp_path):
    bank = all_kinds()[2]
    assert bank.tensors["mask"].dtype == np.uint8
    bank.save(tmp_path / "p.arrow")
    assert NoiseBank.load(tmp_path / "p.arrow").tensors["mask"].dtype == np.uint8


def test_readable_by_plain_pyarrow(tmp_path):
    bank = additive_bank()
    path = tmp_path / "b.arrow"
    bank.save(path)
    table = pa.ipc.open_file(pa.memory_map(os.fspath(path))).read_all()
    meta = json.loads(table.schema.metadata[b"uetransforms"])
    for key in ("method", "kind", "keying", "format_version", "sha256", "library_version"):
        assert key in meta
    assert meta["method"] == "random" and meta["kind"] == "additive" and meta["keying"] == "class"
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["sha256"] == bank.sha256
    assert meta["library_version"] == ue.__version__
    assert table.column("key").to_pylist() == [0, 1, 2]
    assert isinstance(table.schema.field("delta").type, pa.FixedShapeTensorType)
    assert table.schema.field("delta").type.shape == [3, 8, 8]
    arr = table.column("delta").chunk(0).to_numpy_ndarray()
    np.testing.assert_array_equal(arr, bank.tensors["delta"])


def test_loaded_tensors_are_memory_mapped_above_the_in_memory_bound(tmp_path, monkeypatch):
    import uetransforms.core.bank as bank_module

    bank = additive_bank(k=4, shape=(3, 16, 16))
    bank.save(tmp_path / "b.arrow")
    monkeypatch.setattr(bank_module, "IN_MEMORY_BYTES", 0)  # every bank counts as large
    loaded = NoiseBank.load(tmp_path / "b.arrow")
    arr = loaded.tensors["delta"]
    # A view over the mapped file, not a copy the loader owns.
    assert not arr.flags.owndata
    assert arr.base is not None
    assert not arr.flags.writeable
    assert loaded._mapped is not None


def test_small_banks_are_read_into_memory(tmp_path):
    from uetransforms.core.apply import Applier
    from uetransforms.core.bank import IN_MEMORY_BYTES

    assert Applier.RESIDENT_BYTES == IN_MEMORY_BYTES  # what is read whole is exactly what the kernel keeps whole
    additive_bank(k=4, shape=(3, 16, 16)).save(tmp_path / "b.arrow")
    loaded = NoiseBank.load(tmp_path / "b.arrow")
    assert loaded._mapped is None
    assert not loaded.tensors["delta"].flags.writeable


def test_gather_returns_rows(tmp_path):
    bank = additive_bank(k=4)
    bank.save(tmp_path / "b.arrow")
    loaded = NoiseBank.load(tmp_path / "b.arrow")
    np.testing.assert_array_equal(loaded.gather("delta", np.array([3, 0, 3])), bank.tensors["delta"][[3, 0, 3]])


# ------------------------------------------------------------------ tamper detection
def _payload_offset(path, bank: NoiseBank) -> int:
    data = open(path, "rb").read()
    needle = bank.tensors["delta"].tobytes()[:64]
    off = data.find(needle)
    assert off > 0, "payload bytes not found in the file"
    return off


def test_flipped_payload_byte_is_detected(tmp_path):
    bank = additive_bank()
    path = tmp_path / "b.arrow"
    bank.save(path)
    off = _payload_offset(path, bank) + 5
    raw = bytearray(open(path, "rb").read())
    raw[off] ^= 0x01
    open(path, "wb").write(bytes(raw))
    with pytest.raises(BankError, match="sha256"):
        NoiseBank.load(path)
    # verify=False is the explicit opt-out (used by workers that got the digest from the parent).
    NoiseBank.load(path, verify=False)


def test_expected_sha256_mismatch(tmp_path):
    bank = additive_bank()
    bank.save(tmp_path / "b.arrow")
    with pytest.raises(BankError, match="changed"):
        NoiseBank.load(tmp_path / "b.arrow", verify=False, expect_sha256="0" * 64)


def test_truncated_file(tmp_path):
    bank = additive_bank()
    path = tmp_path / "b.arrow"
    bank.save(path)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(BankError, match="not a readable uetransforms bank"):
        NoiseBank.load(path)


def _rewrite_meta(src, dst, edit) -> None:
    table = pa.ipc.open_file(pa.memory_map(os.fspath(src))).read_all()
    meta = json.loads(table.schema.metadata[META_KEY])
    raw = edit(meta)
    table = table.replace_schema_metadata({META_KEY: raw if isinstance(raw, bytes) else json.dumps(raw).encode()})
    with pa.OSFile(os.fspath(dst), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)


def test_edited_metadata_is_detected(tmp_path):
    bank = additive_bank()
    bank.save(tmp_path / "b.arrow")

    def more_eps(meta):
        meta["params"]["epsilon"] = 64 / 255
        return meta

    _rewrite_meta(tmp_path / "b.arrow", tmp_path / "eps.arrow", more_eps)
    with pytest.raises(BankError, match="sha256"):
        NoiseBank.load(tmp_path / "eps.arrow")

    _rewrite_meta(tmp_path / "b.arrow", tmp_path / "json.arrow", lambda m: b"{not json")
    with pytest.raises(BankError, match="not valid JSON"):
        NoiseBank.load(tmp_path / "json.arrow")

    def wrong_shape(meta):
        meta["tensors"]["delta"]["shape"] = [3, 4, 4]
        return meta

    _rewrite_meta(tmp_path / "b.arrow", tmp_path / "shape.arrow", wrong_shape)
    with pytest.raises(BankError, match="metadata says"):
        NoiseBank.load(tmp_path / "shape.arrow")

    def no_method(meta):
        del meta["method"]
        return meta

    _rewrite_meta(tmp_path / "b.arrow", tmp_path / "nomethod.arrow", no_method)
    with pytest.raises(BankError, match="method"):
        NoiseBank.load(tmp_path / "nomethod.arrow")


def test_newer_format_version_asks_to_upgrade(tmp_path):
    bank = additive_bank()
    bank.save(tmp_path / "b.arrow")

    def bump(meta):
        meta["format_version"] = 99
        return meta

    _rewrite_meta(tmp_path / "b.arrow", tmp_path / "v99.arrow", bump)
    with pytest.raises(BankError, match="upgrade") as err:
        NoiseBank.load(tmp_path / "v99.arrow")
    assert "99" in str(err.value)


def test_foreign_arrow_file(tmp_path):
    table = pa.table({"key": [0, 1], "x": [1.0, 2.0]})
    path = os.fspath(tmp_path / "foreign.arrow")
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    with pytest.raises(BankError, match="not a uetransforms bank"):
        NoiseBank.load(path)


def test_non_arrow_file(tmp_path):
    path = tmp_path / "bank.arrow"
    path.write_bytes(b"PK\x03\x04 this is a zip, not a bank" * 10)
    with pytest.raises(BankError, match="not a readable uetransforms bank"):
        NoiseBank.load(path)
    with pytest.raises(BankError):
        NoiseBank.from_bytes(b"garbage")


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no bank file"):
        NoiseBank.load(tmp_path / "nope.arrow")


# ------------------------------------------------------------------ never a pickle
def test_file_is_arrow_not_pickle(tmp_path, monkeypatch):
    bank = additive_bank()
    path = tmp_path / "b.arrow"
    bank.save(path)
    head = open(path, "rb").read(8)
    assert head.startswith(b"ARROW1")
    assert head[:1] != b"\x80"  # the PROTO opcode every pickle (protocol >= 2) starts with

    def no_pickle(*a, **k):
        raise AssertionError("loading a bank must not unpickle anything")

    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "Unpickler", no_pickle)
    assert_same_bank(bank, NoiseBank.load(path))


def test_pickle_of_saved_bank_is_tiny(tmp_path):
    bank = additive_bank(k=10, shape=(3, 32, 32))  # ~120 KB of payload
    bank.save(tmp_path / "b.arrow")
    blob = pickle.dumps(bank)
    assert len(blob) < 1024
    restored = pickle.loads(blob)
    assert_same_bank(bank, restored)
    assert restored.path == bank.path


def test_pickle_of_saved_bank_refuses_a_changed_file(tmp_path):
    bank = additive_bank()
    bank.save(tmp_path / "b.arrow")
    blob = pickle.dumps(bank)
    additive_bank(seed=5).save(tmp_path / "b.arrow", overwrite=True)  # a different bank at the same path
    # Unpickling does not raise (that would kill a num_proc worker with no message): first use does.
    restored = pickle.loads(blob)
    with pytest.raises(BankError, match="changed"):
        restored.gather("delta", np.array([0]))
    with pytest.raises(BankError, match="changed"):
        pickle.dumps(restored)


def test_pickle_of_unsaved_bank_uses_arrow_bytes():
    bank = additive_bank()
    blob = pickle.dumps(bank)
    assert b"ARROW1" in blob
    restored = pickle.loads(blob)
    assert_same_bank(bank, restored)
    assert restored.path is None


def test_bytes_round_trip():
    for bank in all_kinds():
        assert_same_bank(bank, NoiseBank.from_bytes(bank.to_bytes()))


# ------------------------------------------------------------------ keys
def test_sample_keyed_bank_with_string_keys(tmp_path):
    ids = ["img-a", "img-b", "42", "ü-unicode"]
    delta = np.random.default_rng(0).uniform(-0.01, 0.01, (4, 3, 4, 4)).astype("float32")
    bank = NoiseBank(method="em", kind="additive", keying="sample", keys=ids, tensors={"delta": delta})
    bank.save(tmp_path / "s.arrow")
    loaded = NoiseBank.load(tmp_path / "s.arrow")
    assert loaded.keys.tolist() == ids
    assert_same_bank(bank, loaded)
    np.testing.assert_array_equal(loaded.rows_for(["42", "img-a", "ü-unicode"]), [2, 0, 3])
    with pytest.raises(BankError, match="'missing' is not in this sample-wise bank"):
        loaded.rows_for(["img-a", "missing"])


def test_rows_for_class_keys():
    bank = additive_bank(k=3)
    np.testing.assert_array_equal(bank.rows_for([2, 0, 1, 2]), [2, 0, 1, 2])
    np.testing.assert_array_equal(bank.rows_for(np.array([1], dtype=np.uint8)), [1])


def test_rows_for_sparse_and_large_keys():
    bank = NoiseBank(method="x", kind="additive", keying="cluster", keys=[5, 2_000_000, 17],
                     tensors={"delta": np.zeros((3, 1, 2, 2), "float32")})
    np.testing.assert_array_equal(bank.rows_for([17, 5, 2_000_000]), [2, 0, 1])
    with pytest.raises(BankError, match=r"\[6\] not in the bank"):
        bank.rows_for([6])


def test_rows_for_unknown_label_names_label_and_keys():
    bank = additive_bank(k=3)
    with pytest.raises(BankError) as err:
        bank.rows_for([0, 7, 1])
    msg = str(err.value)
    assert "7" in msg and "0..2" in msg and "label_column" in msg
    with pytest.raises(BankError, match="-1"):
        bank.rows_for([-1])


def test_rows_for_non_integer_labels():
    bank = additive_bank(k=3)
    with pytest.raises(BankError, match="must be integers.*'cat'"):
        bank.rows_for(["cat", "dog"])
    with pytest.raises(BankError, match="must be integers"):
        bank.rows_for([0.5, 1.0])


# ------------------------------------------------------------------ construction errors
@pytest.mark.parametrize(
    "kwargs, phrase",
    [
        (dict(kind="blur"), "unknown bank kind"),
        (dict(keying="pixel"), "unknown keying"),
        (dict(keys=[0, 0]), "unique"),
        (dict(keys=[]), "non-empty"),
        (dict(keys=["a", "b"]), "must be integers"),
        (dict(keys=[0, 1, 2]), "rows but there are 3 keys"),
        (dict(tensors={"noise": np.zeros((2, 3, 4, 4))}), "needs tensors"),
        (dict(tensors={"delta": np.zeros((2, 3, 4, 4)), "key": np.zeros((2, 1))}), "reserved"),
        (dict(image_shape=(4, 4)), r"\(C, H, W\)"),
    ],
)
def test_constructor_errors(kwargs, phrase):
    args = dict(method="m", kind="additive", keying="class", keys=[0, 1],
                tensors={"delta": np.zeros((2, 3, 4, 4), "float32")})
    args.update(kwargs)
    with pytest.raises(BankError, match=phrase):
        NoiseBank(**args)


def test_conv_bank_needs_image_shape():
    with pytest.raises(BankError, match="image_shape is required"):
        NoiseBank(method="cuda", kind="conv", keying="class", keys=[0], tensors={"weight": np.ones((1, 3, 3, 3))})


def test_float64_is_stored_as_float32():
    bank = NoiseBank(method="m", kind="additive", keying="class", keys=[0],
                     tensors={"delta": np.zeros((1, 3, 2, 2), np.float64)})
    assert bank.tensors["delta"].dtype == np.float32


def test_numpy_scalars_in_params_are_stored_as_numbers(tmp_path):
    bank = NoiseBank(method="m", kind="additive", keying="class", keys=[0],
                     tensors={"delta": np.zeros((1, 3, 2, 2), "float32")},
                     params={"epsilon": np.float32(0.5), "steps": np.int64(3), "shape": (2, 2)},
                     info={"classes": np.array([1, 2])})
    assert type(bank.params["epsilon"]) is float and bank.params["steps"] == 3 and bank.params["shape"] == [2, 2]
    assert bank.info["classes"] == [1, 2]
    bank = bank.replace(info={**bank.info, "added_later": np.float64(1.5)})  # replace() normalises too
    assert type(bank.info["added_later"]) is float
    bank.save(tmp_path / "b.arrow")
    assert_same_bank(bank, NoiseBank.load(tmp_path / "b.arrow"))


def test_unserialisable_params_fail_early():
    with pytest.raises(BankError, match="JSON-serialisable"):
        NoiseBank(method="m", kind="additive", keying="class", keys=[0],
                  tensors={"delta": np.zeros((1, 3, 2, 2), "float32")}, params={"fn": print})


def test_rows_for_empty_batch():
    assert additive_bank().rows_for([]).tolist() == []


@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_save_is_private_whatever_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = additive_bank().save(tmp_path / "k.bank.arrow")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["k.bank.arrow"]  # no temp file left


def test_save_refuses_to_replace_a_bank_unless_overwrite(tmp_path):
    path = tmp_path / "k.bank.arrow"
    first = additive_bank()
    first.save(path)
    with pytest.raises(FileExistsError, match=r"overwrite=True \(--overwrite on the command line\)"):
        additive_bank(seed=5).save(path)
    assert NoiseBank.load(path).sha256 == first.sha256  # the secret key is intact
    additive_bank(seed=5).save(path, overwrite=True)
    assert NoiseBank.load(path).sha256 == additive_bank(seed=5).sha256
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


# ------------------------------------------------------------------ immutability
def test_bank_is_immutable_after_construction(tmp_path):
    import copy

    bank = NoiseBank(method="m", kind="additive", keying="class", keys=[0, 1],
                     tensors={"delta": np.zeros((2, 3, 2, 2), "float32")},
                     params={"epsilon": 0.1, "nested": {"a": [1, 2]}}, info={"targets": [1, 0]})
    with pytest.raises(ValueError, match="read-only"):
        bank.tensors["delta"][0, 0, 0, 0] = 1.0
    for change in (lambda: bank.params.__setitem__("epsilon", 0.5), lambda: bank.params.update(x=1),
                   lambda: bank.info.setdefault("class_names", []), lambda: bank.params["nested"]["a"].append(3),
                   lambda: bank.info["targets"].__setitem__(0, 5), lambda: bank.params.pop("epsilon")):
        with pytest.raises(TypeError, match=r"bank.replace"):
            change()
    # Read like plain JSON values: equality, json, copies and pickles.
    assert bank.info["targets"] == [1, 0] and bank.params["nested"] == {"a": [1, 2]}
    assert json.loads(json.dumps(bank.params)) == {"epsilon": 0.1, "nested": {"a": [1, 2]}}
    again = pickle.loads(pickle.dumps(bank.params))
    assert again == bank.params
    with pytest.raises(TypeError):
        again["nested"]["a"].append(3)  # still frozen after a pickle round trip
    assert copy.deepcopy(bank.info) == {"targets": [1, 0]}
    loaded = NoiseBank.load(bank.save(tmp_path / "b.arrow"))
    assert not loaded.tensors["delta"].flags.writeable
    with pytest.raises(TypeError):
        loaded.info["x"] = 1


def _mutations(bank: NoiseBank, other: np.ndarray):
    """Every way the audit found (or could think of) to change a made bank, by name."""
    return {
        "tensors[name] = other": lambda: bank.tensors.__setitem__("delta", other),
        "tensors[new] = other": lambda: bank.tensors.__setitem__("extra", other),
        "del tensors[name]": lambda: bank.tensors.__delitem__("delta"),
        "tensors.update": lambda: bank.tensors.update(delta=other),
        "tensors.pop": lambda: bank.tensors.pop("delta"),
        "tensors.setdefault": lambda: bank.tensors.setdefault("extra", other),
        "tensors.clear": lambda: bank.tensors.clear(),
        "tensors |= ": lambda: bank.tensors.__ior__({"delta": other}),
        **{f"bank.{name} = ...": (lambda name=name, value=value: setattr(bank, name, value)) for name, value in {
            "method": "em", "kind": "conv", "keying": "sample", "keys": np.arange(3) + 5, "tensors": {"delta": other},
            "params": {"epsilon": 1.0}, "info": {}, "image_shape": (3, 4, 4), "version": "0", "path": "/tmp/x",
            "fit_seconds": 1.0, "sha256": "0" * 64, "_sha256": "0" * 64, "_bytes": b"", "new_attribute": 1,
        }.items()},
        **{f"del bank.{name}": (lambda name=name: delattr(bank, name)) for name in ("method", "keys", "_sha256")},
    }


def test_made_bank_refuses_every_change_and_keeps_its_digest(tmp_path):
    bank = additive_bank()
    before, fresh = bank.sha256, additive_bank().sha256
    assert before == fresh
    other = np.ones_like(bank.tensors["delta"])
    for route, change in _mutations(bank, other).items():
        with pytest.raises((TypeError, AttributeError), match=r"immutable.*bank\.replace\(\.\.\.\)") as err:
            change()
        assert isinstance(err.value, AttributeError) == route.startswith(("bank.", "del bank.")), route
    keys_before = bank.keys.copy()
    for write in (lambda: bank.keys.__setitem__(0, 9), lambda: bank.keys.sort(), lambda: bank.keys.fill(1)):
        with pytest.raises(ValueError, match="read-only"):
            write()
    with pytest.raises(ValueError, match="read-only"):
        bank.tensors["delta"] += 1
    # Nothing changed, and the cached digest is still the digest of what the bank holds.
    np.testing.assert_array_equal(bank.keys, keys_before)
    assert (bank.method, bank.kind, bank.image_shape, bank.path) == ("random", "additive", (3, 8, 8), None)
    assert sorted(bank.tensors) == ["delta"] and not np.any(bank.tensors["delta"] == 1)
    assert bank.sha256 == before == NoiseBank.from_bytes(bank.to_bytes(), verify=True).sha256
    with pytest.raises(AttributeError, match=r"bank\.save\(path\)"):
        bank.path = str(tmp_path / "elsewhere.arrow")
    assert not hasattr(bank, "__dict__")  # no back door around __setattr__ (bank.__dict__["kind"] = ...)
    assert weakref.ref(bank)() is bank  # callers may still cache by bank


def test_bank_takes_a_copy_of_the_keys_and_sample_keys_are_read_only_too():
    keys = np.arange(3)
    bank = NoiseBank(method="m", kind="additive", keying="class", keys=keys,
                     tensors={"delta": np.zeros((3, 3, 2, 2), "float32")})
    keys[0] = 7  # the caller's array is still theirs to write
    assert bank.keys.tolist() == [0, 1, 2] and not bank.keys.flags.writeable
    sample = NoiseBank(method="m", kind="additive", keying="sample", keys=["a", "b"],
                       tensors={"delta": np.zeros((2, 3, 2, 2), "float32")})
    with pytest.raises(ValueError, match="read-only"):
        sample.keys[0] = "b"
    assert sample.rows_for(["b", "a"]).tolist() == [1, 0]


@pytest.mark.parametrize("how", ["load", "from_bytes", "pickle", "replace", "copy", "deepcopy"])
def test_banks_made_any_way_are_frozen_and_still_work(tmp_path, how):
    import copy

    bank = additive_bank()
    path = tmp_path / "b.arrow"
    made = {
        "load": lambda: NoiseBank.load(bank.save(path)),
        "from_bytes": lambda: NoiseBank.from_bytes(bank.to_bytes()),
        "pickle": lambda: pickle.loads(pickle.dumps(bank)),
        "replace": lambda: bank.replace(fit_seconds=2.0),
        "copy": lambda: copy.copy(bank),
        "deepcopy": lambda: copy.deepcopy(bank),
    }[how]()
    assert_same_bank(made, bank)
    assert (made.path is not None) == (how == "load")
    assert made.rows_for([2, 0]).tolist() == [2, 0]  # the lazily built row index is a cache, not a change
    with pytest.raises(TypeError, match="immutable"):
        made.tensors["delta"] = np.zeros_like(bank.tensors["delta"])
    with pytest.raises(AttributeError, match="immutable"):
        made.image_shape = (3, 4, 4)
    assert not made.keys.flags.writeable and not made.tensors["delta"].flags.writeable
    # A changed bank is a new bank with its own digest; the original keeps its own.
    changed = made.replace(tensors={"delta": np.zeros_like(bank.tensors["delta"])}, method="em")
    assert changed.method == "em" and changed.sha256 != bank.sha256 and made.sha256 == bank.sha256
    assert pickle.loads(pickle.dumps(changed)).sha256 == changed.sha256


def test_replace_makes_a_new_bank():
    bank = additive_bank()
    digest = bank.sha256
    other = bank.replace(info={"class_names": ["a", "b", "c"]}, fit_seconds=1.5)
    assert other is not bank and bank.sha256 == digest and bank.info["class_names"] == ["c0", "c1", "c2"]
    assert other.info["class_names"] == ["a", "b", "c"] and other.fit_seconds == 1.5 and other.sha256 != digest
    assert other.tensors["delta"] is bank.tensors["delta"]  # payload shared, not copied
    assert bank.replace(fit_seconds=2.0).sha256 == digest  # fit time is not part of the bank's identity
    with pytest.raises(TypeError, match="unknown field"):
        bank.replace(sha256="x")


def test_fit_returns_an_immutable_bank_with_its_fit_time():
    ds = {"image": list(np.zeros((4, 8, 8, 3), np.uint8)), "label": [0, 1, 0, 1]}
    bank = ue.fit("random", ds, seed=3)
    assert bank.fit_seconds is not None and bank.fit_seconds >= 0
    assert bank.sha256 == NoiseBank.from_bytes(bank.to_bytes()).sha256  # the digest covers the final info
    with pytest.raises(TypeError):
        bank.info["class_names"] = ["x"]


def test_pickle_of_unsaved_bank_carries_no_arrays():
    bank = additive_bank(k=2)
    blob = pickle.dumps(bank)
    assert b"numpy" not in blob and b"ndarray" not in blob
    back = pickle.loads(blob)
    assert back.sha256 == bank.sha256 and pickle.dumps(back) == blob  # bytes made once, stable


# ------------------------------------------------------------------ the bank is safe and what it says it is
def _nan_table(bank: NoiseBank) -> pa.Table:
    """The bank's table with one NaN in its delta (metadata, shapes and dtypes unchanged)."""
    from uetransforms.core.bank import _tensor_array

    delta = np.array(bank.tensors["delta"])
    delta[1, 0, 0, 0] = np.nan
    table = bank.to_table()
    return table.set_column(table.column_names.index("delta"), "delta", _tensor_array(delta))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_non_finite_tensors_are_refused_at_construction(bad, dtype):
    delta = np.zeros((2, 3, 4, 4), dtype)
    delta[1, 2, 3, 3] = bad
    with pytest.raises(BankError, match=r"tensor 'delta' holds non-finite values \(NaN or infinity\), first in row 1"):
        NoiseBank(method="random", kind="additive", keying="class", keys=[0, 1], tensors={"delta": delta})


@pytest.mark.parametrize("verify", [True, False])
def test_non_finite_tensors_are_refused_at_load(tmp_path, verify):
    table = _nan_table(additive_bank())
    path = tmp_path / "nan.arrow"
    with pa.OSFile(os.fspath(path), "wb") as f, pa.ipc.new_file(f, table.schema) as writer:
        writer.write_table(table)
    with pytest.raises(BankError, match="non-finite"):
        NoiseBank.load(path, verify=verify)
    with pytest.raises(BankError, match="non-finite"):
        NoiseBank.from_bytes(path.read_bytes(), verify=verify)


def test_save_into_a_directory_is_a_clear_error_and_leaves_no_copy(tmp_path):
    target = tmp_path / "banks"
    target.mkdir()
    for overwrite in (False, True):
        with pytest.raises(IsADirectoryError, match=r"is a directory; a bank is saved as one file: pass a file path"):
            additive_bank().save(target, overwrite=overwrite)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["banks"]  # no <dir>.tmp-PID copy of the secret
    assert list(target.iterdir()) == []


def test_save_into_a_missing_folder_names_the_folder(tmp_path):
    missing = tmp_path / "no" / "such"
    with pytest.raises(FileNotFoundError) as info:
        additive_bank().save(missing / "k.bank.arrow")
    assert repr(os.fspath(missing)) in str(info.value) and "create it first" in str(info.value)
    assert ".tmp" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_threads_saving_one_path_each_succeed(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    banks = [additive_bank(seed=i) for i in range(8)]
    path = tmp_path / "k.bank.arrow"
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda b: b.save(path, overwrite=True), banks))
    assert results == [os.fspath(path)] * 8  # no FileNotFoundError from a shared temporary name
    assert NoiseBank.load(path).sha256 in {b.sha256 for b in banks}
    assert [p.name for p in tmp_path.iterdir()] == ["k.bank.arrow"]


def test_a_failed_save_leaves_no_temporary_copy(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="No space"):
        additive_bank().save(tmp_path / "k.bank.arrow")
    assert list(tmp_path.iterdir()) == []


def test_bank_copied_over_the_file_after_load_is_not_applied(tmp_path):
    """``Protect(path)`` then another bank copied over ``path`` (same inode): the first bank's noise,
    the first bank's sha256, in process; a clear refusal in num_proc workers."""
    import shutil

    import datasets

    a, b = additive_bank(k=2, seed=1), additive_bank(k=2, seed=2)
    a.save(tmp_path / "a.arrow")
    b.save(tmp_path / "b.arrow")
    ds = datasets.Dataset.from_dict({"image": list(np.full((4, 8, 8, 3), 100, np.uint8)), "label": [0, 1, 0, 1]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "label": datasets.ClassLabel(num_classes=2)}))
    p = ue.Protect(os.fspath(tmp_path / "a.arrow"))
    shutil.copyfile(tmp_path / "b.arrow", tmp_path / "a.arrow")  # rewrites the same inode in place
    out = ds.map(p, batched=True, batch_size=2, load_from_cache_file=False)
    assert p.bank.sha256 == a.sha256
    noise = np.asarray(out[1]["image"]).astype(int) - 100
    np.testing.assert_array_equal(noise, np.round(a.tensors["delta"][1].transpose(1, 2, 0) * 255))
    with pytest.raises(BankError, match="bank (file )?changed since this transform was made"):
        ds.map(p, batched=True, batch_size=2, num_proc=2, load_from_cache_file=False)


def test_a_bank_truncated_while_in_use_cannot_kill_the_process(tmp_path):
    """Truncating a loaded bank's file used to kill the process with SIGBUS at its first batch."""
    import subprocess
    import sys
    import textwrap

    additive_bank(k=2).save(tmp_path / "a.arrow")
    script = textwrap.dedent(f"""
        import numpy as np, os, uetransforms as ue
        from uetransforms.core.apply import Applier
        bank = ue.NoiseBank.load({os.fspath(tmp_path / "a.arrow")!r})
        os.truncate(bank.path, 0)
        out = Applier(bank).protect([np.full((3, 8, 8), 100, np.uint8)], labels=[1])[0]
        assert np.array_equal(out.astype(int) - 100, np.round(bank.tensors["delta"][1] * 255))
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0 and "ok" in run.stdout, (run.returncode, run.stderr[-2000:])


def test_a_mapped_bank_changed_in_place_is_refused(tmp_path, monkeypatch):
    """Large (memory-mapped) banks: a file rewritten under them is refused, not applied."""
    import shutil

    import uetransforms.core.bank as bank_module

    monkeypatch.setattr(bank_module, "IN_MEMORY_BYTES", 0)
    additive_bank(seed=1).save(tmp_path / "a.arrow")
    additive_bank(seed=2).save(tmp_path / "b.arrow")
    bank = NoiseBank.load(tmp_path / "a.arrow")
    bank.gather("delta", np.array([0]))
    shutil.copyfile(tmp_path / "b.arrow", tmp_path / "a.arrow")
    with pytest.raises(BankError, match="memory-mapped bank file changed while in use"):
        bank.gather("delta", np.array([0]))
    with pytest.raises(BankError, match="changed while in use"):
        bank.replace(info={}).gather("delta", np.array([0]))
    with pytest.raises(BankError, match="changed while in use"):  # not shipped to workers under its old digest
        pickle.dumps(bank)


def test_a_bank_readable_by_others_loads_with_a_warning(tmp_path, recwarn):
    path = tmp_path / "k.bank.arrow"
    additive_bank().save(path)
    NoiseBank.load(path)
    assert not [w for w in recwarn if "others may read it" in str(w.message)]
    os.chmod(path, 0o644)
    with pytest.warns(UserWarning, match=r"mode 0644: others may read it.*chmod 600"):
        NoiseBank.load(path)
