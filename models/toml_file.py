"""The one reader of TOML input files (book, backtest, Monte Carlo and scenario files).

:func:`read_toml` returns the parsed document (:func:`load_toml_file` also parses it, naming the
file in any input error); every failure (a missing file, a folder, bytes that
are not UTF-8, a TOML syntax error) is one :class:`models.errors.ConfigError` naming the file, for
a syntax error the line and column with the offending line quoted, and the fix.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from models.errors import ConfigError, ValidationError

_T = TypeVar("_T")


def read_toml(p: Path, kind: str, example: str) -> dict[str, object]:
    """Parse the TOML file ``p`` (a ``kind`` file, e.g. "book"; ``example`` names where a complete
    one is, for the fix); every failure is one ConfigError naming the file, and for a syntax error
    the line, column and the offending line."""
    if not p.is_file():
        where = "is a folder" if p.is_dir() else "does not exist"
        raise ConfigError(f"{kind} file {str(p)!r} {where}. Fix: give the path of a .toml {kind} "
                          f"file (see {example})")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{kind} file {str(p)!r} cannot be read: {exc}. Fix: give a readable "
                          "UTF-8 text file") from None
    return parse_toml(text, p)


def load_toml_file(path: str | Path, kind: str, example: str,
                   parse: Callable[[dict[str, object], Path], _T]) -> _T:
    """Read the ``kind`` file ``path`` (:func:`read_toml`) and ``parse(document, path)`` it; an
    input error that does not name its file yet gets ``(in PATH)`` added to its problem."""
    p = Path(path)
    data = read_toml(p, kind, example)
    try:
        return parse(data, p)
    except ValidationError as exc:
        if "(in " in exc.problem:  # already located (e.g. an error inside the book file)
            raise
        raise ValidationError(exc.field, f"{exc.problem} (in {p})", exc.fix) from exc


def parse_toml(text: str, where: Path | str) -> dict[str, object]:
    """Parse TOML ``text`` read from ``where`` (a file, or e.g. a package resource's name); a
    syntax error is one ConfigError with the line, column and the offending line."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_describe_toml_error(where, text, exc)) from None


def _describe_toml_error(path: Path | str, text: str, exc: tomllib.TOMLDecodeError) -> str:
    """'file.toml, line 3, column 7: Invalid value' plus the offending line, quoted."""
    line: int | None = None
    col: int | None = None
    reason = str(exc)
    m = re.search(r"\(at line (\d+), column (\d+)\)", reason)
    if m:
        line, col = int(m.group(1)), int(m.group(2))
        reason = reason[: m.start()].strip()
    if line is None:
        return f"{path}: not valid TOML: {reason}. Fix: correct the TOML syntax"
    lines = text.splitlines()
    quoted = lines[line - 1] if 0 < line <= len(lines) else ""
    return (f"{path}, line {line}, column {col}: not valid TOML: {reason}\n"
            f"    {quoted}\n    {' ' * max(int(col or 1) - 1, 0)}^\n"
            "Fix: correct the TOML syntax at that place (strings need quotes, one key per line, "
            "tables as [name])")
