"""Quality metrics of synthetic crop pairs against a site's real crops, and the memorization filter.

All values are plain floats, so a site can report them as round metrics:

* ``mmd``: MONAI's ``MMDMetric`` (unbiased, linear kernel on the flattened image channel) between real and
  synthetic crops; 0 when their means agree, lower is better.
* ``msssim``: mean MONAI ``MultiScaleSSIMMetric`` of the image channel over (real, synthetic) pairs; higher
  means closer to the real crops. ``msssim_real`` is the same among real crops: the level a perfect
  generator would reach.
* ``diversity``: mean pairwise MS-SSIM among synthetic samples; near 1 is mode collapse (all samples
  alike), a value near ``msssim_real`` is the real data's own variety.
* ``label_ok``: share of samples whose thresholded mask has a plausible organ volume (within
  ``volume_tolerance`` of the real crops' range) and exactly one 26-connected component.
* memorization: a sample whose mean absolute difference to its nearest real crop (both channels) is below
  ``memorization_threshold`` is a copy of a training crop; it is dropped before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics import MMDMetric, MultiScaleSSIMMetric
from scipy import ndimage

from dose3d_fl.gan.profiles import GanProfile

MASK_THRESHOLD = 0.5


def msssim_metric(crop_size: int) -> MultiScaleSSIMMetric:
    """MS-SSIM with 3 scales, its kernel sized for the crop (MONAI's defaults reject crops below 176^3)."""
    kernel = 5 if crop_size >= 32 else 3
    return MultiScaleSSIMMetric(spatial_dims=3, data_range=1.0, kernel_size=kernel, weights=(0.2, 0.3, 0.5))


def mean_msssim(a: torch.Tensor, b: torch.Tensor, metric: MultiScaleSSIMMetric) -> float:
    """Mean MS-SSIM of the image channel of paired crops ``a[i]``, ``b[i]``."""
    return float(metric(a[:, :1].float(), b[:, :1].float()).mean())


def pairwise_msssim(crops: torch.Tensor, metric: MultiScaleSSIMMetric) -> float:
    """Mean MS-SSIM over all distinct pairs of crops (image channel)."""
    i, j = torch.triu_indices(len(crops), len(crops), offset=1)
    return mean_msssim(crops[i], crops[j], metric)


def nearest_distances(samples: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference (both channels) from each sample to its nearest reference crop (infinite
    when there is no reference crop)."""
    if len(reference) == 0:
        return torch.full((len(samples),), float("inf"))
    flat_ref = reference.flatten(1).float()
    return torch.stack([(flat_ref - sample.flatten().float()).abs().mean(1).min() for sample in samples])


@dataclass(frozen=True)
class MemorizationFilter:
    """Drops samples closer to a real training crop than ``threshold`` (mean absolute difference).

    Args:
        reference: the site's real crops ``(N, 2, S, S, S)``.
        threshold: the distance below which a sample counts as a copy.
    """

    reference: torch.Tensor
    threshold: float

    def keep(self, samples: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The samples that are not copies, and how many were dropped."""
        kept = nearest_distances(samples, self.reference) >= self.threshold
        return samples[kept], int((~kept).sum())


@dataclass(frozen=True)
class OrganVolumeRange:
    """Plausible organ volumes in voxels: the real crops' range widened by ``tolerance`` each way."""

    low: float
    high: float

    @classmethod
    def from_crops(cls, crops: torch.Tensor, tolerance: float) -> OrganVolumeRange:
        volumes = (crops[:, 1] > MASK_THRESHOLD).flatten(1).sum(1).float()
        return cls(float(volumes.min()) / tolerance, float(volumes.max()) * tolerance)


def label_is_plausible(mask: torch.Tensor, volumes: OrganVolumeRange) -> bool:
    """One 26-connected organ component with a volume in the plausible range."""
    binary = (mask > MASK_THRESHOLD).cpu().numpy()
    volume = int(binary.sum())
    if not volumes.low <= volume <= volumes.high:
        return False
    _, components = ndimage.label(binary, structure=np.ones((3, 3, 3)))
    return components == 1


def quality_metrics(
    samples: torch.Tensor, real: torch.Tensor, profile: GanProfile, memorization: MemorizationFilter
) -> dict[str, float]:
    """The metrics of the module docstring for ``samples`` against ``real`` crops (both ``(N, 2, S, S, S)``).

    MMD and the real-vs-synthetic MS-SSIM use as many real crops as samples (the first ones, so the value
    is comparable between rounds). Memorized samples are counted, then left out of the other metrics.

    Raises:
        ValueError: fewer than 2 samples or 2 real crops (MMD and diversity need pairs).
    """
    if len(samples) < 2 or len(real) < 2:
        raise ValueError(
            f"quality metrics need at least 2 samples and 2 real crops, got {len(samples)}/{len(real)}"
        )
    kept, dropped = memorization.keep(samples)
    metric = msssim_metric(profile.crop_size)
    volumes = OrganVolumeRange.from_crops(real, profile.volume_tolerance)
    label_ok = float(np.mean([label_is_plausible(s[1], volumes) for s in samples]))
    result = {"dropped_memorized": float(dropped), "label_ok": label_ok}
    if len(kept) < 2:  # everything is a copy: nothing left to measure
        return {
            **result,
            "mmd": float("nan"),
            "msssim": float("nan"),
            "diversity": float("nan"),
            "msssim_real": float("nan"),
        }
    n = min(len(kept), len(real))
    reference = real[:n]
    return {
        **result,
        "mmd": float(MMDMetric()(reference[:, :1].float(), kept[:n, :1].float())),
        "msssim": mean_msssim(reference, kept[:n], metric),
        "diversity": pairwise_msssim(kept, metric),
        "msssim_real": pairwise_msssim(reference, metric),
    }
