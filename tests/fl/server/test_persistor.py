"""The server's global model files carry their profile and provenance: a real NVFlare simulator run.

2 sites x 2 rounds x 1 local epoch on tiny DICOM-derived cases (2 rounds, because NVFlare's model selector
names a best model from the second round on), then the files are read back as a physicist would: with
``dose3d models``, its ``--copy``, and ``dose3d segment`` without ``--profile``.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
import torch

from dose3d_fl import __version__
from dose3d_fl.cli import main
from dose3d_fl.clinical.models import list_models, read_model_record
from dose3d_fl.clinical.provenance import task_of, weights_sha256
from dose3d_fl.clinical.segment import RTSTRUCT_NAME
from dose3d_fl.clinical.structure_export import PredictedOrgan, build_predicted_structure_set
from dose3d_fl.data.ct_input import load_input_series
from dose3d_fl.data.ingest import ingest_site
from dose3d_fl.fl.seg_job import JOB_NAME, SegJobConfig
from dose3d_fl.fl.simulate import SimulationConfig, simulate_seg
from dose3d_fl.seg.profiles import get_profile
from tests.clinical.dicom_checks import assert_valid_dicom
from tests.data.dicom_builders import SMALL, make_study

pytestmark = pytest.mark.slow

# The organs of the cpu-small profile (the spleen).
ORGANS = task_of(get_profile("cpu-small"))["organs"]
PROVENANCE_KEYS = {"profile", "task", "job_id", "job_name", "round", "sha256", "created", "software"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("persistor")
    for site in (1, 2):
        dicom, cache = root / "data" / "dicom" / f"site-{site}", root / "data" / "cache" / f"site-{site}"
        for case in range(3):
            make_study(SMALL, seed=site * 100 + case).write(dicom / f"case{case}")
        ingest_site(dicom, cache)
    job = SegJobConfig(
        num_rounds=2, local_epochs=1, tensorboard=False, cross_site_evaluation=False, min_clients=2
    )
    simulate_seg(SimulationConfig(workspace=root, sites=2, job=job))
    return root


def _app_server(workspace: Path) -> Path:
    return workspace / "sim" / JOB_NAME / "server" / "simulate_job" / "app_server"


@pytest.mark.parametrize(("name", "round_"), [("FL_global_model.pt", 2), ("best_FL_global_model.pt", 1)])
def test_saved_models_carry_profile_and_provenance(workspace: Path, name: str, round_: int) -> None:
    data = torch.load(_app_server(workspace) / name, map_location="cpu", weights_only=True)
    profile = get_profile("cpu-small")
    assert data["profile"] == profile.to_dict()
    provenance = data["provenance"]
    assert set(provenance) == PROVENANCE_KEYS
    assert provenance["profile"] == "cpu-small"
    assert provenance["task"] == {"organs": list(ORGANS), "spacing_mm": [4.0, 4.0, 4.0], "crop": [48, 48, 48]}
    assert provenance["job_name"] == JOB_NAME and provenance["job_id"]
    # FL_global_model.pt: after both rounds' aggregation; the best: the model the sites validated in round 2.
    assert provenance["round"] == round_
    assert provenance["sha256"] == weights_sha256(data["model"])
    assert provenance["software"] == f"dose3d-fl {__version__}"
    created = dt.datetime.fromisoformat(provenance["created"])
    assert abs((dt.datetime.now(dt.UTC) - created).total_seconds()) < 3600


def test_the_best_and_the_last_model_differ_and_their_hashes_say_so(workspace: Path) -> None:
    last, best = (
        torch.load(_app_server(workspace) / name, weights_only=True)
        for name in ("FL_global_model.pt", "best_FL_global_model.pt")
    )
    assert last["provenance"]["sha256"] != best["provenance"]["sha256"]


def test_models_lists_and_copies_the_server_files(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", str(workspace)]) == 0
    listing = capsys.readouterr().out
    data = torch.load(_app_server(workspace) / "FL_global_model.pt", weights_only=True)
    short = data["provenance"]["sha256"][:12]
    line = next(line for line in listing.splitlines() if line.startswith(short))
    assert "federated global" in line and "cpu-small" in line and ORGANS[0] in line
    assert f"{JOB_NAME} round 2" in line and line.endswith("app_server/FL_global_model.pt")
    (record,) = [r for r in list_models(workspace) if r.short_hash == short]
    assert not record.hash_mismatch and record.job_id == data["provenance"]["job_id"]

    target = tmp_path / "clinic" / "spleen.pt"
    assert main(["models", str(workspace), "--copy", short[:8], "--to", str(target)]) == 0
    assert target.read_bytes() == (_app_server(workspace) / "FL_global_model.pt").read_bytes()
    assert main(["models", str(workspace), "--copy", "ffffffffff", "--to", str(target)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "no model's hash starts with ffffffffff" in error


def test_a_tampered_file_shows_its_hash_mismatch(workspace: Path, tmp_path: Path) -> None:
    copy = tmp_path / "ws" / "FL_global_model.pt"
    copy.parent.mkdir()
    data = torch.load(_app_server(workspace) / "FL_global_model.pt", weights_only=True)
    key = next(k for k, v in data["model"].items() if v.is_floating_point())
    data["model"][key] = data["model"][key] + 1
    torch.save(data, copy)
    (record,) = list_models(copy.parent)
    assert record.hash_mismatch and record.recorded_sha256 == data["provenance"]["sha256"]


def test_segment_reads_the_profile_and_the_structure_set_names_the_model(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ct = tmp_path / "ct"
    shutil.copytree(workspace / "data" / "dicom" / "site-1" / "case0", ct)
    (ct / "RS.dcm").unlink()
    model = _app_server(workspace) / "FL_global_model.pt"
    provenance = torch.load(model, weights_only=True)["provenance"]
    code = main(["segment", "--model", str(model), "--dicom", str(ct), "--out", str(tmp_path / "out")])
    printed = capsys.readouterr()
    assert code in (0, 1), printed.err  # 1: two short rounds may not find the organ yet (no RTSTRUCT)
    assert "profile 'cpu-small' stored in the model file" in printed.out
    assert f"model {provenance['sha256'][:12]}: {JOB_NAME} round 2" in printed.out

    # The structure set names the model from the file's provenance. It is built here from the case's own
    # organ, so the check does not depend on what two short rounds learnt.
    record = read_model_record(model)
    organ = PredictedOrgan("SPLEEN", (255, 128, 0), make_study(SMALL, seed=100).truth)
    ds = build_predicted_structure_set(load_input_series(ct), [organ], record)
    ds.save_as(tmp_path / RTSTRUCT_NAME, enforce_file_format=True)
    assert_valid_dicom(tmp_path / RTSTRUCT_NAME)
    assert ds.DeviceSerialNumber == provenance["sha256"]
    assert ds.SeriesDescription == f"dose3d-fl {provenance['sha256'][:12]} {JOB_NAME} round 2"
    assert provenance["job_id"] in ds.StructureSetDescription

    # An explicit profile that contradicts the stored one is refused.
    args = ["segment", "--model", str(model), "--dicom", str(ct), "--out", str(tmp_path / "o2")]
    assert main([*args, "--profile", "spleen"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "differs from --profile 'spleen'" in error
