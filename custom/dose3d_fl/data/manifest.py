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
class Rejection:
    """Something found in the input that is not a usable case, and why."""

    source: str
    reason: str


@dataclass
class LabelFlag:
    """A label quality finding: the case stays usable, a person should look at it.

    Attributes:
        check: which check (``interior_gap``, ``off_slice_contours``, ``volume_outlier``).
        reason: one line naming what was found and what to look at.
    """

    check: str
    reason: str


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
        structure_set_choice: why this structure set labels the series (approval, origin, date).
        set_aside: the series' other structure sets, each with the reason it was not used.
        flags: label quality findings (the case is usable; see :class:`LabelFlag`).
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
    structure_set_choice: str = ""
    set_aside: list[Rejection] = field(default_factory=list)
    flags: list[LabelFlag] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict) -> CaseEntry:
        """A case as ``manifest.json`` stores it."""
        return cls(
            **{
                **data,
                "set_aside": [Rejection(**item) for item in data.get("set_aside", [])],
                "flags": [LabelFlag(**item) for item in data.get("flags", [])],
            }
        )


@dataclass
class Manifest:
    """Contents of ``manifest.json``.

    Attributes:
        roi: the ROI name ingestion was asked for.
        cases: converted cases.
        rejected: what is not a case, each with its reason.
        skipped_non_dicom: files that are not DICOM.
        ignored_dicom_objects: DICOM objects that hold no image volume, by modality (``RTPLAN``,
            ``RTDOSE``, ``SR``, ``DICOMDIR``...).
        duplicate_files: files repeating an instance of another file (a study exported twice), not used.
        read_without_preamble: DICOM files without the preamble and "DICM" prefix, read all the same.
        allow_automatic_labels: whether automatic (model-made) contours were allowed as labels.
    """

    roi: str
    cases: list[CaseEntry] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    skipped_non_dicom: int = 0
    ignored_dicom_objects: dict[str, int] = field(default_factory=dict)
    duplicate_files: int = 0
    read_without_preamble: int = 0
    allow_automatic_labels: bool = False
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
        ignored = data.get("ignored_dicom_objects", {})
        if isinstance(ignored, int):  # written before objects were counted by modality
            ignored = {"unspecified": ignored} if ignored else {}
        return cls(
            roi=data["roi"],
            cases=[CaseEntry.from_dict(case) for case in data["cases"]],
            rejected=[Rejection(**rej) for rej in data["rejected"]],
            skipped_non_dicom=data.get("skipped_non_dicom", 0),
            ignored_dicom_objects=ignored,
            duplicate_files=data.get("duplicate_files", 0),
            read_without_preamble=data.get("read_without_preamble", 0),
            allow_automatic_labels=data.get("allow_automatic_labels", False),
        )

    @property
    def flagged_cases(self) -> list[CaseEntry]:
        """Cases with at least one label quality flag."""
        return [case for case in self.cases if case.flags]
