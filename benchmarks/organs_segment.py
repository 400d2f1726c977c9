"""A federated seven-organ model segments new patients into RTSTRUCTs that independent tools accept.

For one new patient per scanner (3 synthetic sites, synthesis seed 2000, never used for training or
choosing), the CT series is given a Polish patient name, ``Wałęsa^Łukasz``, declared as UTF-8
(SpecificCharacterSet ``ISO_IR 192``), and ``dose3d segment`` writes the RTSTRUCT. Each RTSTRUCT is checked
by two programs that are not this project's:

* ``dciodvfy`` (Debian package dicom3tools): the DICOM IOD validator; its ``Error`` lines are counted;
* rt-utils: reads the structure set back and rasterises every ROI onto the CT itself; each organ's rt-utils
  mask is compared with the patient's ground truth (its own RTSTRUCT, ingested) on the CT grid (Dice), for
  the organs that patient's site delineates.

It also records the PatientName bytes of the RTSTRUCT against those of the CT (they must be identical) and
the ROI names written. Writes ``benchmarks/results/organs_segment.json``.

Usage: ``.venv/bin/python benchmarks/organs_segment.py --model
runs/demo/sim/seg_fedavg/server/simulate_job/app_server/FL_global_model.pt`` (the global model of ``make
demo``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from pydicom import dcmread

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dose3d_fl.bench.runner import machine  # noqa: E402
from dose3d_fl.clinical.segment import RTSTRUCT_NAME  # noqa: E402
from dose3d_fl.data.ct_input import load_input_series  # noqa: E402
from dose3d_fl.data.manifest import Manifest  # noqa: E402
from dose3d_fl.synth.demo_sites import prepare_site_data  # noqa: E402
from tests.clinical.dicom_checks import dciodvfy, raw_text, rt_utils_masks  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "organs_segment.json"
DOSE3D = Path(sys.executable).with_name("dose3d")
SEED = 2000
POLISH_NAME = "Wałęsa^Łukasz"


def rename_patient(source: Path, series_uid: str, target: Path) -> None:
    """Copy the slices of one CT series under ``source`` (any export layout) into ``target``, giving every
    slice the Polish patient name, declared as UTF-8."""
    target.mkdir(parents=True)
    for k, path in enumerate(sorted(p for p in source.rglob("*") if p.is_file())):
        ds = dcmread(path, force=True)
        if ds.get("Modality") != "CT" or ds.get("SeriesInstanceUID") != series_uid:
            continue
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = POLISH_NAME
        ds.save_as(target / f"CT{k:05d}.dcm", enforce_file_format=True)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks of one grid (1.0 when both are empty)."""
    total = float(a.sum() + b.sum())
    return 2.0 * float((a & b).sum()) / total if total else 1.0


def check_patient(model: Path, cache: Path, export: Path, out: Path) -> dict[str, object]:
    """Segment one patient and check the RTSTRUCT with dciodvfy and rt-utils."""
    manifest = Manifest.load(cache)
    (case,) = manifest.cases
    renamed = out / "CT"
    # The CT series the patient's own (ground-truth) structure set references.
    reference = dcmread(export / case.structure_set).ReferencedFrameOfReferenceSequence[0]
    series_uid = reference.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0].SeriesInstanceUID
    rename_patient(export, series_uid, renamed)
    start = time.perf_counter()
    run = subprocess.run(
        [
            str(DOSE3D),
            "segment",
            "--model",
            str(model),
            "--dicom",
            str(renamed),
            "--out",
            str(out / "segment"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    entry: dict[str, object] = {
        "segment_exit_code": run.returncode,
        "segment_s": round(time.perf_counter() - start, 1),
    }
    rtstruct = out / "segment" / RTSTRUCT_NAME
    if run.returncode != 0 or not rtstruct.is_file():
        entry["error"] = (run.stderr or run.stdout).strip().splitlines()[-1:]
        return entry
    validation = dciodvfy(rtstruct)
    ds = dcmread(rtstruct)
    volume = load_input_series(renamed).volume
    theirs = rt_utils_masks(renamed, rtstruct, volume.sop_instance_uids)
    truth = np.asarray(nib.load(cache / case.label).dataobj)
    organs = manifest.organs
    delineated = manifest.case_organs(case)
    entry |= {
        "dciodvfy_errors": validation.errors,
        "dciodvfy_warnings": len(validation.warnings),
        "specific_character_set": ds.SpecificCharacterSet,
        "patient_name_bytes_identical": raw_text(rtstruct, "PatientName")
        == raw_text(renamed / sorted(p.name for p in renamed.iterdir())[0], "PatientName"),
        "patient_name": str(ds.PatientName),
        "roi_names": [roi.ROIName for roi in ds.StructureSetROISequence],
        "rt_utils_rois": sorted(theirs),
        "delineated": delineated,
        "rt_utils_dice_against_truth": {
            organ: round(dice(theirs[organ], truth == organs.index(organ) + 1), 4)
            for organ in delineated
            if organ in theirs
        },
        "delineated_not_written": [organ for organ in delineated if organ not in theirs],
    }
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="a seven-organ global model")
    parser.add_argument("--work", type=Path, default=Path("runs/organs-segment"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if shutil.which("dciodvfy") is None:
        print("dciodvfy not found: install the Debian package dicom3tools", file=sys.stderr)
        return 2
    organs = tuple(torch.load(args.model, map_location="cpu", weights_only=True)["profile"]["organs"])
    caches = prepare_site_data(args.work / "heldout", 3, SEED, [1, 1, 1], organs=organs)
    shutil.rmtree(args.work / "checks", ignore_errors=True)
    patients = {}
    for cache in caches:
        site = cache.name
        export = args.work / "heldout" / "data" / "dicom" / site
        patients[site] = check_patient(args.model.resolve(), cache, export, args.work / "checks" / site)
        print(site, json.dumps(patients[site]), flush=True)
    results = {
        "command": " ".join(
            ["python benchmarks/organs_segment.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": machine(),
        "model": os.path.relpath(args.model),
        "organs": list(organs),
        "patients": "one new patient per scanner (3 synthetic sites), synthesis seed 2000",
        "patient_name_written_to_the_ct": POLISH_NAME,
        "all_valid": all(
            p.get("segment_exit_code") == 0
            and not p.get("dciodvfy_errors")
            and p.get("patient_name_bytes_identical")
            for p in patients.values()
        ),
        "per_patient": patients,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}; all valid: {results['all_valid']}")
    return 0 if results["all_valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
