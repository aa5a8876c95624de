"""Native solver output kept off stdout.

SCS prints some lines from C straight to file descriptor 1 whatever its verbosity (for example
"ERROR: could not determine problem status." when it fails), which would put text before the one
JSON object ``--json`` promises on stdout. While a solver runs through cvxpy's interface, file
descriptor 1 points at descriptor 2 (stderr). The redirection is process-wide, so it is reference
counted under a lock: overlapping solves in threads redirect once and restore once.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0
_saved: int | None = None


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Descriptor 1 -> descriptor 2 for the block (Python's own stdout is flushed first)."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            sys.stdout.flush()
            _saved = os.dup(1)
            os.dup2(2, 1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved is not None:
                os.dup2(_saved, 1)
                os.close(_saved)
                _saved = None
