"""Each way a PACS exchange goes wrong gives one line naming the cause, and leaves the input folder whole.

Real failures only: a closed port, a socket that never answers, Orthanc rejecting a wrong Called AE title or
an unknown calling AE, Orthanc refusing a C-STORE or silently discarding an instance, and Orthanc killed
in the middle of a C-GET.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RTStructureSetStorage, generate_uid

from dose3d_fl.clinical.pacs.node import ScuSettings
from dose3d_fl.clinical.pacs.pull import FAILED, PRESENT, PULLED, pull_studies, staging_folder
from dose3d_fl.clinical.pacs.store import send_files
from tests.clinical.pacs.conftest import Hospital, run_cli
from tests.clinical.pacs.orthanc import REFUSED_SERIES_DESCRIPTION, OrthancServer, free_port

pytestmark = pytest.mark.slow


def _error_line(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``dose3d ARGS``, expect exit 2 and exactly one line on stderr; that line."""
    capsys.readouterr()
    status, _ = run_cli(args)
    err = capsys.readouterr().err
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port whose listener completes TCP handshakes but never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        yield int(listener.getsockname()[1])


def test_node_unreachable_connection_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node = f"PACS@127.0.0.1:{free_port()}"
    line = _error_line(["pull", "--node", node, "--patient", "X", "--into", str(tmp_path / "in")], capsys)
    assert line == f"dose3d: error: cannot reach {node}: connection refused: nothing listens on that port"
    assert not (tmp_path / "in").exists()


def test_unknown_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node = "PACS@no-such-host.invalid:104"  # .invalid never resolves (RFC 2606)
    line = _error_line(["send", "--node", node, str(_any_dicom_file(tmp_path))], capsys)
    assert line.startswith(f"dose3d: error: cannot reach {node}: unknown host 'no-such-host.invalid'")


def _any_dicom_file(folder: Path) -> Path:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = RTStructureSetStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = folder / "minimal.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_node_that_never_answers_times_out(
    silent_port: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = f"PACS@127.0.0.1:{silent_port}"
    args = ["pull", "--node", node, "--timeout", "1", "--patient", "X", "--into", str(tmp_path / "in")]
    line = _error_line(args, capsys)
    assert line == (
        f"dose3d: error: {node} opened the connection but gave no answer to the association request within "
        "1 s; is it a DICOM port?"
    )


