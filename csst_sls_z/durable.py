"""Durable atomic writes: the one way every product, reference file, manifest and summary is written.

A file is written under a temporary name in its target directory (:class:`TempFile`), then
committed: its bytes are flushed to disk, it gets the target's name, and the directory entry
is flushed. Without the two fsyncs a power loss after the rename could leave the target's
name pointing at a file whose data never reached the disk; with them the target is either
the old file (or none) or the complete new one. On any failure, the temporary file is
removed and the target is left as it was.

Usage::

    with TempFile(path) as tmp:          # refuse an existing ``path`` before this if need be
        write_something(tmp.path)
        tmp.commit()                     # or tmp.commit(exclusive=True): never replace a file

Temporary names are ``.NAME.<8 hex>.tmp`` (``.tmp.fits.gz`` for a ``.gz`` target), NAME cut
where the whole name would exceed the file system's limit (:func:`temp_prefix`), so every
legal target name has a legal temporary name. A :class:`TempFile` is created with O_EXCL and
held under an ``flock`` while this process owns it; :func:`remove_abandoned_temp` (used by
``csst-sls-z batch``) removes only those no live process holds.
"""
from __future__ import annotations

import errno
import fcntl
import glob as _glob
import logging
import os
import secrets
import time
from pathlib import Path

_log = logging.getLogger(__name__)

__all__ = ["OutputDirectoryLock", "TempFile", "commit", "commit_new", "fsync_path", "name_max",
           "remove_abandoned_temp", "remove_stale_temps", "temp_glob", "temp_prefix"]

_HEX_DIGITS = 8


