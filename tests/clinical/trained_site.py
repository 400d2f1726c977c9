"""A synthetic site, a held-out patient and a cpu-small model trained on the site as ``dose3d train`` does.

Built once per test session (see ``tests/conftest.py``): the clinical and report tests share it.
Measured on the 2-core project machine: about 80 s in all, most of it training.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from dose3d_fl.data.ingest import ingest_site
from dose3d_fl.data.split import draw_split
from dose3d_fl.seg.profiles import get_profile
from dose3d_fl.seg.training_run import MODEL_NAME, train_on_caches
from dose3d_fl.synth.hospital import synthesize_federation

# 12 patients (11 train, 1 validation) x 30 epochs: the smallest setting measured to segment held-out
# patients above Dice 0.85 with margin (6 patients x 40 epochs, or 9 training patients x 30 epochs, gave
# 0.80..0.88 on them).
TRAIN_PATIENTS = 12
VAL_FRACTION = 0.1
EPOCHS = 30
HELD_OUT_SEED = 7


@dataclass
class TrainedSite:
    """Paths of the shared training result.

    Attributes:
        cache: the site cache the model was trained on (``site-1``, with ``split.json``).
        train_dir: ``dose3d train`` output (``model.pt``, ``metrics.json``).
        held_out_ct: CT series folder of a patient the model never saw.
        held_out_truth: that patient's ground-truth mask (its RTSTRUCT ingested), on the CT grid.
    """

    cache: Path
    train_dir: Path
    held_out_ct: Path
    held_out_truth: Path

    @property
    def model(self) -> Path:
        """The trained checkpoint (with its profile)."""
        return self.train_dir / MODEL_NAME


def build_trained_site(root: Path) -> TrainedSite:
    """Synthesise, ingest and train under ``root``."""
    (site,) = synthesize_federation(root / "dicom", [TRAIN_PATIENTS], seed=0, workers=2)
    (held_out,) = synthesize_federation(root / "held_out", [1], seed=HELD_OUT_SEED, workers=1)
    cache = root / "cache" / site.name
    case_ids = [case.id for case in ingest_site(site, cache).manifest.cases]
    draw_split(case_ids, VAL_FRACTION, seed=0).save(cache)
    held_out_cache = root / "held_out_cache"
    (case,) = ingest_site(held_out, held_out_cache).manifest.cases
    train_dir = root / "central"
    # Both cores for the training (about 60 s of the fixture), then the session's torch threads as they were.
    threads = torch.get_num_threads()
    try:
        train_on_caches(
            [cache], train_dir, get_profile("cpu-small"), EPOCHS, num_threads=2, show_progress=False
        )
    finally:
        torch.set_num_threads(threads)
    return TrainedSite(
        cache=cache,
        train_dir=train_dir,
        held_out_ct=held_out / "P001" / "CT",
        held_out_truth=held_out_cache / case.label,
    )


def shared_trained_site(root: Path) -> TrainedSite:
    """The site built under ``root`` by an earlier call (another pytest-xdist worker), else built now.

    The caller holds a file lock on ``root`` so that one worker builds and the others wait and read.
    """
    record = root / "trained_site.json"
    if record.is_file():
        return TrainedSite(**{k: Path(v) for k, v in json.loads(record.read_text()).items()})
    site = build_trained_site(root)
    record.write_text(json.dumps({k: str(v) for k, v in asdict(site).items()}))
    return site


def load_mask(path: Path) -> np.ndarray:
    """A NIfTI mask as booleans."""
    return np.asarray(nib.load(path).dataobj) > 0


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks of one grid."""
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)
