"""The report's HTML page, rendered by Jinja2 with autoescaping from ``templates/``.

``templates/page.html`` is the page, ``templates/elements.html`` the macros for a section's paragraphs,
figures, tables and folded blocks; the functions here only hand them their values. Images are referenced by
relative path, so the report folder can be moved or archived as a whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from jinja2 import Environment, PackageLoader, StrictUndefined, Template


@dataclass
class Section:
    """One titled part of the report; ``body`` is already HTML (from :func:`paragraph`, :func:`figure`,
    :func:`table`)."""

    title: str
    body: str


@cache
def _environment() -> Environment:
    # Built on first use: a broken install fails the report, not every import of dose3d_fl.report.
    return Environment(
        loader=PackageLoader("dose3d_fl.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def _elements() -> Template:
    return _environment().get_template("elements.html")


def paragraph(text: str, css_class: str = "") -> str:
    """An escaped paragraph."""
    return str(_elements().module.paragraph(text, css_class))


def figure(src: str, caption: str, alt: str) -> str:
    """An image by relative path, with a caption."""
    return str(_elements().module.figure(src, caption, alt))


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    formats: Sequence[str | None] | None = None,
    css_class: str = "",
) -> str:
    """A table; floats right-aligned with 4 decimals, ``None`` as a dash.

    Args:
        headers: column titles.
        rows: cell values.
        formats: a printf format per column for its floats (e.g. ``"%.1f"``); ``None`` keeps 4 decimals.
        css_class: the table's class (``"compact"``: cells never wrap).
    """
    return str(_elements().module.table(headers, rows, list(formats) if formats else None, css_class))


def details(summary: str, body: str) -> str:
    """A folded block: ``summary`` (text) opens ``body`` (HTML from the functions above)."""
    return str(_elements().module.details(summary, body))


def render_page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole HTML document."""
    return _environment().get_template("page.html").render(title=title, subtitle=subtitle, sections=sections)
