"""C-GET of a study's CT and RTSTRUCT series into a folder, checked complete or refused with a reason.

C-GET brings the instances back on the same association (we take the Storage SCP role for the CT and
RT Structure Set classes), so the PACS needs no route back to the site, unlike C-MOVE. Each instance is
written as received, in the DICOM file format, to ``<folder>/<Modality>-<SeriesInstanceUID>/<SOPInstanceUID>.dcm``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import DEFAULT_TRANSFER_SYNTAXES, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (
    CTImageStorage,
    EnhancedCTImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
    RTStructureSetStorage,
    StudyRootQueryRetrieveInformationModelGet,
)
from pynetdicom.status import QR_GET_SERVICE_CLASS_STATUS

from dose3d_fl.clinical.pacs.association import PacsError, RequestedContext, describe_status, open_association
from dose3d_fl.clinical.pacs.node import DicomNode, ScuSettings
from dose3d_fl.clinical.pacs.query import SeriesMatch, StudyMatch, check_uid

log = logging.getLogger(__name__)

# Enhanced CT is received too, so that ingestion refuses it with its own reason rather than the PACS
# reporting a failed sub-operation.
RECEIVED_SOP_CLASSES = (
    CTImageStorage,
    EnhancedCTImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
    RTStructureSetStorage,
)
# Uncompressed first; then every compressed syntax that ingestion decodes (pylibjpeg, pydicom's RLE).
RECEIVED_TRANSFER_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
)
_PENDING = (0xFF00, 0xFF01)
# C-STORE answers of our Storage SCP to an instance it does not keep.
_OUT_OF_RESOURCES = 0xA700
_CANNOT_UNDERSTAND = 0xC000

Progress = Callable[[str, int], None]
"""Called with (StudyInstanceUID, instances received so far) after each instance is written."""


@dataclass
class _Receiver:
    """The C-STORE handler of one study's C-GET: writes requested instances, refuses and notes the rest."""

    folder: Path
    study_uid: str
    series: dict[str, str]  # SeriesInstanceUID -> Modality
    progress: Progress | None = None
    received: dict[str, set[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def handle_store(self, event: Any) -> int:
        try:
            ds: Dataset = event.dataset
            study, series, sop = (
                str(ds.get(k, "")) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
            )
            check_uid(sop, "SOPInstanceUID")
        except Exception as err:  # a data set pydicom cannot decode, or an unusable SOPInstanceUID
            self.problems.append(f"an instance could not be read ({err})")
            return _CANNOT_UNDERSTAND
        if study != self.study_uid or series not in self.series:
            self.problems.append(
                f"the node sent instance {sop} of series {series or '?'}, which was not requested"
            )
            return _CANNOT_UNDERSTAND
        path = self.folder / f"{self.series[series]}-{series}" / f"{sop}.dcm"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(event.encoded_dataset(include_meta=True))
        except OSError as err:
            self.problems.append(f"cannot write {path}: {err.strerror or err}")
            return _OUT_OF_RESOURCES
        self.received.setdefault(series, set()).add(sop)
        if self.progress is not None:
            self.progress(self.study_uid, self.count())
        return 0x0000

    def count(self, series: str | None = None) -> int:
        if series is not None:
            return len(self.received.get(series, ()))
        return sum(len(sops) for sops in self.received.values())


def retrieve_study(
    node: DicomNode, settings: ScuSettings, study: StudyMatch, folder: Path, progress: Progress | None = None
) -> dict[str, int]:
    """C-GET every CT and RTSTRUCT series of ``study`` into ``folder`` and check that all arrived.

    Args:
        node: the PACS.
        settings: our AE title and timeouts.
        study: the study and its series, from :func:`~dose3d_fl.clinical.pacs.query.find_studies`.
        folder: where the instances are written (created; the caller owns what happens to it on failure).
        progress: called after each instance written.

    Returns:
        Instances received per modality.

    Raises:
        PacsError: no association, a refused or failed C-GET, a transfer that ended early, fewer instances
            than the PACS reported, or an instance that could not be written.
    """
    wanted = study.wanted_series
    receiver = _Receiver(
        folder, study.study_instance_uid, {s.series_instance_uid: s.modality for s in wanted}, progress
    )
    contexts = [
        RequestedContext(StudyRootQueryRetrieveInformationModelGet, tuple(DEFAULT_TRANSFER_SYNTAXES)),
        *(RequestedContext(uid, RECEIVED_TRANSFER_SYNTAXES) for uid in RECEIVED_SOP_CLASSES),
    ]
    roles = [build_role(uid, scp_role=True) for uid in RECEIVED_SOP_CLASSES]
    folder.mkdir(parents=True, exist_ok=True)
    with open_association(
        node, settings, contexts, roles, [(evt.EVT_C_STORE, receiver.handle_store)]
    ) as assoc:
        for series in wanted:
            _get_series(assoc, node, study, series, receiver)
    counts: dict[str, int] = {}
    for series in wanted:
        counts[series.modality] = counts.get(series.modality, 0) + receiver.count(series.series_instance_uid)
    log.info("study %s: %d instance(s) received", study.study_instance_uid, receiver.count())
    return counts


def _get_series(
    assoc: Association, node: DicomNode, study: StudyMatch, series: SeriesMatch, receiver: _Receiver
) -> None:
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID = study.study_instance_uid
    query.SeriesInstanceUID = series.series_instance_uid
    final: Dataset | None = None
    for status, _identifier in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
        if getattr(status, "Status", None) in _PENDING:
            continue
        final = status
    uid = series.series_instance_uid
    what = f"series {uid} ({series.modality})"
    expected = f" of {series.instances}" if series.instances is not None else ""
    if receiver.problems:
        raise PacsError(f"{what}: {receiver.problems[0]}")
    code = getattr(final, "Status", None)
    if code is None:
        raise PacsError(
            f"{what}: transfer interrupted after {receiver.count(uid)}{expected} instance(s): "
            f"{describe_status(final, QR_GET_SERVICE_CLASS_STATUS)}"
        )
    failed = int(getattr(final, "NumberOfFailedSuboperations", 0) or 0)
    if code != 0x0000 or failed:
        raise PacsError(
            f"{what}: C-GET ended with {describe_status(final, QR_GET_SERVICE_CLASS_STATUS)}, {failed} "
            f"sub-operation(s) failed, {receiver.count(uid)}{expected} instance(s) received"
        )
    if series.instances is not None and receiver.count(uid) < series.instances:
        raise PacsError(
            f"{what}: the node reported success but sent {receiver.count(uid)} of {series.instances} instance(s)"
        )
