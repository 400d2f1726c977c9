"""Quality metrics and the memorization filter on real crops of a tiny site cache."""

from __future__ import annotations

import math

import torch

from dose3d_fl.gan.metrics import (
    MemorizationFilter,
    OrganVolumeRange,
    label_is_plausible,
    quality_metrics,
)
from dose3d_fl.gan.trainer import GanTrainer
from tests.gan.conftest import TINY


def test_memorization_filter_drops_an_exact_copy_of_a_training_crop(tiny_trainer: GanTrainer) -> None:
    reference = tiny_trainer.reference
    fresh = tiny_trainer.generate(3, seed=1)
    samples = torch.cat([fresh, reference[:1].clone()])
    kept, dropped = tiny_trainer.memorization.keep(samples)
    assert dropped == 1 and len(kept) == 3
    assert not any(torch.equal(k, reference[0]) for k in kept)
    # A copy shifted by noise well above the threshold is no copy.
    noisy = (reference[:1] + 0.2 * torch.rand_like(reference[:1])).clamp(0, 1)
    assert MemorizationFilter(reference, TINY.memorization_threshold).keep(noisy)[1] == 0


def test_metrics_separate_real_crops_from_an_untrained_generator(tiny_trainer: GanTrainer) -> None:
    real = tiny_trainer.reference
    untrained = quality_metrics(
        tiny_trainer.generate(6, seed=0), real, TINY, MemorizationFilter(real[:0], 0.0)
    )
    # Real crops measured as if they were samples (no memorization filter): small MMD, all labels plausible.
    as_samples = quality_metrics(real[-6:], real, TINY, MemorizationFilter(real[:0], 0.0))
    assert all(isinstance(v, float) for v in untrained.values())
    assert as_samples["mmd"] < untrained["mmd"]
    assert as_samples["label_ok"] == 1.0
    assert math.isfinite(untrained["diversity"]) and 0 <= untrained["label_ok"] <= 1
    # Every real crop copied: all dropped, counted, and the other metrics are NaN rather than misleading.
    copies = quality_metrics(real[:4], real, TINY, tiny_trainer.memorization)
    assert copies["dropped_memorized"] == 4 and math.isnan(copies["mmd"])


def test_label_sanity_wants_one_component_of_plausible_volume() -> None:
    volumes = OrganVolumeRange(10, 100)
    mask = torch.zeros(16, 16, 16)
    mask[4:8, 4:8, 4:8] = 1  # 64 voxels, one component
    assert label_is_plausible(mask, volumes)
    two = mask.clone()
    two[12:14, 12:14, 12:14] = 1
    assert not label_is_plausible(two, volumes)
    assert not label_is_plausible(torch.zeros(16, 16, 16), volumes)
