#!/usr/bin/env python3
"""Screenshot an fbr HTML report in headless Chromium and check that its charts rendered.

    python scripts/screenshot_report.py REPORT.html [-o OUT.png] [--chromium PATH]

Runs Chromium twice (in parallel, each with a fresh profile): once with ``--screenshot`` and once
with ``--dump-dom``. Checks that every plotly chart div of the report (``class="plotly-graph-div"``
in the file) holds rendered plotly SVG (an element of class ``main-svg``) in the DOM, and that the
PNG is not blank (enough non-background pixels; PIL when installed, else a small zlib decoder).
Exit 0 with a one-line summary on success; 1 when a check fails; 2 when Chromium is missing or
fails to run. No network is needed: the report inlines plotly.js.
"""

from __future__ import annotations

import argparse
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from html.parser import HTMLParser
from pathlib import Path

DEFAULT_CHROMIUM = "/usr/bin/chromium"
INSTALL_HINT = "install it with: apt-get update && apt-get install -y chromium"
WINDOW = (1400, 3000)
VIRTUAL_TIME_MS = 5000
TIMEOUT_S = 120
#: The PNG is blank when fewer than this fraction of sampled pixels differ from the corner colour.
MIN_INK = 0.01

_CHART_DIV = re.compile(r"<div\b[^>]*\bid=[\"']([^\"']+)[\"'][^>]*\bclass=[\"'][^\"']*plotly-graph-div",
                        re.IGNORECASE)
_CHART_DIV_REV = re.compile(r"<div\b[^>]*\bclass=[\"'][^\"']*plotly-graph-div[^\"']*[\"'][^>]*\bid=[\"']"
                            r"([^\"']+)[\"']", re.IGNORECASE)


def chromium_flags(user_data_dir: Path) -> list[str]:
    """The flags of both runs (the action flag and the URL come after)."""
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={user_data_dir}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
            f"--virtual-time-budget={VIRTUAL_TIME_MS}"]


def expected_chart_ids(report_html: str) -> list[str]:
    """Ids of the plotly chart divs in the report's source, in page order (no duplicates)."""
    hits: list[tuple[int, str]] = [(m.start(), m.group(1)) for m in _CHART_DIV.finditer(report_html)]
    hits += [(m.start(), m.group(1)) for m in _CHART_DIV_REV.finditer(report_html)]
    seen: dict[str, None] = {}
    for _, div_id in sorted(hits):
        seen.setdefault(div_id, None)
    return list(seen)


class _ChartScan(HTMLParser):
    """Which plotly chart divs hold a ``main-svg`` element (tracks nesting with a tag stack)."""

    _VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                       "source", "track", "wbr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rendered: dict[str, bool] = {}
        self.stack: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        chart = a.get("id") if tag == "div" and "plotly-graph-div" in classes else None
        if chart is not None:
            self.rendered.setdefault(chart, False)
        if "main-svg" in classes:
            for _, owner in self.stack:
                if owner is not None:
                    self.rendered[owner] = True
        if tag not in self._VOID:
            self.stack.append((tag, chart))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in self._VOID and self.stack and self.stack[-1][0] == tag:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                return


def rendered_charts(dom: str) -> dict[str, bool]:
    """Chart div id -> whether it holds plotly SVG, from a dumped DOM."""
    scan = _ChartScan()
    scan.feed(dom)
    scan.close()
    return scan.rendered


