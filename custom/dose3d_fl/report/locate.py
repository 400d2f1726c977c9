"""Find a federated run's result files, whatever folder the user points at.

Accepted: a ``dose3d fl simulate`` workspace (``WS/summary.json``, ``WS/sim/<job>/server/simulate_job/``),
the server job folder itself, or a job result downloaded from a POC or production server (``nvflare job
download``: ``<job id>/workspace/``). The server job folder is the one holding ``metrics/round_metrics.jsonl``
and/or ``cross_site_val/cross_val_results.json``; NVFlare's own result discovery also walks the tree.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from dose3d_fl.clinical.models import SITE_MODELS_DIR

ROUND_METRICS = Path("metrics") / "round_metrics.jsonl"
CROSS_SITE = Path("cross_site_val") / "cross_val_results.json"
GLOBAL_MODEL_NAMES = ("FL_global_model.pt", "best_FL_global_model.pt")
SUMMARY_NAME = "summary.json"
TRAIN_METRICS_NAME = "metrics.json"


class RunNotFoundError(Exception):
    """No (or no single) federated run under the folder; the message is the one-line reason."""


@dataclass
class RunFiles:
    """Where a run's files are; ``None`` for what the run did not write.

    Attributes:
        root: the folder the user named.
        server_dir: the server's job folder.
        round_metrics: NVFlare's per-round metrics (``round_metrics.jsonl``).
        cross_site: cross-site evaluation results.
        summary: ``summary.json`` of ``dose3d fl simulate``.
        global_model: the final global model.
        profile_name: the segmentation profile the job's clients trained (from the job's client config).
        caches: site caches of a simulator workspace (``WS/data/cache/<site>``), for sample overlays.
        baselines: ``dose3d train`` output folders found in the workspace (``WS/<name>/metrics.json``).
        site_models: each simulated site's own model after a FedBN or SiloBN job (``WS/site_models/<site>.pt``),
            by site; empty for a FedAvg run.
    """

    root: Path
    server_dir: Path
    round_metrics: Path | None = None
    cross_site: Path | None = None
    summary: Path | None = None
    global_model: Path | None = None
    profile_name: str | None = None
    caches: list[Path] = field(default_factory=list)
    baselines: dict[str, Path] = field(default_factory=dict)
    site_models: dict[str, Path] = field(default_factory=dict)


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


def locate_run(root: str | Path) -> RunFiles:
    """Find the server job folder under ``root`` and the files around it.

    Raises:
        RunNotFoundError: ``root`` is missing, holds no run, or holds several (the message lists them).
    """
    root = Path(root)
    if not root.is_dir():
        raise RunNotFoundError(f"run folder {root} does not exist or is not a folder")
    found = {
        path.parents[1]
        for pattern in (ROUND_METRICS, CROSS_SITE)
        for path in root.rglob(pattern.name)
        if path.parent.name == pattern.parent.name
    }
    if not found:
        raise RunNotFoundError(
            f"no {ROUND_METRICS} or {CROSS_SITE} under {root}: point at a finished simulator workspace or a "
            "downloaded job result"
        )
    if len(found) > 1:
        listed = ", ".join(str(p) for p in sorted(found))
        raise RunNotFoundError(f"{root} holds {len(found)} runs ({listed}); point at one of them")
    server_dir = found.pop()
    models = [p for name in GLOBAL_MODEL_NAMES for p in sorted(server_dir.rglob(name))]
    return RunFiles(
        root=root,
        server_dir=server_dir,
        round_metrics=_existing(server_dir / ROUND_METRICS),
        cross_site=_existing(server_dir / CROSS_SITE),
        summary=_existing(root / SUMMARY_NAME),
        global_model=models[0] if models else None,
        profile_name=_job_profile(server_dir),
        caches=sorted(p.parent for p in (root / "data" / "cache").glob("*/manifest.json")),
        baselines={p.parent.name: p.parent for p in sorted(root.glob(f"*/{TRAIN_METRICS_NAME}"))},
        site_models={p.stem: p for p in sorted((root / SITE_MODELS_DIR).glob("*.pt"))},
    )


def _job_profile(server_dir: Path) -> str | None:
    """The ``--profile`` the job passes to its client script, from the job's client config."""
    for config in sorted(server_dir.rglob("config_fed_client.json")):
        match = re.search(r"--profile\s+([\w.-]+)", json.dumps(json.loads(config.read_text())))
        if match:
            return match.group(1)
    return None
