"""What the disk says: private files and directories, and SQLite errors told apart (a full
disk, a corrupt file)."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from pathlib import Path


def private_dirs(directory: Path) -> None:
    """Create `directory` and missing parents 0700; existing ones are left as they are."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for one in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            one.mkdir(mode=0o700)
        one.chmod(0o700)  # mkdir's mode passes through the umask


def private_file(path: Path) -> None:
    """Make `path` (created empty if missing) and its -wal and -shm 0600 before SQLite
    opens it: SQLite gives the -wal and -shm files the database file's mode."""
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(f"{path}{suffix}", 0o600)


def no_room(exc: BaseException, directory: Path) -> bool:
    """A failure to write for want of space: SQLITE_FULL, ENOSPC, or an I/O error (a
    -shm that cannot grow) on a disk with less than a MiB left."""
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOSPC
    if isinstance(exc, sqlite3.Error) and is_full(exc):
        return True
    space = os.statvfs(directory)
    return getattr(exc, "sqlite_errorname", "").startswith("SQLITE_IOERR") and \
        space.f_bavail * space.f_frsize < 1 << 20


def is_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL" or "is full" in str(exc)


def is_corrupt(exc: sqlite3.Error) -> bool:
    if getattr(exc, "sqlite_errorname", "") in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
        return True
    return "malformed" in str(exc) or "not a database" in str(exc)


def fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
