"""The memorisation check: is a synthetic image a copy of one of the site's training crops?

Each sample's image channel is compared with every training case's image around its organs by the
normalised cross-correlation (NCC, Pearson's r over the crop's voxels) at every shift that places the sample
inside that region: the region holds every crop the GAN trained on (any jitter) plus ``memorization_shift``
voxels more each way, so a copy that is shifted, or cut at another jitter, still meets its original. The
score of a sample is its best NCC over all shifts and cases; a sample whose score reaches the profile's
``memorization_ncc`` is dropped and counted. Voxels below ``FLOOR_HU`` (-120 HU) are raised to it first, in
samples and training crops alike: air and fat then look the same, so the body outline, which every crop
shares, does not dominate the correlation; the anatomy inside the body does (measured on the demo sites:
other patients' crops reach 0.85 at most with it, 0.89 without; docs/gan.md).

NCC ignores a change of brightness and contrast, so an added offset or a rescaled copy is caught too; added
noise lowers it by about ``var(noise) / var(image)``. The correlations are computed for all shifts at once
by FFT (template matching with integral images for the local means and variances).

What it does not cover (docs/gan.md): copies that are rotated, mirrored, deformed or resampled; copies of
another site's crops (each site checks the global generator against its own crops in every round); the
label channel (synthetic labels are deformed training labels by design); and the generator's weights
themselves, which are sent to the server in every round.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dose3d_fl.gan.profiles import GanProfile

# Below this standard deviation (window units) a window is flat: its correlation is undefined, scored 0.
FLAT = 1e-6
FLOOR_HU = -120.0


def _window_sums(volumes: torch.Tensor, size: int) -> torch.Tensor:
    """Sums over every ``size^3`` window of ``(M, R, R, R)`` volumes (integral image), ``(M, P, P, P)``
    with ``P = R - size + 1``."""
    table = volumes.double()
    for axis in (1, 2, 3):
        table = torch.nn.functional.pad(table.cumsum(axis), _pad_before(axis))
    ends = [slice(size, None)] * 3
    starts = [slice(None, -size)] * 3
    total = torch.zeros_like(table[:, ends[0], ends[1], ends[2]])
    for corner in range(8):
        picks = [starts[a] if corner >> a & 1 else ends[a] for a in range(3)]
        sign = -1.0 if bin(corner).count("1") % 2 else 1.0
        total = total + sign * table[:, picks[0], picks[1], picks[2]]
    return total


def _pad_before(axis: int) -> list[int]:
    """``F.pad`` widths that add one zero before dimension ``axis`` of a 4-D tensor."""
    widths = [0] * 6  # last dimension first: (Z before, Z after, Y before, Y after, X before, X after)
    widths[2 * (3 - axis)] = 1
    return widths


def best_ncc(samples: torch.Tensor, regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Best normalised cross-correlation of each sample with any same-size window of any region.

    Args:
        samples: ``(N, S, S, S)`` images.
        regions: ``(M, R, R, R)`` images with ``R >= S``.

    Returns:
        The best NCC of each sample ``(N,)`` (in [-1, 1]; 0 for a flat sample) and the index of the region
        it was found in ``(N,)``.

    Raises:
        ValueError: regions smaller than the samples.
    """
    n, size = len(samples), samples.shape[-1]
    if len(regions) == 0 or n == 0:
        return torch.zeros(n), torch.full((n,), -1, dtype=torch.long)
    extent = regions.shape[-1]
    if extent < size:
        raise ValueError(f"memorisation regions of {extent} voxels cannot hold {size}-voxel samples")
    voxels = size**3
    sums = _window_sums(regions, size)
    squares = _window_sums(regions.double() ** 2, size)
    region_std = ((squares - sums**2 / voxels).clamp(min=0) / voxels).sqrt()  # (M, P, P, P)
    spectrum = torch.fft.rfftn(regions.float(), dim=(1, 2, 3))
    positions = extent - size + 1
    best, where = torch.zeros(n, dtype=torch.float64), torch.full((n,), -1, dtype=torch.long)
    for index, sample in enumerate(samples.double()):
        centred = sample - sample.mean()
        sample_std = float(centred.pow(2).mean().sqrt())
        if sample_std < FLAT:
            continue
        padded = torch.zeros((extent,) * 3)
        padded[:size, :size, :size] = centred.float()
        # Circular correlation without wrap-around: the sample never reaches past the region's end.
        correlation = torch.fft.irfftn(
            spectrum * torch.fft.rfftn(padded).conj(), s=(extent,) * 3, dim=(1, 2, 3)
        )[:, :positions, :positions, :positions]
        ncc = torch.where(
            region_std > FLAT, correlation / (voxels * sample_std * region_std.clamp(min=FLAT)), 0.0
        )
        per_region = ncc.flatten(1).max(1).values
        best[index], where[index] = per_region.max(), per_region.argmax()
    return best.float(), where


@dataclass(frozen=True)
class MemorizationCheck:
    """Drops samples whose image correlates with a training crop at ``threshold`` or more.

    Args:
        regions: each training case's image around its organs ``(M, R, R, R)`` in window units
            (``dose3d_fl.gan.crops.memorization_regions``).
        threshold: best NCC from which a sample counts as a copy.
        floor: window value below which voxels are raised to it before correlating (``FLOOR_HU``).
    """

    regions: torch.Tensor
    threshold: float
    floor: float = 0.0

    @classmethod
    def for_profile(cls, regions: torch.Tensor, profile: GanProfile) -> MemorizationCheck:
        """The check with the profile's threshold and ``FLOOR_HU`` in its window."""
        floor = (FLOOR_HU - profile.hu_min) / (profile.hu_max - profile.hu_min)
        return cls(regions.clamp(min=floor), profile.memorization_ncc, max(floor, 0.0))

    def scores(self, samples: torch.Tensor) -> torch.Tensor:
        """Best NCC of each sample pair's image channel ``(N, 2, S, S, S)`` with the training crops."""
        return best_ncc(samples[:, 0].clamp(min=self.floor), self.regions)[0]

    def keep(self, samples: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The samples that are not copies, and how many were dropped."""
        kept = self.scores(samples) < self.threshold
        return samples[kept], int((~kept).sum())
