"""A report as a document: built once as a list of blocks, rendered to Markdown and HTML.

A :class:`Block` is a heading, a paragraph, a table or a figure. :mod:`pixelgen.study.report`
writes the blocks of the comparison and the analysis; this module only renders them, so
report.md and report.html never disagree. It knows nothing of runs or measurements.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from pixelgen.store.files import atomic_write_text


@attrs.frozen
class Block:
    """One piece of the report: ``kind`` is "h1", "h2", "p", "table" or "figure".

    A heading or paragraph holds its ``text``; a table its ``header`` and ``rows`` of
    cells; a figure the image file in ``text`` and its alternative text in ``header[0]``.
    """

    kind: str
    text: str = ""
    header: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()

    @property
    def alt(self) -> str:
        """A figure's alternative text (its file name when none is given)."""
        return self.header[0] if self.header else self.text


def format_value(value: Any, fmt: str) -> str:
    """``value`` as a table cell: ``fmt`` applied to it, to each item of a list or tuple
    (joined by " / "), and "-" for None or a non-finite float."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, (list, tuple)):
        return " / ".join(format_value(v, fmt) for v in value)
    return fmt.format(value)


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    cells = [[c.replace("|", "\\|") for c in row] for row in (header, *rows)]
    return ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in cells[1:])]


def to_markdown(blocks: Sequence[Block]) -> str:
    """The blocks as Markdown, one blank line after each."""
    out = []
    for b in blocks:
        if b.kind == "h1":
            out.append(f"# {b.text}")
        elif b.kind == "h2":
            out.append(f"## {b.text}")
        elif b.kind == "p":
            out.append(b.text)
        elif b.kind == "figure":
            out.append(f"![{b.alt}]({b.text})")
        elif b.kind == "table":
            out.extend(_markdown_table(b.header, b.rows))
        out.append("")
    return "\n".join(out)


_STYLE = (
    "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;"
    "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
)


def _html_block(b: Block) -> list[str]:
    esc = html.escape
    if b.kind in ("h1", "h2", "p"):
        return [f"<{b.kind}>{esc(b.text)}</{b.kind}>"]
    if b.kind == "figure":
        return [f"<figure><img src='{esc(b.text)}' alt='{esc(b.alt)}'></figure>"]
    if b.kind == "table":
        return ["<table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in b.header) + "</tr>",
                *("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in b.rows),
                "</table>"]
    return []


def to_html(blocks: Sequence[Block], title: str) -> str:
    """The blocks as a standalone HTML page titled ``title``."""
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{_STYLE}</style></head><body>"]
    for b in blocks:
        out.extend(_html_block(b))
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_markdown(path: str | os.PathLike, blocks: Sequence[Block]) -> Path:
    """Write the blocks to ``path`` as Markdown (atomically)."""
    return atomic_write_text(path, to_markdown(blocks))


def write_report(out: str | os.PathLike, blocks: Sequence[Block], title: str, stem: str = "report") -> tuple[Path, Path]:
    """Write ``<stem>.md`` and ``<stem>.html`` into the folder ``out`` (each atomically)."""
    out = Path(out)
    return write_markdown(out / f"{stem}.md", blocks), atomic_write_text(out / f"{stem}.html", to_html(blocks, title))
