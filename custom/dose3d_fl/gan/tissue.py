"""Per-tissue HU statistics of crops: does a synthetic image give fat, muscle, organ and bone their HU?

Tissues are read inside the body of each crop's label map:

* ``fat``: -190..-30 HU outside the organs;
* ``muscle``: soft tissue, 0..100 HU outside the organs (muscle, and the unlabelled organs of that range);
* ``organ``: the labelled organs (every organ label);
* ``bone``: 200 HU and above (the GAN window's top, 450 HU by default, clips cortical bone).

For each tissue: the mean and standard deviation of its HU and its share of the body's voxels. Synthetic
crops agree with the real crops of the same site when every tissue's mean HU is within ``HU_TOLERANCE`` and
its share within ``SHARE_TOLERANCE`` (a factor either way).
"""

from __future__ import annotations

import math

import torch

from dose3d_fl.gan.crops import window_to_hu
from dose3d_fl.gan.label_maps import BODY
from dose3d_fl.gan.profiles import GanProfile

TISSUE_HU = {"fat": (-190.0, -30.0), "muscle": (0.0, 100.0), "bone": (200.0, math.inf)}
TISSUES = ("fat", "muscle", "organ", "bone")
# Stated tolerances of synthetic vs real (docs/gan.md): mean HU per tissue, share of the body as a factor.
HU_TOLERANCE = {"fat": 20.0, "muscle": 20.0, "organ": 20.0, "bone": 50.0}
SHARE_TOLERANCE = 1.5


def tissue_statistics(crops: torch.Tensor, profile: GanProfile) -> dict[str, dict[str, float]]:
    """``{tissue: {"mean_hu", "std_hu", "share"}}`` over all crops ``(N, 2, S, S, S)`` (image in window units,
    label map); a tissue without a voxel has NaN values and share 0."""
    hu = window_to_hu(crops[:, 0].double(), profile)
    label_map = crops[:, 1].round().long()
    body = label_map >= BODY
    organ = label_map > BODY
    masks = {
        name: body & ~organ & (hu >= low) & (hu <= high)
        for name, (low, high) in TISSUE_HU.items()
        if name != "bone"
    }
    masks["organ"] = organ
    masks["bone"] = body & ~organ & (hu >= TISSUE_HU["bone"][0])
    body_voxels = max(int(body.sum()), 1)
    stats = {}
    for name in TISSUES:
        values = hu[masks[name]]
        stats[name] = {
            "mean_hu": float(values.mean()) if len(values) else math.nan,
            "std_hu": float(values.std()) if len(values) > 1 else math.nan,
            "share": len(values) / body_voxels,
        }
    return stats


def tissue_agreement(
    synthetic: dict[str, dict[str, float]], real: dict[str, dict[str, float]]
) -> dict[str, dict[str, float | bool]]:
    """Per tissue: the mean-HU difference (synthetic - real), the share ratio, and whether both are within
    the stated tolerances."""
    result = {}
    for name in TISSUES:
        difference = synthetic[name]["mean_hu"] - real[name]["mean_hu"]
        ratio = synthetic[name]["share"] / real[name]["share"] if real[name]["share"] else math.nan
        within = abs(difference) <= HU_TOLERANCE[name] and 1 / SHARE_TOLERANCE <= ratio <= SHARE_TOLERANCE
        result[name] = {"hu_difference": difference, "share_ratio": ratio, "within_tolerance": bool(within)}
    return result


def tissue_hu_error(synthetic_crops: torch.Tensor, real_crops: torch.Tensor, profile: GanProfile) -> float:
    """The largest absolute mean-HU difference over the four tissues (NaN if a tissue is missing)."""
    agreement = tissue_agreement(
        tissue_statistics(synthetic_crops, profile), tissue_statistics(real_crops, profile)
    )
    return max(abs(value["hu_difference"]) for value in agreement.values())
