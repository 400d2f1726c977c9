"""A site adds synthetic pairs to its segmentation training cases through its own configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dose3d_fl.fl.site_config import SITE_CONFIG_ENV, SiteConfig
from dose3d_fl.fl.site_trainer import build_site_trainer
from dose3d_fl.gan.network import build_gan
from dose3d_fl.gan.profiles import get_gan_profile
from dose3d_fl.gan.sampling import write_samples
from tests.seg.cases import write_cache


def test_site_config_mixes_synthetic_pairs_into_training_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = get_gan_profile("cpu-tiny")
    with torch.no_grad():
        samples = build_gan(profile)(torch.randn(4, profile.latent_dim))
    synthetic = tmp_path / "synthetic"
    write_samples(samples, synthetic, profile, memorization=None)
    cache = write_cache(tmp_path / "site-9", 4, seed=7)
    config = SiteConfig(cache_dir=str(cache), synthetic_dir=str(synthetic), synthetic_ratio=1.0)
    monkeypatch.setenv(SITE_CONFIG_ENV, str(config.save(tmp_path / "local" / "dose3d_site.json")))

    trainer = build_site_trainer("site-9", "cpu-small")

    added = [case for case in trainer.train_cases if case["id"].startswith("synthetic-")]
    assert len(trainer.train_cases) == 6 and len(added) == 3
    assert not any(case["id"].startswith("synthetic-") for case in trainer.val_cases)
