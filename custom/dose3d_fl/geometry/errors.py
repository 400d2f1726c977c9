"""The one error type of ``dose3d geometry``: bad input, reported in one line that names what is wrong."""

from __future__ import annotations


class GeometryInputError(Exception):
    """The input cannot make a phantom; the message is the one-line reason, naming the file or structure."""
