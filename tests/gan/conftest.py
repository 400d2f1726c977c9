"""Site caches and a GAN trainer shared by the GAN tests.

``tiny_cache``: 4 tiny phantom cases (``tests.seg.cases``), for the networks, trainer and commands.
``demo_cache``: 3 patients of the real synthetic hospital (``dose3d_fl.synth``, one scanner) ingested with the
real ingestion, for the checks that need anatomy: memorisation, tissue HU, label deformation.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dose3d_fl.data.ingest import ingest_site
from dose3d_fl.data.split import load_or_create_split, split_cases
from dose3d_fl.gan.profiles import get_gan_profile
from dose3d_fl.gan.trainer import GanTrainer
from dose3d_fl.synth.hospital import synthesize_federation
from tests.seg.cases import write_cache

TINY = get_gan_profile("cpu-tiny")
# The demo's crop and grid (48^3 at 4 mm) with tiny networks: real anatomy, seconds per test.
DEMO = get_gan_profile("cpu-small").replace(
    name="demo-test",
    generator_channels=(8, 4, 4),
    spade_channels=4,
    output_channels=4,
    discriminator_channels=4,
)


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site cache of 4 tiny phantom cases (24x24x16 voxels at 4 mm, one organ each)."""
    return write_cache(tmp_path_factory.mktemp("gan_cache"), 4, seed=3)


@pytest.fixture
def tiny_trainer(tiny_cache: Path) -> GanTrainer:
    train, _ = split_cases(tiny_cache, load_or_create_split(tiny_cache))
    return GanTrainer(train, TINY, device="cpu", num_threads=1)


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One site of the synthetic hospital, 3 patients (2 training, 1 validation), ingested."""
    root = tmp_path_factory.mktemp("demo")
    (site,) = synthesize_federation(root / "dicom", [3], seed=11, workers=1)
    cache = root / "cache" / "site-1"
    ingest_site(site, cache)
    return cache


@pytest.fixture(scope="session")
def demo_trainer(demo_cache: Path) -> GanTrainer:
    train, _ = split_cases(demo_cache, load_or_create_split(demo_cache))
    return GanTrainer(train, DEMO, device="cpu", num_threads=2)
