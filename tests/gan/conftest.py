"""A tiny site cache and a GAN trainer on it, shared by the GAN tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from dose3d_fl.data.split import load_or_create_split, split_cases
from dose3d_fl.gan.profiles import get_gan_profile
from dose3d_fl.gan.trainer import GanTrainer
from tests.seg.cases import write_cache

TINY = get_gan_profile("cpu-tiny")


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site cache of 4 tiny phantom cases (24x24x16 voxels at 4 mm, one organ each)."""
    return write_cache(tmp_path_factory.mktemp("gan_cache"), 4, seed=3)


@pytest.fixture
def tiny_trainer(tiny_cache: Path) -> GanTrainer:
    train, _ = split_cases(tiny_cache, load_or_create_split(tiny_cache))
    return GanTrainer(train, TINY, device="cpu", num_threads=1)
