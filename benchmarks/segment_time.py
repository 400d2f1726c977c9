"""Time `dose3d segment` per case on the CPU, as a user runs it (one process per case).

Cases: the demo (``cpu-small``) model on a CT of a demo site (site-1 scanner, 160x160 slices) and on a
clinical-size 512x512x100 CT, a ``spleen``-profile model and an ``organs-gpu`` model (seven organs at 1.5 mm)
on the same 512x512x100 CT. These models have random (seeded) weights: the network's time does not depend
on what the weights learnt (post-processing and writing may: a random model predicts scattered voxels).
With ``--organs-model`` (the seven-organ global model of ``make demo``,
``runs/demo/sim/seg_fedavg/server/simulate_job/app_server/FL_global_model.pt``) a trained model is timed on
the 512x512x100 CT as well. The 512x512x100 CT is a
synthetic patient resampled to a 0.78 mm in-plane grid and written as a real DICOM series, so the timing
includes validation, DICOM decoding, resampling, sliding-window inference, inversion to the CT grid,
post-processing and writing the RTSTRUCT, mask and PNG.

Usage: ``.venv/bin/python benchmarks/segment_time.py [--organs-model MODEL]``; writes
``benchmarks/results/segment_time.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from pydicom.uid import generate_uid
from scipy.ndimage import zoom

from dose3d_fl.data.geometry import VolumeGeometry
from dose3d_fl.seg.checkpoint import SegCheckpoint, save_checkpoint
from dose3d_fl.seg.network import build_network
from dose3d_fl.seg.profiles import get_profile
from dose3d_fl.synth.ct_writer import CTSeriesSpec, build_ct_slices
from dose3d_fl.synth.hospital import patient_identity, synthesize_federation, synthesize_patient
from dose3d_fl.synth.scanner import scanner_for_site

RESULTS = Path(__file__).parent / "results" / "segment_time.json"
DOSE3D = Path(sys.executable).with_name("dose3d")
CLINICAL_SHAPE = (512, 512, 100)


def write_clinical_size_ct(folder: Path, seed: int = 3) -> Path:
    """A synthetic patient resampled to 512x512x100 (0.78 mm pixels) and written as a DICOM CT series."""
    rng = np.random.default_rng(seed)
    scanner = scanner_for_site(0)
    patient = synthesize_patient(rng, scanner)
    source = patient.geometry
    factors = [n / m for n, m in zip(CLINICAL_SHAPE, source.shape, strict=True)]
    hu = zoom(patient.hu, factors, order=1)[: CLINICAL_SHAPE[0], : CLINICAL_SHAPE[1], : CLINICAL_SHAPE[2]]
    extent = [m * s for m, s in zip(source.shape, source.spacing, strict=True)]
    spacing = tuple(round(e / n, 4) for e, n in zip(extent, CLINICAL_SHAPE, strict=True))
    geometry = VolumeGeometry(
        shape=CLINICAL_SHAPE,
        row_direction=source.row_direction,
        column_direction=source.column_direction,
        slice_direction=source.slice_direction,
        spacing=spacing,
        origin=source.origin,
    )
    spec = CTSeriesSpec(
        series_instance_uid=generate_uid(),
        frame_of_reference_uid=generate_uid(),
        sop_instance_uids=tuple(generate_uid() for _ in range(CLINICAL_SHAPE[2])),
        instance_numbers=tuple(range(1, CLINICAL_SHAPE[2] + 1)),
        slice_thickness=spacing[2],
    )
    identity = patient_identity(seed, 1, 1, scanner, rng)
    folder.mkdir(parents=True)
    for k, ds in enumerate(build_ct_slices(hu, geometry, identity, spec)):
        ds.save_as(folder / f"CT{k:04d}.dcm", enforce_file_format=True)
    return folder


def random_model(profile_name: str, path: Path) -> Path:
    """A checkpoint of the profile's network with seeded random weights."""
    torch.manual_seed(0)
    profile = get_profile(profile_name)
    weights = build_network(profile).state_dict()
    return save_checkpoint(path, SegCheckpoint(weights, profile, {"weights": "random, for timing"}))


def time_segment(model: Path, dicom: Path, out: Path) -> dict[str, object]:
    """Run `dose3d segment` once; wall time, the stage times it prints, peak memory of the processes so far."""
    start = time.perf_counter()
    done = subprocess.run(
        [str(DOSE3D), "segment", "--model", str(model), "--dicom", str(dicom), "--out", str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    stages = {name: float(value) for name, value in re.findall(r"(\w+) (\d+\.\d) s", done.stdout)}
    return {
        "wall_s": round(wall, 1),
        "stages_s": stages,
        "peak_rss_mib_so_far": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--organs-model", type=Path, default=None, help="a trained seven-organ model to time too"
    )
    args = parser.parse_args(argv)
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "command": " ".join(
            ["python benchmarks/segment_time.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "weights": "random (seeded): timing only",
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (site,) = synthesize_federation(root / "demo", [1], seed=11, workers=1)
        demo_ct = site / "P001" / "CT"
        clinical_ct = write_clinical_size_ct(root / "clinical" / "CT")
        cases = {
            "cpu-small on a demo CT (site-1 scanner)": ("cpu-small", demo_ct),
            "cpu-small on a 512x512x100 CT": ("cpu-small", clinical_ct),
            "spleen on a 512x512x100 CT": ("spleen", clinical_ct),
            "organs-gpu (seven organs, 1.5 mm) on a 512x512x100 CT": ("organs-gpu", clinical_ct),
        }
        models = {
            name: random_model(profile, root / "models" / f"{profile}.pt")
            for name, (profile, _) in cases.items()
        }
        if args.organs_model is not None:
            name = "the demo's trained seven-organ model (cpu-small) on a 512x512x100 CT"
            cases[name], models[name] = ("cpu-small", clinical_ct), args.organs_model.resolve()
        for name, (profile, ct) in cases.items():
            entry = time_segment(models[name], ct, root / "out" / name.replace(" ", "_"))
            results[name] = {"profile": profile, "slices": len(list(ct.glob("*.dcm"))), **entry}
            print(name, json.dumps(results[name]), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
