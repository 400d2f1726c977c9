"""What the phantom returns and the tissue values it paints.

The structure names, :class:`PhantomValues` (HU and one field per structure at the sampled points), the
fixed tissue HU (per-patient HU are parameters of the phantom), texture amplitudes and the smooth texture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STRUCTURE_NAMES: tuple[str, ...] = (
    "BODY",
    "LUNG_L",
    "LUNG_R",
    "LIVER",
    "SPLEEN",
    "STOMACH",
    "PANCREAS",
    "KIDNEY_L",
    "KIDNEY_R",
    "AORTA",
    "IVC",
)

# Fixed tissue HU; the patient-specific ones (fat, muscle, organs, blood, lung) are phantom parameters.
AIR_HU = -1000.0
GAS_HU = -900.0
GI_FLUID_HU = 15.0
BOWEL_WALL_HU = 35.0
STOMACH_WALL_HU = 40.0
HEART_HU = 40.0
LUNG_VESSEL_HU = 35.0
CSF_HU = 20.0
DISC_HU = 90.0
CANCELLOUS_HU = 400.0
POSTERIOR_ELEMENT_HU = 750.0
RIB_MARROW_HU = 620.0
CORTEX_HU = 950.0
CORTEX_MM = 1.8

# Texture amplitudes (HU). Muscle varies more than the spleen so that no HU window separates them.
TEXTURE_ORGAN = 3.0
TEXTURE_LIVER = 4.0
TEXTURE_MUSCLE = 10.0
TEXTURE_FAT = 5.0
TEXTURE_LUNG = 20.0
TEXTURE_BONE = 25.0


@dataclass(frozen=True)
class PhantomValues:
    """The phantom sampled at a set of points.

    Args:
        hu: float32 noise-free tissue HU, same leading shape as the points.
        fields: float32 field per name in :data:`STRUCTURE_NAMES`; ``< 0`` inside, ``> 0`` outside,
            roughly the signed distance to the boundary in mm near it.
    """

    hu: np.ndarray
    fields: dict[str, np.ndarray]


def wave_texture(x: np.ndarray, y: np.ndarray, z: np.ndarray, waves: tuple) -> np.ndarray:
    """Smooth pattern in [-1, 1]: the mean of a few plane waves."""
    total = np.zeros_like(x)
    for kx, ky, kz, phase in waves:
        total += np.sin(x * kx + y * ky + z * kz + phase)
    total *= 1.0 / len(waves)
    return total
