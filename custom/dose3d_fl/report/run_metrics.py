"""Read the Dice figures a federated run wrote: per round and site, cross-site, and the simulator summary.

Conventions of the ``seg_fedavg`` job: in ``round_metrics.jsonl``, the ``val_dice`` a site reports in round
``r`` is the Dice of the global model it received, i.e. after ``r`` aggregations (round 0: the initial
model); cross-site evaluation scores the final global model (after every round) and each site's own model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

KEY_METRIC = "val_dice"
FINAL_GLOBAL = "SRV_FL_global_model.pt"


@dataclass
class RoundDice:
    """Dice of the global model after each number of aggregated rounds.

    Attributes:
        rounds: round numbers ``r`` (model after ``r`` aggregations).
        sites: site -> Dice per entry of ``rounds`` (``None`` where the site did not report).
        aggregated: NVFlare's aggregate of the sites' Dice per round (weighted by training steps).
    """

    rounds: list[int] = field(default_factory=list)
    sites: dict[str, list[float | None]] = field(default_factory=dict)
    aggregated: list[float | None] = field(default_factory=list)


@dataclass
class CrossSiteDice:
    """Dice of every evaluated model on every site's validation cases.

    Attributes:
        dice: data site -> model name -> Dice.
        cases: data site -> validation cases it scored (when the sites report it).
    """

    dice: dict[str, dict[str, float]]
    cases: dict[str, int]

    @property
    def sites(self) -> list[str]:
        """Data sites, sorted."""
        return sorted(self.dice)

    @property
    def models(self) -> list[str]:
        """Models: server models first, then site models, sorted."""
        names = {model for row in self.dice.values() for model in row}
        return sorted(names, key=lambda m: (not m.startswith("SRV_"), m))

    def final_global(self) -> dict[str, float]:
        """Dice of the final global model per site (empty when it was not evaluated)."""
        return {site: row[FINAL_GLOBAL] for site, row in self.dice.items() if FINAL_GLOBAL in row}

    def case_weighted(self, per_site: dict[str, float]) -> float:
        """Mean over the union of the sites' validation cases (sites weighted by their case counts)."""
        weights = {site: self.cases.get(site, 1) for site in per_site}
        return sum(per_site[s] * weights[s] for s in per_site) / max(sum(weights.values()), 1)


def read_round_dice(path: Path, key: str = KEY_METRIC) -> RoundDice:
    """Parse NVFlare's ``round_metrics.jsonl`` (one JSON record per round)."""
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    records.sort(key=lambda record: record["round"])
    result = RoundDice(rounds=[int(record["round"]) for record in records])
    for index, record in enumerate(records):
        result.aggregated.append(_metric(record.get("aggregated_metrics", []), key))
        for site in record.get("sites", []):
            series = result.sites.setdefault(site["name"], [None] * len(records))
            series[index] = _metric(site.get("metrics", []), key)
    return result


def _metric(metrics: list[dict], key: str) -> float | None:
    return next((float(m["value"]) for m in metrics if m.get("name") == key), None)


def read_cross_site(path: Path, key: str = KEY_METRIC) -> CrossSiteDice:
    """Parse ``cross_val_results.json``: data site -> model -> ``{"val_dice": ..., "val_cases": ...}``."""
    raw = json.loads(Path(path).read_text())
    dice = {
        site: {model: float(values[key]) for model, values in row.items() if key in (values or {})}
        for site, row in raw.items()
    }
    cases = {}
    for site, row in raw.items():
        counts = [int(v["val_cases"]) for v in row.values() if isinstance(v, dict) and "val_cases" in v]
        if counts:
            cases[site] = counts[0]
    return CrossSiteDice(dice=dice, cases=cases)


def model_label(model: str) -> str:
    """Readable name of a cross-site model: ``SRV_FL_global_model.pt`` -> ``global (final)``."""
    labels = {FINAL_GLOBAL: "global (final)", "SRV_best_FL_global_model.pt": "global (best)"}
    return labels.get(model, model.removeprefix("SRV_") if model.startswith("SRV_") else f"{model} local")
