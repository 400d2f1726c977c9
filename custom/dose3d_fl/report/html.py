"""A small HTML page writer (``string.Template`` and escaping, no template engine).

Images are referenced by relative path, so the report folder can be moved or archived as a whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from string import Template

PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>$title</title>
<style>
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; background: #fff; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.6em 0; } th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; }
th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 0.8em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption, .note { color: #555; font-size: 0.9em; }
</style>
</head>
<body>
<h1>$title</h1>
<p class="note">$subtitle</p>
$sections
</body>
</html>
""")


@dataclass
class Section:
    """One titled part of the report; ``body`` is already HTML."""

    title: str
    body: str


def paragraph(text: str, css_class: str = "") -> str:
    """An escaped paragraph."""
    attribute = f' class="{css_class}"' if css_class else ""
    return f"<p{attribute}>{escape(text)}</p>"


def figure(src: str, caption: str, alt: str) -> str:
    """An image by relative path, with a caption."""
    return (
        f'<figure><img src="{escape(src)}" alt="{escape(alt)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A table; floats are shown with 4 decimals and right-aligned, ``None`` as a dash."""

    def cell(value: object) -> str:
        if value is None:
            return '<td class="num">&ndash;</td>'
        if isinstance(value, float):
            return f'<td class="num">{value:.4f}</td>'
        if isinstance(value, int):
            return f'<td class="num">{value}</td>'
        return f"<td>{escape(str(value))}</td>"

    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole HTML document."""
    parts = [f"<section><h2>{escape(s.title)}</h2>\n{s.body}\n</section>" for s in sections]
    return PAGE.substitute(title=escape(title), subtitle=escape(subtitle), sections="\n".join(parts))