def fsync_path(path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory_of(path) -> None:
    try:
        fsync_path(Path(path).parent, directory=True)
    except OSError:
        pass            # some file systems cannot fsync a directory; the rename itself stands


def commit(tmp, path) -> Path:
    """Flush ``tmp``, rename it over ``path`` (same directory) and flush the directory."""
    fsync_path(tmp)
    os.replace(tmp, path)
    _fsync_directory_of(path)
    return Path(path)


def commit_new(tmp, path) -> Path:
    """Give the complete ``tmp`` the name ``path`` only if no file has it: hard link, then unlink ``tmp``.

    Two runs writing the same new output cannot both succeed: the second link fails. On a
    file system without hard links the rename is checked first, which is not exclusive.
    """
    fsync_path(tmp)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(f"output {path} was created by another process while this run was writing it; "
                              f"refusing to overwrite it (use overwrite)") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
            raise
        if os.path.lexists(path):
            raise FileExistsError(f"output {path} was created by another process while this run was "
                                  f"writing it; refusing to overwrite it (use overwrite)") from None
        os.rename(tmp, path)
    else:
        os.unlink(tmp)
    _fsync_directory_of(path)
    return Path(path)


# ---------------------------------------------------------------------------- temporary names
def name_max(directory: Path) -> int:
    """The longest file name (bytes) ``directory``'s file system allows (255 if it cannot say)."""
    try:
        return int(os.pathconf(directory, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def _temp_suffix(path: Path) -> str:
    return ".tmp.fits.gz" if path.name.lower().endswith(".gz") else ".tmp"


def temp_prefix(path: Path) -> str:
    """``.NAME.``: how every temporary name of ``path`` begins (then 8 hex digits and ``.tmp``).

    NAME is cut (at a character boundary) where the whole temporary name would exceed the
    file system's name limit, so any output name that is legal has a legal temporary name.
    """
    path = Path(path)
    room = name_max(path.parent) - len(f"..{'0' * _HEX_DIGITS}{_temp_suffix(path)}")
    raw = os.fsencode(path.name)
    if len(raw) > room:
        cut = raw[:max(room, 1)]
        try:
            raw.decode("utf-8")
            name = cut.decode("utf-8", "ignore")      # a character cut in half is dropped
        except UnicodeDecodeError:
            name = os.fsdecode(cut)
    else:
        name = path.name
    return f".{name}."


def temp_glob(path: Path) -> list[str]:
    """Glob patterns matching the temporary files of ``path`` (of this and of killed processes)."""
    head = _glob.escape(temp_prefix(path)) + "[0-9a-f]" * _HEX_DIGITS
    return [head + ".tmp", head + ".tmp.fits.gz"]


def _temp_name(target: Path) -> Path:
    return target.parent / f"{temp_prefix(target)}{secrets.token_hex(_HEX_DIGITS // 2)}{_temp_suffix(target)}"


class TempFile:
    """A new file beside ``target`` for writing it, locked (``flock``) while this process owns it.

    Created with O_EXCL under a name from :func:`temp_prefix`; the lock tells a cleaner
    (:func:`remove_abandoned_temp`, used by ``csst-sls-z batch``) that it is live, and
    goes when the process ends, however it ends.

    ``create=False`` only picks a name that is free now, for a library that must create
    the file itself (cfitsio cannot open an empty file); such a file is not locked.

    As a context manager: the file is removed unless :meth:`commit` was called, and on
    any exception (the target is then left as it was).
    """

    def __init__(self, target: Path, create: bool = True):
        self.target = Path(target)
        self._fd = None
        self.committed = False
        for _ in range(100):
            path = _temp_name(self.target)
            if not create:
                if os.path.lexists(path):
                    continue
                self.path = path
                return
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)   # mode from the umask
            except FileExistsError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:          # a cleaner caught it before we did: take another name
                os.close(fd)
                continue
            except OSError:                  # no locks on this file system: still ours, unprotected
                pass
            st, mine = None, os.fstat(fd)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                pass
            if st is None or (st.st_dev, st.st_ino) != (mine.st_dev, mine.st_ino):
                os.close(fd)                 # removed between its creation and our lock
                continue
            self.path, self._fd = path, fd
            return
        raise FileExistsError(f"could not create a temporary file beside {target}")

    def commit(self, exclusive: bool = False) -> Path:
        """Give the file the target's name durably: replacing it, or with ``exclusive`` only if
        no file has that name (:func:`commit_new`). The lock goes at :meth:`close`."""
        (commit_new if exclusive else commit)(self.path, self.target)
        self.committed = True
        return self.target

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            self.close()

    def __enter__(self) -> "TempFile":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self.committed:
            self.discard()
        else:
            self.close()


def remove_abandoned_temp(path: Path) -> bool:
    """Remove the temporary file ``path`` if no live process holds it; True if removed."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:                      # held by a live writer (or no locks here): leave it
            return False
        st, mine = os.stat(path), os.fstat(fd)
        if (st.st_dev, st.st_ino) != (mine.st_dev, mine.st_ino):
            return False
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def remove_stale_temps(out_path: Path) -> None:
    """Temporary files a killed write left beside ``out_path`` (``.NAME.<8 hex>.tmp``).

    Only abandoned ones: a writer holds an ``flock`` on its temporary file until it is
    renamed or removed, so a live one (another run's, in this directory) is left alone.
    """
    for pattern in temp_glob(out_path):
        for tmp in out_path.parent.glob(pattern):
            if remove_abandoned_temp(tmp):
                _log.info("removed the leftover temporary file %s", tmp)


class OutputDirectoryLock:
    """One writer at a time per output directory: an exclusive ``flock`` on ``DIR/<lock_name>``.

    The lock goes with the process however it ends (SIGKILL included); the file is removed
    when the batch finishes. A file system without ``flock`` runs the batch unlocked, with a
    warning.
    """

    def __init__(self, directory: Path, lock_name: str, holder_kind: str):
        self.directory = Path(directory)
        self.path = self.directory / lock_name
        self.holder_kind = holder_kind           # named in the refusal: "in use by another <holder_kind>"
        self._fd = None

    def acquire(self) -> str:
        """'' when held, else one sentence on why not."""
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                return f"cannot lock output directory {self.directory} ({exc.strerror or exc})"
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
                os.close(fd)
                return (f"output directory {self.directory} is in use by another {self.holder_kind} ({holder}); "
                        f"rerun when it has finished, or use another directory")
            except OSError as exc:
                _log.warning("cannot lock output directory %s (%s); make sure no other batch writes into it",
                            self.directory, exc.strerror or exc)
                self._fd = fd
                return ""
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                st = None
            mine = os.fstat(fd)
            if st is None or (st.st_dev, st.st_ino) != (mine.st_dev, mine.st_ino):
                os.close(fd)                 # a finishing batch removed the file we locked: again
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.uname().nodename}:{os.getpid()} since "
                          f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode(), 0)
            self._fd = fd
            return ""
        return f"cannot lock output directory {self.directory} (the lock file keeps changing)"

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None
