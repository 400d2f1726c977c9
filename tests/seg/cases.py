"""Tiny synthetic CT cases and site caches for the segmentation tests.

A body of soft tissue (0 HU) in air, with one brighter organ (+100 HU) on the patient's left, noise on top:
learnable in a few dozen steps, and empty for a network that has not learnt.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from dose3d_fl.data.manifest import CaseEntry, Manifest
from dose3d_fl.seg.profiles import get_profile

SHAPE = (24, 24, 16)
SPACING = 4.0
# The cpu-small recipe shrunk to the tiny volumes: same transforms, loss and metric, a smaller UNet.
TINY_PROFILE = get_profile("cpu-small").replace(
    name="tiny",
    roi_size=(16, 16, 16),
    channels=(4, 8, 16),
    strides=(2, 2),
    batch_size=2,
    num_samples=2,
    lr=1e-2,
    sw_batch_size=2,
)


def phantom(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """HU volume and organ mask on ``SHAPE``, voxel axis 0 running towards the patient's left."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in SHAPE], indexing="ij"))
    centre = np.array(SHAPE) / 2
    semi_axes = np.array([10.0, 8.0, 7.0])
    body = (((grid - centre[:, None, None, None]) / semi_axes[:, None, None, None]) ** 2).sum(0) <= 1
    organ_centre = np.array([16.0, 12.0, 8.0]) + rng.uniform(-1.5, 1.5, 3)
    radius = rng.uniform(2.5, 3.5)
    organ = (((grid - organ_centre[:, None, None, None]) ** 2).sum(0) <= radius**2) & body
    hu = np.where(body, 0.0, -1000.0) + np.where(organ, 100.0, 0.0) + rng.normal(0, 10, SHAPE)
    return hu.astype(np.int16), organ.astype(np.uint8)


def hfs_affine() -> np.ndarray:
    """Axes towards the patient's left, posterior and head (LPS voxel order, as site-1)."""
    return np.diag([-SPACING, -SPACING, SPACING, 1.0])


def reorient(image: nib.Nifti1Image, axcodes: tuple[str, str, str]) -> nib.Nifti1Image:
    """The same patient (same world coordinates) stored with another voxel order."""
    current = nib.orientations.io_orientation(image.affine)
    target = nib.orientations.axcodes2ornt(axcodes)
    return image.as_reoriented(nib.orientations.ornt_transform(current, target))


def write_case(
    folder: Path, case_id: str, seed: int, axcodes: tuple[str, str, str] = ("L", "P", "S")
) -> dict[str, str]:
    """Write ``images/<id>.nii.gz`` and ``labels/<id>.nii.gz``; return the trainer's case dict."""
    hu, organ = phantom(seed)
    paths = {}
    for key, array in (("image", hu), ("label", organ)):
        target = folder / f"{key}s" / f"{case_id}.nii.gz"
        target.parent.mkdir(parents=True, exist_ok=True)
        nib.save(reorient(nib.Nifti1Image(array, hfs_affine()), axcodes), target)
        paths[key] = str(target)
    return {"id": case_id, **paths}


def write_cache(
    folder: Path, n_cases: int, seed: int = 0, axcodes: tuple[str, str, str] = ("L", "P", "S")
) -> Path:
    """A site cache as ``dose3d ingest`` writes it: NIfTI files and ``manifest.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for index in range(n_cases):
        case_id = f"case-{seed:03d}{index:03d}"
        case = write_case(folder, case_id, seed * 1000 + index, axcodes)
        entries.append(
            CaseEntry(
                id=case_id,
                image=str(Path(case["image"]).relative_to(folder)),
                label=str(Path(case["label"]).relative_to(folder)),
                spacing=[SPACING] * 3,
                shape=list(SHAPE),
                roi="SPLEEN",
                roi_volume_ml=0.0,
                orientation="".join(axcodes),
                source=f"P{index:03d}/CT",
                structure_set=f"P{index:03d}/RTSTRUCT/RS.dcm",
                fingerprint=f"{seed}-{index}",
            )
        )
    Manifest(roi="SPLEEN", cases=entries).save(folder)
    return folder
