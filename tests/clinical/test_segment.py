"""`dose3d segment` on a patient the model never saw: Dice against the truth, the RTSTRUCT it writes (valid for
dciodvfy, read back by rt-utils, naming the model), the RTSTRUCT's round trip through `dose3d ingest`,
NVFlare's global model format, a model that finds nothing, and one-line errors."""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydicom import dcmread

from dose3d_fl import __version__
from dose3d_fl.cli import main
from dose3d_fl.clinical.provenance import task_of, weights_sha256
from dose3d_fl.clinical.segment import MASK_NAME, PREVIEW_NAME, RTSTRUCT_NAME, SEG_NAME
from dose3d_fl.data.ct_input import load_input_series
from dose3d_fl.data.manifest import Manifest
from dose3d_fl.seg.profiles import get_profile
from dose3d_fl.synth.hospital import patient_identity, synthesize_patient, write_study
from dose3d_fl.synth.scanner import scanner_for_site
from tests.clinical.dicom_checks import assert_valid_dicom, rt_utils_masks
from tests.clinical.trained_site import TrainedSite, dice, load_mask

pytestmark = pytest.mark.slow
# The ROI name of the model's one organ: the organ its profile names (the spleen).
ORGAN = task_of(get_profile("cpu-small"))["organs"][0]


@dataclass
class Segmented:
    out: Path
    stdout: str


@pytest.fixture(scope="module")
def segmented(trained_site: TrainedSite, tmp_path_factory: pytest.TempPathFactory) -> Segmented:
    out = tmp_path_factory.mktemp("segment") / "out"
    args = [
        "segment",
        "--model",
        str(trained_site.model),
        "--dicom",
        str(trained_site.held_out_ct),
        "--dicom-seg",
    ]
    capture = tmp_path_factory.mktemp("stdout") / "stdout.txt"
    with capture.open("w") as handle, contextlib.redirect_stdout(handle):
        assert main([*args, "--out", str(out)]) == 0
    return Segmented(out, capture.read_text())


def test_segment_finds_the_held_out_spleen(trained_site: TrainedSite, segmented: Segmented) -> None:
    predicted = load_mask(segmented.out / MASK_NAME)
    truth = load_mask(trained_site.held_out_truth)
    assert predicted.shape == truth.shape
    score = dice(predicted, truth)
    print(f"held-out Dice {score:.4f}")
    assert score >= 0.85
    assert "stored in the model file" in segmented.stdout
    assert "note:" not in segmented.stdout  # the folder holds the series and nothing else


def test_segment_writes_an_rtstruct_on_the_input_series(
    trained_site: TrainedSite, segmented: Segmented
) -> None:
    ct = [dcmread(p, stop_before_pixels=True) for p in sorted(trained_site.held_out_ct.iterdir())]
    ds = dcmread(segmented.out / RTSTRUCT_NAME)
    assert ds.Modality == "RTSTRUCT" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3"
    assert ds.PatientID == ct[0].PatientID and ds.StudyInstanceUID == ct[0].StudyInstanceUID
    (frame,) = ds.ReferencedFrameOfReferenceSequence
    assert frame.FrameOfReferenceUID == ct[0].FrameOfReferenceUID
    (series,) = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence
    assert series.SeriesInstanceUID == ct[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in series.ContourImageSequence} == {c.SOPInstanceUID for c in ct}
    (roi,) = ds.StructureSetROISequence
    assert roi.ROIName == ORGAN and roi.ReferencedFrameOfReferenceUID == ct[0].FrameOfReferenceUID
    (contours,) = ds.ROIContourSequence
    assert list(contours.ROIDisplayColor) == [255, 128, 0]
    slices = {c.ContourImageSequence[0].ReferencedSOPInstanceUID for c in contours.ContourSequence}
    predicted_slices = int(load_mask(segmented.out / MASK_NAME).any(axis=(0, 1)).sum())
    assert len(slices) == predicted_slices > 5
    assert all(c.ContourGeometricType == "CLOSED_PLANAR" for c in contours.ContourSequence)
    assert ds.ApprovalStatus == "UNAPPROVED"
    assert ds.StructureSetROISequence[0].ROIGenerationAlgorithm == "AUTOMATIC"
    assert ds.RTROIObservationsSequence[0].RTROIInterpretedType == "ORGAN"


def test_the_rtstruct_is_valid_dicom_and_an_independent_reader_finds_the_mask(
    trained_site: TrainedSite, segmented: Segmented
) -> None:
    assert_valid_dicom(segmented.out / RTSTRUCT_NAME)
    assert_valid_dicom(segmented.out / SEG_NAME)
    volume = load_input_series(trained_site.held_out_ct).volume
    theirs = rt_utils_masks(trained_site.held_out_ct, segmented.out / RTSTRUCT_NAME, volume.sop_instance_uids)
    score = dice(theirs[ORGAN], load_mask(segmented.out / MASK_NAME))
    print(f"rt-utils against our mask: Dice {score:.4f}")
    assert score > 0.9


