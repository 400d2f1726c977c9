"""The memorisation check: is a synthetic image a copy of one of the site's training crops?

Each sample's image channel is compared with every training case's image around its organs by the
normalised cross-correlation (NCC, Pearson's r over the crop's voxels) at every shift that places the sample
inside that region: the region holds every crop the GAN trained on (any jitter) plus ``memorization_shift``
voxels more each way, so a copy that is shifted, or cut at another jitter, still meets its original. The
score of a sample is its best NCC over all shifts and cases; a sample whose score reaches the profile's
``memorization_ncc`` is dropped and counted. Voxels below ``FLOOR_HU`` (-120 HU) are raised to it first, in
samples and training crops alike: air and fat then look the same, so the body outline, which every crop
shares, does not dominate the correlation; the anatomy inside the body does (no result file records how
close other patients' crops come with and without the floor yet).

NCC ignores a change of brightness and contrast, so an added offset or a rescaled copy is caught too; added
noise lowers it by about ``var(noise) / var(image)``. The correlations are computed for all shifts at once
by FFT (template matching with integral images for the local means and variances).

What it does not cover (docs/gan.md): copies that are rotated, mirrored, deformed or resampled; copies of
another site's crops (each site checks the global generator against its own crops in every round); the
label channel (synthetic labels are deformed training labels by design); and the generator's weights
themselves, which are sent to the server in every round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dose3d_fl.gan.profiles import GanProfile

# Below this standard deviation (window units) a window is flat: its correlation is undefined, scored 0.
FLAT = 1e-6
FLOOR_HU = -120.0


def _window_sums(volume: torch.Tensor, size: int) -> torch.Tensor:
    """Sums over every ``size^3`` window of an ``(X, Y, Z)`` volume (integral image), ``(X - size + 1, ...)``."""
    table = volume.double()
    for axis in range(3):
        pad = [0] * 6  # last dimension first
        pad[2 * (2 - axis)] = 1
        table = torch.nn.functional.pad(table.cumsum(axis), pad)
    total = torch.zeros([n - size + 1 for n in volume.shape], dtype=torch.float64)
    for corner in range(8):
        picks = [slice(None, -size) if corner >> a & 1 else slice(size, None) for a in range(3)]
        total += (-1.0 if bin(corner).count("1") % 2 else 1.0) * table[picks[0], picks[1], picks[2]]
    return total


def _region_ncc(samples: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Best NCC of each sample ``(N, S, S, S)`` over every placement inside one region ``(X, Y, Z)``."""
    size, voxels = samples.shape[-1], samples.shape[-1] ** 3
    if any(n < size for n in region.shape):
        raise ValueError(
            f"a memorisation region of {tuple(region.shape)} voxels cannot hold {size}-voxel samples"
        )
    sums = _window_sums(region, size)
    region_std = ((_window_sums(region.double() ** 2, size) - sums**2 / voxels).clamp(min=0) / voxels).sqrt()
    spectrum = torch.fft.rfftn(region.float())
    positions = tuple(region_std.shape)
    best = torch.zeros(len(samples), dtype=torch.float64)
    for index, sample in enumerate(samples.double()):
        centred = sample - sample.mean()
        sample_std = float(centred.pow(2).mean().sqrt())
        if sample_std < FLAT:
            continue
        padded = torch.zeros(region.shape)
        padded[:size, :size, :size] = centred.float()
        # Circular correlation without wrap-around: the sample never reaches past the region's end.
        correlation = torch.fft.irfftn(spectrum * torch.fft.rfftn(padded).conj(), s=region.shape)
        correlation = correlation[: positions[0], : positions[1], : positions[2]]
        ncc = torch.where(
            region_std > FLAT, correlation / (voxels * sample_std * region_std.clamp(min=FLAT)), 0.0
        )
        best[index] = ncc.max()
    return best


def best_ncc(samples: torch.Tensor, regions: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Best normalised cross-correlation of each sample with any same-size window of any region.

    Args:
        samples: ``(N, S, S, S)`` images.
        regions: ``(X, Y, Z)`` images (or one ``(M, R, R, R)`` tensor), each at least ``S`` along every axis.

    Returns:
        The best NCC of each sample ``(N,)`` (in [-1, 1]; 0 for a flat sample) and the index of the region
        it was found in ``(N,)`` (-1 without regions).

    Raises:
        ValueError: a region smaller than the samples.
    """
    n = len(samples)
    if len(regions) == 0 or n == 0:
        return torch.zeros(n), torch.full((n,), -1, dtype=torch.long)
    per_region = torch.stack([_region_ncc(samples, region) for region in regions], 1)  # (N, M)
    return per_region.max(1).values.float(), per_region.argmax(1)


@dataclass(frozen=True)
class MemorizationCheck:
    """Drops samples whose image correlates with a training crop at ``threshold`` or more.

    Args:
        regions: each training case's image where crops come from, ``(X, Y, Z)`` in window units
            (``dose3d_fl.gan.crops.memorization_regions``).
        threshold: best NCC from which a sample counts as a copy.
        floor: window value below which voxels are raised to it before correlating (``FLOOR_HU``).
    """

    regions: Sequence[torch.Tensor]
    threshold: float
    floor: float = 0.0

    @classmethod
    def for_profile(cls, regions: Sequence[torch.Tensor], profile: GanProfile) -> MemorizationCheck:
        """The check with the profile's threshold and ``FLOOR_HU`` in its window."""
        floor = max((FLOOR_HU - profile.hu_min) / (profile.hu_max - profile.hu_min), 0.0)
        return cls([region.clamp(min=floor) for region in regions], profile.memorization_ncc, floor)

    def scores(self, samples: torch.Tensor) -> torch.Tensor:
        """Best NCC of each sample pair's image channel ``(N, 2, S, S, S)`` with the training crops."""
        return best_ncc(samples[:, 0].clamp(min=self.floor), self.regions)[0]

    def keep(self, samples: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The samples that are not copies, and how many were dropped."""
        kept = self.scores(samples) < self.threshold
        return samples[kept], int((~kept).sum())
