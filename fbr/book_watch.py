"""``fbr run``'s check that its book file is still the one it loaded (used by
:class:`executor.run_book_watch.BookWatch` at each wake-up).

The book file and the files it names with ``file = ...`` (found as the dashboard finds them:
:func:`fbr.web.book_cache.book_inputs`) are compared by content (SHA-256), so a save that changes
nothing (same bytes, a new mtime) is no change, and an edit within one mtime tick is one.
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


def _digest(path: Path) -> str | None:
    """The SHA-256 of ``path``'s bytes (None: it cannot be read)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
