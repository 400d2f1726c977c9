"""A local (one site cache) or pooled (several caches) GAN run: the non-federated reference of the GAN job.

Uses ``GanTrainer`` unchanged, as the federated client does, on the union of the caches' training splits.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dose3d_fl.data.cases import load_site_cases
from dose3d_fl.files import json_safe
from dose3d_fl.gan.figures import write_comparison_grid
from dose3d_fl.gan.profiles import GanProfile
from dose3d_fl.gan.trainer import GanTrainer

log = logging.getLogger(__name__)

GAN_MODEL_NAME = "gan.pt"
GAN_METRICS_NAME = "gan_metrics.json"
# Real training crops beside synthetic images of their label maps: shows patient images, stays at the site.
COMPARE_NAME = "compare.png"


def train_gan_on_caches(
    cache_dirs: Sequence[str | Path],
    out_dir: str | Path,
    profile: GanProfile,
    epochs: int,
    *,
    num_threads: int | None = 1,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train the GAN on the caches' training splits; write ``gan.pt``, ``gan_metrics.json`` and ``compare.png``
    (real training crops | synthetic images of the same label maps) to ``out_dir``.

    Args:
        cache_dirs: site caches written by ``dose3d ingest`` (their ``split.json`` is used or drawn).
        out_dir: output folder (created).
        profile: the GAN profile.
        epochs: local epochs of ``profile.steps_per_epoch`` generator steps.
        num_threads: torch CPU threads.
        on_epoch: called after each epoch with its losses and quality metrics.

    Returns:
        The final quality metrics, losses, ``steps`` and ``seconds`` (also in ``gan_metrics.json``).
    """
    start = time.perf_counter()
    sites = load_site_cases(cache_dirs)
    trainer = GanTrainer([case for site in sites for case in site.train], profile, num_threads=num_threads)
    history = []
    for epoch in range(1, epochs + 1):
        stats = trainer.train_epochs(1)
        entry = {"epoch": epoch, **{k: round(float(v), 4) for k, v in stats.items()}, **trainer.evaluate()}
        history.append(entry)
        if on_epoch is not None:
            on_epoch(entry)
    metrics = {
        **(history[-1] if history else trainer.evaluate()),
        "steps": trainer.steps_done,
        "seconds": round(time.perf_counter() - start, 2),
        "profile": profile.name,
        "train_cases": {site.name: len(site.train) for site in sites},
        "history": history,
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(out_dir / GAN_MODEL_NAME, meta={"caches": [s.name for s in sites]})
    shown = trainer.reference[: min(4, len(trainer.volumes))]
    write_comparison_grid(
        shown, trainer.generate_for(shown[:, 1].round().long(), seed=profile.seed), out_dir / COMPARE_NAME
    )
    # NaN (every sample dropped as a copy) becomes null: strict JSON has no NaN.
    (out_dir / GAN_METRICS_NAME).write_text(json.dumps(json_safe(metrics), indent=2) + "\n")
    log.info("wrote %s and %s", out_dir / GAN_MODEL_NAME, out_dir / GAN_METRICS_NAME)
    return metrics
