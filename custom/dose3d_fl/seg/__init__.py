"""3D segmentation: profiles, MONAI transforms, the network factory, the local trainer and its baselines.

Plain MONAI/torch: nothing here imports NVFlare (``dose3d_fl.fl`` wraps the trainer for the federation).
"""

from dose3d_fl.seg.baseline import hu_threshold_baseline
from dose3d_fl.seg.checkpoint import SegCheckpoint, load_checkpoint, save_checkpoint
from dose3d_fl.seg.network import build_network, network_args
from dose3d_fl.seg.profiles import DEFAULT_PROFILE, PROFILES, SegProfile, get_profile
from dose3d_fl.seg.split import SiteSplit, draw_split, load_or_create_split, split_cases
from dose3d_fl.seg.trainer import SegTrainer
from dose3d_fl.seg.training_run import SiteCases, load_site_cases, train_on_caches
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
    "SiteCases",
    "SiteSplit",
    "augmentation_transforms",
    "build_network",
    "draw_split",
    "eval_transforms",
    "get_profile",
    "hu_threshold_baseline",
    "load_checkpoint",
    "load_or_create_split",
    "load_site_cases",
    "network_args",
    "preprocessing_transforms",
    "save_checkpoint",
    "split_cases",
    "train_on_caches",
    "train_transforms",
]
