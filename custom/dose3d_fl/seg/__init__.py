"""3D segmentation: profiles, MONAI transforms, the network factory, the local trainer and its baselines.

Plain MONAI/torch: nothing here imports NVFlare (``dose3d_fl.fl`` wraps the trainer for the federation).
"""

from dose3d_fl.seg.baseline import hu_threshold_baseline
from dose3d_fl.seg.checkpoint import SegCheckpoint, load_checkpoint, save_checkpoint
from dose3d_fl.seg.network import build_network, network_args
from dose3d_fl.seg.profiles import DEFAULT_PROFILE, PROFILES, SegProfile, get_profile
from dose3d_fl.seg.trainer import SegTrainer
from dose3d_fl.seg.training_run import train_on_caches
from dose3d_fl.seg.transforms import (
    augmentation_transforms,
    eval_transforms,
    preprocessing_transforms,
    train_transforms,
)

__all__ = [
    "DEFAULT_PROFILE",
    "PROFILES",
    "SegCheckpoint",
    "SegProfile",
    "SegTrainer",
    "augmentation_transforms",
    "build_network",
    "eval_transforms",
    "get_profile",
    "hu_threshold_baseline",
    "load_checkpoint",
    "network_args",
    "preprocessing_transforms",
    "save_checkpoint",
    "train_on_caches",
    "train_transforms",
]
