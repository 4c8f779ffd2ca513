"""The atomic output folder: a publish lands whole or not at all.

* Everything is written into a temporary sibling ``.<name>.uetransforms-tmp`` and renamed into
  place only once every shard and the card are complete and flushed to disk.
* An overwrite swaps the new copy in only once it is complete: on Linux with one atomic exchange
  of the two directories (``renameat2``), elsewhere by renaming the old copy aside
  (``.<name>.uetransforms-old``) and the new one in; the next run repairs a crash in between.
* A lock file inside the temporary copy keeps two publishes from writing the same target.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from ..core.errors import PublishConflict

def checkpoint(event: str, **info: Any) -> None:
    """Called at each commit point of a publish; does nothing.

    Events: ``"shard"`` (a shard file is complete; ``split``, ``index``), ``"card"`` (the card is
    written, nothing is in place yet), ``"swapped"`` (the new copy is in place, the old one not
    yet deleted), ``"swap"`` (two-rename fallback only: the old copy is aside, the new one not
    yet in). The fault tests replace it to kill or fail the process at an exact point.
    """


_TMP, _OLD, _LOCK = ".uetransforms-tmp", ".uetransforms-old", ".uetransforms-lock"
_MANIFEST = ".uetransforms-manifest.json"
_CARD = "README.md"


class Target:
    """The output directory and its clearly named siblings: the temporary copy and (fallback) the old one."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        path = os.path.abspath(os.fspath(out_dir))
        if os.path.islink(path):
            if not os.path.isdir(path):
                raise FileExistsError(f"{path!r} is a symbolic link to {os.readlink(path)!r}, which is not a directory; "
                                      "publish writes a directory: remove the link or choose another output")
            # Publish into the directory the link names: the swap then replaces that directory and the
            # link keeps pointing at the new copy (renaming the link itself moved the link, not the data).
            path = os.path.realpath(path)
        self.parent, self.name = os.path.split(path)
        if not self.name:
            raise ValueError(f"cannot publish into the root directory {out_dir!r}; name a folder")
        self.path = path
        self.tmp = os.path.join(self.parent, f".{self.name}{_TMP}")
        self.old = os.path.join(self.parent, f".{self.name}{_OLD}")
        self._lock_fd: int | None = None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Own the temporary copy: a lock file inside it, so a killed run leaves nothing else behind."""
        os.makedirs(self.parent, exist_ok=True)
        self._acquire()
        try:
            yield
        finally:
            self._release()

    def _acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory lock; one publish per target is on you
            os.makedirs(self.tmp, exist_ok=True)
            return
        lock = os.path.join(self.tmp, _LOCK)
        for _ in range(100):
            os.makedirs(self.tmp, exist_ok=True)
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
            except FileNotFoundError:  # the directory was just moved into place by the holder: try again
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise PublishConflict(
                    f"another publish is writing {self.path!r} right now (it holds {self.tmp!r}); "
                    "wait for it to finish, or choose another output directory"
                ) from None
            # The holder may have moved its copy into place after we opened the file: then our lock
            # is on a file that is no longer ``lock``. Retry until path and descriptor agree.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(lock))
            except FileNotFoundError:
                same = False
            if same:
                self._lock_fd = fd
                return
            os.close(fd)
        raise PublishConflict(f"could not lock {self.tmp!r}: other publishes keep replacing it")

    def _release(self) -> None:
        if self._lock_fd is not None:
            # A publish refused before writing anything (a non-empty output, a bad option) leaves
            # no hidden ``.<name>.uetransforms-tmp`` behind: only its lock was in it.
            if self._holds_nothing():
                shutil.rmtree(self.tmp, ignore_errors=True)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _holds_nothing(self) -> bool:
        try:
            entries = set(os.listdir(self.tmp))
            data = os.path.join(self.tmp, "data")
            return entries <= {_LOCK, "data"} and (not os.path.isdir(data) or not os.listdir(data))
        except OSError:
            return False

    def recover(self) -> str | None:
        """Finish what a dead run left (lock held): put an old copy back, drop a swapped-out one.

        Only the two-rename fallback of :meth:`commit` can leave an old copy. Returns a sentence
        saying what was done, or ``None``.
        """
        if not os.path.lexists(self.old):
            return None
        if os.path.lexists(self.path):
            # The swap completed; only deleting the old copy was cut short.
            shutil.rmtree(self.old, ignore_errors=True)
            return f"removed {self.old!r}, the previous copy left by an overwrite that had completed"
        # Killed between the two renames: the previous copy is the state to restore.
        os.rename(self.old, self.path)
        _fsync_dir(self.parent)
        return f"restored {self.path!r} from {self.old!r}: an earlier overwrite was interrupted mid-swap"

    def check(self, overwrite: bool) -> bool:
        """Refuse what must not be replaced; return whether an existing copy will be replaced."""
        if os.path.lexists(self.path) and not os.path.isdir(self.path):
            raise FileExistsError(f"{self.path!r} is a file; publish writes a directory (README.md + data/)")
        if not (os.path.isdir(self.path) and os.listdir(self.path)):
            return False
        if not overwrite:
            raise FileExistsError(
                f"output directory {self.path!r} is not empty; choose a new directory or pass overwrite=True "
                "(--overwrite on the command line), which replaces its README.md and data/*-of-*.parquet shards"
            )
        banks = find_banks(self.path)
        if banks:
            raise ValueError(
                f"{banks[0]!r} looks like a noise bank (the secret key) inside the output directory {self.path!r}, "
                "which is meant to be published or uploaded whole; move the bank out of it first"
            )
        return True

    def begin(self, fingerprint: str | None) -> dict[str, Any]:
        """Prepare the temporary copy; returns the resumable manifest (empty unless resuming)."""
        manifest: dict[str, Any] = {}
        if fingerprint is not None:
            with contextlib.suppress(OSError, ValueError):
                with open(os.path.join(self.tmp, _MANIFEST), encoding="utf-8") as f:
                    old = json.load(f)
                if old.get("fingerprint") == fingerprint:
                    manifest = old
        if not manifest:
            self.clear()
            manifest = {"fingerprint": fingerprint, "splits": {}}
        os.makedirs(os.path.join(self.tmp, "data"), exist_ok=True)
        return manifest

    def clear(self) -> None:
        """Empty the temporary copy (a dead run's leftovers, or our own after a failure), keeping the lock."""
        for entry in os.listdir(self.tmp):
            path = os.path.join(self.tmp, entry)
            if entry == _LOCK:
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)

    def discard(self) -> None:
        """Remove the temporary copy altogether (lock file included: we are leaving)."""
        shutil.rmtree(self.tmp, ignore_errors=True)

    def carry_foreign(self, overwriting: bool) -> None:
        """Hard-link (or copy) into the temporary copy what ``<dir>`` holds that publish did not write."""
        if not overwriting:
            return
        for root, dirs, files in os.walk(self.path):
            rel = os.path.relpath(root, self.path)
            for d in dirs:
                os.makedirs(os.path.join(self.tmp, rel, d), exist_ok=True)
            for name in files:
                relpath = os.path.normpath(os.path.join(rel, name))
                if _is_ours(relpath):
                    continue
                src, dst = os.path.join(root, name), os.path.join(self.tmp, relpath)
                if os.path.islink(src):
                    os.symlink(os.readlink(src), dst)
                    continue
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copy2(src, dst)

    def commit(self, overwriting: bool) -> None:
        """Move the complete temporary copy into place.

        Where the OS can exchange two directories atomically (Linux ``renameat2``), ``<dir>`` is
        never missing: the old copy lands in the temporary name and is deleted. Elsewhere it is two
        renames with the old copy aside in between (see :meth:`recover`).
        """
        _fsync_tree(self.tmp)
        lock = os.path.join(self.path, _LOCK)
        if os.path.isdir(self.path) and _exchange(self.tmp, self.path):
            _fsync_dir(self.parent)
            with contextlib.suppress(FileNotFoundError):
                os.remove(lock)
            # The previous copy (or the empty directory that was there) now has the temporary name;
            # moved aside first so the name is free at once, then deleted (recover() drops it if killed).
            os.rename(self.tmp, self.old)
            checkpoint("swapped", path=self.path)
            shutil.rmtree(self.old)
            return
        if overwriting:
            os.rename(self.path, self.old)
            checkpoint("swap", path=self.path)
            os.rename(self.tmp, self.path)
            _fsync_dir(self.parent)
            with contextlib.suppress(FileNotFoundError):
                os.remove(lock)
            shutil.rmtree(self.old)
            return
        if os.path.isdir(self.path):
            os.rmdir(self.path)  # empty (checked)
        os.rename(self.tmp, self.path)
        _fsync_dir(self.parent)
        with contextlib.suppress(FileNotFoundError):
            os.remove(lock)


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two directories (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # glibc < 2.28, musl
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):  # kernel or file system says no
        return False
    raise OSError(err, os.strerror(err), b)


def _is_ours(relpath: str) -> bool:
    """The files a publish writes (and an overwrite replaces): the card, the shard sets."""
    parts = relpath.split(os.sep)
    if parts in ([_CARD], [_LOCK]):
        return True
    return len(parts) == 2 and parts[0] == "data" and parts[1].endswith(".parquet") and "-of-" in parts[1]


def find_banks(root: str) -> list[str]:
    """Files under ``root`` that are (or are named like) uetransforms noise banks."""
    from ..core.bank import META_KEY

    found = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in files:
            path = os.path.join(dirpath, name)
            if name.endswith(".bank.arrow"):
                found.append(path)
                continue
            try:
                with open(path, "rb") as f:
                    if f.read(6) != b"ARROW1":
                        continue
                schema = pa.ipc.open_file(pa.memory_map(path, "r")).schema
            except (OSError, pa.ArrowInvalid):
                continue
            if META_KEY in (schema.metadata or {}):
                found.append(path)
    return sorted(found)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    # Makes the renames durable; not every platform lets a directory be opened (Windows).
    with contextlib.suppress(OSError):
        _fsync_file(path)


def _fsync_tree(root: str) -> None:
    for dirpath, _, _ in os.walk(root):
        _fsync_dir(dirpath)
