"""Synthetic image/label pairs (``dose3d gan sample``) as extra segmentation training cases.

A folder of ``*_image.nii.gz`` / ``*_label.nii.gz`` pairs (HU image, uint8 organ labels, on the GAN
profile's voxel grid, which is the segmentation profile's training crop) is read like a site cache's cases:
the trainer's own preprocessing and augmentation apply unchanged. A synthetic crop smaller than the
profile's ``roi_size`` is padded with the bottom of the HU window.

The mixing ratio is the number of synthetic cases per real training case (``0.5``: one synthetic case for
every two real ones). ``repeat_real`` lists each real case several times, so that a larger pool of
synthetic pairs mixes in at the same ratio (each step still draws a real case with the same probability).
Synthetic pairs never replace validation cases: validation stays real. They stay in the site's own folder:
nothing in a job reads or sends them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dose3d_fl.data.cases import Case

IMAGE_SUFFIX, LABEL_SUFFIX = "_image.nii.gz", "_label.nii.gz"
# ``synthetic_cases`` names each pair ``synthetic-<name>``; the case check lets such a pair have no organ.
SYNTHETIC_ID_PREFIX = "synthetic-"


@dataclass(frozen=True)
class SyntheticMix:
    """Which synthetic pairs a site trains on, and how many.

    Args:
        folder: folder written by ``dose3d gan sample``.
        ratio: synthetic cases per real training case (> 0); ignored when ``only``.
        only: train on synthetic cases alone (train on synthetic, test on real), all pairs in the folder.
        seed: seed of the choice of pairs when the folder holds more than needed.
        repeat_real: how many times each real case is listed (a pool of ``ratio * repeat_real`` synthetic
            pairs per real case).
    """

    folder: Path
    ratio: float = 1.0
    only: bool = False
    seed: int = 0
    repeat_real: int = 1

    def __post_init__(self) -> None:
        if not self.only and self.ratio <= 0:
            raise ValueError(f"synthetic mixing ratio must be > 0, got {self.ratio}")
        if self.repeat_real < 1:
            raise ValueError(f"repeat_real must be >= 1, got {self.repeat_real}")


def synthetic_cases(folder: str | Path) -> list[Case]:
    """The pairs in ``folder``, sorted by name, as trainer case dicts (``id`` ``synthetic-<name>``).

    Raises:
        FileNotFoundError: no such folder, or no pair in it.
        ValueError: an image without its label.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"synthetic data folder {folder} not found; write one with `dose3d gan sample`"
        )
    cases = []
    for image in sorted(folder.glob(f"*{IMAGE_SUFFIX}")):
        name = image.name.removesuffix(IMAGE_SUFFIX)
        label = image.with_name(f"{name}{LABEL_SUFFIX}")
        if not label.is_file():
            raise ValueError(f"synthetic image {image} has no label {label.name}; re-run `dose3d gan sample`")
        cases.append(
            {
                "id": f"{SYNTHETIC_ID_PREFIX}{name}",
                "image": str(image.resolve()),
                "label": str(label.resolve()),
            }
        )
    if not cases:
        raise FileNotFoundError(f"no *{IMAGE_SUFFIX} / *{LABEL_SUFFIX} pair in {folder}")
    return cases


def mix_training_cases(real: Sequence[Case], mix: SyntheticMix) -> list[Case]:
    """The training cases with synthetic ones added (or, with ``mix.only``, the synthetic ones alone).

    Raises:
        ValueError: the folder holds fewer pairs than the ratio asks for (the message says how many).
    """
    available = synthetic_cases(mix.folder)
    if mix.only:
        return available
    real = list(real) * mix.repeat_real
    wanted = max(1, round(mix.ratio * len(real)))
    if wanted > len(available):
        raise ValueError(
            f"mixing ratio {mix.ratio} with {len(real)} real case(s) needs {wanted} synthetic pairs, "
            f"{mix.folder} holds {len(available)}; sample more with `dose3d gan sample --n {wanted}`"
        )
    return [*real, *random.Random(mix.seed).sample(available, wanted)]
