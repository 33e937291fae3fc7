"""pixelgen.study.render: one list of blocks, rendered to exactly this Markdown and this HTML."""

from __future__ import annotations

import math

import pytest

from pixelgen.study.render import (
    Block,
    format_value,
    to_html,
    to_markdown,
    write_report,
)

BLOCKS = [
    Block("h1", "Runs <a> & b"),
    Block("p", "A paragraph."),
    Block("table", header=("", "x|y"), rows=(("row", "1 < 2"),)),
    Block("figure", "curves.png", ("learning curves",)),
    Block("figure", "bare.png"),
]


def test_markdown_of_every_kind_of_block():
    assert to_markdown(BLOCKS) == (
        "# Runs <a> & b\n\n"
        "A paragraph.\n\n"
        "|  | x\\|y |\n|---|---|\n| row | 1 < 2 |\n\n"
        "![learning curves](curves.png)\n\n"
        "![bare.png](bare.png)\n"
    )


def test_html_of_every_kind_of_block_is_escaped():
    page = to_html(BLOCKS, "a <title>")
    assert page.startswith("<!doctype html><html><head><meta charset='utf-8'><title>a &lt;title&gt;</title>")
    assert page.endswith("\n<h1>Runs &lt;a&gt; &amp; b</h1>\n<p>A paragraph.</p>\n"
                         "<table><tr><th></th><th>x|y</th></tr>\n<tr><td>row</td><td>1 &lt; 2</td></tr>\n</table>\n"
                         "<figure><img src='curves.png' alt='learning curves'></figure>\n"
                         "<figure><img src='bare.png' alt='bare.png'></figure>\n</body></html>\n")


@pytest.mark.parametrize("value, fmt, cell", [
    (None, "{:.2f}", "-"),
    (math.nan, "{:.2f}", "-"),
    (math.inf, "{:.2f}", "-"),
    (3.14159, "{:.2f}", "3.14"),
    (1234567, "{:,}", "1,234,567"),
    ([1.0, None, 2.5], "{:.1f}", "1.0 / - / 2.5"),
    ("pixelcnn", "{}", "pixelcnn"),
])
def test_a_value_as_a_table_cell(value, fmt, cell):
    assert format_value(value, fmt) == cell


def test_write_report_writes_both_renderings_and_nothing_else(tmp_path):
    md, page = write_report(tmp_path, BLOCKS, "title", stem="analysis")
    assert (md, page) == (tmp_path / "analysis.md", tmp_path / "analysis.html")
    assert md.read_text() == to_markdown(BLOCKS) and page.read_text() == to_html(BLOCKS, "title")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["analysis.html", "analysis.md"], "no temporary files left"
