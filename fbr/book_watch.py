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
    return _watcher(_book_files(Path(book_path)))


def run_watcher(run_path: Path, book_path: Path) -> Callable[[], str | None]:
    """:func:`book_watcher`'s check, preceded by one of the run file ``run_path`` itself (call it
    right after the run file and its book are loaded): None while nothing changed, else a message
    naming the first file that changed ("run file changed: ..." or "book file changed: ...")."""
    run = Path(run_path)
    return _watcher([(run, f"run file changed: {run}"), *_book_files(Path(book_path))])


def _book_files(book: Path) -> list[tuple[Path, str]]:
    """The book file and the files it names, each with how a change of it is named."""
    named = [(p, f"book file changed: {p} (named by the book file {book})")
             for p in book_inputs(book)[1]]
    return [(book, f"book file changed: {book}"), *named]


def _watcher(files: list[tuple[Path, str]]) -> Callable[[], str | None]:
    """A check of ``files`` (path, how its change is named) against their bytes now: None while
    each holds the same bytes, else the first change's name and whether the file is unreadable or
    different."""
    kept = [(path, name, _digest(path)) for path, name in files]

    def changed() -> str | None:
        for path, name, was in kept:
            now = _digest(path)
            if now != was:
                return f"{name} {'can no longer be read' if now is None else 'is not what the loop loaded'}"
        return None

    return changed


def _digest(path: Path) -> str | None:
    """The SHA-256 of ``path``'s bytes (None: it cannot be read)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
