"""The report's figures (matplotlib, no display needed): Dice per round and the cross-site Dice heatmap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dose3d_fl.report.run_metrics import CrossSiteDice, RoundDice, model_label


def plot_dice_per_round(
    rounds: RoundDice,
    path: Path,
    final: dict[str, float] | None = None,
    union: tuple[list[int], list[float], str] | None = None,
) -> Path:
    """Line plot of each site's Dice of the global model against the number of aggregated rounds.

    Args:
        rounds: per-round Dice reported by the sites.
        path: PNG to write.
        final: Dice of the final global model per site (cross-site evaluation), drawn after the last round.
        union: ``(rounds, dice, label)`` of the global Dice line (e.g. the simulator summary's).
    """
    figure = Figure(figsize=(7.5, 4.2), dpi=100)
    ax = figure.subplots()
    last = (rounds.rounds[-1] + 1) if rounds.rounds else 0
    for site, values in sorted(rounds.sites.items()):
        xs = [r for r, v in zip(rounds.rounds, values, strict=True) if v is not None]
        ys = [v for v in values if v is not None]
        if final and site in final:
            xs, ys = [*xs, last], [*ys, final[site]]
        ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.2, label=site)
    if union is not None:
        xs, ys, label = union
        ax.plot(xs, ys, color="black", linewidth=2.2, marker="s", markersize=4, label=label)
    ax.set_xlabel("FedAvg rounds aggregated into the global model")
    ax.set_ylabel("validation Dice")
    ax.set_ylim(0, 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    return path


def colour_range(values: np.ndarray) -> tuple[float, float]:
    """The heatmap's colour scale: the data's own range, so differences of a few hundredths show.

    A matrix of one value gets a scale of +-0.01 around it; NaN cells (not evaluated) are ignored.
    """
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    return (low - 0.01, high + 0.01) if high - low < 1e-9 else (low, high)


def plot_cross_site(cross: CrossSiteDice, path: Path) -> tuple[float, float]:
    """Heatmap of Dice: rows are the sites whose validation data score, columns the models scored.

    The colours span the data's range (:func:`colour_range`), not 0..1, and every cell prints its value.

    Returns:
        The colour scale's ``(low, high)``.
    """
    sites, models = cross.sites, cross.models
    values = np.array([[cross.dice[s].get(m, np.nan) for m in models] for s in sites], dtype=float)
    low, high = colour_range(values)
    figure = Figure(figsize=(2.0 + 1.3 * len(models), 1.2 + 0.6 * len(sites)), dpi=100)
    ax = figure.subplots()
    image = ax.imshow(values, cmap="viridis", vmin=low, vmax=high, aspect="auto")
    for (row, col), value in np.ndenumerate(values):
        if not np.isnan(value):
            bright = (value - low) / (high - low) > 0.6  # viridis turns yellow-green: dark text reads there
            ax.text(
                col,
                row,
                f"{value:.3f}",
                ha="center",
                va="center",
                fontsize=9,
                color="black" if bright else "white",
            )
    ax.set_xticks(range(len(models)), [model_label(m) for m in models], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(sites)), [f"{s} data" for s in sites], fontsize=8)
    figure.colorbar(image, ax=ax, label=f"Dice (scale {low:.3f} to {high:.3f})")
    figure.tight_layout()
    figure.savefig(path)
    return low, high
