"""Per-organ figures of a federated run, from what the sites reported: the union over their validation cases.

Each site reports, per organ of the job, its mean Dice, HD95 and surface Dice over the validation cases that
delineate the organ, and how many cases that is (``val_dice_<organ>``, ``val_hd95_<organ>``,
``val_surface_dice_<organ>``, ``val_cases_<organ>``; ``fl/site/seg_client.py``). The union figure of an organ
is the mean of the sites' means weighted by those counts: for Dice and surface Dice it is the mean over the
union of the sites' cases; for HD95, a mean over finite values per site, it is a close approximation (a case
whose organ was missed has no finite HD95 but counts in the weight).
"""

from __future__ import annotations

import math
from typing import Any

from dose3d_fl.fl.policy.metrics import SEG_ORGAN_METRICS

__all__ = ["format_organ_table", "organ_union", "round_organ_dice"]

_DICE, _HD95, _SURFACE, _CASES = SEG_ORGAN_METRICS


def _organs(site_metrics: dict[str, dict[str, Any]]) -> list[str]:
    prefix = f"{_CASES}_"
    return list(
        dict.fromkeys(
            name.removeprefix(prefix)
            for metrics in site_metrics.values()
            for name in metrics
            if name.startswith(prefix)
        )
    )


def organ_union(site_metrics: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | int]]:
    """Organ -> ``dice``, ``hd95`` (mm), ``surface_dice`` over the union of the sites' cases, and ``cases``.

    Args:
        site_metrics: site -> the metrics it reported for one model (a round's train result or a cross-site
            validation).
    """
    out: dict[str, dict[str, float | int]] = {}
    site_metrics = dict(sorted(site_metrics.items()))  # sums in site order, not in the order sites answered
    for organ in _organs(site_metrics):
        values: dict[str, float | int] = {}
        cases = {site: int(m.get(f"{_CASES}_{organ}") or 0) for site, m in site_metrics.items()}
        for key, metric in (("dice", _DICE), ("hd95", _HD95), ("surface_dice", _SURFACE)):
            pairs = [
                (float(m[f"{metric}_{organ}"]), cases[site])
                for site, m in site_metrics.items()
                if cases[site]
                and isinstance(m.get(f"{metric}_{organ}"), (int, float))
                and math.isfinite(float(m[f"{metric}_{organ}"]))
            ]
            weight = sum(n for _, n in pairs)
            values[key] = sum(v * n for v, n in pairs) / weight if weight else math.nan
        values["cases"] = sum(cases.values())
        out[organ] = values
    return out


def round_organ_dice(
    site_metrics_per_round: list[dict[str, dict[str, Any]]],
    final: dict[str, dict[str, float | int]] | None = None,
) -> dict[str, list[float]]:
    """Organ -> the union Dice of each round's received model, then of ``final`` (an ``organ_union`` of the
    final model's cross-site evaluation) when given."""
    unions = [organ_union(metrics) for metrics in site_metrics_per_round] + ([final] if final else [])
    organs = list(dict.fromkeys(organ for union in unions for organ in union))
    return {organ: [union.get(organ, {}).get("dice", math.nan) for union in unions] for organ in organs}


def format_organ_table(
    union: dict[str, dict[str, float | int]], tolerance_mm: float, model: str = "final global model"
) -> list[str]:
    """Lines of a plain-text table: per organ, cases, Dice, HD95 and surface Dice (empty for <= 1 organ);
    ``model`` names the model scored in the caption."""
    if len(union) <= 1:
        return []
    lines = [
        "",
        f"{model} per organ (union of the sites' validation cases that delineate it; surface Dice "
        f"at {tolerance_mm:g} mm)",
        f"{'organ':<12} {'cases':>5} {'Dice':>7} {'HD95 mm':>8} {'surface Dice':>12}",
    ]
    for organ, values in union.items():
        lines.append(
            f"{organ:<12} {values['cases']:>5} {values['dice']:>7.4f} {values['hd95']:>8.1f} "
            f"{values['surface_dice']:>12.4f}"
        )
    return lines
