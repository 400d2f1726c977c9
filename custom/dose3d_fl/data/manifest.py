"""The site cache manifest: which cases were converted, which were rejected and why.

``CACHE_DIR/manifest.json`` stays at the site with the NIfTI files it lists (paths relative to the cache).

Organs: ``organs`` lists the TG-263 organs ingestion was asked for, in label order (value ``i + 1`` of a label
is ``organs[i]``), and each case's ``labelled`` the organs its structure set delineates; an organ not listed
there is unlabelled for that case, not background. A manifest written before organ lists has neither key: its
cases label the spleen alone (``organs`` ``["Spleen"]``, every case labelled).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dose3d_fl.files import write_json_atomic

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "dose3d-site-cache"
MANIFEST_VERSION = 1
# The organs of a manifest written before organ lists (dose3d_fl.data.cases.LEGACY_ORGANS).
LEGACY_ORGANS = ("Spleen",)


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
class UnmappedRoiName:
    """A local ROI name that neither the site's ``roi_names.json`` nor the TG-263 alias table maps.

    Attributes:
        roi: the name as written in the structure sets.
        message: one line for a person, with the suggestions (never applied).
        structure_sets: how many of the site's structure sets hold it.
    """

    roi: str
    message: str
    structure_sets: int = 1


@dataclass
class CaseEntry:
    """One converted case.

    Attributes:
        id: pseudonymous case id (a hash of the series and structure set UIDs, no patient identifier).
        image: NIfTI image (HU) path relative to the cache.
        label: NIfTI label (uint8: 0 background, ``i + 1`` the manifest's ``organs[i]``) path relative to the
            cache.
        spacing: voxel size in mm along the three NIfTI axes (columns, rows, slices).
        shape: voxels along the three NIfTI axes.
        roi: ROI name as found in the structure set (of the first organ it delineates).
        roi_volume_ml: volume of that rasterised ROI.
        orientation: NIfTI axis codes of the image (e.g. ``"LPS"``).
        source: folder(s) of the CT files, relative to the input folder.
        structure_set: RTSTRUCT file, relative to the input folder.
        fingerprint: hash of the source files' names, sizes and modification times; a change re-converts.
        structure_set_choice: why this structure set labels the series (approval, origin, date).
        set_aside: the series' other structure sets, each with the reason it was not used.
        flags: label quality findings (the case is usable; see :class:`LabelFlag`).
        labelled: the manifest's organs this case delineates, in label order; None (a manifest written
            before organ lists): all of them.
        rois: organ -> the local ROI name that delineates it.
        organ_volumes_ml: organ -> volume of its rasterised ROI (after overlaps are resolved).
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
    labelled: list[str] | None = None
    rois: dict[str, str] = field(default_factory=dict)
    organ_volumes_ml: dict[str, float] = field(default_factory=dict)

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
        roi: the ROI name ingestion was asked for (``--roi``), or the organs, comma-separated.
        cases: converted cases.
        rejected: what is not a case, each with its reason.
        skipped_non_dicom: files that are not DICOM.
        ignored_dicom_objects: DICOM objects that hold no image volume, by modality (``RTPLAN``,
            ``RTDOSE``, ``SR``, ``DICOMDIR``...).
        duplicate_files: files repeating an instance of another file (a study exported twice), not used.
        read_without_preamble: DICOM files without the preamble and "DICM" prefix, read all the same.
        allow_automatic_labels: whether automatic (model-made) contours were allowed as labels.
        organs: the TG-263 organs ingestion was asked for, in label order (see the module doc).
        unmapped_rois: local ROI names nothing maps to a TG-263 name, each with its one-line message.
        roi_names_file: the site's ``roi_names.json`` that was applied ("" when none).
    """

    roi: str
    cases: list[CaseEntry] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    skipped_non_dicom: int = 0
    ignored_dicom_objects: dict[str, int] = field(default_factory=dict)
    duplicate_files: int = 0
    read_without_preamble: int = 0
    allow_automatic_labels: bool = False
    organs: list[str] = field(default_factory=lambda: list(LEGACY_ORGANS))
    unmapped_rois: list[UnmappedRoiName] = field(default_factory=list)
    roi_names_file: str = ""
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
            organs=list(data.get("organs") or LEGACY_ORGANS),
            unmapped_rois=[UnmappedRoiName(**item) for item in data.get("unmapped_rois", [])],
            roi_names_file=data.get("roi_names_file", ""),
        )

    def case_organs(self, case: CaseEntry) -> list[str]:
        """The organs ``case`` delineates (all the manifest's organs for a case written before organ lists)."""
        return list(self.organs) if case.labelled is None else list(case.labelled)

    @property
    def flagged_cases(self) -> list[CaseEntry]:
        """Cases with at least one label quality flag."""
        return [case for case in self.cases if case.flags]
