"""Dice-CE for multi-organ labels where some organs are not delineated for some cases (the marginal loss).

Sites delineate different organs: one contours the pancreas, another does not. Where a case leaves organ
``j`` unlabelled, its label says 0 (background) on voxels that may well be organ ``j``, so plain Dice-CE would
teach the network that the pancreas is background at that site. Two remedies are common:

* **Masked Dice and CE** (ignore the unlabelled channels' Dice, and ignore in the CE every voxel that *could*
  belong to an unlabelled organ, i.e. all background voxels): it drops the background signal of such cases.
* **Marginal loss** (Shi et al. 2021, "Marginal loss and exclusion loss for partially supervised multi-organ
  segmentation", Medical Image Analysis 70:101979): for each case, the probabilities of its unlabelled
  organs are merged into the background (``p'_0 = p_0 + sum_j p_j``), and Dice-CE is taken over the merged
  background and the labelled organs only. A background voxel then teaches "not a labelled organ" while the
  network may call it any unlabelled organ at no cost; a voxel of a labelled organ is learnt as usual.

This module implements the marginal loss with the parts of MONAI's :class:`~monai.losses.DiceCELoss`
(MONAI's :class:`~monai.losses.DiceLoss` per case and channel, and torch's cross-entropy, which DiceCELoss
also uses): the logits become the log of the merged probabilities (unlabelled channels at ``-inf``), the
softmax inside them then yields the merged probabilities and the cross-entropy ``-log p'``; the Dice of the
unlabelled channels, a constant 0 there, is left out of the mean.

When every organ is labelled the merged probabilities are the softmax itself, so the loss equals
``DiceCELoss(to_onehot_y=True, softmax=True)``, the loss ``seg/trainer.py`` uses today: with one organ
(``N = 1``, the spleen) it *is* today's binary task's loss (tests/seg/test_partial_loss.py checks both).

Shapes: logits ``(B, 1 + N, *spatial)``; label ``(B, 1, *spatial)`` with integer values ``0..N`` (0
background, ``i`` the i-th organ); labelled ``(B, N)`` bool (None: all labelled).
"""

from __future__ import annotations

import torch
from monai.losses import DiceLoss
from torch import nn

__all__ = ["MarginalDiceCELoss", "labelled_channels", "marginal_logits"]


