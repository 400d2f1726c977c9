"""Turn a site's DICOM export (CT series + RTSTRUCT) into validated NIfTI training cases, locally.

A bad case never stops the others: each is rejected with a one-line reason in the manifest. Nothing is
written outside the cache folder, and cases whose source files did not change are not converted again.

**Organs.** The task's organs are TG-263 names (default the spleen alone). Each structure set's ROI names are
mapped to them by the site's ``roi_names.json`` or the built-in alias table (``dose3d_fl.data.tg263``), never
by a guess: a name neither maps is listed in the manifest's ``unmapped_rois`` with its suggestions, and the
organ it might be stays unlabelled. Each mapped organ is rasterised into one integer label (value ``i + 1`` for
``organs[i]``); the organs a structure set delineates are the case's ``labelled`` list, and an organ it lacks
is unlabelled for that case, not background. A structure set that delineates none of the organs labels
nothing and is rejected with the ROIs it holds.

Overlaps: a voxel inside the contours of two organs goes to the smaller of them (fewer voxels in this case),
so that a small or thin structure (pancreas, aorta) is not swallowed by a large neighbour; an overlap of more
than :data:`OVERLAP_FLAG_SHARE` of the smaller organ is flagged (``organ_overlap``).

``IngestConfig(roi=NAME)`` (``dose3d ingest --roi NAME``) is a one-organ task whose ROI is named exactly
(ignoring case and surrounding spaces), as before organ lists: the organ is the TG-263 name of ``NAME`` (or the
one organ given), and no other name is mapped or reported.
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
from dose3d_fl.data.manifest import CaseEntry, LabelFlag, Manifest, Rejection, UnmappedRoiName
from dose3d_fl.data.nifti import save_nifti
from dose3d_fl.data.rtstruct import RoiData, StructureSet, rasterise_contours, read_structure_set
from dose3d_fl.data.structure_choice import StructureSetOption, StructureSetOrigin, choose_structure_set
from dose3d_fl.data.tg263 import Resolution, SiteRoiMapping, check_organs, resolve_roi_names, standard_name

logger = logging.getLogger(__name__)

# Part of every case's fingerprint: raise it when conversion or the per-case label checks change, so that
# cached cases are converted and checked again.
_CONVERSION_VERSION = 3
# The organs of a task that names none: the spleen alone.
DEFAULT_ORGANS = ("Spleen",)
# An overlap of two organs' contours above this share of the smaller organ's voxels is flagged.
OVERLAP_FLAG_SHARE = 0.01
ORGAN_OVERLAP = "organ_overlap"
ORGAN_UNLABELLED = "organ_unlabelled"
ROI_CONFLICT = "roi_conflict"


class IngestError(Exception):
    """No usable case at all; the message is the one-line reason."""


@dataclass(frozen=True)
class IngestConfig:
    """Options of :func:`ingest_site`.

    Args:
        organs: the task's organs, TG-263 names in label order; default the TG-263 name of ``roi`` when it
            has one, else the spleen alone.
        roi: a one-organ task's ROI, named exactly (matched ignoring case and surrounding spaces) instead of
            through the TG-263 mapping; None: map every ROI name.
        roi_names: the site's ``roi_names.json`` (``dose3d_fl.data.tg263.find_site_mapping``); None: the
            alias table alone.
        min_slices: fewest slices accepted as a 3D volume.
        allow_automatic_labels: let automatic contours (a model's output, e.g. ``dose3d segment``'s
            RTSTRUCT) label a series that has no person's delineation; see :mod:`dose3d_fl.data.structure_choice`.

    Raises:
        ValueError: an organ that is not a TG-263 name of the table (with the closest), or ``roi`` with
            several organs.
    """

    organs: tuple[str, ...] | None = None
    roi: str | None = None
    roi_names: SiteRoiMapping | None = None
    min_slices: int = 3
    allow_automatic_labels: bool = False

    def __post_init__(self) -> None:
        organs = self.organs
        if organs is None:
            organs = (standard_name(self.roi) or DEFAULT_ORGANS[0],) if self.roi else DEFAULT_ORGANS
        organs = check_organs(tuple(organs))
        if self.roi is not None and len(organs) != 1:
            raise ValueError(
                f"--roi names the one ROI of a one-organ task, but {len(organs)} organs are asked for; map the "
                "site's ROI names in roi_names.json instead"
            )
        object.__setattr__(self, "organs", organs)

    @property
    def task_organs(self) -> tuple[str, ...]:
        """The organs, resolved (never None)."""
        return tuple(self.organs or DEFAULT_ORGANS)


@dataclass
class IngestReport:
    """What one ingestion run did."""

    manifest: Manifest
    converted: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)


@dataclass
class _Labels:
    """The ROIs of one structure set that label the task's organs.

    Attributes:
        rois: task organ -> its ROI, in the task's order.
        resolution: how the names were mapped (None with ``IngestConfig.roi``).
    """

    rois: dict[str, RoiData]
    resolution: Resolution | None = None


@dataclass
class _Candidate:
    """A structure set paired with the CT series it references, and why it was chosen over the others."""

    structure_set_path: Path
    structure_set: StructureSet
    series: SeriesFiles
    labels: _Labels
    choice: str = ""
    set_aside: list[Rejection] = field(default_factory=list)


def _label_rois(structure_set: StructureSet, config: IngestConfig) -> _Labels:
    """The ROIs of the task's organs: the named ROI (``config.roi``), or every name mapped to TG-263."""
    organs = config.task_organs
    if config.roi is not None:
        roi = structure_set.find_roi(config.roi)
        return _Labels({organs[0]: roi} if roi is not None else {})
    resolution = resolve_roi_names(structure_set.rois, organs, config.roi_names)
    rois = {
        organ: structure_set.rois[resolution.rois[organ].local]
        for organ in organs
        if organ in resolution.rois
    }
    return _Labels(rois, resolution)


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
        roi=config.roi if config.roi is not None else ", ".join(config.task_organs),
        skipped_non_dicom=inventory.non_dicom,
        ignored_dicom_objects=dict(sorted(inventory.ignored.items())),
        duplicate_files=inventory.duplicates,
        read_without_preamble=inventory.without_preamble,
        allow_automatic_labels=config.allow_automatic_labels,
        organs=list(config.task_organs),
        roi_names_file=config.roi_names.source if config.roi_names and config.roi_names.entries else "",
    )
    manifest.rejected.extend(Rejection(_rel(p, input_dir), reason) for p, reason in inventory.unreadable)
    candidates = _pair_structure_sets(inventory, input_dir, config, manifest)

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
    inventory: DicomInventory, input_dir: Path, config: IngestConfig, manifest: Manifest
) -> list[_Candidate]:
    """Match each RTSTRUCT with the CT series it references; reject what cannot be a case.

    Every ROI name of these structure sets that nothing maps goes to ``manifest.unmapped_rois``.
    """
    rejected = manifest.rejected
    unmapped: dict[str, UnmappedRoiName] = {}
    by_series: dict[str, list[tuple[Path, Dataset, StructureSet, _Labels]]] = {}
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
        labels = _label_rois(structure_set, config)
        for name in labels.resolution.unmapped if labels.resolution else ():
            if name.local in unmapped:
                unmapped[name.local].structure_sets += 1
            else:
                unmapped[name.local] = UnmappedRoiName(name.local, name.message(_mapping_file(config)))
        by_series.setdefault(present[0], []).append((path, ds, structure_set, labels))
    manifest.unmapped_rois = sorted(unmapped.values(), key=lambda name: name.roi)

    candidates = []
    for series_uid, series in sorted(inventory.image_series.items()):
        structure_sets = by_series.get(series_uid)
        if not structure_sets:
            reason = _unlabelled_series_reason(series, config)
            rejected.append(Rejection(series.folders(input_dir), reason))
            continue
        usable: list[StructureSetOption[tuple[Path, StructureSet, _Labels]]] = []
        for path, ds, structure_set, labels in structure_sets:
            reason = _structure_set_problem(structure_set, series, config, labels)
            if reason:
                rejected.append(Rejection(_rel(path, input_dir), reason))
                continue
            label_rois = [roi.name for roi in labels.rois.values()]
            usable.append(
                StructureSetOption(
                    _rel(path, input_dir),
                    StructureSetOrigin.of(ds, label_rois),
                    (path, structure_set, labels),
                )
            )
        if not usable:
            continue
        choice = choose_structure_set(usable, series_uid, config.allow_automatic_labels)
        set_aside = [Rejection(option.source, reason) for option, reason in choice.set_aside]
        if choice.chosen is None:
            rejected.extend(set_aside)
            continue
        path, structure_set, labels = choice.chosen.item
        candidates.append(_Candidate(path, structure_set, series, labels, choice.reason, set_aside))
    return candidates


