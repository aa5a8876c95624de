"""The daily loop's watch on its book file and run file (:class:`BookWatch`, a part of
:class:`executor.run_loop.Runner`).

``fbr run`` loads the run file and the book file once, at start. A loop must never trade a book
its file no longer says, nor under limits its run file no longer says, so at each wake-up, before
the account is read or anything traded, the Runner asks its ``book_changed`` check (built by the
CLI, :func:`fbr.book_watch.run_watcher`: the run file, the book file and the files it names, by
content). When it answers, the loop sends one CRITICAL ``stop`` alert titled by the change ("book
file changed" or "run file changed"), names the change in the health file's ``last_error`` and
ends with the status ``book_changed`` (for either file; ``fbr run`` exits with code 6), so that it
is started again on the files as they are now (a supervisor such as systemd with
``Restart=on-failure`` does it). No check (None, as in ``--simulate`` and in tests of the Runner
alone): the loop never stops for it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from executor.alerts import AlertKind, Severity
from executor.run_trade import CycleTrader
from executor.safety import redact

#: the Runner's stop reason, the summary's and the health file's status, when the book changed
BOOK_CHANGED = "book_changed"


class BookWatch(CycleTrader):
    """Stops the loop when its book file changed (see the module docstring)."""

    #: what changed in the book or run file since the loop loaded it ("book file changed: ...",
    #: "run file changed: ..."), or None
    book_changed: Callable[[], str | None] | None = None
    #: the change that stopped this loop (None: none)
    book_change: str | None = None
    _stop: str | None

    def _book_edited(self, now: datetime) -> bool:
        """Whether the book file changed since the loop loaded it; if so, alert once (CRITICAL),
        set the health file's ``last_error`` and ask the loop to stop. ``last_error`` is this
        process's only: the loop started again on the new file does not inherit it."""
        what = self.book_changed() if self.book_changed is not None else None
        if what is None:
            return False
        text = (f"{redact(what)}; the loop stopped so that it is restarted on the new file: `fbr "
                f"run RUN.toml` (a supervisor such as systemd with Restart=on-failure restarts "
                f"it); nothing was sent after the change was seen")
        self.book_change, self._stop = text, BOOK_CHANGED
        self._err = (text, False)
        what_changed = what.split(":", 1)[0]  # "book file changed" or "run file changed"
        self.alerts.emit(AlertKind.STOP, Severity.CRITICAL, f"{what_changed}: fbr run stopped",
                         text, now)
        return True
