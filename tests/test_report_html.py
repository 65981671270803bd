from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from pathlib import Path

import pytest
from test_run_view import T0, ledger, row, start

from bulkpatch.records.ledger import RowResult, Status
from bulkpatch.records.report_html import render_html
from bulkpatch.records.run_view import collect

HOSTILE = '<img src="https://evil.example/x.png" onerror="alert(1)">'


def sample(tmp_path: Path, rows: int = 300) -> Path:
    """A 300-row run: mostly ok, some 404s, some invalid, answered over about 10 seconds."""
    records: list[RowResult | dict[str, object]] = [start(T0, concurrency=16, base_url="http://127.0.0.1:1")]
    for n in range(1, rows + 1):
        ts = T0 + n / 30
        if n % 15 == 0:
            records.append(row(n, Status.FAILED, ts=ts, error=f"HTTP 404: workload w-{n:04} not found"))
        elif n % 40 == 1:
            records.append(row(n, Status.INVALID, ts=ts, error="enabled: expected true/false, got 'maybe'"))
        else:
            records.append(row(n, Status.OK, ts=ts, ms=20.0 + (n % 7) * 40))
    records.append({"type": "run", "ts": T0 + 10.1, "event": "end", "elapsed_s": 10.1})
    return ledger(tmp_path / "run.ledger.jsonl", *records)


def test_the_page_is_self_contained(tmp_path: Path) -> None:
    page = render_html(collect([sample(tmp_path)]))
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 4  # outcomes, rows/s, in flight, latency
    for tag in ("<script", "<link", "<iframe", "<img", "@import", "url("):
        assert tag not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "300 rows" in page and "need attention" in page
    assert "HTTP 404: workload &lt;id&gt; not found" in page
    assert "--concurrency 16" in page


def test_everything_from_the_ledger_is_escaped(tmp_path: Path) -> None:
    path = ledger(
        tmp_path / "l.jsonl",
        start(T0, base_url=HOSTILE),
        RowResult(1, 2, HOSTILE, Status.FAILED, 400, 1, HOSTILE, 5.0, 0, T0 + 1),
        {"type": "header", "input": {"path": HOSTILE}},
    )
    page = render_html(collect([path]))
    assert "<img" not in page and 'onerror="' not in page
    assert "&lt;img src=&quot;https://evil.example/x.png&quot;" in page


def test_a_ledger_without_times_still_makes_a_page(tmp_path: Path) -> None:
    page = render_html(collect([ledger(tmp_path / "l.jsonl", row(1, Status.OK, ts=None))]))
    assert "No timed records" in page and "1 row records carry no time" in page


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and the pixels of an 8-bit RGB(A) PNG, with the standard library alone."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, idat, header = 8, b"", b""
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        at += 12 + length
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and color in (2, 6) and interlace == 0
    size = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * size
    previous = bytearray(stride)
    pixels: list[bytes] = []
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - size] if x >= size else 0
            b, c = previous[x], previous[x - size] if x >= size else 0
            if kind == 1:
                line[x] = (line[x] + a) & 255
            elif kind == 2:
                line[x] = (line[x] + b) & 255
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        pixels += [bytes(line[x : x + 3]) for x in range(0, stride, size)]
        previous = line
    return width, height, pixels


@pytest.mark.browser
@pytest.mark.slow
def test_a_real_browser_draws_the_page(tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    page = tmp_path / "report.html"
    page.write_text(render_html(collect([sample(tmp_path)])), encoding="utf-8")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
         "--window-size=1200,1600", "--hide-scrollbars", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    width, height, pixels = png_pixels(shot)
    assert (width, height) == (1200, 1600)
    colors = Counter(pixels)
    background, most = colors.most_common(1)[0]
    # Not blank: text, tables and charts cover much of the page, in many shades (anti-aliasing).
    assert len(colors) > 200
    assert len(pixels) - most > len(pixels) // 10
    assert background != b"\x00\x00\x00"
    # The charts themselves were drawn: the ok bar's green and the latency columns' blue.
    assert colors[bytes.fromhex("2f9e44")] > 500
    assert colors[bytes.fromhex("1c7ed6")] > 500
