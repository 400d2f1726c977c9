"""Marginal Dice-CE: today's DiceCELoss when all is labelled; unlabelled organs cost nothing; it trains."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DiceCELoss

from dose3d_fl.seg.partial_loss import MarginalDiceCELoss, labelled_channels, marginal_logits
from tests.seg.partial_training import train_partially_labelled


def _batch(organs: int, batch: int = 3, size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, organs + 1, size, size, size, generator=generator)
    label = torch.randint(0, organs + 1, (batch, 1, size, size, size), generator=generator)
    return logits, label


@pytest.mark.parametrize("organs", [1, 3, 7])
def test_all_labelled_equals_monai_dice_ce(organs: int) -> None:
    # With one organ this is the binary spleen task and the loss seg/trainer.py builds today.
    logits, label = _batch(organs)
    today = DiceCELoss(to_onehot_y=True, softmax=True)(logits, label.float())
    ours = MarginalDiceCELoss()
    torch.testing.assert_close(ours(logits, label.float()), today)
    everything = torch.ones(logits.shape[0], organs, dtype=torch.bool)
    torch.testing.assert_close(ours(logits, label, everything), today)
    weighted = MarginalDiceCELoss(lambda_dice=0.3, lambda_ce=2.0)(logits, label)
    torch.testing.assert_close(
        weighted, DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=0.3, lambda_ce=2.0)(logits, label)
    )


def _without(label: torch.Tensor, case: int, organ: int) -> torch.Tensor:
    label = label.clone()
    label[case][label[case] == organ] = 0
    return label


def test_an_unlabelled_organ_predicted_anywhere_costs_nothing() -> None:
    logits, label = _batch(3)
    label = _without(label, 0, 2)  # case 0 does not delineate organ 2
    # A network that has learnt the label: every voxel confidently its labelled class.
    logits = logits + 4.0 * torch.nn.functional.one_hot(label[:, 0], 4).permute(0, 4, 1, 2, 3)
    labelled = torch.tensor([[True, False, True], [True, True, True], [True, True, True]])
    loss = MarginalDiceCELoss()
    before = loss(logits, label, labelled)
    # Swap background and organ 2 wherever case 0's label says background: it now predicts organ 2 in place of
    # background and background in place of organ 2.
    swapped = logits.clone()
    where = (label[0, 0] == 0).expand(1, *label.shape[2:])
    channel0, channel2 = logits[0, 0].clone(), logits[0, 2].clone()
    swapped[0, 0] = torch.where(where[0], channel2, channel0)
    swapped[0, 2] = torch.where(where[0], channel0, channel2)
    torch.testing.assert_close(loss(swapped, label, labelled), before)
    # The same swap costs a loss that believes the label (organ 2 labelled: background there is the truth).
    plain = DiceCELoss(to_onehot_y=True, softmax=True)
    assert abs(float(plain(swapped, label) - plain(logits, label))) > 0.5
    everything = torch.ones_like(labelled)
    assert abs(float(loss(swapped, label, everything) - loss(logits, label, everything))) > 0.5


def test_any_split_between_background_and_unlabelled_organs_is_the_same_loss() -> None:
    logits, label = _batch(3, seed=1)
    for case, organ in ((0, 1), (0, 3), (2, 3)):
        label = _without(label, case, organ)
    labelled = torch.tensor([[False, True, False], [True, True, True], [True, True, False]])
    loss = MarginalDiceCELoss()
    generator = torch.Generator().manual_seed(2)
    # Re-share, voxel by voxel, the probability of background + unlabelled organs among them (sum unchanged).
    shared = logits.clone()
    for case, flags in enumerate(labelled):
        channels = [0] + [i + 1 for i, known in enumerate(flags) if not known]
        if len(channels) == 1:
            continue
        total = torch.logsumexp(logits[case, channels], dim=0)
        weights = torch.rand(len(channels), *logits.shape[2:], generator=generator) + 0.01
        shared[case, channels] = total + torch.log(weights / weights.sum(dim=0))
    torch.testing.assert_close(loss(shared, label, labelled), loss(logits, label, labelled))


def test_merged_probabilities_and_gradients() -> None:
    logits, label = _batch(2, batch=2)
    labelled = torch.tensor([[True, False], [False, False]])
    merged = marginal_logits(logits, labelled)
    p = torch.softmax(logits, dim=1)
    torch.testing.assert_close(
        merged[0].exp(), torch.stack([p[0, 0] + p[0, 2], p[0, 1], torch.zeros_like(p[0, 1])])
    )
    torch.testing.assert_close(merged[1, 0].exp(), torch.ones_like(p[1, 0]))
    assert labelled_channels(labelled).tolist() == [[True, True, False], [True, False, False]]
    logits.requires_grad_(True)
    label = _without(_without(label, 0, 2), 1, 1)
    label = _without(label, 1, 2)
    MarginalDiceCELoss()(logits, label, labelled).backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            "unlabelled voxels",
            "case 0 of the batch has voxels of organ 2 in its label, which is marked unlabelled",
        ),
        ("out of range", r"label values must be integers 0..2; found 0..3"),
        ("labelled shape", r"labelled has shape \(2, 3\); expected \(batch, organs\) = \(2, 2\)"),
        ("label shape", r"label has shape \(2, 2, 8, 8, 8\); expected \(batch, 1, \*spatial\)"),
    ],
)
def test_labels_that_contradict_the_flags_are_refused(change: str, reason: str) -> None:
    logits, label = _batch(2, batch=2)
    label[:, :, 0, 0, 0] = 2
    labelled = torch.tensor([[True, False], [True, True]])
    if change == "out of range":
        label[1, 0, 1, 1, 1] = 3
        labelled = torch.ones(2, 2, dtype=torch.bool)
    elif change == "labelled shape":
        labelled = torch.ones(2, 3, dtype=torch.bool)
    elif change == "label shape":
        label = label.expand(2, 2, 8, 8, 8)
    with pytest.raises(ValueError, match=reason):
        MarginalDiceCELoss()(logits, label, labelled)


def test_a_unet_learns_three_organs_from_partial_labels() -> None:
    torch.set_num_threads(1)
    run = train_partially_labelled(steps=16, size=32)
    assert run.mean_loss(first=False, steps=4) < 0.8 * run.mean_loss(first=True, steps=4), run.losses
