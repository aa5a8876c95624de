"""``fbr run``'s check that its run file and its book file are still the ones it loaded (used by
:class:`executor.run_book_watch.BookWatch` at each wake-up).

The run file, the book file and the files the book names with ``file = ...`` (found as the
dashboard finds them: :func:`fbr.web.book_cache.book_inputs`) are compared by content (SHA-256), so
a save that changes nothing (same bytes, a new mtime) is no change, and an edit within one mtime
tick is one. The run file holds the loop's policy, schedule, triggers, limits and alerts, all read
once at start: an edit to them would otherwise be ignored until the next start.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from fbr.web.book_cache import book_inputs


def book_watcher(book_path: Path) -> Callable[[], str | None]:
    """A check of ``book_path`` and of the files it names, as they are now (call it right after
    the book is loaded): the check returns None while each file holds the same bytes, else a
    message naming the first that changed or can no longer be read."""
    book = Path(book_path)
    kept = {p: _digest(p) for p in (book, *book_inputs(book)[1])}

    def changed() -> str | None:
        for path, was in kept.items():
            now = _digest(path)
            if now == was:
                continue
            where = (f"{book}" if path == book else f"{path} (named by the book file {book})")
            how = "can no longer be read" if now is None else "is not what the loop loaded"
            return f"book file changed: {where} {how}"
        return None

    return changed


def run_watcher(run_path: Path, book_path: Path) -> Callable[[], str | None]:
    """:func:`book_watcher`'s check, preceded by one of the run file ``run_path`` itself (call it
    right after the run file and its book are loaded): None while nothing changed, else a message
    naming the first file that changed ("run file changed: ..." or "book file changed: ...")."""
    run, was = Path(run_path), _digest(Path(run_path))
    book_changed = book_watcher(book_path)

    def changed() -> str | None:
        now = _digest(run)
        if now != was:
            how = "can no longer be read" if now is None else "is not what the loop loaded"
            return f"run file changed: {run} {how}"
        return book_changed()

    return changed


def _digest(path: Path) -> str | None:
    """The SHA-256 of ``path``'s bytes (None: it cannot be read)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
