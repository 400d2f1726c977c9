"""The report's HTML page, rendered by Jinja2 with autoescaping from ``templates/``.

``templates/page.html`` is the page, ``templates/elements.html`` the macros for a section's paragraphs,
figures and tables; the functions here only hand them their values. Images are referenced by relative
path, so the report folder can be moved or archived as a whole.
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


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A table; floats are shown with 4 decimals and right-aligned, ``None`` as a dash."""
    return str(_elements().module.table(headers, rows))


def render_page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole HTML document."""
    return _environment().get_template("page.html").render(title=title, subtitle=subtitle, sections=sections)