def _mapping_file(config: IngestConfig) -> str:
    return config.roi_names.source if config.roi_names is not None else "roi_names.json"


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
    structure_set: StructureSet, series: SeriesFiles, config: IngestConfig, labels: _Labels
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
    names = ", ".join(sorted(structure_set.rois)) or "none"
    if not labels.rois:
        if config.roi is not None:
            return f"ROI {config.roi!r} absent from RTSTRUCT (ROIs: {names})"
        conflict = labels.resolution.error if labels.resolution else None
        return (
            f"none of the task's organs ({', '.join(config.task_organs)}) is delineated (ROIs: {names})"
            + (f"; {conflict}" if conflict else "")
            + (
                "; see the unmapped ROI names in the manifest"
                if labels.resolution and labels.resolution.unmapped
                else ""
            )
        )
    if not any(roi.contours for roi in labels.rois.values()):
        listed = ", ".join(repr(roi.name) for roi in labels.rois.values())
        return (
            f"ROI {listed} has no CLOSED_PLANAR contours"
            if len(labels.rois) == 1
            else (f"ROIs {listed} have no CLOSED_PLANAR contours")
        )
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
    organs = config.task_organs
    masks, flags = _rasterise_organs(candidate, volume, organs)
    label = _integer_label(masks, organs, volume.geometry.shape, flags)
    for flag in flags:
        logger.warning("%s: %s", case_id, flag.reason)
    image_rel, label_rel = f"images/{case_id}.nii.gz", f"labels/{case_id}.nii.gz"
    affine = volume.geometry.affine_ras
    save_nifti(_image_array(volume), affine, cache_dir / image_rel)
    save_nifti(label, affine, cache_dir / label_rel)
    spacing = [float(s) for s in volume.geometry.spacing]
    voxel_ml = float(np.prod(spacing)) / 1000.0
    labelled = [organ for organ in organs if organ in masks]
    volumes = {
        organ: round(float((label == organs.index(organ) + 1).sum()) * voxel_ml, 2) for organ in labelled
    }
    rois = {organ: candidate.labels.rois[organ].name for organ in labelled}
    return CaseEntry(
        id=case_id,
        image=image_rel,
        label=label_rel,
        spacing=[round(s, 4) for s in spacing],
        shape=[int(n) for n in volume.geometry.shape],
        roi=rois[labelled[0]],
        roi_volume_ml=volumes[labelled[0]],
        orientation="".join(nib.aff2axcodes(affine)),
        source=candidate.series.folders(input_dir),
        structure_set=_rel(candidate.structure_set_path, input_dir),
        fingerprint=fingerprint,
        structure_set_choice=candidate.choice,
        set_aside=candidate.set_aside,
        flags=flags,
        labelled=labelled,
        rois=rois,
        organ_volumes_ml=volumes,
    )


