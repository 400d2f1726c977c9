"""The one way synthetic pairs leave a site: an explicit export that checks them for memorisation first.

``dose3d gan sample`` writes pairs into a site folder, for the site's own segmentation training (its
``dose3d_site.json``); no job reads or sends them. A person who wants to give pairs to someone else runs
``dose3d gan export``: every pair's image is checked again, against the site's training crops as they are
now (``dose3d_fl.gan.memorization``), and only the pairs below the threshold are copied, with an
``export.json`` that records what was checked and what was left out. Nothing is copied when the folder's
pairs cannot be read or do not fit the GAN profile they were sampled with.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from dose3d_fl.data.cases import load_site_cases
from dose3d_fl.files import json_safe
from dose3d_fl.gan.crops import hu_to_window, load_organ_volumes, memorization_regions
from dose3d_fl.gan.memorization import MemorizationCheck
from dose3d_fl.gan.profiles import GanProfile
from dose3d_fl.gan.sampling import SAMPLES_RECORD
from dose3d_fl.seg.synthetic import IMAGE_SUFFIX, LABEL_SUFFIX, SYNTHETIC_ID_PREFIX, synthetic_cases

log = logging.getLogger(__name__)

EXPORT_RECORD = "export.json"


@dataclass
class ExportReport:
    """What ``export_samples`` did: pairs copied, pairs withheld as copies of a training crop, the record."""

    exported: list[str]
    withheld: list[str]
    record: Path


def read_profile(samples_dir: Path) -> GanProfile:
    """The GAN profile that ``dose3d gan sample`` recorded beside its pairs.

    Raises:
        FileNotFoundError: no ``samples.json`` (not a folder written by ``dose3d gan sample``).
    """
    record = samples_dir / SAMPLES_RECORD
    if not record.is_file():
        raise FileNotFoundError(f"{record} not found: export only folders written by `dose3d gan sample`")
    return GanProfile.from_dict(json.loads(record.read_text())["gan_profile"])


def _image(path: Path, profile: GanProfile) -> torch.Tensor:
    data = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    size = (profile.crop_size,) * 3
    if data.shape != size:
        raise ValueError(f"{path.name}: shape {data.shape}, but GAN profile {profile.name!r} samples {size}")
    return hu_to_window(torch.from_numpy(data), profile)


def export_samples(
    samples_dir: str | Path, caches: Sequence[str | Path], out_dir: str | Path
) -> ExportReport:
    """Copy the pairs of ``samples_dir`` that pass the memorisation check against the caches' training
    crops to ``out_dir``, with ``export.json``.

    Raises:
        FileNotFoundError: no pairs, no ``samples.json``, or no cache.
        ValueError: ``out_dir`` is the samples folder or exists and is not empty, or a pair does not fit
            the profile.
    """
    samples_dir, out_dir = Path(samples_dir), Path(out_dir)
    if not caches:
        raise FileNotFoundError(
            "export needs this site's cache (--cache): samples are checked against its crops"
        )
    if out_dir.resolve() == samples_dir.resolve() or (out_dir.exists() and any(out_dir.iterdir())):
        raise ValueError(f"export folder {out_dir} must be new or empty (and not the samples folder)")
    profile = read_profile(samples_dir)
    cases = synthetic_cases(samples_dir)
    images = torch.stack([_image(Path(case["image"]), profile) for case in cases])
    train = [case for site in load_site_cases(caches) for case in site.train]
    check = MemorizationCheck.for_profile(
        memorization_regions(load_organ_volumes(train, profile), profile), profile
    )
    scores = check.scores(torch.stack([images, torch.zeros_like(images)], 1))
    out_dir.mkdir(parents=True, exist_ok=True)
    exported, withheld = [], []
    for case, score in zip(cases, scores.tolist(), strict=True):
        name = case["id"].removeprefix(SYNTHETIC_ID_PREFIX)
        if score >= check.threshold:
            withheld.append(name)
            continue
        for suffix in (IMAGE_SUFFIX, LABEL_SUFFIX):
            shutil.copy2(samples_dir / f"{name}{suffix}", out_dir / f"{name}{suffix}")
        exported.append(name)
    record = out_dir / EXPORT_RECORD
    facts = {
        "gan_profile": profile.to_dict(),
        "memorization_ncc": check.threshold,
        "checked_against_cases": len(train),
        "exported": exported,
        "withheld_as_copies": withheld,
        "scores": dict(
            zip([c["id"].removeprefix(SYNTHETIC_ID_PREFIX) for c in cases], scores.tolist(), strict=True)
        ),
    }
    record.write_text(json.dumps(json_safe(facts), indent=2) + "\n")
    if withheld:
        log.warning("withheld %d pair(s) whose image correlates with a training crop", len(withheld))
    return ExportReport(exported, withheld, record)
