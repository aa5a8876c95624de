"""The dashboard's copy of the book file: every page answers from a current load.

A book whose answers depend only on its own file (and the files it names with ``file = ...``, e.g.
``tiers_from``) is kept loaded until one of those files changes. A book that reads a data folder
(``[market] source = "data"``, or ``[risk]`` estimated from data: ``fbr data fetch`` appends new
closes there) or the clock (an explicit ``[market]`` without ``time`` is priced "now") is loaded
again at every call, as ``fbr status``, ``fbr whatif`` and ``fbr execute`` load it at every run;
:class:`optimizer.rebalance.Rebalancer` keeps the compiled problems either way.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fbr.config_loader import LoadedBook, load_book_file
from models.errors import FbrError

#: What identifies one version of a file: (mtime ns, size, inode); None when it cannot be read.
Stamp = tuple[int, int, int] | None


def file_stamp(path: Path) -> Stamp:
    """``path``'s :data:`Stamp` (an editor's atomic save changes the inode, an append the size)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def book_inputs(path: Path) -> tuple[bool, tuple[Path, ...]]:
    """(whether the book's answers are fixed by its files alone, the files it names with
    ``file = ...``), read from the TOML document as :mod:`fbr.config_market`,
    :mod:`fbr.config_risk` and :mod:`fbr.config_contracts` read it. Not fixed: a market or risk
    model from a data folder, an explicit market without ``time`` (the clock), or a file that does
    not parse (its load then says why)."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False, ()
    market = doc.get("market", {})
    risk = doc.get("risk", {})
    if not isinstance(market, dict) or not isinstance(risk, dict):
        return False, ()
    source = str(market.get("source", "explicit")).lower()
    clock = source == "explicit" and "time" not in market
    data = "data" in (source, str(risk.get("source", "")).lower())
    base = path.resolve().parent
    refs = tuple(p if p.is_absolute() else base / p
                 for p in (Path(raw).expanduser() for raw in _file_refs(doc)))
    return not (clock or data), refs


def _file_refs(value: object) -> Iterator[str]:
    """Every ``file = "..."`` string of a TOML value, at any depth."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "file" and isinstance(item, str):
                yield item
            else:
                yield from _file_refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _file_refs(item)


@dataclass
class BookCache:
    """The book file ``path`` as the CLI loads it now (see the module docstring). Not thread-safe
    by itself (:meth:`load` and :meth:`name` read and rewrite the kept copy and its stamps): its
    owner, :class:`fbr.web.state.DashboardState`, calls it under its lock."""

    path: Path
    _loaded: LoadedBook | None = None
    _stamps: tuple[Stamp, ...] = ()
    _fixed: bool = False
    _refs: tuple[Path, ...] = ()

    def _current(self) -> tuple[Stamp, ...]:
        """The stamps of the book file and of the files it names."""
        return (file_stamp(self.path), *(file_stamp(p) for p in self._refs))

    def load(self) -> LoadedBook:
        """The loaded book: the kept copy while its files did not change and it depends on nothing
        else, else a new load. A book file that is gone or broken raises the loader's message
        (:class:`models.errors.FbrError`, e.g. "book file ... does not exist. Fix: ...")."""
        book = file_stamp(self.path)
        if book is None or not self._stamps or book != self._stamps[0]:
            self._fixed, self._refs = book_inputs(self.path)
        stamps = self._current()
        if self._loaded is not None and self._fixed and stamps == self._stamps:
            return self._loaded
        self._loaded, self._stamps = None, ()
        loaded = load_book_file(self.path)  # stamps first: a change during the load reloads later
        if stamps[0] is not None:
            self._loaded, self._stamps = loaded, stamps
        return loaded

    def name(self) -> str:
        """``[book] name`` for a page's header: the latest load's while the book file did not
        change (a page's own load came just before: no second load of a data-sourced book), else
        a load's; the file's name when it does not load."""
        if self._loaded is not None and self._stamps and file_stamp(self.path) == self._stamps[0]:
            return self._loaded.book.name
        try:
            return self.load().book.name
        except (FbrError, OSError):
            return self.path.name
