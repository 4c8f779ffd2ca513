"""Faults while publishing: after each, the output loads with every row or does not exist.

The writer calls ``uetransforms.publishing.target.checkpoint(event, ...)`` at each commit point; a child
process replaces it to SIGKILL itself at an exact point (no sleeps, no races), as an out-of-memory
kill or a preempted job would. Other faults raise inside the writer: an exception from the
protection of one batch, a full disk (``ENOSPC`` from the Parquet writer).

Faults tried and what was found afterwards (every row is checked by ``datasets.load_dataset``):

=====================================  ===========================  ===========================================
fault                                  run                          outcome
=====================================  ===========================  ===========================================
SIGKILL after shard 0 / 5 / last       new publish (12 shards)      no output dir; next run resumes, same bytes
SIGKILL after the card, before move    new publish                  no output dir; next run completes
SIGKILL after shard 1                  publish_stream (new)         no output dir; next run starts over
SIGKILL after shard 3 (real process)   ``python -c`` publish        no output dir; only ``.pub.uetransforms-tmp``
SIGKILL after shard 2 / after card     overwrite                    previous copy loads intact, every row
SIGKILL right after the atomic swap    overwrite                    new copy loads intact; old one removed next run
SIGKILL between the two renames        overwrite, no renameat2      no output dir; next run restores previous copy
exception protecting batch 3           new publish / overwrite      no output dir / previous copy intact
ENOSPC writing shard 4 (disk full)     new publish / stream         no output dir, no temporary dir left
=====================================  ===========================  ===========================================
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
import traceback

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import uetransforms as ue
from uetransforms.publishing import target as publish_target
from uetransforms.publishing.streaming import publish_stream

N = 12


def _dataset(n: int = N, seed: int = 0) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    return datasets.Dataset.from_dict(
        {"image": list(rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)), "label": [i % 3 for i in range(n)],
         "idx": list(range(n))},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=3),
                                    "idx": datasets.Value("int64")}))


@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> ue.NoiseBank:
    b = ue.fit("random", _dataset(), seed=7)
    b.save(tmp_path_factory.mktemp("bank") / "r.bank.arrow")
    return b


def _publish(ds, bank, out, **kw):
    # max_shard_size=1: one row per shard, so a kill "after shard k" is k+1 rows into the run.
    return ue.publish(ds, bank, out, max_shard_size=1, **kw)


def _killed_at(fn, event: str, index: int | None = None, *, exchange: bool = True) -> None:
    """Run ``fn`` in a forked child that SIGKILLs itself at writer event ``event`` (shard ``index``)."""
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 3
        try:
            torch.set_num_threads(1)  # no OpenMP pool after fork

            def die(ev, **info):
                if ev == event and (index is None or info.get("index") == index):
                    os.kill(os.getpid(), signal.SIGKILL)

            publish_target.checkpoint = die
            if not exchange:
                publish_target._exchange = lambda a, b: False
            fn()
            code = 2  # the kill point was never reached
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + 120
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"child publishing did not reach {event!r} in 120 s")
        time.sleep(0.05)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, \
        f"child exited with {os.WEXITSTATUS(status) if os.WIFEXITED(status) else status}, not killed at {event!r}"


def _rows(out) -> list[int] | None:
    """The ``idx`` column of what ``datasets`` loads from ``out``, or None when there is no ``out``."""
    if not os.path.exists(out):
        return None
    return datasets.load_dataset(str(out), split="train", download_mode="force_redownload")["idx"]


def _leftovers(parent) -> list[str]:
    return sorted(p for p in os.listdir(parent) if ".uetransforms-" in p)


def _shard_bytes(out) -> list[bytes]:
    names = sorted(os.listdir(os.path.join(out, "data")))
    return [pq.read_table(os.path.join(out, "data", n)).column("image").to_pylist()[0]["bytes"] for n in names]


@pytest.fixture(scope="module")
def reference(bank, tmp_path_factory):
    """The bytes an undisturbed publish writes, to compare resumed and repeated runs with."""
    out = tmp_path_factory.mktemp("ref") / "pub"
    _publish(_dataset(), bank, out)
    return _shard_bytes(out)


@pytest.mark.parametrize("event,index", [("shard", 0), ("shard", 5), ("shard", N - 1), ("card", None)])
def test_killed_new_publish_leaves_nothing_and_resumes(tmp_path, bank, reference, event, index, monkeypatch):
    out = tmp_path / "pub"
    _killed_at(lambda: _publish(_dataset(), bank, out), event, index)
    assert _rows(out) is None
    assert _leftovers(tmp_path) == [".pub.uetransforms-tmp"]
    # The next run reuses the shards whose checksum and row count match the dead run's manifest.
    # Which rows the new run protects, told by their (distinct) source image bytes.
    source = _dataset()
    row_of = {r["bytes"]: i for i, r in enumerate(source.cast_column("image", datasets.Image(decode=False))["image"])}
    protected_rows = []
    real = ue.Protect.encoded
    monkeypatch.setattr(ue.Protect, "encoded", lambda self, batch, *a, **kw: protected_rows.extend(
        row_of[im if isinstance(im, bytes) else im["bytes"]] for im in batch["image"]) or real(self, batch, *a, **kw))
    result = _publish(source, bank, out)
    assert _rows(out) == list(range(N)) and _leftovers(tmp_path) == []
    # The dead run's rows were never seen by this one: the result is read back from the folder.
    assert result["idx"] == list(range(N)) and result.cache_files and "uetransforms-publish" not in result.cache_files[0]["filename"]
    done = N if event == "card" else index + 1
    assert protected_rows == list(range(done, N))
    assert _shard_bytes(out) == reference  # resumed output is byte-identical to an undisturbed one


def test_resume_is_refused_for_different_input(tmp_path, bank):
    out = tmp_path / "pub"
    _killed_at(lambda: _publish(_dataset(), bank, out), "shard", 5)
    other = _dataset(seed=1)
    _publish(other, bank, out)  # a different dataset: the dead run's shards are not reused
    expected = ue.publish(other, bank, tmp_path / "clean", max_shard_size=1)
    assert _shard_bytes(out) == _shard_bytes(tmp_path / "clean") and len(expected) == N


def test_killed_stream_leaves_nothing(tmp_path, bank):
    out = tmp_path / "pub"
    _killed_at(lambda: publish_stream(_dataset().to_iterable_dataset(), bank, out, shard_rows=2, batch_size=3),
               "shard", 1)
    assert _rows(out) is None and _leftovers(tmp_path) == [".pub.uetransforms-tmp"]
    publish_stream(_dataset().to_iterable_dataset(), bank, out, shard_rows=2, batch_size=3)
    assert _rows(out) == list(range(N)) and _leftovers(tmp_path) == []


def test_sigkill_of_a_real_process(tmp_path, bank):
    """The same as the forked kills, in a fresh interpreter: what an OOM kill of ``python publish.py`` leaves."""
    out = tmp_path / "pub"
    script = f"""
