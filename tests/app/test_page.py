"""The page's assets ship in the package: the page, its script and style, and uPlot with its licence."""

from __future__ import annotations

from stream.app.page import static_files


def test_the_page_and_the_vendored_chart_library_with_its_licence_are_package_data() -> None:
    files = static_files()
    assert {"index.html", "page.js", "page.css", "uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE"} <= set(files)
    assert files["index.html"][1].startswith("text/html")
    assert b"/static/uPlot.iife.min.js" in files["index.html"][0]
    assert files["uPlot.iife.min.js"][0].startswith(b"/*! https://github.com/leeoniya/uPlot (v1.6.32) */")
    assert b"MIT License" in files["uPlot.LICENSE"][0]
