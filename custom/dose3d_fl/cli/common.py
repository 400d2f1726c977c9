"""Helpers shared by the ``dose3d`` command groups (no commands): the one-line error exit, ``--patients`` and
``--organs``."""

from __future__ import annotations

import argparse
import sys


def fail(message: str) -> int:
    """Print ``dose3d: error: MESSAGE`` on stderr and return the exit status 2."""
    print(f"dose3d: error: {message}", file=sys.stderr)
    return 2


def patient_counts(text: str) -> list[int]:
    """The argparse type of ``--patients``: comma-separated patient counts, one per site, each at least 1."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--patients expects comma-separated integers, got {text!r}"
        ) from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"--patients needs at least one patient per site, got {text!r}")
    return counts


def organ_list(text: str) -> list[str]:
    """The argparse type of ``--organs``: comma-separated TG-263 names, e.g. ``Spleen,Liver,Kidney_L``.

    Unknown names are refused with the closest TG-263 name (``dose3d_fl.data.tg263.check_organs``).
    """
    from dose3d_fl.data.tg263 import check_organs

    organs = [part.strip() for part in text.split(",") if part.strip()]
    try:
        return list(check_organs(organs))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--organs: {err}") from None
