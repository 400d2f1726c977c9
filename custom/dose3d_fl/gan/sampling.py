"""Synthetic pairs to NIfTI (``sample-0001_image.nii.gz`` in HU, ``sample-0001_label.nii.gz`` uint8) plus a
PNG grid of their mid-slices, after the memorization filter.

The image is written in HU (the window's [0, 1] mapped back to ``[hu_min, hu_max]``) on the profile's
voxel size with a RAS affine, like the site cache, so the segmentation trainer reads synthetic pairs with
its own preprocessing, unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from dose3d_fl.data.cases import load_site_cases
from dose3d_fl.gan.checkpoint import load_gan_checkpoint, load_generator
from dose3d_fl.gan.crops import load_organ_volumes, reference_crops
from dose3d_fl.gan.metrics import MASK_THRESHOLD, MemorizationFilter
from dose3d_fl.gan.profiles import GanProfile
from dose3d_fl.seg.profiles import get_profile
from dose3d_fl.seg.synthetic import IMAGE_SUFFIX, LABEL_SUFFIX

log = logging.getLogger(__name__)

GRID_NAME = "samples.png"


@dataclass
class SampleReport:
    """What ``write_samples`` did.

    Attributes:
        pairs: (image, label) paths written.
        dropped_memorized: samples dropped as copies of a training crop.
        grid: the PNG of mid-slices.
        checked_memorization: whether the memorization filter ran (a reference was given).
    """

    pairs: list[tuple[Path, Path]]
    dropped_memorized: int
    grid: Path | None
    checked_memorization: bool


@torch.no_grad()
def generate_pairs(generator: nn.Module, n: int, latent_dim: int, seed: int, batch: int = 16) -> torch.Tensor:
    """``n`` pairs ``(n, 2, S, S, S)`` from seeded noise, in batches."""
    noise = torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))
    generator.eval()
    return torch.cat([generator(chunk) for chunk in noise.split(batch)]) if n else torch.empty(0)


def write_samples(
    samples: torch.Tensor,
    out_dir: str | Path,
    profile: GanProfile,
    memorization: MemorizationFilter | None,
) -> SampleReport:
    """Filter ``samples`` for copies of training crops, then write each kept pair and the PNG grid.

    Args:
        samples: ``(N, 2, S, S, S)`` pairs in window units (image) and probability (mask).
        out_dir: output folder (created).
        profile: voxel size and the HU window of its segmentation profile.
        memorization: the site's filter; ``None`` writes without the check (the report says so).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dropped = 0
    if memorization is not None:
        samples, dropped = memorization.keep(samples)
        if dropped:
            log.warning(
                "dropped %d sample(s) closer than %.3f to a training crop", dropped, memorization.threshold
            )
    seg = get_profile(profile.seg_profile)
    affine = np.diag([*profile.pixdim, 1.0])
    pairs = []
    for index, pair in enumerate(samples.numpy(), start=1):
        hu = pair[0] * (seg.hu_max - seg.hu_min) + seg.hu_min
        image, label = (
            out_dir / f"sample-{index:04d}{IMAGE_SUFFIX}",
            out_dir / f"sample-{index:04d}{LABEL_SUFFIX}",
        )
        nib.save(nib.Nifti1Image(hu.astype(np.float32), affine), image)
        nib.save(nib.Nifti1Image((pair[1] > MASK_THRESHOLD).astype(np.uint8), affine), label)
        pairs.append((image, label))
    grid = write_grid(samples, out_dir / GRID_NAME) if len(samples) else None
    return SampleReport(pairs, dropped, grid, memorization is not None)


def write_grid(samples: torch.Tensor, path: Path, max_samples: int = 16) -> Path:
    """Axial mid-slices of up to ``max_samples`` pairs, CT in grey with the mask's outline in orange."""
    shown = samples[:max_samples].numpy()
    cols = min(4, len(shown))
    rows = -(-len(shown) // cols)
    fig = Figure(figsize=(2.2 * cols, 2.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, pair in zip(axes.flat, shown, strict=False):
        mid = pair.shape[-1] // 2
        ax.imshow(pair[0, :, :, mid].T, cmap="gray", vmin=0, vmax=1, origin="lower")
        if pair[1, :, :, mid].max() > MASK_THRESHOLD:
            ax.contour(pair[1, :, :, mid].T, levels=[MASK_THRESHOLD], colors="orange", linewidths=1)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def sample_from_model(
    model: str | Path,
    n: int,
    out_dir: str | Path,
    *,
    caches: Sequence[str | Path] = (),
    profile: str | None = None,
    seed: int = 0,
) -> tuple[SampleReport, str]:
    """Draw ``n`` pairs from a GAN model file and write those that pass the memorization filter.

    Args:
        model: ``dose3d gan train``'s ``gan.pt`` or the GAN job's ``FL_global_model.pt``.
        n: pairs to draw.
        out_dir: output folder.
        caches: this site's caches; their training crops are the memorization reference (none: no check).
        profile: GAN profile of a model file that stores none.
        seed: noise seed.

    Returns:
        What was written, and where the profile came from.
    """
    checkpoint, source = load_gan_checkpoint(model, profile)
    generator = load_generator(checkpoint)
    memorization = None
    if caches:
        cases = [case for site in load_site_cases(caches) for case in site.train]
        reference = reference_crops(load_organ_volumes(cases, checkpoint.profile), checkpoint.profile)
        memorization = MemorizationFilter(reference, checkpoint.profile.memorization_threshold)
    samples = generate_pairs(generator, n, checkpoint.profile.latent_dim, seed)
    return write_samples(samples, out_dir, checkpoint.profile, memorization), source
