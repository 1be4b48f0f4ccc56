"""The one exception type users see: a specific, one-line message and exit code 2."""

import contextlib
import errno
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path


class NoisebenchError(Exception):
    """A problem with the user's input or environment, reported as one line."""

    exit_code = 2


class DataError(NoisebenchError):
    """A dataset is missing, corrupt, or fails its checksum."""


class DataUnavailable(DataError):
    """A dataset is neither present locally nor downloadable."""


class StudyError(NoisebenchError):
    """A study file or option is invalid."""


class StoreError(NoisebenchError):
    """A results store is missing, damaged, or not one this version of noisebench reads."""


class DiskFull(NoisebenchError):
    """A write failed because the disk (or the user's quota) is full."""


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) == (
        sqlite3.SQLITE_FULL
    )


def _mount_point(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() or not os.path.ismount(path):
        if path.parent == path:
            break
        path = path.parent
    return path


@contextlib.contextmanager
def disk_full_is_one_line(path: Path, then: str) -> Iterator[None]:
    """Turn "no space left" (an OSError, SQLite's "database or disk is full") while writing
    under `path` into one DiskFull line naming the disk; `then` says what the user can do."""
    try:
        yield
    except (OSError, sqlite3.Error) as exc:
        if not _is_disk_full(exc):
            raise
        raise DiskFull(
            f"disk full: no space left on {_mount_point(path)} while writing {path}; {then}"
        ) from None
