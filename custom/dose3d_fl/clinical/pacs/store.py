"""``dose3d send``: C-STORE DICOM files to a node, with one result per file.

Each file is sent as it is on disk (no transcoding): one presentation context is proposed per SOP class and
transfer syntax found among the files, and a file whose pair the node does not accept is reported, not sent.
A success status is not proof that the node keeps the instance (Orthanc 1.10 answers success for an instance
its filter discards), so ``verify`` asks the node afterwards, by C-FIND at IMAGE level, whether it holds it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID
from pynetdicom.association import Association
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind
from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS, code_to_category

from dose3d_fl.clinical.pacs.association import PacsError, RequestedContext, describe_status, open_association
from dose3d_fl.clinical.pacs.node import DicomNode, ScuSettings
from dose3d_fl.clinical.pacs.query import run_find

log = logging.getLogger(__name__)

_HEADER_TAGS = ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"]
_FIND_SYNTAXES = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")  # Explicit, Implicit VR Little Endian

# A-ASSOCIATE-RQ carries at most 128 presentation contexts (odd context IDs 1..255).
MAX_CONTEXTS = 128
STORED, WARNING, REFUSED, NOT_SENT, SKIPPED = (
    "stored",
    "stored with a warning",
    "refused",
    "not sent",
    "skipped",
)
NOT_HELD, UNVERIFIED = "accepted but not held", "stored, not verified"


@dataclass
class SendResult:
    """What happened to one file.

    Attributes:
        path: the file.
        status: ``stored``, ``stored with a warning``, ``refused`` (by the node), ``not sent`` (by us: not
            DICOM, no accepted presentation context, association lost) or ``skipped`` (a non-DICOM file found
            inside a folder given on the command line).
        detail: the node's status code and meaning, or why it was not sent.
    """

    path: Path
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        """The node holds the file, or the file was never meant to be sent."""
        return self.status in (STORED, WARNING, SKIPPED)

    def line(self) -> str:
        """One line for the user."""
        return f"{self.path}: {self.status}" + (f": {self.detail}" if self.detail else "")


@dataclass(frozen=True)
class _Outgoing:
    path: Path
    sop_class: UID
    transfer_syntax: UID
    study: str
    series: str
    sop_instance: str


def send_files(
    node: DicomNode, settings: ScuSettings, paths: Sequence[Path], verify: bool = False
) -> list[SendResult]:
    """C-STORE ``paths`` (files, or folders searched recursively) to ``node`` on one association.

    Args:
        node: the receiving node.
        settings: our AE title and timeouts.
        paths: DICOM files or folders of them.
        verify: after each success, check by C-FIND that the node holds the instance.

    Returns:
        One result per file, in the order given (folders in sorted path order).

    Raises:
        PacsError: no association, or more SOP class / transfer syntax pairs than one association carries.
    """
    results: dict[Path, SendResult] = {}
    outgoing: list[_Outgoing] = []
    files = _expand(paths)
    for path, explicit in files:
        item = _read_header(path)
        if isinstance(item, _Outgoing):
            outgoing.append(item)
        else:
            results[path] = SendResult(path, NOT_SENT if explicit else SKIPPED, item)
    pairs = sorted({(o.sop_class, o.transfer_syntax) for o in outgoing})
    if len(pairs) > MAX_CONTEXTS:
        raise PacsError(
            f"the files hold {len(pairs)} SOP class / transfer syntax pairs, more than one association carries "
            f"({MAX_CONTEXTS}); send them in smaller groups"
        )
    if outgoing:
        contexts = [RequestedContext(sop, (ts,)) for sop, ts in pairs]
        if verify:
            contexts.append(RequestedContext(StudyRootQueryRetrieveInformationModelFind, _FIND_SYNTAXES))
        with open_association(node, settings, contexts) as assoc:
            accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
            for item in outgoing:
                result = _store_one(assoc, node, item, accepted)
                if verify and result.status in (STORED, WARNING):
                    result = _verified(assoc, node, item, result)
                results[item.path] = result
    ordered = [results[path] for path, _ in files]
    stored = sum(r.status in (STORED, WARNING) for r in ordered)
    log.info("%s: %d of %d file(s) stored", node, stored, len(ordered))
    return ordered


def _expand(paths: Iterable[Path]) -> list[tuple[Path, bool]]:
    """``(file, named explicitly)`` for each path; folders give their files in sorted order."""
    files: list[tuple[Path, bool]] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend((p, False) for p in sorted(path.rglob("*")) if p.is_file())
        else:
            files.append((path, True))
    return files


def _read_header(path: Path) -> _Outgoing | str:
    """What to send for ``path``, or why it cannot be sent."""
    if not path.is_file():
        return "no such file"
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except (InvalidDicomError, OSError, ValueError, EOFError) as err:
        return f"not a DICOM file ({str(err).splitlines()[0][:120] if str(err) else type(err).__name__})"
    sop_class = ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID")
    transfer_syntax = ds.file_meta.get("TransferSyntaxUID")
    if not sop_class or not transfer_syntax or not ds.get("SOPInstanceUID"):
        return "not a DICOM file with SOPClassUID, SOPInstanceUID and a transfer syntax in its file meta"
    uids = (
        str(ds.get(keyword, "")) for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    )
    return _Outgoing(path, UID(str(sop_class)), UID(str(transfer_syntax)), *uids)


def _store_one(
    assoc: Association, node: DicomNode, item: _Outgoing, accepted: set[tuple[str, str]]
) -> SendResult:
    if not assoc.is_established:
        return SendResult(item.path, NOT_SENT, f"the association with {node} ended before this file")
    if (item.sop_class, item.transfer_syntax) not in accepted:
        return SendResult(
            item.path,
            NOT_SENT,
            f"{node} does not accept {item.sop_class.name} in {item.transfer_syntax.name} (presentation context rejected)",
        )
    try:
        status = assoc.send_c_store(item.path)
    except (ValueError, AttributeError, OSError) as err:  # pynetdicom's checks of the file before sending
        return SendResult(item.path, NOT_SENT, str(err).splitlines()[0][:200])
    code = getattr(status, "Status", None)
    text = describe_status(status, STORAGE_SERVICE_CLASS_STATUS)
    if code == 0x0000:
        return SendResult(item.path, STORED)
    if code is not None and code_to_category(code) == "Warning":
        return SendResult(item.path, WARNING, text)
    if code is None:
        return SendResult(item.path, NOT_SENT, text)
    return SendResult(item.path, REFUSED, f"{node} answered {text}")


def _verified(assoc: Association, node: DicomNode, item: _Outgoing, result: SendResult) -> SendResult:
    """``result`` if the node finds the instance by C-FIND, else why it is not known to be held."""
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = item.study
    query.SeriesInstanceUID = item.series
    query.SOPInstanceUID = item.sop_instance
    try:
        answers = run_find(assoc, node, query)
    except PacsError as err:
        return SendResult(item.path, UNVERIFIED, f"the check by C-FIND failed: {err}")
    if any(str(answer.get("SOPInstanceUID", "")) == item.sop_instance for answer in answers):
        return result
    return SendResult(
        item.path,
        NOT_HELD,
        f"{node} answered success but a C-FIND finds no instance {item.sop_instance}: it discarded the file "
        "(see its logs and filters)",
    )