# --- PNG check ---------------------------------------------------------------------------------


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _decode_png_rows(data: bytes) -> tuple[int, int, int, list[bytes]]:
    """(width, height, bytes per pixel, unfiltered rows) of an 8-bit, non-interlaced PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    pos, idat = 8, b""
    width = height = bpp = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or interlace != 0 or color not in (0, 2, 4, 6):
                raise ValueError(f"unsupported PNG (depth {depth}, colour {color}, interlace {interlace})")
            bpp = {0: 1, 2: 3, 4: 2, 6: 4}[color]
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        cur = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = cur[i - bpp] if i >= bpp else 0
            up = prev[i]
            if f == 1:
                cur[i] = (cur[i] + left) & 0xFF
            elif f == 2:
                cur[i] = (cur[i] + up) & 0xFF
            elif f == 3:
                cur[i] = (cur[i] + ((left + up) >> 1)) & 0xFF
            elif f == 4:
                cur[i] = (cur[i] + _paeth(left, up, prev[i - bpp] if i >= bpp else 0)) & 0xFF
        rows.append(bytes(cur))
        prev = cur
    return width, height, bpp, rows


def ink_fraction(png: Path, step: int = 7) -> tuple[int, int, float]:
    """(width, height, fraction of sampled pixels unlike the top-left pixel)."""
    try:
        from PIL import Image

        with Image.open(png) as im:
            rgb = im.convert("RGB")
            w, h = rgb.size
            bg = rgb.getpixel((0, 0))
            samples = [rgb.getpixel((x, y)) for y in range(0, h, step) for x in range(0, w, step)]
    except ImportError:
        w, h, bpp, rows = _decode_png_rows(png.read_bytes())
        n = min(bpp, 3)
        bg = tuple(rows[0][:n])
        samples = [tuple(rows[y][x * bpp:x * bpp + n]) for y in range(0, h, step) for x in range(0, w, step)]
    if not samples:
        return w, h, 0.0
    return w, h, sum(1 for p in samples if p != bg) / len(samples)


# --- running Chromium ----------------------------------------------------------------------------


def run_chromium(chromium: str, report: Path, out_png: Path) -> tuple[str, str]:
    """Screenshot and DOM dump (two processes, in parallel); returns (dom, error text)."""
    url = report.resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="fbr-shot-") as tmp:
        shot_dir, dom_dir = Path(tmp) / "shot", Path(tmp) / "dom"
        shot = subprocess.Popen([chromium, *chromium_flags(shot_dir), f"--screenshot={out_png}", url],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        dump = subprocess.Popen([chromium, *chromium_flags(dom_dir), "--dump-dom", url],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            dom, dom_err = dump.communicate(timeout=TIMEOUT_S)
            _, shot_err = shot.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            shot.kill()
            dump.kill()
            shot.communicate()
            dump.communicate()
            return "", f"Chromium did not finish within {TIMEOUT_S} s"
    errors = []
    if dump.returncode != 0:
        errors.append(f"--dump-dom exited {dump.returncode}: {dom_err.strip()[-500:]}")
    if shot.returncode != 0:
        errors.append(f"--screenshot exited {shot.returncode}: {shot_err.strip()[-500:]}")
    return dom, "; ".join(errors)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("report", type=Path, help="the HTML report")
    ap.add_argument("-o", "--out", type=Path, default=None, help="PNG to write (default: REPORT.png)")
    ap.add_argument("--chromium", default=DEFAULT_CHROMIUM, help=f"browser binary ({DEFAULT_CHROMIUM})")
    args = ap.parse_args(argv)

    report: Path = args.report
    out: Path = args.out if args.out is not None else report.with_suffix(".png")
    chromium = args.chromium if Path(args.chromium).exists() else shutil.which(args.chromium)
    if not chromium:
        print(f"error: Chromium not found at {args.chromium}; {INSTALL_HINT}", file=sys.stderr)
        return 2
    if not report.is_file():
        print(f"error: no report at {report}", file=sys.stderr)
        return 1
    expected = expected_chart_ids(report.read_text(encoding="utf-8", errors="replace"))
    if not expected:
        print(f"error: {report} has no plotly chart div (class plotly-graph-div)", file=sys.stderr)
        return 1

    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    dom, err = run_chromium(str(chromium), report, out)
    if err and not dom:
        print(f"error: Chromium failed: {err}", file=sys.stderr)
        return 2

    failures: list[str] = []
    rendered = rendered_charts(dom)
    missing = [c for c in expected if not rendered.get(c, False)]
    if missing:
        failures.append(f"{len(missing)} of {len(expected)} charts have no rendered plotly SVG "
                        f"(main-svg): {', '.join(missing)}")
    if not out.is_file() or out.stat().st_size == 0:
        failures.append(f"no screenshot written to {out}" + (f" ({err})" if err else ""))
        w = h = 0
        ink = 0.0
    else:
        w, h, ink = ink_fraction(out)
        if ink < MIN_INK:
            failures.append(f"screenshot {out} looks blank ({100 * ink:.2f}% non-background pixels)")
    if failures:
        for f in failures:
            print(f"FAIL: {f}", file=sys.stderr)
        return 1
    print(f"ok: {len(expected)}/{len(expected)} charts rendered (plotly main-svg in the DOM); "
          f"screenshot {out} {w}x{h}, {100 * ink:.1f}% non-background pixels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
