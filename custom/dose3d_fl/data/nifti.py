"""NIfTI files of the site cache and of geometry outputs: RAS affine in qform and sform, millimetres.

Written beside the target and renamed (``dose3d_fl.files.atomic_path``), so an interrupted run never leaves
a truncated volume.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from dose3d_fl.files import atomic_path

__all__ = ["save_nifti"]


def save_nifti(array: np.ndarray, affine_ras: np.ndarray, path: Path, description: str = "") -> Path:
    """Write ``array`` with its RAS affine (qform and sform, millimetres) atomically; returns ``path``."""
    image = nib.Nifti1Image(array, affine_ras)
    image.set_qform(affine_ras, code=1)
    image.set_sform(affine_ras, code=1)
    image.header.set_xyzt_units("mm")
    if description:
        image.header["descrip"] = description[:79].encode("ascii", errors="replace")
    with atomic_path(path) as tmp:
        nib.save(image, tmp)
    return Path(path)
