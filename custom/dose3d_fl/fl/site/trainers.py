"""Build a site's segmentation or GAN trainer from the configuration the site owns.

A client script reads its :class:`~dose3d_fl.fl.site.config.SiteConfig` once (``load_site_config``) and
resolves the job's profile once (:func:`site_profile`); both are handed down from there.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from dose3d_fl.data.split import load_or_create_split, split_cases
from dose3d_fl.fl.site.config import SiteConfig, load_site_config
from dose3d_fl.gan.profiles import GanProfile
from dose3d_fl.gan.trainer import GanTrainer
from dose3d_fl.seg.profiles import SegProfile, get_profile
from dose3d_fl.seg.synthetic import SyntheticMix, mix_training_cases
from dose3d_fl.seg.trainer import SegTrainer

logger = logging.getLogger(__name__)


def site_state_folder(site_name: str, workspace: Path | None = None) -> Path:
    """Where ``site_name`` keeps its local training state: ``fl_state`` in its cache folder (site-owned)."""
    return load_site_config(site_name, workspace).state_dir


def site_profile(
    profile_name: str, lr_scale: float = 1.0, organs: Sequence[str] | None = None, seed: int | None = None
) -> SegProfile:
    """The job's segmentation profile, with the job's factor on its learning rate (its whole schedule), the
    job's organs (None or empty: the profile's) and the job's training seed (None: the profile's)."""
    profile = get_profile(profile_name, organs, seed)
    return profile.replace(lr=profile.lr * lr_scale) if lr_scale != 1.0 else profile


def build_site_trainer(config: SiteConfig, profile: SegProfile, site_name: str = "site") -> SegTrainer:
    """The segmentation trainer on the site's own cached cases and fixed train/val split, read in the order
    of the profile's organs (an organ a case does not delineate is unlabelled, ``dose3d_fl.data.cases``).

    Args:
        config: the site's configuration (``load_site_config``).
        profile: the job's profile (``site_profile``).
        site_name: for the log line.

    The site's own ``synthetic_dir`` / ``synthetic_ratio`` add synthetic pairs to its training cases.

    Raises:
        FileNotFoundError: the site's cache has no manifest.
    """
    cache = Path(config.cache_dir)
    train_cases, val_cases = split_cases(cache, load_or_create_split(cache), profile.organs)
    if config.synthetic_dir:
        mix = SyntheticMix(Path(config.synthetic_dir), config.synthetic_ratio)
        train_cases = mix_training_cases(train_cases, mix)
    logger.info("%s: %d training and %d validation cases", site_name, len(train_cases), len(val_cases))
    return SegTrainer(
        train_cases,
        val_cases,
        profile,
        device=config.torch_device,
        num_threads=config.num_threads,
        channels_last=config.channels_last,
        cpu_bfloat16=config.cpu_bfloat16,
    )


def build_site_gan_trainer(config: SiteConfig, profile: GanProfile, site_name: str = "site") -> GanTrainer:
    """The GAN trainer on the training cases of the site's fixed split (validation cases stay out of the GAN,
    so synthetic pairs never carry them into segmentation training).

    Raises:
        FileNotFoundError: the site's cache has no manifest.
    """
    cache = Path(config.cache_dir)
    train_cases, _ = split_cases(cache, load_or_create_split(cache))
    logger.info("%s: GAN on %d training cases", site_name, len(train_cases))
    return GanTrainer(train_cases, profile, device=config.torch_device, num_threads=config.num_threads)
