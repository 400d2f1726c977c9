"""C-FIND (Study Root) for the studies of given patients or study UIDs, and the series each study holds.

Only the keys needed to retrieve are asked for (PatientID, StudyInstanceUID, SeriesInstanceUID, Modality,
NumberOfSeriesRelatedInstances): no name or birth date comes back from the PACS.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pynetdicom import DEFAULT_TRANSFER_SYNTAXES
from pynetdicom.association import Association
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind
from pynetdicom.status import QR_FIND_SERVICE_CLASS_STATUS

from dose3d_fl.clinical.pacs.association import PacsError, RequestedContext, describe_status, open_association
from dose3d_fl.clinical.pacs.node import DicomNode, ScuSettings

log = logging.getLogger(__name__)

# The series a site needs: the CT images and the structure sets that label them.
WANTED_MODALITIES = ("CT", "RTSTRUCT")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_MODALITY = re.compile(r"^[A-Z0-9_]{1,16}$")
# C-FIND matching treats * and ? as wildcards and a backslash as a list of values: a patient ID holding
# one would match other patients.
_NOT_IN_PATIENT_ID = ("*", "?", "\\")
_PENDING = (0xFF00, 0xFF01)


@dataclass(frozen=True)
class SeriesMatch:
    """A series of a study on the PACS.

    Attributes:
        series_instance_uid: the series.
        modality: its Modality (CT, RTSTRUCT, ...).
        instances: NumberOfSeriesRelatedInstances when the PACS reports it.
    """

    series_instance_uid: str
    modality: str
    instances: int | None


@dataclass(frozen=True)
class StudyMatch:
    """A study to pull and its series.

    Attributes:
        study_instance_uid: the study.
        requested_as: what the user typed that found it (``patient ID`` or ``study UID``).
        series: every series of the study, all modalities.
    """

    study_instance_uid: str
    requested_as: str
    series: tuple[SeriesMatch, ...]

    @property
    def wanted_series(self) -> tuple[SeriesMatch, ...]:
        """The CT and RTSTRUCT series, the ones a pull retrieves."""
        return tuple(s for s in self.series if s.modality in WANTED_MODALITIES)

    def has(self, modality: str) -> bool:
        """Whether the study holds a series of ``modality``."""
        return any(s.modality == modality for s in self.series)


@dataclass
class QueryResult:
    """The studies found and a one-line reason for each request that found none."""

    studies: list[StudyMatch]
    not_found: list[str]


def check_uid(uid: str, what: str = "UID") -> str:
    """``uid`` if it is a DICOM UID (digits and dots, at most 64 characters), else :class:`ValueError`."""
    if not _is_uid(uid):
        raise ValueError(
            f"{what} {uid!r} is not a DICOM UID (digits separated by dots, at most 64 characters)"
        )
    return uid


def check_patient_id(patient_id: str) -> str:
    """``patient_id`` if it can be matched exactly by C-FIND, else :class:`ValueError`."""
    if not patient_id.strip() or len(patient_id) > 64 or any(c in patient_id for c in _NOT_IN_PATIENT_ID):
        raise ValueError(
            f"patient ID {patient_id!r}: give the exact ID (1 to 64 characters, no * ? or backslash, which "
            "C-FIND reads as wildcards or a list)"
        )
    return patient_id


def find_studies(
    node: DicomNode,
    settings: ScuSettings,
    patient_ids: Sequence[str] = (),
    study_uids: Sequence[str] = (),
) -> QueryResult:
    """Find the studies of ``patient_ids`` and the studies ``study_uids``, with their series.

    Args:
        node: the PACS.
        settings: our AE title and timeouts.
        patient_ids: exact patient IDs.
        study_uids: StudyInstanceUIDs.

    Returns:
        The studies (each once, in the order requested) and a reason for each request that found nothing.

    Raises:
        ValueError: a patient ID or UID that cannot be queried exactly.
        PacsError: no association, or the PACS refused a query.
    """
    for patient_id in patient_ids:
        check_patient_id(patient_id)
    for uid in study_uids:
        check_uid(uid, "study UID")
    context = RequestedContext(StudyRootQueryRetrieveInformationModelFind, tuple(DEFAULT_TRANSFER_SYNTAXES))
    found: dict[str, str] = {}
    not_found: list[str] = []
    with open_association(node, settings, [context]) as assoc:
        for patient_id in patient_ids:
            uids = [
                str(answer.StudyInstanceUID)
                for answer in run_find(assoc, node, _study_query(PatientID=patient_id))
                # A PACS may match loosely (case, padding); only the exact patient is wanted.
                if str(answer.get("PatientID", "")) == patient_id and _is_uid(answer.get("StudyInstanceUID"))
            ]
            if not uids:
                not_found.append(f"patient {patient_id}: no study on {node}")
            for uid in uids:
                found.setdefault(uid, f"patient {patient_id}")
        for uid in study_uids:
            answers = run_find(assoc, node, _study_query(StudyInstanceUID=uid))
            if any(str(answer.get("StudyInstanceUID", "")) == uid for answer in answers):
                found.setdefault(uid, "study UID")
            else:
                not_found.append(f"study {uid}: not on {node}")
        studies = [StudyMatch(uid, how, _series_of(assoc, node, uid)) for uid, how in found.items()]
    log.info("%s: %d study(ies) found, %d request(s) without a match", node, len(studies), len(not_found))
    return QueryResult(studies, not_found)


def _study_query(**keys: str) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = ""
    query.StudyInstanceUID = ""
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    return query


def _series_of(assoc: Association, node: DicomNode, study_uid: str) -> tuple[SeriesMatch, ...]:
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID = study_uid
    query.SeriesInstanceUID = ""
    query.Modality = ""
    query.NumberOfSeriesRelatedInstances = ""
    series = []
    for answer in run_find(assoc, node, query):
        uid, modality = answer.get("SeriesInstanceUID"), str(answer.get("Modality", "")).upper()
        # Both name folders of the input folder: nothing but a UID and a code string may reach a path.
        if not _is_uid(uid) or not _MODALITY.match(modality):
            log.warning(
                "study %s: the node answered a series with an invalid UID or Modality; ignored", study_uid
            )
            continue
        count = answer.get("NumberOfSeriesRelatedInstances")
        series.append(SeriesMatch(str(uid), modality, int(count) if count else None))
    return tuple(series)


def _is_uid(value: object) -> bool:
    return value is not None and len(str(value)) <= 64 and bool(_UID.match(str(value)))


def run_find(assoc: Association, node: DicomNode, query: Dataset) -> list[Dataset]:
    """The identifiers a Study Root C-FIND of ``query`` returns on an open association.

    Raises:
        PacsError: the node refused the query, or the association ended before the final answer.
    """
    answers = []
    for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
        code = getattr(status, "Status", None)
        if code in _PENDING:
            if identifier is not None:
                answers.append(identifier)
            continue
        if code == 0x0000:
            break
        if code == 0xB001:  # matches cut at the PACS's limit: what came is still valid
            log.warning(
                "%s: C-FIND %s level stopped at the node's match limit", node, query.QueryRetrieveLevel
            )
            break
        raise PacsError(
            f"{node} refused the C-FIND at {query.QueryRetrieveLevel} level: "
            f"{describe_status(status, QR_FIND_SERVICE_CLASS_STATUS)}; does the PACS allow queries from "
            f"{assoc.requestor.ae_title}? (docs/pacs.md)"
        )
    return answers
