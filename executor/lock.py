"""One executor per account at a time: an advisory file lock held for a plan's lifetime.

The lock is ``fcntl.flock`` (exclusive, non-blocking) on ``<lock dir>/<account key>.lock``. The
operating system releases it when the holder's file is closed, including when the process dies, so
a crashed run never leaves the account locked. The lock directory is ``$FBR_LOCK_DIR`` when set,
else ``~/.fbr/locks`` (one per user, whatever journal a run uses). The account key names the venue
and a hash of the API key, never the key itself.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from models.errors import RefusedError


class AccountBusyError(RefusedError):
    """Another execute or resume holds the account."""


def lock_dir() -> Path:
    """``$FBR_LOCK_DIR``, else ``~/.fbr/locks``."""
    env = os.environ.get("FBR_LOCK_DIR")
    return Path(env) if env else Path.home() / ".fbr" / "locks"


def _lock_path(account_key: str, directory: Path) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", account_key)
    return directory / f"{safe}.lock"


@contextmanager
def account_lock(account_key: str, directory: Path | None = None) -> Iterator[Path]:
    """Hold the account's lock for the ``with`` body; refuse at once when another run holds it."""
    where = directory or lock_dir()
    where.mkdir(parents=True, exist_ok=True)
    path = _lock_path(account_key, where)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            raise AccountBusyError(
                f"another fbr execute/--resume is running on account {account_key}{holder}; "
                f"two runs must not interleave. Fix: wait for it to finish (a crashed run "
                f"releases the lock by itself), then run again") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        try:
            yield path
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    """`` (pid N)`` from the lock file, '' when unreadable."""
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""
