"""Quality metrics of synthetic crop pairs against a site's real crops.

All values are plain floats, so a site can report them as round metrics:

* ``mmd``: MONAI's ``MMDMetric`` (linear kernel on the flattened image channel) between real and synthetic
  crops; 0 when their means agree, lower is better.
* ``msssim``: mean MONAI ``MultiScaleSSIMMetric`` of the image channel over (real, synthetic) pairs; higher
  means closer to the real crops. ``msssim_real`` is the same among real crops: the level a perfect
  generator would reach.
* ``diversity``: mean MS-SSIM between synthetic samples (each with the next, cyclically: an unbiased
  estimate of the mean over all pairs at a fraction of its cost); near 1 is mode collapse (all samples
  alike), a value near ``msssim_real`` is the real data's own variety.
* ``label_ok``: share of samples whose label map passes the label check (every organ one 26-connected
  component of plausible volume); 1 by construction for this generator, measured anyway.
* ``tissue_hu_error``: the largest difference of a tissue's mean HU (fat, muscle, organ, bone) between the
  samples and the real crops (``dose3d_fl.gan.tissue``).
* ``best_ncc`` / ``dropped_memorized``: the highest memorisation score of a sample (best normalised
  cross-correlation with a training crop, ``dose3d_fl.gan.memorization``) and how many samples reached the
  threshold (they are left out of the other metrics).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.metrics import MMDMetric, MultiScaleSSIMMetric

from dose3d_fl.gan.label_maps import OrganVolumeRange, label_map_is_plausible
from dose3d_fl.gan.memorization import MemorizationCheck
from dose3d_fl.gan.profiles import GanProfile
from dose3d_fl.gan.tissue import tissue_hu_error


def msssim_metric(crop_size: int) -> MultiScaleSSIMMetric:
    """MS-SSIM with 3 scales, its kernel sized for the crop (MONAI's defaults reject crops below 176^3)."""
    kernel = 5 if crop_size >= 32 else 3
    return MultiScaleSSIMMetric(spatial_dims=3, data_range=1.0, kernel_size=kernel, weights=(0.2, 0.3, 0.5))


def mean_msssim(a: torch.Tensor, b: torch.Tensor, metric: MultiScaleSSIMMetric) -> float:
    """Mean MS-SSIM of the image channel of paired crops ``a[i]``, ``b[i]``."""
    return float(metric(a[:, :1].float(), b[:, :1].float()).mean())


def pairwise_msssim(crops: torch.Tensor, metric: MultiScaleSSIMMetric) -> float:
    """Mean MS-SSIM of each crop with the next one, cyclically (image channel; ``len(crops)`` pairs)."""
    return mean_msssim(crops, crops.roll(1, 0), metric)


def quality_metrics(
    samples: torch.Tensor,
    real: torch.Tensor,
    profile: GanProfile,
    memorization: MemorizationCheck,
    msssim_real: float | None = None,
) -> dict[str, float]:
    """The metrics of the module docstring for ``samples`` against ``real`` crops (both ``(N, 2, S, S, S)``).

    MMD and the real-vs-synthetic MS-SSIM use as many real crops as samples (the first ones, so the value
    is comparable between rounds). Memorised samples are counted, then left out of the other metrics.
    ``msssim_real``, when given, is the real crops' own MS-SSIM computed before (it does not change).

    Raises:
        ValueError: fewer than 2 samples or 2 real crops (MMD and diversity need pairs).
    """
    if len(samples) < 2 or len(real) < 2:
        raise ValueError(
            f"quality metrics need at least 2 samples and 2 real crops, got {len(samples)}/{len(real)}"
        )
    scores = memorization.scores(samples)
    kept = samples[scores < memorization.threshold]
    volumes = OrganVolumeRange.from_label_maps(real[:, 1].round().long(), profile.volume_tolerance)
    label_ok = float(np.mean([label_map_is_plausible(s[1].round().long(), volumes) for s in samples]))
    result = {
        "dropped_memorized": float(len(samples) - len(kept)),
        "best_ncc": float(scores.max()),
        "label_ok": label_ok,
    }
    if len(kept) < 2:  # everything is a copy: nothing left to measure
        return {
            **result,
            "mmd": math.nan,
            "msssim": math.nan,
            "diversity": math.nan,
            "msssim_real": math.nan,
            "tissue_hu_error": math.nan,
        }
    metric = msssim_metric(profile.crop_size)
    n = min(len(kept), len(real))
    reference = real[:n]
    return {
        **result,
        "mmd": float(MMDMetric()(reference[:, :1].float(), kept[:n, :1].float())),
        "msssim": mean_msssim(reference, kept[:n], metric),
        "diversity": pairwise_msssim(kept, metric),
        "msssim_real": msssim_real if msssim_real is not None else pairwise_msssim(reference, metric),
        "tissue_hu_error": tissue_hu_error(kept, real, profile),
    }
