"""The site cache manifest: which cases were converted, which were rejected and why.

``CACHE_DIR/manifest.json`` stays at the site with the NIfTI files it lists (paths relative to the cache).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dose3d_fl.files import write_json_atomic

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "dose3d-site-cache"
MANIFEST_VERSION = 1


@dataclass
class CaseEntry:
    """One converted case.

    Attributes:
        id: pseudonymous case id (a hash of the series and structure set UIDs, no patient identifier).
        image: NIfTI image (HU) path relative to the cache.
        label: NIfTI label (uint8, 1 = ROI) path relative to the cache.
        spacing: voxel size in mm along the three NIfTI axes (columns, rows, slices).
        shape: voxels along the three NIfTI axes.
        roi: ROI name as found in the structure set.
        roi_volume_ml: volume of the rasterised ROI.
        orientation: NIfTI axis codes of the image (e.g. ``"LPS"``).
        source: folder(s) of the CT files, relative to the input folder.
        structure_set: RTSTRUCT file, relative to the input folder.
        fingerprint: hash of the source files' names, sizes and modification times; a change re-converts.
    """

    id: str
    image: str
    label: str
    spacing: list[float]
    shape: list[int]
    roi: str
    roi_volume_ml: float
    orientation: str
    source: str
    structure_set: str
    fingerprint: str


@dataclass
class Rejection:
    """Something found in the input that is not a usable case, and why."""

    source: str
    reason: str


@dataclass
class Manifest:
    """Contents of ``manifest.json``."""

    roi: str
    cases: list[CaseEntry] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    skipped_non_dicom: int = 0
    ignored_dicom_objects: int = 0
    format: str = MANIFEST_FORMAT
    version: int = MANIFEST_VERSION

    def save(self, cache_dir: Path) -> Path:
        """Write the manifest atomically (a crash never leaves a half-written file)."""
        return write_json_atomic(cache_dir / MANIFEST_NAME, asdict(self))

    @classmethod
    def load(cls, cache_dir: Path) -> Manifest:
        """Read ``cache_dir/manifest.json``.

        Raises:
            FileNotFoundError: no manifest; run ``dose3d ingest`` first.
            ValueError: the file is not a dose3d manifest of a supported version.
        """
        path = cache_dir / MANIFEST_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; run `dose3d ingest --out {cache_dir}` first")
        data = json.loads(path.read_text())
        if data.get("format") != MANIFEST_FORMAT or data.get("version") != MANIFEST_VERSION:
            raise ValueError(
                f"{path} is not a {MANIFEST_FORMAT} manifest version {MANIFEST_VERSION}; re-run `dose3d ingest`"
            )
        return cls(
            roi=data["roi"],
            cases=[CaseEntry(**case) for case in data["cases"]],
            rejected=[Rejection(**rej) for rej in data["rejected"]],
            skipped_non_dicom=data.get("skipped_non_dicom", 0),
            ignored_dicom_objects=data.get("ignored_dicom_objects", 0),
        )