import os, signal, datasets, numpy as np, uetransforms as ue
from uetransforms.publishing import target as publish_target
def die(ev, **info):
    if ev == "shard" and info["index"] == 3:
        os.kill(os.getpid(), signal.SIGKILL)
publish_target.checkpoint = die
rng = np.random.default_rng(0)
ds = datasets.Dataset.from_dict({{"image": list(rng.integers(0, 256, ({N}, 8, 8, 3), dtype=np.uint8)),
                                  "label": [i % 3 for i in range({N})]}},
                                features=datasets.Features({{"image": datasets.Image(),
                                                            "label": datasets.ClassLabel(num_classes=3)}}))
ue.publish(ds, ue.NoiseBank.load({bank.path!r}), {str(out)!r}, max_shard_size=1)
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    assert not out.exists() and _leftovers(tmp_path) == [".pub.uetransforms-tmp"]
    assert len(os.listdir(tmp_path / ".pub.uetransforms-tmp" / "data")) == 4  # 4 complete shards, kept for resume


@pytest.fixture
def previous(tmp_path, bank):
    """A complete earlier copy (8 rows, other pixels) plus a file of the user's own in it."""
    out = tmp_path / "pub"
    _publish(_dataset(8, seed=3), bank, out)
    (out / "NOTES.txt").write_text("mine")
    return out, _shard_bytes(out)


def _assert_previous(out, before):
    assert _rows(out) == list(range(8)) and _shard_bytes(out) == before
    assert (out / "NOTES.txt").read_text() == "mine"


