"""``dose3d pull``: studies from the PACS into a site's input folder, one sub-folder per study, whole or not at all.

Each study is retrieved into a staging folder beside the input folder (``.<input name>.dose3d-pull/``, on
the same file system) and renamed to ``<input>/<StudyInstanceUID>`` only when every CT and RTSTRUCT series
arrived complete. A failed, refused or interrupted transfer removes its staging folder and leaves the input
folder as it was; one killed outright leaves its staging folder outside the input folder, removed by the
next pull. So ``dose3d ingest`` never meets half a study.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dose3d_fl.clinical.pacs.association import PacsError
from dose3d_fl.clinical.pacs.node import DicomNode, ScuSettings
from dose3d_fl.clinical.pacs.query import StudyMatch, find_studies
from dose3d_fl.clinical.pacs.retrieve import Progress, retrieve_study

log = logging.getLogger(__name__)

PULLED, PRESENT, FAILED = "pulled", "present", "failed"


@dataclass
class StudyOutcome:
    """What became of one study.

    Attributes:
        study_instance_uid: the study.
        requested_as: ``patient <ID>`` (as typed) or ``study UID``.
        status: ``pulled``, ``present`` (already in the input folder, not pulled again) or ``failed``.
        folder: the study's folder in the input folder (None when failed).
        instances: instances received per modality.
        note: a remark on a pulled study (no RTSTRUCT on the PACS).
        reason: why it failed.
    """

    study_instance_uid: str
    requested_as: str
    status: str
    folder: Path | None = None
    instances: dict[str, int] = field(default_factory=dict)
    note: str = ""
    reason: str = ""

    def line(self) -> str:
        """One line for the user."""
        head = f"study {self.study_instance_uid} ({self.requested_as})"
        if self.status == FAILED:
            return f"{head}: failed: {self.reason}"
        if self.status == PRESENT:
            return f"{head}: already in {self.folder}; not pulled again (--refresh pulls it anew)"
        counts = ", ".join(f"{modality} {n}" for modality, n in sorted(self.instances.items()))
        note = f"; {self.note}" if self.note else ""
        return f"{head}: pulled {sum(self.instances.values())} instance(s) ({counts}) -> {self.folder}{note}"


@dataclass
class PullReport:
    """Every study's outcome and a reason for each request that matched no study."""

    outcomes: list[StudyOutcome]
    not_found: list[str]

    @property
    def complete(self) -> bool:
        """Every request matched, and every study is in the input folder."""
        return not self.not_found and all(o.status != FAILED for o in self.outcomes)


def staging_folder(into: Path) -> Path:
    """The folder beside ``into`` where studies are assembled before they move in."""
    into = Path(os.path.abspath(into))
    return into.parent / f".{into.name}.dose3d-pull"


def pull_studies(
    node: DicomNode,
    settings: ScuSettings,
    into: Path,
    patient_ids: Sequence[str] = (),
    study_uids: Sequence[str] = (),
    refresh: bool = False,
    progress: Progress | None = None,
) -> PullReport:
    """Find the studies of ``patient_ids`` and ``study_uids`` on ``node`` and bring each into ``into``.

    Args:
        node: the PACS.
        settings: our AE title and timeouts.
        into: the site's input folder (created); each study lands in ``into/<StudyInstanceUID>``.
        patient_ids: exact patient IDs.
        study_uids: StudyInstanceUIDs.
        refresh: pull studies already in ``into`` again and replace them (default: leave them).
        progress: called after each instance received.

    Returns:
        The report; a study that fails does not stop the others.

    Raises:
        ValueError: a patient ID or UID that cannot be queried exactly, or nothing asked for.
        PacsError: the query itself failed (node unreachable, association rejected, C-FIND refused), or the
            staging folder cannot be on the input folder's file system.
    """
    if not patient_ids and not study_uids:
        raise ValueError("name at least one --patient or --study")
    # Query first: a node that cannot be reached or refuses leaves no folder behind.
    found = find_studies(node, settings, patient_ids, study_uids)
    into = Path(into)
    into.mkdir(parents=True, exist_ok=True)
    staging = staging_folder(into)
    if staging.parent.stat().st_dev != into.stat().st_dev:
        raise PacsError(
            f"{into} is on another file system than its parent folder, where studies are staged; "
            "pull into a sub-folder of it instead"
        )
    staging.mkdir(exist_ok=True)
    outcomes = []
    try:
        for study in found.studies:
            outcomes.append(_pull_one(node, settings, study, into, staging, refresh, progress))
    finally:
        if staging.is_dir() and not any(staging.iterdir()):
            staging.rmdir()
    return PullReport(outcomes, found.not_found)


def _pull_one(
    node: DicomNode,
    settings: ScuSettings,
    study: StudyMatch,
    into: Path,
    staging: Path,
    refresh: bool,
    progress: Progress | None,
) -> StudyOutcome:
    uid = study.study_instance_uid
    target = into / uid
    outcome = StudyOutcome(uid, study.requested_as, FAILED)
    if target.exists() and not refresh:
        outcome.status, outcome.folder = PRESENT, target
        return outcome
    if not study.has("CT"):
        modalities = ", ".join(sorted({s.modality for s in study.series})) or "none"
        outcome.reason = f"no CT series on {node} (series modalities: {modalities}); nothing pulled"
        return outcome
    work = staging / uid
    shutil.rmtree(work, ignore_errors=True)  # left by a pull that was killed
    try:
        outcome.instances = retrieve_study(node, settings, study, work, progress)
    except PacsError as err:
        outcome.reason = f"{err}; nothing was written to {into}, pull it again"
        shutil.rmtree(work, ignore_errors=True)
        log.info("study %s: %s", uid, err)
        return outcome
    except BaseException:  # Ctrl-C or a bug: still no half study anywhere
        shutil.rmtree(work, ignore_errors=True)
        raise
    _move_into_place(work, target, staging)
    outcome.status, outcome.folder = PULLED, target
    if not study.has("RTSTRUCT"):
        outcome.note = (
            f"no RTSTRUCT on {node}: the CT alone was pulled; `dose3d ingest` lists it as unlabelled "
            "(`dose3d segment` can use it)"
        )
    return outcome


def _move_into_place(work: Path, target: Path, staging: Path) -> None:
    """Rename the finished study into the input folder, replacing an older copy (--refresh)."""
    if not target.exists():
        work.rename(target)
        return
    old = staging / f"{target.name}.replaced"
    shutil.rmtree(old, ignore_errors=True)
    target.rename(old)
    work.rename(target)
    shutil.rmtree(old, ignore_errors=True)
