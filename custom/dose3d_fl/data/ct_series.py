"""Validate one CT series and load it as a HU volume on a regular grid.

Every check raises :class:`CaseRejectedError` with one line a medical physicist can act on. Slices are ordered
by their position along the slice normal (never by InstanceNumber), and the orientation comes from
ImageOrientationPatient whatever its direction cosines.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.pixels import apply_rescale

from dose3d_fl.data.discovery import SeriesFiles, one_line, read_dicom
from dose3d_fl.data.geometry import VolumeGeometry

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"

_ORIENTATION_TOLERANCE = 1e-3
_MAX_TILT_DEGREES = 0.5


class CaseRejectedError(Exception):
    """A series (or a case) cannot be used; the message is the one-line reason."""


@dataclass
class CTVolume:
    """A validated CT series.

    Attributes:
        hu: float32 ``(columns, rows, slices)`` Hounsfield units, rescale applied.
        geometry: its grid, slices ascending along the normal.
        sop_instance_uids: SOPInstanceUID of each slice, in slice order.
        files: source file of each slice, in slice order.
        frame_of_reference_uid: FrameOfReferenceUID of the series.
        integer_hu: whether every rescaled value is an integer (stored as int16 then).
    """

    hu: np.ndarray
    geometry: VolumeGeometry
    sop_instance_uids: list[str]
    files: list[Path]
    frame_of_reference_uid: str
    integer_hu: bool


def load_ct_series(series: SeriesFiles, min_slices: int = 3) -> CTVolume:
    """Check the geometry of a CT series, then decode, order and rescale its slices.

    Args:
        series: the files and headers of one SeriesInstanceUID.
        min_slices: fewest slices accepted as a 3D volume.

    Returns:
        The validated volume.

    Raises:
        CaseRejectedError: with the reason, naming the series or the file.
    """
    geometry, order = check_ct_geometry(series, min_slices)
    files = [series.files[i] for i in order]
    hu, integer_hu = _read_pixels(f"series {series.series_instance_uid}", files, geometry)
    return CTVolume(
        hu=hu,
        geometry=geometry,
        sop_instance_uids=[str(series.headers[i].SOPInstanceUID) for i in order],
        files=files,
        frame_of_reference_uid=str(series.headers[0].get("FrameOfReferenceUID", "")),
        integer_hu=integer_hu,
    )


def check_ct_geometry(series: SeriesFiles, min_slices: int = 3) -> tuple[VolumeGeometry, list[int]]:
    """Validate a CT series from its headers alone (no pixel data is read).

    Args:
        series: the files and headers of one SeriesInstanceUID.
        min_slices: fewest slices accepted as a 3D volume.

    Returns:
        The grid, and the index of the file at each slice position (ascending along the normal).

    Raises:
        CaseRejectedError: with the reason, naming the series or the file.
    """
    name = f"series {series.series_instance_uid}"
    headers = series.headers
    if series.broken:
        path, reason = series.broken[0]
        raise CaseRejectedError(f"{name}: file {path.name}: {reason}")
    if series.modality != "CT":
        raise CaseRejectedError(f"{name}: modality {series.modality}, not CT")
    sop_classes = {str(h.get("SOPClassUID", "")) for h in headers}
    if ENHANCED_CT_IMAGE_STORAGE in sop_classes:
        raise CaseRejectedError(
            f"{name}: Enhanced (multi-frame) CT is not supported; export as classic CT Image Storage"
        )
    if len(headers) < min_slices:
        kinds = {str(v) for h in headers for v in h.get("ImageType", [])}
        kind = " (LOCALIZER: a scout image)" if "LOCALIZER" in kinds else ""
        raise CaseRejectedError(
            f"{name}: {len(headers)} slice(s){kind}, not a 3D volume (at least {min_slices} needed)"
        )
    for path, header in zip(series.files, headers, strict=True):
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"):
            if keyword not in header or header.get(keyword) in (None, ""):
                raise CaseRejectedError(f"{name}: file {path.name} lacks {keyword}")

    _require_consistent(name, series, "Rows/Columns", lambda h: (int(h.Rows), int(h.Columns)))
    _require_consistent(
        name, series, "PixelSpacing", lambda h: tuple(round(float(v), 3) for v in h.PixelSpacing)
    )
    _require_consistent(
        name,
        series,
        "ImageOrientationPatient",
        lambda h: tuple(round(float(v), 3) for v in h.ImageOrientationPatient),
    )
    _require_consistent(name, series, "FrameOfReferenceUID", lambda h: str(h.get("FrameOfReferenceUID", "")))

    orientation = np.asarray(headers[0].ImageOrientationPatient, dtype=float)
    row_dir, col_dir = orientation[:3], orientation[3:]
    if (
        abs(np.linalg.norm(row_dir) - 1) > _ORIENTATION_TOLERANCE
        or abs(np.linalg.norm(col_dir) - 1) > _ORIENTATION_TOLERANCE
        or abs(row_dir @ col_dir) > _ORIENTATION_TOLERANCE
    ):
        raise CaseRejectedError(
            f"{name}: ImageOrientationPatient [{', '.join(f'{v:g}' for v in orientation)}] is not two "
            "orthogonal unit vectors"
        )
    row_dir, col_dir = row_dir / np.linalg.norm(row_dir), col_dir / np.linalg.norm(col_dir)
    normal = np.cross(row_dir, col_dir)

    positions = np.array([np.asarray(h.ImagePositionPatient, dtype=float) for h in headers])
    heights = positions @ normal
    order = np.argsort(heights, kind="stable")
    positions, heights = positions[order], heights[order]
    files = [series.files[i] for i in order]
    steps = np.diff(heights)
    duplicate = np.flatnonzero(steps < 1e-3)
    if duplicate.size:
        k = duplicate[0]
        raise CaseRejectedError(
            f"{name}: files {files[k].name} and {files[k + 1].name} share slice position {heights[k]:.2f} mm "
            "(two acquisitions in one series?); export each reconstruction as its own series"
        )
    spacing = float(np.median(steps))
    _check_tilt(name, headers[0], positions, heights, normal)
    _check_spacing(name, heights, steps, spacing)

    pixel_spacing = [float(v) for v in headers[0].PixelSpacing]
    geometry = VolumeGeometry(
        shape=(int(headers[0].Columns), int(headers[0].Rows), len(files)),
        row_direction=tuple(row_dir),
        column_direction=tuple(col_dir),
        slice_direction=tuple(normal),
        spacing=(pixel_spacing[1], pixel_spacing[0], spacing),
        origin=tuple(positions[0]),
    )
    return geometry, [int(i) for i in order]


def _require_consistent(name: str, series: SeriesFiles, label: str, value_of) -> None:
    values = [value_of(h) for h in series.headers]
    counts = Counter(values)
    if len(counts) > 1:
        (common, n_common), (other, n_other) = counts.most_common(2)
        example = series.files[values.index(other)].name
        raise CaseRejectedError(
            f"{name}: inconsistent {label}: {_show(common)} in {n_common} files, {_show(other)} in {n_other} "
            f"(e.g. {example}); the series mixes images of different reconstructions"
        )


def _show(value) -> str:
    return "x".join(str(v) for v in value) if isinstance(value, tuple) else str(value)


def _check_tilt(name: str, header, positions: np.ndarray, heights: np.ndarray, normal: np.ndarray) -> None:
    """Reject series whose slice origins drift in-plane along the stack (gantry tilt, sheared grid)."""
    offset = positions[-1] - positions[0]
    along = heights[-1] - heights[0]
    in_plane = float(np.linalg.norm(offset - along * normal))
    angle = math.degrees(math.atan2(in_plane, along))
    if angle > _MAX_TILT_DEGREES:
        tag = header.get("GantryDetectorTilt")
        told = f"; GantryDetectorTilt={float(tag):g}" if tag not in (None, "") else ""
        raise CaseRejectedError(
            f"{name}: gantry tilt of {angle:.1f} degrees (slice origins shift {in_plane:.1f} mm in-plane over "
            f"{along:.1f} mm{told}); reconstruct or resample to an untilted grid before export"
        )


def _check_spacing(name: str, heights: np.ndarray, steps: np.ndarray, spacing: float) -> None:
    tolerance = max(0.05, 0.01 * spacing)
    bad = np.flatnonzero(np.abs(steps - spacing) > tolerance)
    if not bad.size:
        return
    k = bad[0]
    gap = steps[k]
    missing = gap / spacing - 1
    if gap > spacing and abs(missing - round(missing)) < 0.1:
        raise CaseRejectedError(
            f"{name}: slice gap of {gap:.2f} mm between positions {heights[k]:.2f} and {heights[k + 1]:.2f} mm "
            f"(expected {spacing:.2f} mm, {round(missing)} slice(s) missing); re-export the full series"
        )
    raise CaseRejectedError(
        f"{name}: non-uniform slice spacing ({steps.min():.2f} to {steps.max():.2f} mm, "
        f"first deviation at position {heights[k]:.2f} mm); reconstruct with uniform spacing"
    )


def _read_pixels(name: str, files: list[Path], geometry: VolumeGeometry) -> tuple[np.ndarray, bool]:
    cols, rows, slices = geometry.shape
    hu = np.empty((cols, rows, slices), dtype=np.float32)
    integer_hu = True
    for k, path in enumerate(files):
        try:
            ds, _ = read_dicom(path)  # also a file without preamble, as discovery read it
        except Exception as err:
            raise CaseRejectedError(f"{name}: file {path.name} is unreadable ({one_line(err)})") from err
        syntax = ds.file_meta.get("TransferSyntaxUID")
        try:
            pixels = ds.pixel_array
        except Exception as err:
            # An unknown or private transfer syntax is treated as an encoding we cannot decode.
            if syntax is not None and (not syntax.is_transfer_syntax or syntax.is_compressed):
                raise CaseRejectedError(
                    f"{name}: file {path.name}: cannot decode {syntax.name} ({syntax}): {one_line(err)}; "
                    "export uncompressed or install a decoder for it"
                ) from err
            raise CaseRejectedError(
                f"{name}: file {path.name}: pixel data truncated or unreadable ({one_line(err)})"
            ) from err
        if pixels.shape != (rows, cols):
            raise CaseRejectedError(
                f"{name}: file {path.name}: pixel array {pixels.shape} does not match Rows x Columns {(rows, cols)}"
            )
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        integer_hu &= slope.is_integer() and intercept.is_integer()
        hu[:, :, k] = apply_rescale(pixels, ds).T
    return hu, integer_hu
