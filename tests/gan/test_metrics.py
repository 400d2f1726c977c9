"""Quality metrics and per-tissue HU statistics on real anatomy (the synthetic hospital)."""

from __future__ import annotations

import math

import torch

from dose3d_fl.gan.memorization import MemorizationCheck
from dose3d_fl.gan.metrics import quality_metrics
from dose3d_fl.gan.tissue import HU_TOLERANCE, TISSUES, tissue_agreement, tissue_statistics
from dose3d_fl.gan.trainer import GanTrainer
from tests.gan.conftest import DEMO

NO_CHECK = MemorizationCheck(torch.zeros(0, 48, 48, 48), 1.0)


def test_metrics_separate_real_crops_from_an_untrained_generator(demo_trainer: GanTrainer) -> None:
    real = demo_trainer.reference
    untrained = quality_metrics(demo_trainer.generate(4, seed=0), real, DEMO, NO_CHECK)
    as_samples = quality_metrics(real[-4:], real, DEMO, NO_CHECK)
    assert all(isinstance(v, float) for v in untrained.values())
    assert (
        as_samples["mmd"] < untrained["mmd"] and as_samples["tissue_hu_error"] < untrained["tissue_hu_error"]
    )
    assert untrained["label_ok"] == as_samples["label_ok"] == 1.0  # the labels are the input
    # Training crops themselves are all caught by the site's check: counted, and no other metric is read.
    copies = quality_metrics(real[:3], real, DEMO, demo_trainer.memorization)
    assert copies["dropped_memorized"] == 3 and copies["best_ncc"] > 0.99 and math.isnan(copies["mmd"])


def test_tissue_hu_of_real_crops_is_anatomy(demo_trainer: GanTrainer) -> None:
    stats = tissue_statistics(demo_trainer.reference, DEMO)
    assert set(stats) == set(TISSUES)
    assert -130 < stats["fat"]["mean_hu"] < -70 and 20 < stats["muscle"]["mean_hu"] < 70
    assert 20 < stats["organ"]["mean_hu"] < 70 and stats["bone"]["mean_hu"] > 250
    assert abs(sum(s["share"] for s in stats.values()) - 1.0) < 0.3  # the body is mostly these four
    half = len(demo_trainer.reference) // 2
    agreement = tissue_agreement(
        tissue_statistics(demo_trainer.reference[:half], DEMO),
        tissue_statistics(demo_trainer.reference[half:], DEMO),
    )
    assert all(a["within_tolerance"] for a in agreement.values()), agreement
    flat = demo_trainer.reference[:4].clone()
    flat[:, 0] = 0.5  # every voxel 100 HU: no fat, no bone
    off = tissue_agreement(tissue_statistics(flat, DEMO), stats)
    assert not off["organ"]["within_tolerance"] and abs(off["organ"]["hu_difference"]) > HU_TOLERANCE["organ"]
