"""A small synthetic hospital and a real Orthanc PACS holding it, uploaded with ``dose3d send``.

The hospital (one scanner, three patients, about 300 files) is written once per session. P001 and P002 go to
the PACS with their RTSTRUCT, P003 with its CT alone: a patient without delineation, the one to segment.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread

from dose3d_fl.cli import main
from dose3d_fl.synth.hospital import synthesize_federation
from tests.clinical.pacs.orthanc import OrthancServer, start_orthanc

PATIENTS = 3


@dataclass(frozen=True)
class Hospital:
    """The synthetic site's DICOM export, by patient folder (``P001``...)."""

    site: Path

    def patient_id(self, folder: str) -> str:
        """The PatientID written in that patient's files."""
        return str(dcmread(self.rtstruct(folder), stop_before_pixels=True).PatientID)

    def ct_files(self, folder: str) -> list[Path]:
        """The patient's CT slices."""
        return sorted((self.site / folder / "CT").iterdir())

    def rtstruct(self, folder: str) -> Path:
        """The patient's structure set."""
        return self.site / folder / "RTSTRUCT" / "RS.dcm"

    def study_uid(self, folder: str) -> str:
        """The patient's StudyInstanceUID."""
        return str(dcmread(self.ct_files(folder)[0], stop_before_pixels=True).StudyInstanceUID)

    def ct_series_uid(self, folder: str) -> str:
        """The SeriesInstanceUID of the patient's CT."""
        return str(dcmread(self.ct_files(folder)[0], stop_before_pixels=True).SeriesInstanceUID)


def run_cli(args: list[str]) -> tuple[int, str]:
    """``dose3d ARGS`` in this process: (exit status, stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(args)
    return status, out.getvalue()


@pytest.fixture(scope="session")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Hospital:
    """Three synthetic patients of the site-1 scanner (about 3 s)."""
    (site,) = synthesize_federation(tmp_path_factory.mktemp("hospital"), [PATIENTS], seed=5, workers=1)
    return Hospital(site)


@pytest.fixture(scope="session")
def pacs(hospital: Hospital, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """Orthanc holding P001 and P002 (CT + RTSTRUCT) and P003 (CT only), uploaded with ``dose3d send``."""
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    try:
        sources = [hospital.site / "P001", hospital.site / "P002", hospital.site / "P003" / "CT"]
        status, stdout = run_cli(["send", "--node", str(server.node), *map(str, sources)])
        assert status == 0, stdout
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh_pacs(tmp_path: Path) -> Iterator[OrthancServer]:
    """An empty Orthanc of its own, for a test that stops it."""
    server = start_orthanc(tmp_path / "orthanc")
    try:
        yield server
    finally:
        server.stop()
