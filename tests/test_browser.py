"""The headless Chromium check (tests/browser.py) itself: it reports console errors and uncaught exceptions,
returns the DOM after scripts ran, and writes a real screenshot."""

import os
import shutil
import struct
from pathlib import Path

import pytest

import browser
from browser import render

TABLE = "<table id='ranks'><tr><th>rank</th><th>host</th></tr><tr><td>0</td><td>node-a</td></tr></table>"


def page(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "page.html"
    path.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>{body}</body></html>")
    return path


def png_size(path: Path) -> tuple:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def darkest(path: Path) -> int:
    """The darkest grey level in the PNG: 255 for a blank page, low where text is drawn (fonts present)."""
    from PIL import Image  # Pillow comes with matplotlib (the test extra)

    with Image.open(path) as image:
        return image.convert("L").getextrema()[0]


def test_clean_page(tmp_path):
    shot = tmp_path / "shot.png"
    result = render(page(tmp_path, f"<h1>MPI world</h1>{TABLE}<script>console.log('fine'); console.warn('meh')"
                                   "</script>"), shot)
    assert result.errors == []
    assert "<table id=\"ranks\">" in result.html and "node-a" in result.text
    assert png_size(shot) == (1400, 1000) and shot.stat().st_size > 4000
    assert darkest(shot) < 100


def test_console_error(tmp_path):
    result = render(page(tmp_path, f"{TABLE}<script>console.error('boom')</script>"), tmp_path / "shot.png")
    assert result.errors == ["console.error: boom"]


def test_uncaught_exception(tmp_path):
    result = render(page(tmp_path, f"{TABLE}<script>throw new Error('bang')</script>"), tmp_path / "shot.png")
    assert len(result.errors) == 1 and "Uncaught" in result.errors[0] and "Error: bang" in result.errors[0]


def test_failed_load(tmp_path):
    result = render(page(tmp_path, "<script src='missing.js'></script>"), tmp_path / "shot.png")
    assert any("ERR_FILE_NOT_FOUND" in e and "missing.js" in e for e in result.errors), result.errors


def test_table_built_by_script(tmp_path):
    """The table is not in the file: only the DOM after scripts ran (on load and a moment later) has it."""
    script = """<script>
    addEventListener("DOMContentLoaded", () => {
        const table = document.body.appendChild(document.createElement("table"));
        table.id = "ranks";
        for (const cells of [["rank", "host"], ["0", "node-a"]]) {
            const row = table.insertRow();
            for (const text of cells) row.insertCell().textContent = text;
        }
    });
    setTimeout(() => document.body.append("later"), 100);
    </script>"""
    path = page(tmp_path, script)
    result = render(path, tmp_path / "shot.png")
    assert "<table" not in path.read_text() and "<table id=\"ranks\">" in result.html
    assert result.errors == [] and "node-a" in result.text and "later" in result.text


def test_large_inline_script(tmp_path):
    """A plotly chart's HTML inlines ~4 MB of plotly.js; a script as large renders an svg of class main-svg."""
    filler = "var filler = [%s];" % ",".join(['"%s"' % ("x" * 1000)] * 4000)
    draw = """const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("class", "main-svg"); svg.setAttribute("width", 600); svg.setAttribute("height", 200);
    svg.innerHTML = '<rect x="10" y="10" width="' + filler.length / 10 + '" height="80" fill="steelblue"/>';
    document.getElementById("chart").appendChild(svg);"""
    path = page(tmp_path, f"{TABLE}<div id='chart'></div><script>{filler}\n{draw}</script>")
    assert path.stat().st_size > 4_000_000
    result = render(path, tmp_path / "shot.png")
    assert result.errors == []
    assert '<svg class="main-svg"' in result.html and 'width="400"' in result.html


def test_timeout(tmp_path):
    """A page that never finishes loading fails the check in time."""
    with pytest.raises(TimeoutError, match="Chromium did not answer in time"):
        render(page(tmp_path, "<script>while (true) {}</script>"), tmp_path / "shot.png", timeout=3)


def test_missing_file(tmp_path):
    with pytest.raises(RuntimeError, match="ERR_FILE_NOT_FOUND"):
        render(tmp_path / "nowhere.html", tmp_path / "shot.png")


def test_missing_chromium_unprivileged(monkeypatch):
    """Without root, nothing is installed: the error says what to install."""
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(RuntimeError, match="apt-get install -y --no-install-recommends .*chromium"):
        browser.chromium()