def _rasterise_organs(
    candidate: _Candidate, volume: CTVolume, organs: tuple[str, ...]
) -> tuple[dict[str, np.ndarray], list[LabelFlag]]:
    """Each delineated organ's mask on the CT grid, and the flags of its contours.

    An organ whose ROI has no planar contour, or none on a slice, is left unlabelled with a flag; when that
    leaves no organ the case is rejected.

    Raises:
        CaseRejectedError: no organ has a contour on a slice of the series.
    """
    flags: list[LabelFlag] = []
    resolution = candidate.labels.resolution
    if resolution is not None and resolution.error:
        flags.append(LabelFlag(ROI_CONFLICT, f"{resolution.error}; the organ is unlabelled for this case"))
    masks: dict[str, np.ndarray] = {}
    empty: list[RoiData] = []
    for organ, roi in candidate.labels.rois.items():
        mask, _ = rasterise_contours(roi.contours, volume.geometry) if roi.contours else (None, 0)
        if mask is None or not mask.any():
            empty.append(roi)
            if len(organs) > 1:
                what = (
                    "has no CLOSED_PLANAR contours"
                    if mask is None
                    else (f"none of its {len(roi.contours)} contours lies on a slice")
                )
                flags.append(
                    LabelFlag(
                        ORGAN_UNLABELLED,
                        f"ROI {roi.name!r} ({organ}) {what}; {organ} is unlabelled for this case",
                    )
                )
            continue
        masks[organ] = mask
        flags.extend(check_contours(roi.name, roi.contours, volume.geometry))
    if not masks:
        series = candidate.series.series_instance_uid
        if len(empty) == 1:
            raise CaseRejectedError(
                f"ROI {empty[0].name!r}: none of its {len(empty[0].contours)} contours lies on a slice of series "
                f"{series}; was it drawn on another reconstruction?"
            )
        listed = ", ".join(repr(roi.name) for roi in empty)
        raise CaseRejectedError(
            f"ROIs {listed}: none of their contours lies on a slice of series {series}; were they drawn on "
            "another reconstruction?"
        )
    return masks, flags


