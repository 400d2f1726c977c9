"""Synthetic pairs from the GAN's sampler as extra segmentation training cases, with a mixing ratio."""

from __future__ import annotations

from pathlib import Path

import pytest

from dose3d_fl.data.split import load_or_create_split, split_cases
from dose3d_fl.gan.sampling import write_samples
from dose3d_fl.gan.trainer import GanTrainer
from dose3d_fl.seg.synthetic import SyntheticMix, mix_training_cases, synthetic_cases
from dose3d_fl.seg.training_run import train_on_caches
from tests.gan.conftest import TINY
from tests.seg.cases import TINY_PROFILE, write_cache


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four pairs written by the GAN sampler from a generator trained for one epoch on a tiny cache."""
    cache = write_cache(tmp_path_factory.mktemp("real"), 4, seed=5)
    train, _ = split_cases(cache, load_or_create_split(cache))
    trainer = GanTrainer(train, TINY, device="cpu", num_threads=1)
    trainer.train_epochs(1)
    out = tmp_path_factory.mktemp("synthetic")
    write_samples(trainer.generate(4, seed=0), out, TINY, memorization=None)
    return out


def test_mixing_ratio_adds_synthetic_cases_per_real_case(synthetic_dir: Path) -> None:
    real = [{"id": f"r{i}", "image": "i", "label": "l"} for i in range(4)]
    mixed = mix_training_cases(real, SyntheticMix(synthetic_dir, ratio=0.5))
    assert mixed[:4] == real and len(mixed) == 6 and all(c["id"].startswith("synthetic-") for c in mixed[4:])
    assert len(mix_training_cases(real, SyntheticMix(synthetic_dir, only=True))) == 4
    with pytest.raises(ValueError, match="dose3d gan sample --n 8"):
        mix_training_cases(real, SyntheticMix(synthetic_dir, ratio=2.0))
    with pytest.raises(FileNotFoundError, match="dose3d gan sample"):
        synthetic_cases(synthetic_dir / "missing")


def test_segmentation_trains_on_synthetic_pairs_and_validates_on_real(
    synthetic_dir: Path, tmp_path: Path
) -> None:
    cache = write_cache(tmp_path / "site", 4, seed=6)
    metrics = train_on_caches(
        [cache],
        tmp_path / "out",
        TINY_PROFILE,
        1,
        show_progress=False,
        synthetic=SyntheticMix(synthetic_dir, 1.0),
    )
    assert metrics["synthetic_cases"] == 3 and metrics["train_cases"] == {"site": 3}
    assert metrics["val_cases"] == {"site": 1}
    only = train_on_caches(
        [cache],
        tmp_path / "tstr",
        TINY_PROFILE,
        1,
        show_progress=False,
        synthetic=SyntheticMix(synthetic_dir, only=True),
    )
    assert only["synthetic_cases"] == 4 and only["train_cases"] == {"site": 0}
