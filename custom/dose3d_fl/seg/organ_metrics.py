"""Per-organ Dice, HD95 and surface Dice with MONAI's metrics, leaving out organs a case does not delineate.

For each case and organ (:func:`score_organs`):

* **Dice**: MONAI :class:`~monai.metrics.DiceMetric`.
* **HD95** (mm): MONAI :func:`~monai.metrics.compute_hausdorff_distance` with ``percentile=95`` and the case's
  voxel spacing: the 95th percentile of the distances between the two surfaces, the larger of both
  directions.
* **Surface Dice** at a tolerance (mm): MONAI :func:`~monai.metrics.compute_surface_dice` with the spacing
  and ``class_thresholds`` = the tolerance: the share of both surfaces lying within the tolerance of the
  other (Nikolov et al. 2021, J Med Internet Res 23:e26151). The default, :data:`DEFAULT_TOLERANCE_MM` = 4 mm,
  is one voxel of the ``cpu-small`` profile: a boundary one voxel off the reference there still agrees.
  State the tolerance with every figure (:attr:`OrganMetrics.tolerance_mm` travels with the numbers).

What a value means when something is empty:

* organ unlabelled for the case: NaN for all three, left out of every mean;
* organ labelled but absent from the reference (e.g. outside a crop): NaN, as MONAI's ``ignore_empty``;
* organ in the reference, nothing predicted (a missed organ): Dice 0, surface Dice 0, HD95 ``inf``. The mean
  HD95 of an organ is over its finite values, and :meth:`OrganMetrics.summary` counts the misses apart, so a
  missed organ is never hidden: its Dice of 0 is in the mean Dice.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from monai.metrics import DiceMetric, compute_hausdorff_distance, compute_surface_dice
from monai.networks.utils import one_hot

__all__ = ["DEFAULT_TOLERANCE_MM", "OrganMetrics", "OrganScores", "score_organs"]

DEFAULT_TOLERANCE_MM = 4.0
METRICS = ("dice", "hd95", "surface_dice")


@dataclass(frozen=True)
class OrganScores:
    """Scores of a batch: ``(B, N)`` float arrays, NaN where an organ is not scored (see module doc)."""

    organs: tuple[str, ...]
    dice: np.ndarray
    hd95: np.ndarray
    surface_dice: np.ndarray
    tolerance_mm: float


def _one_hot(classes: torch.Tensor, channels: int, what: str) -> torch.Tensor:
    if classes.dim() < 3:
        raise ValueError(f"{what} has shape {tuple(classes.shape)}; expected (batch, channels, *spatial)")
    if classes.shape[1] == channels:
        return classes.float()
    if classes.shape[1] != 1:
        raise ValueError(
            f"{what} has {classes.shape[1]} channels; expected 1 (class values) or {channels} (one-hot)"
        )
    values = classes.round()
    if values.min() < 0 or values.max() > channels - 1:
        raise ValueError(f"{what} values must be 0..{channels - 1}; found {values.min():g}..{values.max():g}")
    return one_hot(values.long(), num_classes=channels, dim=1).float()


def score_organs(
    prediction: torch.Tensor,
    label: torch.Tensor,
    organs: Sequence[str],
    spacing: Sequence[float],
    labelled: torch.Tensor | np.ndarray | Sequence[Sequence[bool]] | None = None,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    distances: bool = True,
) -> OrganScores:
    """Dice, HD95 and surface Dice of each organ of each case of a batch.

    Args:
        prediction: ``(B, 1, *spatial)`` class values ``0..N`` or ``(B, 1 + N, *spatial)`` one-hot.
        label: the reference, in either form.
        organs: the N organ names, in label order (organ ``i`` is class ``i + 1``).
        spacing: voxel size in mm along the spatial axes (one for the batch: score cases of different
            grids in separate calls).
        labelled: ``(B, N)`` bool, which organs each case delineates; None: all of them.
        tolerance_mm: surface Dice tolerance.
        distances: compute HD95 and surface Dice (the surface distances, most of the time); False: Dice
            alone, HD95 and surface Dice NaN except HD95 ``inf`` for a missed organ, so misses still count.

    Returns:
        The scores, NaN where an organ is unlabelled or absent from the reference.

    Raises:
        ValueError: shapes, class values or ``labelled`` that do not fit.
    """
    channels = len(organs) + 1
    y_pred = _one_hot(torch.as_tensor(prediction), channels, "prediction")
    y = _one_hot(torch.as_tensor(label), channels, "label").to(y_pred.device)
    if y_pred.shape != y.shape:
        raise ValueError(f"prediction {tuple(y_pred.shape)} and label {tuple(y.shape)} differ in shape")
    batch = y.shape[0]
    mask = np.ones((batch, len(organs)), dtype=bool) if labelled is None else np.asarray(labelled, dtype=bool)
    if mask.shape != (batch, len(organs)):
        raise ValueError(
            f"labelled has shape {mask.shape}; expected (batch, organs) = ({batch}, {len(organs)})"
        )
    spacing = [float(s) for s in spacing]
    if len(spacing) != y.dim() - 2:
        raise ValueError(f"spacing {spacing} has {len(spacing)} values for {y.dim() - 2} spatial axes")

    dice = DiceMetric(include_background=False, reduction="none", ignore_empty=True)(y_pred, y)
    if not distances:
        hd95 = surface = torch.full_like(dice, math.nan)
    else:
        hd95, surface = _distances(y_pred, y, spacing, tolerance_mm, len(organs))
    dice, hd95, surface = (
        t.detach().double().cpu().numpy().reshape(batch, -1) for t in (dice, hd95, surface)
    )

    reference = y[:, 1:].flatten(2).any(dim=2).cpu().numpy()
    predicted = y_pred[:, 1:].flatten(2).any(dim=2).cpu().numpy()
    missed = reference & ~predicted
    hd95[missed] = math.inf
    surface[missed] = 0.0 if distances else math.nan
    dice[missed] = 0.0
    for values in (dice, hd95, surface):
        values[~mask | ~reference] = math.nan
    return OrganScores(tuple(organs), dice, hd95, surface, float(tolerance_mm))


def _distances(
    y_pred: torch.Tensor, y: torch.Tensor, spacing: list[float], tolerance_mm: float, organs: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """MONAI's HD95 and surface Dice of one-hot batches, ``(B, N)`` each."""
    with warnings.catch_warnings():
        # MONAI warns for every empty class and about an argument it passes itself; both are handled here.
        warnings.filterwarnings("ignore", message=".* is all 0", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
        hd95 = compute_hausdorff_distance(y_pred, y, include_background=False, percentile=95, spacing=spacing)
        surface = compute_surface_dice(
            y_pred, y, [tolerance_mm] * organs, include_background=False, spacing=spacing
        )
    return hd95, surface


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _json_number(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass
class OrganMetrics:
    """Per-organ scores of many cases, and their means (NaN skipped; missed organs counted).

    Args:
        organs: organ names in label order.
        tolerance_mm: the surface Dice tolerance of every score added.
    """

    organs: tuple[str, ...]
    tolerance_mm: float = DEFAULT_TOLERANCE_MM
    cases: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def add(self, scores: OrganScores, case_ids: Sequence[str]) -> None:
        """Record a batch's scores under its case ids.

        Raises:
            ValueError: scores of other organs or another tolerance, or one id per case missing.
        """
        if scores.organs != tuple(self.organs) or scores.tolerance_mm != self.tolerance_mm:
            raise ValueError(
                f"scores of {scores.organs} at {scores.tolerance_mm} mm do not fit metrics of {self.organs} "
                f"at {self.tolerance_mm} mm"
            )
        if len(case_ids) != scores.dice.shape[0]:
            raise ValueError(f"{len(case_ids)} case ids for {scores.dice.shape[0]} scored cases")
        for row, case in enumerate(case_ids):
            self.cases[case] = {
                organ: {name: float(getattr(scores, name)[row, column]) for name in METRICS}
                for column, organ in enumerate(self.organs)
            }

    def summary(self) -> dict[str, dict[str, float | int]]:
        """Organ -> ``dice``, ``hd95`` (over finite values), ``surface_dice`` means, ``cases`` scored and
        ``missed`` (in the reference, not predicted)."""
        out: dict[str, dict[str, float | int]] = {}
        for organ in self.organs:
            rows = [case[organ] for case in self.cases.values()]
            scored = [r for r in rows if not math.isnan(r["dice"])]
            out[organ] = {name: _mean([r[name] for r in scored]) for name in METRICS}
            out[organ]["cases"] = len(scored)
            out[organ]["missed"] = sum(r["hd95"] == math.inf for r in scored)
        return out

    def mean_dice(self) -> float:
        """The mean over organs of each organ's mean Dice (organs never scored left out)."""
        return _mean([values["dice"] for values in self.summary().values()])

    def to_json(self) -> dict[str, Any]:
        """Strict JSON: ``tolerance_mm``, ``organs`` (the summary) and ``cases``; NaN and inf are null."""
        return {
            "tolerance_mm": self.tolerance_mm,
            "organs": {
                organ: {k: _json_number(v) if isinstance(v, float) else v for k, v in values.items()}
                for organ, values in self.summary().items()
            },
            "cases": {
                case: {
                    organ: {name: _json_number(value) for name, value in values.items()}
                    for organ, values in organs.items()
                }
                for case, organs in self.cases.items()
            },
        }