def _check_labelled(labelled: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
    batch, organs = logits.shape[0], logits.shape[1] - 1
    if labelled is None:
        return torch.ones(batch, organs, dtype=torch.bool, device=logits.device)
    labelled = torch.as_tensor(labelled, device=logits.device)
    if labelled.shape != (batch, organs):
        raise ValueError(
            f"labelled has shape {tuple(labelled.shape)}; expected (batch, organs) = ({batch}, {organs}) for "
            f"logits of shape {tuple(logits.shape)} (background + {organs} organs)"
        )
    return labelled.to(torch.bool)


def labelled_channels(labelled: torch.Tensor) -> torch.Tensor:
    """``(B, N)`` labelled organs -> ``(B, 1 + N)`` channels that carry supervision (background always)."""
    background = torch.ones_like(labelled[:, :1], dtype=torch.bool)
    return torch.cat([background, labelled.to(torch.bool)], dim=1)


def marginal_logits(logits: torch.Tensor, labelled: torch.Tensor | None = None) -> torch.Tensor:
    """Log-probabilities with each case's unlabelled organs merged into the background.

    Channel 0 becomes ``log(p_0 + sum of p_j over unlabelled j)``, unlabelled channels ``-inf``, labelled
    channels ``log p_i``. A softmax over the result gives the merged probabilities.

    Args:
        logits: ``(B, 1 + N, *spatial)`` network output.
        labelled: ``(B, N)`` bool; None means every organ is labelled.

    Returns:
        A float32 tensor of the logits' shape (computed in float32 under mixed precision too).
    """
    labelled = _check_labelled(labelled, logits)
    log_p = torch.log_softmax(logits.float(), dim=1)
    shape = (*labelled.shape[:1], labelled.shape[1] + 1) + (1,) * (logits.dim() - 2)
    unlabelled = (~labelled_channels(labelled)).view(shape)
    merged_into_background = unlabelled.clone()
    merged_into_background[:, 0] = True
    background = torch.logsumexp(
        log_p.masked_fill(~merged_into_background, float("-inf")), dim=1, keepdim=True
    )
    organs = log_p[:, 1:].masked_fill(unlabelled[:, 1:], float("-inf"))
    return torch.cat([background, organs], dim=1)


class MarginalDiceCELoss(nn.Module):
    """Dice + cross-entropy of the merged probabilities; unlabelled organs cost nothing (see module doc).

    Args:
        lambda_dice: weight of the Dice term (MONAI's default 1).
        lambda_ce: weight of the cross-entropy term (MONAI's default 1).
        smooth_nr: Dice numerator smoothing (MONAI's default).
        smooth_dr: Dice denominator smoothing (MONAI's default).
        check_labels: refuse labels outside ``0..N`` or holding an organ that ``labelled`` marks unlabelled
            (costs one device synchronisation per step).
    """

    def __init__(
        self,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        check_labels: bool = True,
    ) -> None:
        super().__init__()
        # Dice per case and channel (DiceCELoss's settings, unreduced): the masked mean below is DiceCELoss's
        # mean when every organ is labelled.
        self.dice = DiceLoss(
            include_background=True,
            to_onehot_y=True,
            softmax=True,
            reduction="none",
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
        )
        self.cross_entropy = nn.CrossEntropyLoss()
        self.lambda_dice = lambda_dice
        self.lambda_ce = lambda_ce
        self.check_labels = check_labels

    def forward(
        self, logits: torch.Tensor, label: torch.Tensor, labelled: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The loss of a batch.

        Args:
            logits: ``(B, 1 + N, *spatial)``.
            label: ``(B, 1, *spatial)``, integer values ``0..N``.
            labelled: ``(B, N)`` bool, which organs each case delineates; None: all of them.

        Raises:
            ValueError: shapes that do not fit, or (``check_labels``) a label value out of range or of an
                organ marked unlabelled for that case.
        """
        if logits.dim() < 3 or label.shape != (logits.shape[0], 1, *logits.shape[2:]):
            raise ValueError(
                f"label has shape {tuple(label.shape)}; expected (batch, 1, *spatial) matching logits "
                f"{tuple(logits.shape)}"
            )
        labelled = _check_labelled(labelled, logits)
        if self.check_labels:
            self._check_label_values(label, labelled)
        merged = marginal_logits(logits, labelled)
        dice = self.dice(merged, label).reshape(labelled.shape[0], -1)  # (B, 1 + N)
        dice = dice[labelled_channels(labelled)].mean()
        ce = self.cross_entropy(merged, label[:, 0].long())
        return self.lambda_dice * dice + self.lambda_ce * ce

    @staticmethod
    def _check_label_values(label: torch.Tensor, labelled: torch.Tensor) -> None:
        organs = labelled.shape[1]
        low, high = int(label.min()), int(label.max())
        if low < 0 or high > organs or not torch.equal(label, label.round()):
            raise ValueError(f"label values must be integers 0..{organs}; found {low}..{high}")
        flat = label.reshape(label.shape[0], -1)
        for organ in torch.nonzero(~labelled.all(dim=0)).flatten().tolist():
            wrong = (flat == organ + 1).any(dim=1) & ~labelled[:, organ]
            if wrong.any():
                case = int(torch.nonzero(wrong)[0])
                raise ValueError(
                    f"case {case} of the batch has voxels of organ {organ + 1} in its label, which is marked "
                    "unlabelled for it; mark it labelled or remove it from the label"
                )
