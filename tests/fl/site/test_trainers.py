"""A site adds synthetic pairs to its training cases through its own configuration; the job scales its lr."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dose3d_fl.fl.site.config import SITE_CONFIG_ENV, SiteConfig, load_site_config
from dose3d_fl.fl.site.trainers import build_site_trainer, site_profile
from dose3d_fl.gan.label_maps import one_hot
from dose3d_fl.gan.network import build_gan
from dose3d_fl.gan.profiles import get_gan_profile
from dose3d_fl.gan.sampling import write_samples
from dose3d_fl.seg.profiles import get_profile
from tests.seg.cases import write_cache


def test_site_config_mixes_synthetic_pairs_into_training_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = get_gan_profile("cpu-tiny")
    label_maps = torch.ones(4, 16, 16, 16, dtype=torch.long)
    label_maps[:, 5:10, 5:10, 5:10] = 2  # a body with one organ
    with torch.no_grad():
        images = build_gan(profile)(one_hot(label_maps, profile.label_classes))
    samples = torch.cat([images, label_maps[:, None].float()], 1)
    synthetic = tmp_path / "synthetic"
    write_samples(samples, synthetic, profile, memorization=None)
    cache = write_cache(tmp_path / "site-9", 4, seed=7)
    config = SiteConfig(cache_dir=str(cache), synthetic_dir=str(synthetic), synthetic_ratio=1.0)
    monkeypatch.setenv(SITE_CONFIG_ENV, str(config.save(tmp_path / "local" / "dose3d_site.json")))

    trainer = build_site_trainer(load_site_config("site-9"), get_profile("cpu-small"))

    added = [case for case in trainer.train_cases if case["id"].startswith("synthetic-")]
    assert len(trainer.train_cases) == 6 and len(added) == 3
    assert not any(case["id"].startswith("synthetic-") for case in trainer.val_cases)


def test_the_job_scales_the_sites_learning_rate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = write_cache(tmp_path / "site-9", 2, seed=7)
    config = SiteConfig(cache_dir=str(cache))
    monkeypatch.setenv(SITE_CONFIG_ENV, str(config.save(tmp_path / "local" / "dose3d_site.json")))
    profile = get_profile("cpu-small")

    trainer = build_site_trainer(load_site_config("site-9"), site_profile("cpu-small", lr_scale=2.0))

    assert trainer.profile.lr == 2.0 * profile.lr
    assert trainer.set_progress(0.0) == pytest.approx(2.0 * profile.learning_rate(0.0))
    assert trainer.set_progress(1.0) == pytest.approx(2.0 * profile.learning_rate(1.0))
    assert not trainer.profile.incompatibilities(profile)  # same network: its weights still average


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_site_config_chooses_the_training_memory_format(
    channels_last: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = write_cache(tmp_path / "site-9", 2, seed=7)
    config = SiteConfig(cache_dir=str(cache), channels_last=channels_last)
    monkeypatch.setenv(SITE_CONFIG_ENV, str(config.save(tmp_path / "local" / "dose3d_site.json")))

    trainer = build_site_trainer(load_site_config("site-9"), get_profile("cpu-small"))

    expected = torch.channels_last_3d if channels_last else torch.contiguous_format
    assert trainer.memory_format == expected
    first_conv = next(m.weight for m in trainer.model.modules() if isinstance(m, torch.nn.Conv3d))
    assert first_conv.is_contiguous(memory_format=expected)


@pytest.mark.parametrize("cpu_bfloat16", [False, True])
def test_the_site_config_chooses_bfloat16_training(
    cpu_bfloat16: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = write_cache(tmp_path / "site-9", 2, seed=7)
    config = SiteConfig(cache_dir=str(cache), device="cpu", cpu_bfloat16=cpu_bfloat16)
    monkeypatch.setenv(SITE_CONFIG_ENV, str(config.save(tmp_path / "local" / "dose3d_site.json")))

    trainer = build_site_trainer(load_site_config("site-9"), get_profile("cpu-small"))

    assert trainer.cpu_bfloat16 is cpu_bfloat16