def test_the_rtstruct_names_the_model_that_made_it(trained_site: TrainedSite, segmented: Segmented) -> None:
    checkpoint = torch.load(trained_site.model, weights_only=True)
    sha256 = weights_sha256(checkpoint["model"])
    epochs = checkpoint["meta"]["metrics"]["epochs"]
    for name in (RTSTRUCT_NAME, SEG_NAME):
        ds = dcmread(segmented.out / name)
        assert ds.Manufacturer == "dose3d-fl" and ds.SoftwareVersions == __version__
        assert ds.ManufacturerModelName == "dose3d-fl segmentation cpu-small"
        assert ds.DeviceSerialNumber == sha256
        assert ds.SeriesDescription == f"dose3d-fl {sha256[:12]} dose3d train {epochs} epochs"
    assert f"model {sha256[:12]}: dose3d train {epochs} epochs" in segmented.stdout


def test_preview_png_shows_the_contour(segmented: Segmented) -> None:
    image = np.asarray(Image.open(segmented.out / PREVIEW_NAME).convert("RGB")).astype(int)
    orange = (image[..., 0] > 200) & (abs(image[..., 1] - 128) < 40) & (image[..., 2] < 60)
    assert image.std() > 20 and orange.sum() > 100


def test_dicom_seg_holds_the_mask_slice_by_slice(trained_site: TrainedSite, segmented: Segmented) -> None:
    volume = load_input_series(trained_site.held_out_ct).volume
    slice_of = {uid: k for k, uid in enumerate(volume.sop_instance_uids)}
    mask = load_mask(segmented.out / MASK_NAME)
    ds = dcmread(segmented.out / SEG_NAME)
    assert ds.Modality == "SEG" and ds.SegmentSequence[0].SegmentLabel == ORGAN
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == _series_uid(trained_site)
    frames = ds.pixel_array.reshape(-1, *mask.shape[1::-1]) > 0
    assert len(frames) == mask.any(axis=(0, 1)).sum()
    for frame, item in zip(frames, ds.PerFrameFunctionalGroupsSequence, strict=True):
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert np.array_equal(frame, mask[:, :, slice_of[uid]].T)


def _series_uid(trained_site: TrainedSite) -> str:
    return str(dcmread(next(trained_site.held_out_ct.iterdir()), stop_before_pixels=True).SeriesInstanceUID)


def test_rtstruct_reingests_to_the_predicted_mask(
    trained_site: TrainedSite, segmented: Segmented, tmp_path: Path
) -> None:
    export = tmp_path / "export"
    shutil.copytree(trained_site.held_out_ct, export / "CT")
    shutil.copy(segmented.out / RTSTRUCT_NAME, export / "RS.dcm")
    cache = tmp_path / "cache"
    # The model's own output is never a label unless the site allows it.
    args = ["ingest", "--input", str(export), "--out", str(cache), "--roi", "spleen"]
    assert main([*args, "--allow-automatic-labels"]) == 0
    (case,) = Manifest.load(cache).cases
    assert dice(load_mask(cache / case.label), load_mask(segmented.out / MASK_NAME)) >= 0.98


