"""Static result pages and tables: one Markdown and one self-contained HTML page from the same
content (headings, text, tables, figures), and tables written as CSV plus Markdown.

Figures are linked by a path relative to the page, so a page folder can be moved or zipped
as a whole. HTML is escaped everywhere; no script, no network, no template engine.
"""
from __future__ import annotations

import html
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from faceaudit.io.files import atomic_write, write_csv

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;color:#222}"
          "table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}"
          "th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}"
          "th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}"
          "figure{margin:1rem 0}img{max-width:100%}figcaption,.source{color:#666;font-size:.85rem}")


def format_cell(value, digits: int = 4) -> str:
    """A table cell: floats to ``digits`` significant decimals, None/NaN as an empty cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1e6 else f"{value:.{digits}g}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence], digits: int = 4) -> str:
    """A GitHub-flavoured Markdown table; ``|`` in cells is escaped."""
    def line(cells):
        return "| " + " | ".join(format_cell(c, digits).replace("|", "\\|") for c in cells) + " |"
    out = [line(header), "|" + "|".join(" --- " for _ in header) + "|"]
    out += [line(row) for row in rows]
    return "\n".join(out) + "\n"


def html_table(header: Sequence[str], rows: Sequence[Sequence], digits: int = 4) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(format_cell(c, digits))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_table(path: str | os.PathLike, header: Sequence[str], rows: Sequence[Sequence],
                digits: int = 4) -> list[Path]:
    """``path`` with ``.csv`` (full precision) and ``.md`` (rounded to ``digits``) suffixes."""
    path = Path(path)
    csv_path, md_path = path.with_suffix(".csv"), path.with_suffix(".md")
    write_csv(csv_path, header, rows)
    with atomic_write(md_path) as out:
        out.write(markdown_table(header, rows, digits))
    return [csv_path, md_path]


@dataclass
class Page:
    """A result page built block by block, then written as ``.md`` and ``.html`` side by side."""

    title: str
    blocks: list[tuple[str, tuple]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> "Page":
        self.blocks.append(("heading", (text, level)))
        return self

    def text(self, text: str) -> "Page":
        self.blocks.append(("text", (text,)))
        return self

    def table(self, header: Sequence[str], rows: Sequence[Sequence], digits: int = 4,
              source: str | None = None) -> "Page":
        """A table; ``source`` names the file(s) its values came from."""
        self.blocks.append(("table", (list(header), [list(r) for r in rows], digits, source)))
        return self

    def figure(self, path: str | os.PathLike, caption: str = "", source: str | None = None) -> "Page":
        self.blocks.append(("figure", (Path(path), caption, source)))
        return self

    def write(self, path: str | os.PathLike) -> list[Path]:
        """Write ``<path>.md`` and ``<path>.html``; figure links are made relative to the page."""
        path = Path(path)
        md, html_path = path.with_suffix(".md"), path.with_suffix(".html")
        with atomic_write(md) as out:
            out.write(self._markdown(md.parent))
        with atomic_write(html_path) as out:
            out.write(self._html(html_path.parent))
        return [md, html_path]

    def _markdown(self, folder: Path) -> str:
        parts = [f"# {self.title}\n"]
        for kind, args in self.blocks:
            if kind == "heading":
                parts.append(f"{'#' * args[1]} {args[0]}\n")
            elif kind == "text":
                parts.append(args[0].rstrip() + "\n")
            elif kind == "table":
                header, rows, digits, source = args
                parts.append(markdown_table(header, rows, digits) + (f"\n*Source: {source}*\n" if source else ""))
            else:
                figure, caption, source = args
                note = " ".join(x for x in (caption, f"(source: {source})" if source else "") if x)
                parts.append(f"![{caption}]({_relative(figure, folder)})\n" + (f"\n*{note}*\n" if note else ""))
        return "\n".join(parts)

    def _html(self, folder: Path) -> str:
        e = html.escape
        parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(self.title)}</title>"
                 f"<style>{_STYLE}</style></head><body><h1>{e(self.title)}</h1>"]
        for kind, args in self.blocks:
            if kind == "heading":
                level = min(max(int(args[1]), 2), 6)
                parts.append(f"<h{level}>{e(args[0])}</h{level}>")
            elif kind == "text":
                parts.append("".join(f"<p>{e(p.strip())}</p>" for p in args[0].split("\n\n") if p.strip()))
            elif kind == "table":
                header, rows, digits, source = args
                parts.append(html_table(header, rows, digits))
                if source:
                    parts.append(f"<p class='source'>Source: {e(source)}</p>")
            else:
                figure, caption, source = args
                note = " ".join(x for x in (caption, f"(source: {source})" if source else "") if x)
                parts.append(f"<figure><img src='{e(_relative(figure, folder))}' alt='{e(caption)}'>"
                             f"<figcaption>{e(note)}</figcaption></figure>")
        parts.append("</body></html>\n")
        return "\n".join(parts)


def _relative(path: Path, folder: Path) -> str:
    try:
        return Path(os.path.relpath(path.resolve(), folder.resolve())).as_posix()
    except ValueError:  # another drive
        return path.resolve().as_posix()
