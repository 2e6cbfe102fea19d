"""Durable atomic replacement: the last step of every write of a product or reference file.

A file is written under a temporary name in its target directory, then ``commit`` flushes
its bytes to disk, renames it over the target and flushes the directory entry. Without
the two fsyncs a power loss after the rename could leave the target's name pointing at a
file whose data never reached the disk; with them the target is either the old file or
the complete new one.
"""
from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp, path) -> Path:
    """Flush ``tmp``, rename it to ``path`` (same directory) and flush the directory."""
    fsync_path(tmp)
    os.replace(tmp, path)
    try:
        fsync_path(Path(path).parent, directory=True)
    except OSError:
        pass            # some file systems cannot fsync a directory; the rename itself stands
    return Path(path)
