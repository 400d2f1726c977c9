"""PNG figures of crop pairs: a grid of synthetic samples, and real crops beside synthetic images drawn for
the same label maps (``write_comparison_grid``: what ``dose3d report`` shows).

Slices go through the organs' centre of each crop; the CT is shown in the grey levels of the GAN's own HU
window (scaled to ``[0, 1]``), with each organ's outline in orange.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from dose3d_fl.gan.label_maps import organ_labels

OUTLINE = "orange"


def _organ_centre(label_map: np.ndarray) -> tuple[int, int, int]:
    organs = np.argwhere(label_map > 1.5)
    if len(organs) == 0:
        return tuple(s // 2 for s in label_map.shape)
    return tuple(int(v) for v in organs.mean(0).round())


def _slices(pair: np.ndarray, centre: tuple[int, int, int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Axial (fixed z) and coronal (fixed y) slices of image and organ labels, oriented for ``imshow``."""
    organs = organ_labels(torch.as_tensor(pair[1]).round()).numpy()
    return {
        "axial": (pair[0][:, :, centre[2]].T, organs[:, :, centre[2]].T),
        "coronal": (pair[0][:, centre[1], :].T, organs[:, centre[1], :].T),
    }


def _draw(ax: object, image: np.ndarray, organs: np.ndarray, title: str | None = None) -> None:
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, origin="lower")
    for organ in np.unique(organs[organs > 0]):
        ax.contour(organs == organ, levels=[0.5], colors=OUTLINE, linewidths=1)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=8)


def write_sample_grid(samples: torch.Tensor, path: str | Path, max_samples: int = 16) -> Path:
    """Axial slices through the organs of up to ``max_samples`` pairs ``(N, 2, S, S, S)``."""
    shown = samples[:max_samples].float().numpy()
    cols = min(4, len(shown))
    rows = -(-len(shown) // cols)
    fig = Figure(figsize=(2.2 * cols, 2.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, pair in zip(axes.flat, shown, strict=False):
        _draw(ax, *_slices(pair, _organ_centre(pair[1]))["axial"])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Path(path)


def write_comparison_grid(real: torch.Tensor, synthetic: torch.Tensor, path: str | Path) -> Path:
    """Real crops beside synthetic images of the same label maps: one row per pair, columns real | synthetic
    on the same axial slice, then on the same coronal slice, each with the organ outline.

    Args:
        real: ``(N, 2, S, S, S)`` real crops (image in window units, label map).
        synthetic: ``(N, 2, S, S, S)`` synthetic pairs for the same label maps (``GanTrainer.generate_for``).
        path: the PNG to write.

    Raises:
        ValueError: the two sets differ in shape or label maps.
    """
    if real.shape != synthetic.shape or not torch.equal(real[:, 1].round(), synthetic[:, 1].round()):
        raise ValueError("real and synthetic crops must have the same shape and the same label maps")
    rows = len(real)
    fig = Figure(figsize=(8.8, 2.2 * rows))
    axes = fig.subplots(rows, 4, squeeze=False)
    for row, (real_pair, synthetic_pair) in enumerate(
        zip(real.float().numpy(), synthetic.float().numpy(), strict=True)
    ):
        centre = _organ_centre(real_pair[1])
        real_slices, synthetic_slices = _slices(real_pair, centre), _slices(synthetic_pair, centre)
        for col, (view, source, name) in enumerate(
            [
                ("axial", real_slices, "real"),
                ("axial", synthetic_slices, "synthetic"),
                ("coronal", real_slices, "real"),
                ("coronal", synthetic_slices, "synthetic"),
            ]
        ):
            _draw(axes[row, col], *source[view], title=f"{name}, {view}" if row == 0 else None)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Path(path)
