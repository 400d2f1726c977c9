"""Synthetic pairs to NIfTI (``sample-0001_image.nii.gz`` in HU, ``sample-0001_label.nii.gz`` uint8) plus a
PNG of their slices, after the memorisation check.

The label maps come from the site's own training labels under random deformation
(``dose3d_fl.gan.label_sampler``), the images from the generator conditioned on them, so each written label
is exactly the map the image was drawn for. The image is written in HU (the GAN window's [0, 1] mapped back
to ``[hu_min, hu_max]``) on the profile's voxel size with a RAS affine, like the site cache, so the
segmentation trainer reads synthetic pairs with its own preprocessing, unchanged; the label holds the organ
values (0 background, ``k`` organ ``k``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from dose3d_fl.data.cases import load_site_cases
from dose3d_fl.gan.checkpoint import load_gan_checkpoint, load_generator
from dose3d_fl.gan.crops import window_to_hu
from dose3d_fl.gan.figures import write_comparison_grid, write_sample_grid
from dose3d_fl.gan.label_maps import organ_labels
from dose3d_fl.gan.memorization import MemorizationCheck
from dose3d_fl.gan.profiles import GanProfile
from dose3d_fl.gan.trainer import GanTrainer
from dose3d_fl.seg.synthetic import IMAGE_SUFFIX, LABEL_SUFFIX

log = logging.getLogger(__name__)

GRID_NAME = "samples.png"
# What ``dose3d gan export`` reads: the profile the pairs were drawn with and their memorisation scores.
SAMPLES_RECORD = "samples.json"


@dataclass
class SampleReport:
    """What ``write_samples`` did.

    Attributes:
        pairs: (image, label) paths written.
        dropped_memorized: samples dropped as copies of a training crop.
        grid: the PNG of slices.
        checked_memorization: whether the memorisation check ran (a reference was given).
        scores: each drawn sample's memorisation score (best NCC with a training crop), when checked.
        samples: the written pairs ``(N, 2, S, S, S)`` (image in window units, label map with the body).
    """

    pairs: list[tuple[Path, Path]]
    dropped_memorized: int
    grid: Path | None
    checked_memorization: bool
    scores: list[float]
    samples: torch.Tensor


def write_pair(pair: np.ndarray, image: Path, label: Path, profile: GanProfile) -> None:
    """One ``(2, S, S, S)`` pair (window units, label map) as an HU image and an organ label NIfTI."""
    affine = np.diag([*profile.pixdim, 1.0])
    hu = window_to_hu(pair[0].astype(np.float32), profile)
    organs = organ_labels(torch.as_tensor(pair[1]).round()).numpy()
    nib.save(nib.Nifti1Image(hu.astype(np.float32), affine), image)
    nib.save(nib.Nifti1Image(organs.astype(np.uint8), affine), label)


def write_samples(
    samples: torch.Tensor,
    out_dir: str | Path,
    profile: GanProfile,
    memorization: MemorizationCheck | None,
) -> SampleReport:
    """Drop copies of training crops from ``samples``, then write each kept pair and the PNG grid.

    Args:
        samples: ``(N, 2, S, S, S)`` pairs: image in window units, label map.
        out_dir: output folder (created).
        profile: voxel size and HU window.
        memorization: the site's check; ``None`` writes without it (the report says so).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dropped, scores = 0, []
    if memorization is not None and len(samples):
        scores = memorization.scores(samples)
        kept = scores < memorization.threshold
        samples, dropped, scores = samples[kept], int((~kept).sum()), [float(s) for s in scores]
        if dropped:
            log.warning(
                "dropped %d sample(s) whose image correlates with a training crop at NCC >= %.3f",
                dropped,
                memorization.threshold,
            )
    pairs = []
    for index, pair in enumerate(samples.numpy(), start=1):
        image, label = (out_dir / f"sample-{index:04d}{suffix}" for suffix in (IMAGE_SUFFIX, LABEL_SUFFIX))
        write_pair(pair, image, label, profile)
        pairs.append((image, label))
    grid = write_sample_grid(samples, out_dir / GRID_NAME) if len(samples) else None
    record = {
        "gan_profile": profile.to_dict(),
        "written": len(pairs),
        "memorization_checked": memorization is not None,
        "memorization_ncc": memorization.threshold if memorization is not None else None,
        "dropped_memorized": dropped,
        "scores": scores,
    }
    (out_dir / SAMPLES_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return SampleReport(pairs, dropped, grid, memorization is not None, scores, samples)


def site_trainer(
    caches: Sequence[str | Path], profile: GanProfile, num_threads: int | None = None
) -> GanTrainer:
    """A trainer on the caches' training splits: their label maps to draw from and their crops to check
    samples against (its own weights are replaced by the caller)."""
    cases = [case for site in load_site_cases(caches) for case in site.train]
    return GanTrainer(cases, profile, device="cpu", num_threads=num_threads)


def sample_from_model(
    model: str | Path,
    n: int,
    out_dir: str | Path,
    *,
    caches: Sequence[str | Path],
    profile: str | None = None,
    seed: int = 0,
    num_threads: int | None = None,
    size: int | None = None,
) -> tuple[SampleReport, str]:
    """Draw ``n`` pairs from a GAN model file for new label maps of this site and write those that pass the
    memorisation check against the site's training crops.

    Args:
        model: ``dose3d gan train``'s ``gan.pt`` or the GAN job's ``FL_global_model.pt``.
        n: pairs to draw (before the memorisation check).
        out_dir: output folder.
        caches: this site's caches: their training labels are deformed into new label maps, and their training
            crops are what samples are checked against.
        profile: GAN profile of a model file that stores none.
        seed: seed of the label maps and the noise.
        num_threads: torch CPU threads.
        size: edge of the pairs in voxels (default the profile's training crop). A pair larger than the
            segmentation crop lets the segmentation trainer cut its own positive and negative crops from it,
            as from a real case.

    Returns:
        What was written, and where the profile came from.

    Raises:
        ValueError: no cache given, or the model does not fit the profile.
    """
    if not caches:
        raise ValueError(
            "sampling needs this site's cache (--cache): its training labels are what is deformed"
        )
    checkpoint, source = load_gan_checkpoint(model, profile)
    generator = load_generator(checkpoint)
    trainer = site_trainer(caches, checkpoint.profile, num_threads)
    trainer.set_weights(generator.state_dict())
    samples = trainer.generate(n, seed=seed, size=size)
    return write_samples(samples, out_dir, checkpoint.profile, trainer.memorization_check(size)), source


def comparison_grid_for_model(
    model: str | Path,
    caches: Sequence[str | Path],
    path: str | Path,
    *,
    profile: str | None = None,
    rows: int = 4,
    seed: int = 0,
) -> Path:
    """``write_comparison_grid`` for a model file: the site's first training crops beside the model's images
    for the same label maps. The picture shows the site's patients: it belongs in a site-local report.

    Args:
        model: ``gan.pt`` or the GAN job's ``FL_global_model.pt``.
        caches: the site's cache(s).
        path: the PNG to write.
        profile: GAN profile of a model file that stores none.
        rows: crops shown (at most one per training case).
        seed: noise seed.
    """
    checkpoint, _ = load_gan_checkpoint(model, profile)
    trainer = site_trainer(caches, checkpoint.profile)
    trainer.set_weights(load_generator(checkpoint).state_dict())
    real = trainer.reference[: min(rows, len(trainer.volumes))]
    return write_comparison_grid(real, trainer.generate_for(real[:, 1].round().long(), seed=seed), path)
