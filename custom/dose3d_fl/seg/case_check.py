"""Screen a site's cached cases before training: a bad case is named, skipped, and training goes on.

A site cache can go bad after ingestion: a NIfTI file truncated by a full disk or a copy that stopped, a
manifest entry whose files were deleted, a label with no voxel of the ROI (allowed for a synthetic pair: a
crop beside the organs). One such case must not stop a
site's training (a federation may wait hours for that site); it gets one error line naming the case, what is
wrong and what to do, and is left out.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from dose3d_fl.data.cases import IMAGE, LABEL
from dose3d_fl.seg.synthetic import SYNTHETIC_ID_PREFIX

log = logging.getLogger(__name__)

Case = dict[str, str]
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, ImageFileError)


def _case_name(case: Case) -> str:
    return case.get("id") or Path(case.get(IMAGE, "?")).name.removesuffix(".gz").removesuffix(".nii")


def _read(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(path).dataobj)


def case_problem(case: Case) -> str | None:
    """What makes ``case`` unusable for training or validation, or ``None`` when it is usable.

    Reads both files completely (a truncated gzip is only noticed at its end).
    """
    arrays = {}
    for key in (IMAGE, LABEL):
        path = Path(case[key])
        if not path.is_file():
            return f"{key} file {path} is missing"
        try:
            arrays[key] = _read(path)
        except _READ_ERRORS as err:
            return f"{key} file {path} is not a readable NIfTI ({type(err).__name__}: {err})"
    if arrays[IMAGE].shape[:3] != arrays[LABEL].shape[:3]:
        return f"image shape {arrays[IMAGE].shape} differs from label shape {arrays[LABEL].shape}"
    # A synthetic pair's label is exact by construction: without an organ it is a crop beside the organs (a
    # negative example), not a lost delineation.
    if not np.any(arrays[LABEL]) and not _case_name(case).startswith(SYNTHETIC_ID_PREFIX):
        return f"label {case[LABEL]} is empty (no voxel of the ROI)"
    return None


def usable_cases(cases: Sequence[Case], role: str) -> list[Case]:
    """The cases without a problem; each one left out is logged as one error line.

    Args:
        cases: dicts with ``image`` and ``label`` paths (and optionally an ``id``).
        role: ``"training"`` or ``"validation"``, for the messages.
    """
    usable = []
    for case in cases:
        problem = case_problem(case)
        if problem is None:
            usable.append(case)
        else:
            log.error(
                "%s case %s skipped: %s; re-run `dose3d ingest` for this site to rebuild its cache",
                role,
                _case_name(case),
                problem,
            )
    return usable
