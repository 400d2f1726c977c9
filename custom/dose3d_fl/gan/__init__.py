"""Paired 3D GAN (CT crop + organ mask): profiles, networks, crops, WGAN-GP trainer, quality metrics and
sampling.

Plain MONAI/torch: nothing here imports NVFlare (``dose3d_fl.fl.site.gan_client`` wraps the trainer).
"""

from dose3d_fl.gan.checkpoint import GanCheckpoint, load_gan_checkpoint, load_generator, save_gan_checkpoint
from dose3d_fl.gan.crops import CropSampler, cut_crop, load_organ_volumes, reference_crops
from dose3d_fl.gan.metrics import MemorizationFilter, label_is_plausible, quality_metrics
from dose3d_fl.gan.network import GanPair, SeededGenerator, build_gan, network_args
from dose3d_fl.gan.profiles import DEFAULT_GAN_PROFILE, GAN_PROFILES, GanProfile, get_gan_profile
from dose3d_fl.gan.sampling import sample_from_model, write_samples
from dose3d_fl.gan.trainer import GanTrainer
from dose3d_fl.gan.training_run import train_gan_on_caches

__all__ = [
    "DEFAULT_GAN_PROFILE",
    "GAN_PROFILES",
    "CropSampler",
    "GanCheckpoint",
    "GanPair",
    "GanProfile",
    "GanTrainer",
    "MemorizationFilter",
    "SeededGenerator",
    "build_gan",
    "cut_crop",
    "get_gan_profile",
    "label_is_plausible",
    "load_gan_checkpoint",
    "load_generator",
    "load_organ_volumes",
    "network_args",
    "quality_metrics",
    "reference_crops",
    "sample_from_model",
    "save_gan_checkpoint",
    "train_gan_on_caches",
    "write_samples",
]