def _integer_label(
    masks: dict[str, np.ndarray], organs: tuple[str, ...], shape: tuple[int, ...], flags: list[LabelFlag]
) -> np.ndarray:
    """One uint8 label: ``i + 1`` where ``organs[i]`` is; overlapping voxels go to the smaller organ.

    Overlaps above :data:`OVERLAP_FLAG_SHARE` of the smaller organ are appended to ``flags``.
    """
    label = np.zeros(shape, dtype=np.uint8)
    # Largest first: each smaller organ is painted over its larger neighbours.
    by_size = sorted(masks, key=lambda organ: (-int(masks[organ].sum()), organs.index(organ)))
    for organ in by_size:
        label[masks[organ]] = organs.index(organ) + 1
    for i, first in enumerate(by_size):
        for second in by_size[i + 1 :]:
            shared = int(np.logical_and(masks[first], masks[second]).sum())
            smaller = int(masks[second].sum())
            if shared and shared > OVERLAP_FLAG_SHARE * smaller:
                flags.append(
                    LabelFlag(
                        ORGAN_OVERLAP,
                        f"{first} and {second} overlap in {shared} voxels ({100 * shared / smaller:.1f}% of "
                        f"{second}); they went to {second}, the smaller: check the two contours",
                    )
                )
    return label


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
    # What decides the label: the organs and which ROI labels each of them (not how that ROI was found:
    # a mapping change that picks the same ROIs converts nothing again), the slice rule and the files.
    rois = ",".join(f"{organ}={roi.name}" for organ, roi in candidate.labels.rois.items())
    digest = hashlib.sha256(
        f"v{_CONVERSION_VERSION}|organs={','.join(config.task_organs)}|rois={rois}|"
        f"min_slices={config.min_slices}".encode()
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