def test_nvflare_global_model_without_profile(
    trained_site: TrainedSite, segmented: Segmented, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # NVFlare's own persistor writes {"model": state_dict, ...}: the profile is not in the file.
    weights = torch.load(trained_site.model, weights_only=True)["model"]
    global_model = tmp_path / "FL_global_model.pt"
    torch.save({"model": weights, "train_conf": {"train": {"model": "unet"}}}, global_model)
    out = tmp_path / "out"
    args = [
        "segment",
        "--model",
        str(global_model),
        "--dicom",
        str(trained_site.held_out_ct),
        "--out",
        str(out),
    ]
    # No silent default: the user names the profile the job trained with.
    assert main(args) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "stores no profile" in error and "--profile NAME" in error
    assert not out.exists()

    assert main([*args, "--profile", "cpu-small"]) == 0
    assert "stores no profile; using profile 'cpu-small' (given with --profile)" in capsys.readouterr().out
    assert np.array_equal(load_mask(out / MASK_NAME), load_mask(segmented.out / MASK_NAME))
    assert "(no provenance)" in dcmread(out / RTSTRUCT_NAME).SeriesDescription

    assert main([*args, "--profile", "spleen"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "do not fit the network of profile 'spleen'" in error


def test_pacs_export_with_topogram_feet_first(
    trained_site: TrainedSite, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Site-3's scanner: feet first (mirrored ImageOrientationPatient), 5 mm slices, PACS folders, and the
    # topogram (a one-image CT series) in the same study folder. The model was trained on site-1 scans only.
    scanner = scanner_for_site(2)
    rng = np.random.default_rng([5, 3, 1])
    identity = patient_identity(5, 3, 1, scanner, rng)
    patient = synthesize_patient(rng, scanner)
    write_study(patient, identity, scanner, tmp_path / "export", ["test", "pacs"], "P001")
    out = tmp_path / "out"
    assert (
        main(
            [
                "segment",
                "--model",
                str(trained_site.model),
                "--dicom",
                str(tmp_path / "export"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr()
    assert "1 slice(s)" not in printed.err
    assert "note: 2 other file(s)" in printed.out  # the topogram and the RTSTRUCT
    # A wrong orientation anywhere between DICOM, MONAI and back would put the organ elsewhere (Dice ~0).
    assert dice(load_mask(out / MASK_NAME), patient.spleen_mask) > 0.6


def _broken_series(trained_site: TrainedSite, folder: Path) -> Path:
    shutil.copytree(trained_site.held_out_ct, folder)
    # An interrupted copy: the header is complete, the pixel data is cut short.
    victim = sorted(folder.iterdir())[10]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size * 2 // 3])
    return folder


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing folder", "does not exist"),
        ("empty folder", "no CT image series"),
        ("broken DICOM", "pixel data truncated or unreadable"),
        ("missing slice", "1 slice(s) missing"),
        ("text model", "is not a torch model file"),
        ("not a checkpoint", "is not a segmentation checkpoint"),
        ("missing model", "not found"),
        ("no GPU", "no CUDA device"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(
    trained_site: TrainedSite, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, expected: str
) -> None:
    dicom, model = trained_site.held_out_ct, trained_site.model
    if case == "missing folder":
        dicom = tmp_path / "nowhere"
    elif case == "empty folder":
        dicom = tmp_path / "empty"
        dicom.mkdir()
        (dicom / "notes.txt").write_text("not DICOM\n")
    elif case == "broken DICOM":
        dicom = _broken_series(trained_site, tmp_path / "ct")
    elif case == "missing slice":
        dicom = tmp_path / "ct"
        shutil.copytree(trained_site.held_out_ct, dicom)
        sorted(dicom.iterdir())[20].unlink()
    elif case == "text model":
        model = tmp_path / "model.pt"
        model.write_text("weights live elsewhere\n")
    elif case == "not a checkpoint":
        model = tmp_path / "model.pt"
        torch.save([torch.zeros(3)], model)
    elif case == "missing model":
        model = tmp_path / "absent.pt"
    elif case == "no GPU" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    out = tmp_path / "out"
    device = ["--device", "cuda"] if case == "no GPU" else []
    code = main(["segment", "--model", str(model), "--dicom", str(dicom), "--out", str(out), *device])
    error = capsys.readouterr().err
    assert code == 2
    assert error.startswith("dose3d: error: ") and error.count("\n") == 1, error
    assert expected in error
    assert not out.exists()


def test_a_model_that_finds_nothing_writes_no_rtstruct_and_says_why(
    trained_site: TrainedSite, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The trained model with its output layer's background bias raised: it finds no spleen anywhere.
    checkpoint = torch.load(trained_site.model, weights_only=True)
    bias = [k for k, v in checkpoint["model"].items() if k.endswith("bias") and v.shape == (2,)][-1]
    checkpoint["model"][bias] = checkpoint["model"][bias] + torch.tensor([100.0, 0.0])
    blind = tmp_path / "model.pt"
    torch.save(checkpoint, blind)
    out = tmp_path / "out"
    args = ["segment", "--model", str(blind), "--dicom", str(trained_site.held_out_ct), "--out", str(out)]
    assert main([*args, "--dicom-seg"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1, error
    assert error.startswith(f"dose3d: no RTSTRUCT written: the model found none of its organs ({ORGAN})")
    assert not (out / RTSTRUCT_NAME).exists() and not (out / SEG_NAME).exists()
    assert not load_mask(out / MASK_NAME).any() and (out / PREVIEW_NAME).is_file()


def test_roi_names_must_match_the_models_organs(
    trained_site: TrainedSite, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["segment", "--model", str(trained_site.model), "--dicom", str(trained_site.held_out_ct)]
    code = main([*args, "--out", str(tmp_path / "out"), "--roi-name", "SPLEEN", "--roi-name", "LIVER"])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1 and "the model segments 1 organ(s)" in error
    # A site's own (non-ASCII) name for the organ.
    assert main([*args, "--out", str(tmp_path / "named"), "--roi-name", "Śledziona"]) == 0
    ds = dcmread(tmp_path / "named" / RTSTRUCT_NAME)
    assert ds.StructureSetROISequence[0].ROIName == "Śledziona" and ds.SpecificCharacterSet == "ISO_IR 192"
    assert_valid_dicom(tmp_path / "named" / RTSTRUCT_NAME)
