"""FL vs. local vs. central: the federated model beside ``dose3d train`` runs on the same site caches."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dose3d_fl.report.locate import TRAIN_METRICS_NAME


@dataclass
class ComparedRun:
    """One row of the comparison table.

    Attributes:
        name: the run's name (``--compare NAME=DIR`` or its folder name).
        kind: ``federated``, ``central (n sites pooled)`` or ``local (site)``.
        val_dice: mean over the union of its validation cases.
        site_dice: per site.
        detail: training length and time, as its files state them.
        source: the file the numbers come from.
    """

    name: str
    kind: str
    val_dice: float | None
    site_dice: dict[str, float | None]
    detail: str
    source: Path


def read_training_run(name: str, folder: Path) -> ComparedRun:
    """A ``dose3d train`` output folder (``metrics.json``) as a comparison row.

    Raises:
        FileNotFoundError: no ``metrics.json`` in the folder.
    """
    path = Path(folder) / TRAIN_METRICS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"--compare {name}: {path} not found (a `dose3d train --out DIR` folder?)")
    metrics = json.loads(path.read_text())
    trained_on = sorted(metrics.get("train_cases", {}))
    kind = f"local ({trained_on[0]})" if len(trained_on) == 1 else f"central ({len(trained_on)} sites pooled)"
    seconds = metrics.get("train_seconds")
    detail = f"{metrics.get('epochs')} epochs" + (
        f", {seconds:.0f} s training" if seconds is not None else ""
    )
    return ComparedRun(
        name=name,
        kind=kind,
        val_dice=metrics.get("val_dice"),
        site_dice=dict(metrics.get("site_val_dice", {})),
        detail=detail,
        source=path,
    )
