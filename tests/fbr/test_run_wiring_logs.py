"""``fbr run``'s JSON-lines log file follows a rotation: logrotate (or a hand) moves the file
away, and the next line goes to a new file at the configured path, not to the moved one (a plain
``FileHandler`` kept writing to the rotated file for the rest of a months-long run)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from fbr.run_wiring import structured_logs


def test_the_log_file_is_reopened_after_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "fbr.log"
    handler = structured_logs(path)
    log = logging.getLogger("executor.test_rotation")
    try:
        log.warning("before the rotation")
        path.rename(tmp_path / "fbr.log.1")  # logrotate's move
        log.warning("after the rotation")
    finally:
        logging.getLogger("executor").removeHandler(handler)
        handler.close()
    old = [json.loads(x)["message"] for x in (tmp_path / "fbr.log.1").read_text().splitlines()]
    new = [json.loads(x)["message"] for x in path.read_text().splitlines()]
    assert old == ["before the rotation"] and new == ["after the rotation"]
