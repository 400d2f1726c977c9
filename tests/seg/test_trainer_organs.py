"""The one trainer with several organs, on real synthetic sites that name and delineate them differently.

The single-spleen task is the one-organ case of the same trainer (tests/seg/test_trainer.py); here a task of
three organs: a ROI mapped by the site's roi_names.json trains, an organ a case does not delineate stays
unlabelled (not background) from the cache to the loss, and validation scores each organ where delineated.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dose3d_fl.data.cases import IMAGE, LABEL, LABELLED, load_site_cases
from dose3d_fl.data.manifest import Manifest
from dose3d_fl.seg.checkpoint import load_checkpoint
from dose3d_fl.seg.network import build_network
from dose3d_fl.seg.profiles import get_profile
from dose3d_fl.seg.trainer import SegTrainer
from dose3d_fl.seg.training_run import METRICS_NAME, MODEL_NAME, train_on_caches
from tests.seg.organ_sites import ORGANS, organ_sites

pytestmark = pytest.mark.slow

PROFILE = get_profile().replace(organs=ORGANS)


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return organ_sites(tmp_path_factory.mktemp("organ_sites"))


def _delineated(cache: Path) -> dict[str, list[str]]:
    manifest = Manifest.load(cache)
    return {case.id: manifest.case_organs(case) for case in manifest.cases}


def test_a_roi_mapped_by_the_site_file_trains(sites: list[Path]) -> None:
    manifest = Manifest.load(sites[1])
    assert manifest.roi_names_file.endswith("site-2/roi_names.json") and not manifest.unmapped_rois
    assert any(case.rois.get("Pancreas") == "PANC" for case in manifest.cases)

    _, site2 = load_site_cases(sites, organs=ORGANS)
    delineated = _delineated(sites[1])
    for case in site2.train + site2.val:
        assert case[LABELLED].tolist() == [organ in delineated[case["id"]] for organ in ORGANS]
    trainer = SegTrainer(site2.train, site2.val, PROFILE, num_threads=1, show_progress=False)
    seen = set()
    for batch in trainer.train_loader:
        rows = batch[LABELLED]
        assert rows.shape == (batch[IMAGE].shape[0], 3) and rows.dtype == torch.bool
        for row, label in zip(rows, batch[LABEL], strict=True):
            present = {int(v) for v in label.unique()}
            assert present <= {0} | {
                i + 1 for i, known in enumerate(row) if known
            }  # never an unlabelled organ
            seen |= present
    assert 3 in seen  # pancreas voxels (through PANC) reach the training crops
    trainer.model.train()
    loss = trainer.train_step(batch[IMAGE], batch[LABEL], labelled=batch[LABELLED])
    assert math.isfinite(loss)


def test_an_organ_a_case_lacks_is_unlabelled_from_the_cache_to_the_loss(sites: list[Path]) -> None:
    """Site 2's third patient has no liver drawn: its label says 0 where the liver is. The loss the trainer
    uses is the same whether the network calls those voxels liver or background; plain Dice-CE is not."""
    _, site2 = load_site_cases(sites, organs=ORGANS)
    lacking = [c for c in site2.train + site2.val if not c[LABELLED][1]]
    assert len(lacking) == 1
    trainer = SegTrainer(lacking, lacking, PROFILE, num_threads=1, show_progress=False)
    batch = next(iter(trainer.train_loader))
    label, labelled = batch[LABEL], batch[LABELLED]
    assert labelled[:, 1].logical_not().all() and not (label == 2).any()

    def logits(background_channel: int) -> torch.Tensor:
        # Confident predictions: the delineated organs right, every background voxel in one channel.
        out = torch.zeros(label.shape[0], 4, *label.shape[2:])
        for value, channel in ((0, background_channel), (1, 1), (3, 3)):
            out[:, channel] += 8.0 * (label[:, 0] == value)
        return out

    as_background, as_liver = logits(0), logits(2)  # channel 2 is the liver
    marginal = [float(trainer.loss_fn(logits, label, labelled)) for logits in (as_background, as_liver)]
    assert marginal[0] == pytest.approx(marginal[1], abs=1e-5)
    plain = [float(trainer.loss_fn(logits, label)) for logits in (as_background, as_liver)]
    assert plain[1] > plain[0] + 0.5


def test_central_training_scores_each_organ_where_delineated(sites: list[Path], tmp_path: Path) -> None:
    metrics = train_on_caches(sites, tmp_path, PROFILE, epochs=1, show_progress=False)

    assert list(metrics["organs"]) == list(ORGANS) and metrics["tolerance_mm"] == 4.0
    val = {c["id"] for s in load_site_cases(sites, organs=ORGANS) for c in s.val}
    delineated = {**_delineated(sites[0]), **_delineated(sites[1])}
    for organ in ORGANS:
        scored = metrics["organs"][organ]
        assert scored["cases"] == sum(organ in delineated[case] for case in val)
        assert set(scored) == {"dice", "hd95", "surface_dice", "cases", "missed"}
    for case, organs in metrics["organ_metrics"]["cases"].items():
        for organ, values in organs.items():
            if organ not in delineated[case]:
                assert values == {"dice": None, "hd95": None, "surface_dice": None}
    assert set(metrics["site_organ_dice"]) == {"site-1", "site-2"}
    assert math.isfinite(metrics["history"][-1]["loss"])
    written = json.loads((tmp_path / METRICS_NAME).read_text())
    assert written["organs"].keys() == metrics["organs"].keys()
    checkpoint = load_checkpoint(tmp_path / MODEL_NAME)
    assert checkpoint.profile.organs == ORGANS and checkpoint.profile.out_channels == 4
    network = build_network(checkpoint.profile)
    network.load_state_dict(checkpoint.model)  # the weights are a four-class network's
    assert network.eval()(torch.zeros(1, 1, 48, 48, 48)).shape[1] == 4
