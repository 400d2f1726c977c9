"""The realism check: does a segmentation model trained on real CT find the labelled organ in a synthetic
image?

A segmentation model that never saw a synthetic pair segments each synthetic image (HU written by the
GAN, read through the segmentation profile's own window); the Dice of its prediction against the pair's
label is high only when the image really shows the labelled organ where the label says, with the contrast and
surroundings the model learnt from real patients. The same model on real crops gives the level to compare
with (``realism_dice`` of the site's real crops).
"""

from __future__ import annotations

import math

import torch
from monai.metrics import DiceMetric
from monai.transforms import AsDiscrete

from dose3d_fl.gan.crops import window_to_hu
from dose3d_fl.gan.label_maps import organ_labels
from dose3d_fl.gan.profiles import GanProfile
from dose3d_fl.seg.profiles import SegProfile
from dose3d_fl.seg.trainer import SegTrainer


def realism_dice(
    pairs: torch.Tensor,
    profile: GanProfile,
    seg_weights: dict[str, torch.Tensor],
    seg_profile: SegProfile,
    num_threads: int | None = None,
) -> list[float]:
    """Dice of a real-data segmentation model's prediction against each pair's organ label.

    Args:
        pairs: ``(N, 2, S, S, S)`` crop pairs (image in the GAN window, label map), synthetic or real.
        profile: the GAN profile of the pairs (its HU window and voxel size).
        seg_weights: the segmentation network's state dict.
        seg_profile: its profile (window, network, post-processing).
        num_threads: torch CPU threads.

    Returns:
        One Dice per pair over all organs (NaN where neither label nor prediction holds an organ voxel).

    Raises:
        ValueError: the segmentation model works on another voxel size than the pairs.
    """
    if tuple(seg_profile.pixdim) != tuple(profile.pixdim):
        raise ValueError(
            f"the segmentation model works at {seg_profile.pixdim} mm, the synthetic pairs are at {profile.pixdim} mm"
        )
    trainer = SegTrainer([], [], seg_profile, device="cpu", num_threads=num_threads, show_progress=False)
    trainer.set_weights(seg_weights)
    hu = window_to_hu(pairs[:, :1].float(), profile)
    image = ((hu - seg_profile.hu_min) / (seg_profile.hu_max - seg_profile.hu_min)).clamp(0.0, 1.0)
    to_class = trainer.postprocessing()
    to_onehot = AsDiscrete(to_onehot=seg_profile.out_channels)
    metric = DiceMetric(include_background=False, reduction="mean")
    dice = []
    for index in range(len(pairs)):
        prediction = to_class(trainer.predict(image[index : index + 1])[0].float())
        label = organ_labels(pairs[index, 1].round())[None]
        value = float(metric(y_pred=[prediction], y=[to_onehot(label)]).mean())
        dice.append(value if not math.isnan(value) else math.nan)
    metric.reset()
    return dice
