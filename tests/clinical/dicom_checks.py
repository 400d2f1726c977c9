"""Independent checks of the DICOM ``dose3d segment`` writes: the ``dciodvfy`` IOD validator and rt-utils.

``dciodvfy`` (dicom3tools, David Clunie) checks a file against the DICOM standard's IOD and module tables. A
test that needs it and does not find it is skipped with the reason (CI installs it: ``.ci/run``).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

DCIODVFY = "dciodvfy"


@dataclass
class Validation:
    """What ``dciodvfy`` said about one file."""

    errors: list[str]
    warnings: list[str]
    output: str


def dciodvfy(path: Path) -> Validation:
    """Run ``dciodvfy`` on a file and collect its ``Error -`` and ``Warning -`` lines.

    Skips the calling test when the validator is not installed.
    """
    binary = shutil.which(DCIODVFY)
    if binary is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed; CI installs it")
    run = subprocess.run([binary, str(path)], capture_output=True, timeout=120, check=False)
    output = (run.stdout + run.stderr).decode("latin-1")
    lines = [line.strip() for line in output.splitlines()]
    return Validation(
        errors=[line for line in lines if line.startswith("Error")],
        warnings=[line for line in lines if line.startswith("Warning")],
        output=output,
    )


def assert_valid_dicom(path: Path) -> Validation:
    """``dciodvfy`` reports no error on ``path``."""
    validation = dciodvfy(path)
    assert not validation.errors, "\n".join(validation.errors)
    return validation


def rt_utils_masks(ct_folder: Path, rtstruct: Path, slice_uids: list[str]) -> dict[str, np.ndarray]:
    """Every ROI of an RTSTRUCT as rt-utils rasterises it, on our ``(columns, rows, slices)`` grid.

    Args:
        ct_folder: a folder holding only the CT series the structure set references.
        rtstruct: the structure set.
        slice_uids: SOPInstanceUID of each slice index of our grid (rt-utils orders slices itself).
    """
    from rt_utils import RTStructBuilder

    structure_set = RTStructBuilder.create_from(
        dicom_series_path=str(ct_folder), rt_struct_path=str(rtstruct)
    )
    order = [slice_uids.index(str(ds.SOPInstanceUID)) for ds in structure_set.series_data]
    masks = {}
    for name in structure_set.get_roi_names():
        theirs = structure_set.get_roi_mask_by_name(name)  # (rows, columns, slices in rt-utils' order)
        ours = np.zeros((theirs.shape[1], theirs.shape[0], theirs.shape[2]), dtype=bool)
        for position, k in enumerate(order):
            ours[:, :, k] = theirs[:, :, position].T
        masks[name] = ours
    return masks


def raw_text(path: Path, keyword: str) -> bytes:
    """The bytes of a top-level text element as stored in the file (not decoded)."""
    ds = dcmread(path)
    return bytes(ds.get_item(keyword).value).rstrip(b" \0")