def test_wrong_called_ae_title_is_rejected(
    pacs: OrthancServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = f"NOTPACS@127.0.0.1:{pacs.dicom_port}"
    line = _error_line(["pull", "--node", node, "--patient", "X", "--into", str(tmp_path / "in")], capsys)
    assert f"{node} rejected the association from DOSE3D" in line
    assert "Called AE title not recognised" in line and "check the node's own AE title" in line


def test_unknown_calling_ae_is_rejected(
    pacs: OrthancServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "pull",
        "--node",
        str(pacs.node),
        "--calling-ae",
        "STRANGER",
        "--patient",
        "X",
        "--into",
        str(tmp_path),
    ]
    line = _error_line(args, capsys)
    assert "Calling AE title not recognised" in line and "add it to the PACS's DICOM modalities" in line


@pytest.mark.parametrize(
    ("request_args", "expected"),
    [
        (["--patient", "SYNTH*"], "patient ID 'SYNTH*': give the exact ID"),
        (["--patient", "A\\B"], "give the exact ID"),
        (["--study", "1.2.x"], "study UID '1.2.x' is not a DICOM UID"),
        ([], "name at least one --patient or --study"),
    ],
)
def test_bad_requests_fail_before_any_network(
    request_args: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = f"PACS@127.0.0.1:{free_port()}"  # nothing listens: a request that got that far would say so
    line = _error_line(["pull", "--node", node, *request_args, "--into", str(tmp_path / "in")], capsys)
    assert line.startswith("dose3d: error: ") and expected in line


def test_unknown_patient_is_reported(
    pacs: OrthancServer, hospital: Hospital, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, stdout = run_cli(
        [
            "pull",
            "--node",
            str(pacs.node),
            "--patient",
            "NOBODY-42",
            hospital.patient_id("P001"),
            "--into",
            str(tmp_path),
        ]
    )
    assert status == 2
    assert f"patient NOBODY-42: no study on {pacs.node}" in stdout.splitlines()
    assert (tmp_path / hospital.study_uid("P001")).is_dir()  # the patient that exists is still pulled


def test_pull_again_skips_then_refreshes(pacs: OrthancServer, hospital: Hospital, tmp_path: Path) -> None:
    settings, study = ScuSettings(), hospital.study_uid("P002")
    ids = [hospital.patient_id("P002")]
    first = pull_studies(pacs.node, settings, tmp_path, patient_ids=ids)
    (tmp_path / study / "marker").write_text("from the first pull")
    again = pull_studies(pacs.node, settings, tmp_path, patient_ids=ids)
    refreshed = pull_studies(pacs.node, settings, tmp_path, patient_ids=ids, refresh=True)
    assert [o.status for r in (first, again, refreshed) for o in r.outcomes] == [PULLED, PRESENT, PULLED]
    assert not (tmp_path / study / "marker").exists()  # replaced by the fresh copy
    assert refreshed.outcomes[0].instances == first.outcomes[0].instances
    assert not staging_folder(tmp_path).exists()


def test_transfer_interrupted_leaves_nothing(
    fresh_pacs: OrthancServer, hospital: Hospital, tmp_path: Path
) -> None:
    results = send_files(fresh_pacs.node, ScuSettings(), [hospital.site / "P001"])
    assert all(r.ok for r in results)
    study = hospital.study_uid("P001")
    into = tmp_path / "input"

    def kill_pacs_after_first_instance(_study: str, count: int) -> None:
        if count == 1:
            fresh_pacs.stop(signal.SIGKILL)

    report = pull_studies(
        fresh_pacs.node,
        ScuSettings(timeout=10),
        into,
        patient_ids=[hospital.patient_id("P001")],
        progress=kill_pacs_after_first_instance,
    )
    (outcome,) = report.outcomes
    assert outcome.status == FAILED and not report.complete
    line = outcome.line()
    assert line.startswith(f"study {study} (patient {hospital.patient_id('P001')}): failed: series ")
    assert "transfer interrupted after 1 of" in line and f"nothing was written to {into}" in line
    assert list(into.iterdir()) == []
    assert not staging_folder(into).exists()


def _copy_of_rtstruct(hospital: Hospital, out: Path, **changes: str) -> Path:
    """P001's structure set as another patient's new study, so that the shared PACS's patients stay as sent."""
    ds = dcmread(hospital.rtstruct("P001"))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = generate_uid(), generate_uid(), "TEST-ONLY"
    for keyword, value in changes.items():
        if value:
            setattr(ds, keyword, value)
        else:
            delattr(ds, keyword)
    ds.save_as(out, enforce_file_format=True)
    return out


def test_cstore_refused_by_the_pacs(
    pacs: OrthancServer, hospital: Hospital, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = _copy_of_rtstruct(hospital, tmp_path / "no_series_uid.dcm", SeriesInstanceUID="")
    status, stdout = run_cli(["send", "--node", str(pacs.node), str(broken)])
    assert status == 2
    assert stdout.splitlines()[0] == (
        f"{broken}: refused: {pacs.node} answered 0xA700 (Failure: Refused: Out of Resources)"
    )


def test_instance_discarded_after_success_is_caught_by_verify(
    pacs: OrthancServer, hospital: Hospital, tmp_path: Path
) -> None:
    discarded = _copy_of_rtstruct(
        hospital, tmp_path / "filtered.dcm", SeriesDescription=REFUSED_SERIES_DESCRIPTION
    )
    node = str(pacs.node)
    status, stdout = run_cli(["send", "--node", node, str(discarded)])
    assert status == 0 and stdout.splitlines()[0] == f"{discarded}: stored"  # what the PACS answered
    status, stdout = run_cli(["send", "--node", node, "--verify", str(discarded)])
    assert status == 2
    line = stdout.splitlines()[0]
    assert line.startswith(
        f"{discarded}: accepted but not held: {node} answered success but a C-FIND finds no"
    )


def test_send_reports_each_file(pacs: OrthancServer, hospital: Hospital, tmp_path: Path) -> None:
    folder = tmp_path / "outbox"
    folder.mkdir()
    good = _copy_of_rtstruct(hospital, folder / "good.dcm")
    (folder / "notes.txt").write_text("not DICOM")
    explicit_text = tmp_path / "report.txt"
    explicit_text.write_text("not DICOM either")
    status, stdout = run_cli(["send", "--node", str(pacs.node), "--verify", str(folder), str(explicit_text)])
    assert status == 2  # the file named on the command line could not be sent
    lines = stdout.splitlines()
    assert lines[0] == f"{good}: stored"
    assert lines[1].startswith(f"{folder / 'notes.txt'}: skipped: not a DICOM file")
    assert lines[2].startswith(f"{explicit_text}: not sent: not a DICOM file")
    assert lines[3] == f"{pacs.node}: 1 of 2 file(s) stored, 1 non-DICOM file(s) skipped"


def test_study_without_ct_is_not_pulled(pacs: OrthancServer, hospital: Hospital, tmp_path: Path) -> None:
    # A structure set alone in its study: the PACS holds no image for it.
    lone = _copy_of_rtstruct(hospital, tmp_path / "lone.dcm")
    assert all(r.ok for r in send_files(pacs.node, ScuSettings(), [lone], verify=True))
    study = str(dcmread(lone).StudyInstanceUID)
    report = pull_studies(pacs.node, ScuSettings(), tmp_path / "in", study_uids=[study])
    (outcome,) = report.outcomes
    assert outcome.status == FAILED
    assert outcome.reason == f"no CT series on {pacs.node} (series modalities: RTSTRUCT); nothing pulled"
    assert list((tmp_path / "in").iterdir()) == []
