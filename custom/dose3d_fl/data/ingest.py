"""Turn a site's DICOM export (CT series + RTSTRUCT) into validated NIfTI training cases, locally.

A bad case never stops the others: each is rejected with a one-line reason in the manifest. Nothing is
written outside the cache folder, and cases whose source files did not change are not converted again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset
from tqdm import tqdm

from dose3d_fl.data.ct_series import CaseRejectedError, CTVolume, check_ct_geometry, load_ct_series
from dose3d_fl.data.discovery import DicomInventory, SeriesFiles, discover_dicom, one_line
from dose3d_fl.data.label_checks import check_contours, flag_volume_outliers
from dose3d_fl.data.manifest import CaseEntry, Manifest, Rejection
from dose3d_fl.data.nifti import save_nifti
from dose3d_fl.data.rtstruct import StructureSet, rasterise_contours, read_structure_set
from dose3d_fl.data.structure_choice import StructureSetOption, StructureSetOrigin, choose_structure_set

logger = logging.getLogger(__name__)

# Part of every case's fingerprint: raise it when conversion or the per-case label checks change, so that
# cached cases are converted and checked again.
_CONVERSION_VERSION = 2


class IngestError(Exception):
    """No usable case at all; the message is the one-line reason."""


@dataclass(frozen=True)
class IngestConfig:
    """Options of :func:`ingest_site`.

    Args:
        roi: name of the structure to use as label (matched ignoring case).
        min_slices: fewest slices accepted as a 3D volume.
        allow_automatic_labels: let automatic contours (a model's output, e.g. ``dose3d segment``'s
            RTSTRUCT) label a series that has no person's delineation; see :mod:`dose3d_fl.data.structure_choice`.
    """

    roi: str = "SPLEEN"
    min_slices: int = 3
    allow_automatic_labels: bool = False


@dataclass
class IngestReport:
    """What one ingestion run did."""

    manifest: Manifest
    converted: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)


@dataclass
class _Candidate:
    """A structure set paired with the CT series it references, and why it was chosen over the others."""

    structure_set_path: Path
    structure_set: StructureSet
    series: SeriesFiles
    choice: str = ""
    set_aside: list[Rejection] = field(default_factory=list)


def ingest_site(
    input_dir: Path, cache_dir: Path, config: IngestConfig | None = None, show_progress: bool = False
) -> IngestReport:
    """Discover, validate and convert every labelled CT series under ``input_dir``.

    Args:
        input_dir: the site's DICOM export, any folder layout and file names.
        cache_dir: where NIfTI files and ``manifest.json`` go (created if needed).
        config: ingestion options.
        show_progress: draw progress bars on stderr when it is a terminal.

    Returns:
        The report; its manifest has also been written to ``cache_dir``.

    Raises:
        IngestError: the input folder is missing, or no case is usable.
    """
    config = config or IngestConfig()
    input_dir, cache_dir = Path(input_dir), Path(cache_dir)
    if not input_dir.is_dir():
        raise IngestError(f"input folder {input_dir} does not exist or is not a folder")
    previous = _previous_cases(cache_dir)
    inventory = discover_dicom(input_dir, show_progress=show_progress)
    manifest = Manifest(
        roi=config.roi,
        skipped_non_dicom=inventory.non_dicom,
        ignored_dicom_objects=dict(sorted(inventory.ignored.items())),
        duplicate_files=inventory.duplicates,
        read_without_preamble=inventory.without_preamble,
        allow_automatic_labels=config.allow_automatic_labels,
    )
    manifest.rejected.extend(Rejection(_rel(p, input_dir), reason) for p, reason in inventory.unreadable)
    candidates = _pair_structure_sets(inventory, input_dir, config, manifest.rejected)

    report = IngestReport(manifest)
    (cache_dir / "images").mkdir(parents=True, exist_ok=True)
    (cache_dir / "labels").mkdir(parents=True, exist_ok=True)
    for candidate in tqdm(
        candidates, desc="converting cases", unit="case", disable=None if show_progress else True
    ):
        case_id = _case_id(candidate)
        fingerprint = _fingerprint(candidate, config)
        old = previous.get(case_id)
        if old is not None and old.fingerprint == fingerprint and _files_exist(cache_dir, old):
            # The other structure sets of the series may have changed: the choice is always today's.
            manifest.cases.append(
                dataclasses.replace(old, structure_set_choice=candidate.choice, set_aside=candidate.set_aside)
            )
            report.reused.append(case_id)
            continue
        try:
            entry = _convert_case(candidate, case_id, fingerprint, input_dir, cache_dir, config)
        except CaseRejectedError as err:
            manifest.rejected.append(Rejection(_rel(candidate.structure_set_path, input_dir), str(err)))
            manifest.rejected.extend(candidate.set_aside)
            logger.info("rejected %s: %s", _rel(candidate.structure_set_path, input_dir), err)
            continue
        manifest.cases.append(entry)
        report.converted.append(case_id)

    flag_volume_outliers(manifest.cases)
    _remove_stale_files(cache_dir, {case.id for case in manifest.cases})
    manifest.save(cache_dir)
    if not manifest.cases:
        first = (
            f" (first: {manifest.rejected[0].source}: {manifest.rejected[0].reason})"
            if manifest.rejected
            else ""
        )
        raise IngestError(
            f"no usable case in {input_dir}: {len(manifest.rejected)} rejected{first}, "
            f"{manifest.skipped_non_dicom} non-DICOM file(s) skipped"
        )
    return report


def _pair_structure_sets(
    inventory: DicomInventory, input_dir: Path, config: IngestConfig, rejected: list[Rejection]
) -> list[_Candidate]:
    """Match each RTSTRUCT with the CT series it references; reject what cannot be a case."""
    by_series: dict[str, list[tuple[Path, Dataset, StructureSet]]] = {}
    for path, ds in inventory.structure_sets:
        source = _rel(path, input_dir)
        try:
            structure_set = read_structure_set(ds)
        except Exception as err:  # malformed sequences raise a variety of pydicom errors
            rejected.append(Rejection(source, f"RTSTRUCT cannot be parsed ({one_line(err)})"))
            continue
        referenced = structure_set.referenced_series_uids or inventory.series_of_instances(
            structure_set.referenced_sop_instance_uids
        )
        present = [uid for uid in sorted(referenced) if uid in inventory.image_series]
        if not present:
            named = ", ".join(sorted(referenced)) or "no series"
            rejected.append(
                Rejection(
                    source, f"RTSTRUCT references {named}, which is not in the input; export it with its CT"
                )
            )
            continue
        by_series.setdefault(present[0], []).append((path, ds, structure_set))

    candidates = []
    for series_uid, series in sorted(inventory.image_series.items()):
        structure_sets = by_series.get(series_uid)
        if not structure_sets:
            reason = _unlabelled_series_reason(series, config)
            rejected.append(Rejection(series.folders(input_dir), reason))
            continue
        usable: list[StructureSetOption[tuple[Path, StructureSet]]] = []
        for path, ds, structure_set in structure_sets:
            reason = _structure_set_problem(structure_set, series, config)
            if reason:
                rejected.append(Rejection(_rel(path, input_dir), reason))
                continue
            label_rois = [structure_set.find_roi(config.roi).name]
            usable.append(
                StructureSetOption(
                    _rel(path, input_dir), StructureSetOrigin.of(ds, label_rois), (path, structure_set)
                )
            )
        if not usable:
            continue
        choice = choose_structure_set(usable, series_uid, config.allow_automatic_labels)
        set_aside = [Rejection(option.source, reason) for option, reason in choice.set_aside]
        if choice.chosen is None:
            rejected.extend(set_aside)
            continue
        path, structure_set = choice.chosen.item
        candidates.append(_Candidate(path, structure_set, series, choice.reason, set_aside))
    return candidates


def _unlabelled_series_reason(series: SeriesFiles, config: IngestConfig) -> str:
    uid = series.series_instance_uid
    if series.modality != "CT":
        return f"series {uid}: modality {series.modality}, not CT"
    try:
        check_ct_geometry(series, config.min_slices)
    except CaseRejectedError as err:
        return f"{err}; no RTSTRUCT references it"
    return f"CT series {uid} ({len(series.files)} files): no RTSTRUCT references it"


def _structure_set_problem(
    structure_set: StructureSet, series: SeriesFiles, config: IngestConfig
) -> str | None:
    if series.modality != "CT":
        return (
            f"RTSTRUCT references series {series.series_instance_uid} of modality {series.modality}, not CT"
        )
    frame = str(series.headers[0].get("FrameOfReferenceUID", ""))
    if frame not in structure_set.frame_of_reference_uids:
        listed = ", ".join(sorted(structure_set.frame_of_reference_uids)) or "none"
        return (
            f"RTSTRUCT frame of reference ({listed}) is absent from CT series {series.series_instance_uid} "
            f"(its frame of reference is {frame or 'missing'}); contours cannot be placed"
        )
    roi = structure_set.find_roi(config.roi)
    if roi is None:
        names = ", ".join(sorted(structure_set.rois)) or "none"
        return f"ROI {config.roi!r} absent from RTSTRUCT (ROIs: {names})"
    if not roi.contours:
        return f"ROI {roi.name!r} has no CLOSED_PLANAR contours"
    return None


def _convert_case(
    candidate: _Candidate,
    case_id: str,
    fingerprint: str,
    input_dir: Path,
    cache_dir: Path,
    config: IngestConfig,
) -> CaseEntry:
    volume = load_ct_series(candidate.series, min_slices=config.min_slices)
    roi = candidate.structure_set.find_roi(config.roi)
    label, _ = rasterise_contours(roi.contours, volume.geometry)
    if not label.any():
        raise CaseRejectedError(
            f"ROI {roi.name!r}: none of its {len(roi.contours)} contours lies on a slice of series "
            f"{candidate.series.series_instance_uid}; was it drawn on another reconstruction?"
        )
    flags = check_contours(roi.name, roi.contours, volume.geometry)
    for flag in flags:
        logger.warning("%s: %s", case_id, flag.reason)
    image_rel, label_rel = f"images/{case_id}.nii.gz", f"labels/{case_id}.nii.gz"
    affine = volume.geometry.affine_ras
    save_nifti(_image_array(volume), affine, cache_dir / image_rel)
    save_nifti(label.astype(np.uint8), affine, cache_dir / label_rel)
    spacing = [float(s) for s in volume.geometry.spacing]
    return CaseEntry(
        id=case_id,
        image=image_rel,
        label=label_rel,
        spacing=[round(s, 4) for s in spacing],
        shape=[int(n) for n in volume.geometry.shape],
        roi=roi.name,
        roi_volume_ml=round(float(label.sum()) * float(np.prod(spacing)) / 1000.0, 2),
        orientation="".join(nib.aff2axcodes(affine)),
        source=candidate.series.folders(input_dir),
        structure_set=_rel(candidate.structure_set_path, input_dir),
        fingerprint=fingerprint,
        structure_set_choice=candidate.choice,
        set_aside=candidate.set_aside,
        flags=flags,
    )


def _image_array(volume: CTVolume) -> np.ndarray:
    if volume.integer_hu:
        return np.rint(volume.hu).astype(np.int16)
    return volume.hu


def _case_id(candidate: _Candidate) -> str:
    digest = hashlib.sha256(
        f"{candidate.series.series_instance_uid}|{candidate.structure_set.sop_instance_uid}".encode()
    ).hexdigest()
    return f"case-{digest[:12]}"


def _fingerprint(candidate: _Candidate, config: IngestConfig) -> str:
    digest = hashlib.sha256(
        f"v{_CONVERSION_VERSION}|roi={config.roi.casefold()}|min_slices={config.min_slices}".encode()
    )
    for path in sorted([*candidate.series.files, candidate.structure_set_path]):
        stat = path.stat()
        digest.update(f"|{path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _previous_cases(cache_dir: Path) -> dict[str, CaseEntry]:
    try:
        return {case.id: case for case in Manifest.load(cache_dir).cases}
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return {}


def _files_exist(cache_dir: Path, case: CaseEntry) -> bool:
    return (cache_dir / case.image).is_file() and (cache_dir / case.label).is_file()


def _remove_stale_files(cache_dir: Path, keep: set[str]) -> None:
    """Delete converted files of cases that are no longer in the input (only inside the cache)."""
    for folder in ("images", "labels"):
        for path in (cache_dir / folder).glob("case-*.nii.gz"):
            if path.name.removesuffix(".nii.gz") not in keep:
                path.unlink()


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