@pytest.mark.parametrize("event,index", [("shard", 2), ("card", None)])
def test_killed_overwrite_keeps_the_previous_copy(tmp_path, bank, previous, event, index):
    out, before = previous
    _killed_at(lambda: _publish(_dataset(), bank, out, overwrite=True), event, index)
    _assert_previous(out, before)
    _publish(_dataset(), bank, out, overwrite=True)
    assert _rows(out) == list(range(N)) and (out / "NOTES.txt").read_text() == "mine"
    assert _leftovers(tmp_path) == []


def test_killed_right_after_the_swap(tmp_path, bank, previous):
    out, _ = previous
    _killed_at(lambda: _publish(_dataset(), bank, out, overwrite=True), "swapped")
    assert _rows(out) == list(range(N))  # the new copy is complete and in place
    assert _leftovers(tmp_path) == [".pub.uetransforms-old"]
    _publish(_dataset(), bank, out, overwrite=True)
    assert _leftovers(tmp_path) == []


def test_killed_between_the_two_renames_is_restored(tmp_path, bank, previous):
    """Without an atomic exchange (not Linux): the one instant with no ``out``; the next run restores it."""
    out, before = previous
    _killed_at(lambda: _publish(_dataset(), bank, out, overwrite=True), "swap", exchange=False)
    assert not out.exists() and _leftovers(tmp_path) == [".pub.uetransforms-old", ".pub.uetransforms-tmp"]
    with pytest.warns(UserWarning, match="interrupted mid-swap"), pytest.raises(FileExistsError, match="not empty"):
        _publish(_dataset(), bank, out)  # recovery happens first; then the usual overwrite rule applies
    _assert_previous(out, before)


def test_exception_while_protecting(tmp_path, bank, previous, monkeypatch):
    out, before = previous
    real = ue.Protect.encoded
    calls = []

    def flaky(self, batch, *a, **kw):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("injected failure in batch 3")
        return real(self, batch, *a, **kw)

    monkeypatch.setattr(ue.Protect, "encoded", flaky)
    with pytest.raises(RuntimeError, match="injected"):
        ue.publish(_dataset(), bank, tmp_path / "new", batch_size=2, max_shard_size=1)
    assert not (tmp_path / "new").exists()
    calls.clear()
    with pytest.raises(RuntimeError, match="injected"):
        ue.publish(_dataset(), bank, out, batch_size=2, max_shard_size=1, overwrite=True)
    _assert_previous(out, before)
    # Shards completed before the failure stay for a resume of the same job, and nothing else does.
    assert _leftovers(tmp_path) == [".new.uetransforms-tmp", ".pub.uetransforms-tmp"]


@pytest.mark.parametrize("stream", [False, True])
def test_disk_full(tmp_path, bank, monkeypatch, stream):
    real = pq.ParquetWriter.write_table
    count = []

    def full(self, table, *a, **kw):
        count.append(1)
        if len(count) == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, table, *a, **kw)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    out = tmp_path / "pub"
    with pytest.raises(OSError, match="No space left"):
        if stream:
            publish_stream(_dataset().to_iterable_dataset(), bank, out, shard_rows=1)
        else:
            ue.publish(_dataset(), bank, out, max_shard_size=1)
    assert not out.exists()
    # A stream cannot be resumed, so nothing is kept; an in-memory run keeps its 4 verified shards.
    assert _leftovers(tmp_path) == ([] if stream else [".pub.uetransforms-tmp"])
    if not stream:
        assert sorted(os.listdir(tmp_path / ".pub.uetransforms-tmp" / "data")) == [
            f".train-{i:05d}.parquet.partial" for i in range(4)]
    monkeypatch.setattr(pq.ParquetWriter, "write_table", real)
    (ue.publish(_dataset(), bank, out, max_shard_size=1) if not stream else
     publish_stream(_dataset().to_iterable_dataset(), bank, out, shard_rows=1))
    assert _rows(out) == list(range(N)) and _leftovers(tmp_path) == []


def test_concurrent_publish_to_the_same_directory_is_refused(tmp_path, bank):
    out = tmp_path / "pub"
    target = publish_target.Target(out)
    with target.locked(), pytest.raises(ue.PublishConflict, match="another publish"):
        _publish(_dataset(), bank, out)
