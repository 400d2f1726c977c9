"""Build a site's segmentation or GAN trainer from the configuration the site owns."""

from __future__ import annotations

import logging
from pathlib import Path

from dose3d_fl.fl.site_config import SiteConfig, find_site_config
from dose3d_fl.gan.profiles import get_gan_profile
from dose3d_fl.gan.trainer import GanTrainer
from dose3d_fl.seg.profiles import get_profile
from dose3d_fl.seg.split import load_or_create_split, split_cases
from dose3d_fl.seg.synthetic import SyntheticMix, mix_training_cases
from dose3d_fl.seg.trainer import SegTrainer

logger = logging.getLogger(__name__)


def site_state_folder(site_name: str, workspace: Path | None = None) -> Path:
    """Where ``site_name`` keeps its local training state: ``fl_state`` in its cache folder (site-owned)."""
    config = SiteConfig.load(find_site_config(site_name, workspace))
    return Path(config.cache_dir) / "fl_state"


def build_site_trainer(
    site_name: str, profile_name: str, workspace: Path | None = None, lr_scale: float = 1.0
) -> SegTrainer:
    """The trainer of ``site_name`` on its own cached cases and fixed train/val split.

    Args:
        site_name: NVFlare client name.
        profile_name: segmentation profile the job asks for.
        workspace: the site's workspace (defaults to the working directory).
        lr_scale: the job's factor on the profile's learning rate (its whole schedule) for local training.

    The site's own ``synthetic_dir`` / ``synthetic_ratio`` add synthetic pairs to its training cases.

    Raises:
        FileNotFoundError: no site configuration, or its cache has no manifest.
    """
    config = SiteConfig.load(find_site_config(site_name, workspace))
    cache = Path(config.cache_dir)
    train_cases, val_cases = split_cases(cache, load_or_create_split(cache))
    if config.synthetic_dir:
        mix = SyntheticMix(Path(config.synthetic_dir), config.synthetic_ratio)
        train_cases = mix_training_cases(train_cases, mix)
    logger.info("%s: %d training and %d validation cases", site_name, len(train_cases), len(val_cases))
    device = None if config.device == "auto" else config.device
    profile = get_profile(profile_name)
    if lr_scale != 1.0:
        profile = profile.replace(lr=profile.lr * lr_scale)
    return SegTrainer(train_cases, val_cases, profile, device=device, num_threads=config.num_threads)


def build_site_gan_trainer(site_name: str, profile_name: str, workspace: Path | None = None) -> GanTrainer:
    """The GAN trainer of ``site_name`` on the training cases of its fixed split (validation cases stay out
    of the GAN, so synthetic pairs never carry them into segmentation training).

    Raises:
        FileNotFoundError: no site configuration, or its cache has no manifest.
    """
    config = SiteConfig.load(find_site_config(site_name, workspace))
    cache = Path(config.cache_dir)
    train_cases, _ = split_cases(cache, load_or_create_split(cache))
    logger.info("%s: GAN on %d training cases", site_name, len(train_cases))
    device = None if config.device == "auto" else config.device
    return GanTrainer(
        train_cases, get_gan_profile(profile_name), device=device, num_threads=config.num_threads
    )
