"""Optional report sections that appear only when the run wrote their files (GAN, differential privacy).

The file contract, for the jobs that will write them (looked for in the run folder and in the server job
folder):

* ``gan/metrics.json``: ``{"metric name": number, ...}`` (e.g. SSIM, MS-SSIM, MMD of generated volumes);
  ``gan/samples.png``: a grid of generated slices. Either file alone is enough for the section.
* ``privacy/dp_accounting.json``: ``{"sites": {"site-1": {"epsilon": 2.3, "delta": 1e-05, ...}, ...}}``, the
  privacy budget spent per site; every key of a site's entry becomes a column.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from dose3d_fl.report.html import Section, figure, paragraph, table
from dose3d_fl.report.locate import RunFiles

GAN_METRICS = Path("gan") / "metrics.json"
GAN_SAMPLES = Path("gan") / "samples.png"
DP_ACCOUNTING = Path("privacy") / "dp_accounting.json"


def _first(files: RunFiles, relative: Path) -> Path | None:
    return next((d / relative for d in (files.root, files.server_dir) if (d / relative).is_file()), None)


def gan_section(files: RunFiles, out_dir: Path) -> Section | None:
    """Generated samples and quality metrics of a GAN job, if present."""
    metrics_path, samples_path = _first(files, GAN_METRICS), _first(files, GAN_SAMPLES)
    if metrics_path is None and samples_path is None:
        return None
    parts = []
    if metrics_path is not None:
        metrics = json.loads(metrics_path.read_text())
        parts.append(table(["metric", "value"], [[name, float(value)] for name, value in metrics.items()]))
        parts.append(paragraph(f"from {metrics_path}", "note"))
    if samples_path is not None:
        shutil.copyfile(samples_path, out_dir / "gan_samples.png")
        parts.append(figure("gan_samples.png", f"generated samples ({samples_path})", "GAN samples"))
    return Section("GAN samples and metrics", "\n".join(parts))


def privacy_section(files: RunFiles, out_dir: Path) -> Section | None:
    """Differential-privacy budget spent per site, if the run accounted for it."""
    path = _first(files, DP_ACCOUNTING)
    if path is None:
        return None
    sites = json.loads(path.read_text())["sites"]
    columns = sorted({key for entry in sites.values() for key in entry})
    rows = [[site, *(sites[site].get(c) for c in columns)] for site in sorted(sites)]
    return Section(
        "Differential privacy: budget spent per site",
        table(["site", *columns], rows) + paragraph(f"from {path}", "note"),
    )


OPTIONAL_SECTIONS = (gan_section, privacy_section)
