"""Label quality checks: findings a person should look at before a site trains on a case.

Each finding is a :class:`~dose3d_fl.data.manifest.LabelFlag` in the case's manifest entry; the case stays
usable. None is a hard rule, because each has innocent causes: an organ may have a gap along the slices (two
lobes, a structure split on purpose), a few contours may come from another reconstruction, and a site may
truly have an unusual patient. Hard rules (no contour on any slice, ROI absent) reject the case elsewhere.

* ``interior_gap``: slices inside the ROI's extent without a contour, e.g. a structure contoured on every
  other slice and interpolated in the planning system only; the label is empty there.
* ``off_slice_contours``: some contours lie on no CT slice (between slices: drawn on another
  reconstruction); they are not in the label.
* ``volume_outlier``: the ROI's volume is far from the site's other cases of that ROI: robust z-score of the
  log volume (median and median absolute deviation, Iglewicz and Hoaglin's modified z-score, limit 3.5), only
  with at least :data:`MIN_CASES_FOR_VOLUME_CHECK` cases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from dose3d_fl.data.geometry import VolumeGeometry
from dose3d_fl.data.manifest import CaseEntry, LabelFlag
from dose3d_fl.data.rtstruct import contour_slice_indices

INTERIOR_GAP = "interior_gap"
OFF_SLICE_CONTOURS = "off_slice_contours"
VOLUME_OUTLIER = "volume_outlier"

MIN_CASES_FOR_VOLUME_CHECK = 8
VOLUME_Z_LIMIT = 3.5
_SHOWN = 4


def check_contours(
    roi_name: str, contours: Sequence[np.ndarray], geometry: VolumeGeometry
) -> list[LabelFlag]:
    """Interior slices without a contour, and contours on no slice, of one ROI on its CT grid.

    Args:
        roi_name: the ROI, for messages.
        contours: its planar contours, ``(N, 3)`` LPS vertices each.
        geometry: the CT grid.

    Returns:
        The flags (empty when the contours are fine).
    """
    indices = contour_slice_indices(contours, geometry)
    positions = geometry.slice_positions()
    flags = []
    on_slice = np.unique(indices[indices >= 0])
    if on_slice.size:
        gaps = sorted(set(range(int(on_slice[0]), int(on_slice[-1]) + 1)) - set(on_slice.tolist()))
        if gaps:
            flags.append(
                LabelFlag(
                    INTERIOR_GAP,
                    f"ROI {roi_name!r}: {len(gaps)} of {on_slice[-1] - on_slice[0] + 1} slices inside its extent "
                    f"have no contour (at {_positions(positions[gaps])} mm along the slice normal); contoured "
                    "on every other slice? The label is empty there: contour every slice or export the "
                    "interpolated contours",
                )
            )
    off = np.flatnonzero(indices < 0)
    if off.size and off.size < len(contours):
        height = float((contours[off[0]] @ geometry.normal).mean())
        nearest = float(positions[np.argmin(np.abs(positions - height))])
        flags.append(
            LabelFlag(
                OFF_SLICE_CONTOURS,
                f"ROI {roi_name!r}: {off.size} of {len(contours)} contours lie on no CT slice (e.g. at "
                f"{height:.2f} mm, nearest slice {nearest:.2f} mm) and are not in the label; drawn on another "
                "reconstruction?",
            )
        )
    return flags


def flag_volume_outliers(
    cases: Sequence[CaseEntry], min_cases: int = MIN_CASES_FOR_VOLUME_CHECK, limit: float = VOLUME_Z_LIMIT
) -> None:
    """Re-flag, in place, the cases whose organ volume is far outside the site's range for that organ.

    Earlier volume flags are replaced (the site's range changes as cases come and go). Each organ is judged
    on its own (``organ_volumes_ml``; a case written before organ lists by its one ROI's name); organs with
    fewer than ``min_cases`` cases are not judged.

    Args:
        cases: the site's converted cases.
        min_cases: fewest cases of one organ for the check to run.
        limit: modified z-score beyond which a volume is flagged.
    """
    by_organ: dict[str, list[tuple[CaseEntry, str, float]]] = {}
    for case in cases:
        case.flags = [flag for flag in case.flags if flag.check != VOLUME_OUTLIER]
        volumes = case.organ_volumes_ml or {case.roi.strip().casefold(): case.roi_volume_ml}
        for organ, volume in volumes.items():
            if volume > 0:
                by_organ.setdefault(organ, []).append((case, case.rois.get(organ, case.roi), volume))
    for group in by_organ.values():
        if len(group) < min_cases:
            continue
        logs = np.log([volume for _, _, volume in group])
        median = float(np.median(logs))
        deviations = np.abs(logs - median)
        # 1.4826 MAD estimates the standard deviation; when over half the volumes are equal, the mean
        # absolute deviation (x 1.2533) does (Iglewicz and Hoaglin).
        scale = 1.4826 * float(np.median(deviations)) or 1.2533 * float(deviations.mean())
        if scale == 0:
            continue
        for (case, roi, volume), value in zip(group, logs, strict=True):
            z = (value - median) / scale
            if abs(z) > limit:
                case.flags.append(
                    LabelFlag(
                        VOLUME_OUTLIER,
                        f"ROI {roi!r}: volume {volume:.1f} mL is far outside this site's range "
                        f"(median {math.exp(median):.1f} mL over {len(group)} cases, robust z {z:+.1f} of log "
                        f"volume, limit {limit:g}); check that the structure is this organ",
                    )
                )


def _positions(values: np.ndarray) -> str:
    shown = ", ".join(f"{v:.1f}" for v in values[:_SHOWN])
    return shown + (f" and {len(values) - _SHOWN} more" if len(values) > _SHOWN else "")
