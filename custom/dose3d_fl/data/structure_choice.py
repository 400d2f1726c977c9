"""Which RT Structure Set labels a CT series: a person's approved delineation, never a model's own output.

A series often has several structure sets: a physician's, a colleague's draft, the RTSTRUCT ``dose3d
segment`` wrote for it. Recency alone would pick the model's output, which is the newest, and train the
model on itself. The rules, in order:

1. A structure set whose ApprovalStatus is REJECTED is never a label: a clinician rejected it.
2. Automatic contours are not ground truth unless the site allows them (``--allow-automatic-labels``): a
   structure set written by dose3d (Manufacturer ``dose3d-fl`` or StructureSetLabel ``DOSE3D AUTO``), or one
   whose label ROI is marked AUTOMATIC (ROIGenerationAlgorithm, or RTROIInterpretedType). Only the ROIs used
   as labels count: a planning system's automatic BODY outline does not make a physician's organ automatic.
3. Among the rest: a person's delineation over automatic contours, then APPROVED over no ApprovalStatus
   over UNAPPROVED, then the newest (StructureSetDate/Time).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pydicom.dataset import Dataset

DOSE3D_MANUFACTURER = "dose3d-fl"
DOSE3D_AUTO_LABEL = "DOSE3D AUTO"
_APPROVAL_RANK = {"APPROVED": 2, "": 1, "UNAPPROVED": 0}

T = TypeVar("T")


@dataclass(frozen=True)
class StructureSetOrigin:
    """Who made a structure set and whether a clinician approved it.

    Attributes:
        approval: ApprovalStatus (``APPROVED``, ``UNAPPROVED``, ``REJECTED``), ``""`` when absent.
        automatic: what marks its label contours as a program's output, ``""`` for a person's delineation.
        created: StructureSetDate and StructureSetTime (``YYYYMMDD HHMMSS``, sortable), ``""`` if absent.
    """

    approval: str
    automatic: str
    created: str

    @classmethod
    def of(cls, ds: Dataset, label_rois: Iterable[str]) -> StructureSetOrigin:
        """Read the origin of an RT Structure Set whose ROIs ``label_rois`` (names) would be labels."""
        markers = []
        manufacturer = str(ds.get("Manufacturer", "")).strip()
        if manufacturer.casefold() == DOSE3D_MANUFACTURER:
            markers.append(f"Manufacturer {manufacturer!r}")
        label = str(ds.get("StructureSetLabel", "")).strip()
        if label.upper() == DOSE3D_AUTO_LABEL:
            markers.append(f"StructureSetLabel {label!r}")
        markers.extend(_automatic_rois(ds, {name.strip().casefold() for name in label_rois}))
        created = " ".join(
            value
            for value in (str(ds.get("StructureSetDate", "")), str(ds.get("StructureSetTime", "")))
            if value
        )
        return cls(
            approval=str(ds.get("ApprovalStatus", "")).strip().upper(),
            automatic=", ".join(markers),
            created=created,
        )

    def describe(self) -> str:
        """Approval, origin and date in a few words, for the manifest."""
        approval = self.approval or "no ApprovalStatus"
        origin = f"automatic ({self.automatic})" if self.automatic else "a person's delineation"
        created = f", created {self.created}" if self.created else ""
        return f"{approval}, {origin}{created}"

    def rank(self) -> tuple[bool, int, str]:
        """Sort key: a person's over automatic, then by approval, then the newest."""
        return (not self.automatic, _APPROVAL_RANK.get(self.approval, 0), self.created)


@dataclass
class StructureSetOption(Generic[T]):
    """A structure set that could label a series.

    Attributes:
        source: where it was found (relative path), for messages.
        origin: its approval and origin.
        item: what the caller keeps with it (file, parsed contours...).
    """

    source: str
    origin: StructureSetOrigin
    item: T


@dataclass
class StructureSetChoice(Generic[T]):
    """The decision for one series.

    Attributes:
        chosen: the structure set that labels the series, ``None`` when none may.
        reason: why it was chosen ("" when none was).
        set_aside: every other option with the reason it is not used.
    """

    chosen: StructureSetOption[T] | None
    reason: str
    set_aside: list[tuple[StructureSetOption[T], str]] = field(default_factory=list)


def choose_structure_set(
    options: Sequence[StructureSetOption[T]], series_uid: str, allow_automatic: bool = False
) -> StructureSetChoice[T]:
    """Pick the structure set that labels a series, and say why each other one is set aside.

    Args:
        options: the structure sets referencing the series that hold the label ROI(s).
        series_uid: the series, for messages.
        allow_automatic: let automatic contours label the series (still after any person's delineation).

    Returns:
        The choice; ``chosen`` is ``None`` when every option was set aside.
    """
    set_aside: list[tuple[StructureSetOption[T], str]] = []
    eligible = []
    for option in options:
        if option.origin.approval == "REJECTED":
            set_aside.append((option, "ApprovalStatus REJECTED: a clinician rejected this structure set"))
        elif option.origin.automatic and not allow_automatic:
            set_aside.append(
                (
                    option,
                    f"automatic contours ({option.origin.automatic}) are not ground truth: a model would "
                    "learn its own output; --allow-automatic-labels lets a site use them",
                )
            )
        else:
            eligible.append(option)
    if not eligible:
        return StructureSetChoice(None, "", set_aside)
    chosen = max(eligible, key=lambda option: option.origin.rank())
    for option in eligible:
        if option is not chosen:
            set_aside.append(
                (option, f"{_why_not(option.origin, chosen.origin, chosen.source)} for series {series_uid}")
            )
    others = len(options) - 1
    context = (
        f"the only structure set of series {series_uid}"
        if not others
        else f"preferred over {others} other structure set(s) of series {series_uid}"
    )
    allowed = "; automatic labels allowed by the site" if chosen.origin.automatic else ""
    return StructureSetChoice(chosen, f"{chosen.origin.describe()}: {context}{allowed}", set_aside)


def _why_not(origin: StructureSetOrigin, winner: StructureSetOrigin, winner_source: str) -> str:
    if origin.automatic and not winner.automatic:
        return f"automatic ({origin.automatic}): the person's delineation {winner_source} is used"
    if origin.approval != winner.approval:
        mine, theirs = origin.approval or "no ApprovalStatus", winner.approval or "no ApprovalStatus"
        return f"{mine}: {winner_source} ({theirs}) is used"
    return f"superseded by the newer {winner_source} ({winner.describe()})"


def _automatic_rois(ds: Dataset, label_rois: set[str]) -> list[str]:
    """Markers of automatic generation on the ROIs used as labels."""
    numbers = {}
    markers = []
    for roi in ds.get("StructureSetROISequence", []):
        name = str(roi.get("ROIName", ""))
        if name.strip().casefold() not in label_rois:
            continue
        numbers[roi.get("ROINumber")] = name
        if str(roi.get("ROIGenerationAlgorithm", "")).strip().upper() == "AUTOMATIC":
            markers.append(f"ROI {name!r} ROIGenerationAlgorithm AUTOMATIC")
    for observation in ds.get("RTROIObservationsSequence", []):
        name = numbers.get(observation.get("ReferencedROINumber"))
        if (
            name is not None
            and str(observation.get("RTROIInterpretedType", "")).strip().upper() == "AUTOMATIC"
        ):
            markers.append(f"ROI {name!r} RTROIInterpretedType AUTOMATIC")
    return markers
