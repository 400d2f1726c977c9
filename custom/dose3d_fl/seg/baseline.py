"""The best single HU interval as a segmenter: the floor a model must clear.

The spleen (+45 HU) sits among organs of similar density (liver, muscle, kidneys, bowel wall), so a HU
window alone cannot find it; this baseline measures how far it gets.
"""

from __future__ import annotations

from collections.abc import Sequence

import nibabel as nib
import numpy as np

from dose3d_fl.data.cases import IMAGE, LABEL


def _interval_counts(case: dict[str, str], edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Cumulative voxel counts per HU bin (all voxels, label voxels) and the label's size."""
    image = np.asarray(nib.load(case[IMAGE]).dataobj)
    label = np.asarray(nib.load(case[LABEL]).dataobj) > 0
    all_hist, _ = np.histogram(image, bins=edges)
    label_hist, _ = np.histogram(image[label], bins=edges)
    return (
        np.concatenate([[0], np.cumsum(all_hist)]),
        np.concatenate([[0], np.cumsum(label_hist)]),
        int(label.sum()),
    )


def _dice_table(counts: tuple[np.ndarray, np.ndarray, int]) -> np.ndarray:
    """Dice of every interval ``[edges[i], edges[j])`` (entry ``[i, j]``; ``i >= j`` entries are 0)."""
    cum_all, cum_label, label_size = counts
    predicted = cum_all[None, :] - cum_all[:, None]
    overlap = cum_label[None, :] - cum_label[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(predicted > 0, 2.0 * overlap / (predicted + label_size), 0.0)
    return np.triu(dice, k=1)


def hu_threshold_baseline(
    train_cases: Sequence[dict[str, str]],
    val_cases: Sequence[dict[str, str]],
    hu_range: tuple[int, int] = (-200, 300),
    step: int = 5,
) -> dict[str, float]:
    """Choose the HU interval ``[a, b)`` with the best mean Dice on the training cases; report it on val.

    Works on the raw HU volumes at their own resolution (no resampling, no body crop): every voxel whose
    HU falls in the interval is called foreground.

    Args:
        train_cases: dicts with ``image`` and ``label`` NIfTI paths; the interval is chosen on these.
        val_cases: the same; the chosen interval is scored on these.
        hu_range: the interval's edges are searched in this range.
        step: HU step between candidate edges.

    Returns:
        ``hu_min``, ``hu_max`` (the interval), ``train_dice`` and ``val_dice`` (mean Dice over cases).
    """
    if not train_cases or not val_cases:
        raise ValueError("the HU threshold baseline needs training and validation cases")
    edges = np.arange(hu_range[0], hu_range[1] + step, step, dtype=float)
    train_table = np.mean([_dice_table(_interval_counts(case, edges)) for case in train_cases], axis=0)
    low, high = np.unravel_index(int(np.argmax(train_table)), train_table.shape)
    val_dice = np.mean([_dice_table(_interval_counts(case, edges))[low, high] for case in val_cases])
    return {
        "hu_min": float(edges[low]),
        "hu_max": float(edges[high]),
        "train_dice": float(train_table[low, high]),
        "val_dice": float(val_dice),
    }
