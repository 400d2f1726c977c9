"""Time `dose3d report` on a finished workspace, as a user runs it (one process), and keep what it measured.

Records the wall and CPU time of the whole command (CPU time depends less on other load), the time of its
per-case part (segmenting every validation case and drawing the worst and median case per site, as the page
states it), the machine's load average at the start, and per site the Dice of the final model on the training
grid (cross-site evaluation, the mean over organs) beside the mean Dice on the CT grid over the report's
``cases.csv`` rows (one per case and organ).

Usage: ``.venv/bin/python benchmarks/report_time.py [RUN]`` (default ``runs/demo``, after ``make demo``);
writes ``benchmarks/results/report_demo.json``.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "report_demo.json"
DOSE3D = Path(sys.executable).with_name("dose3d")
CROSS_SITE = "cross_site_val/cross_val_results.json"
FINAL_GLOBAL = "SRV_FL_global_model.pt"


def main(run: Path) -> dict:
    """Build the report of ``run`` into a temporary folder and return the measurements."""
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="report-time-") as tmp:
        out = Path(tmp) / "report"
        start = time.perf_counter()
        subprocess.run([str(DOSE3D), "report", str(run), "--out", str(out)], check=True, capture_output=True)
        wall = time.perf_counter() - start
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        html = (out / "report.html").read_text()
        with (out / "cases.csv").open() as stream:
            cases = list(csv.DictReader(stream))
        pictures = sorted(p.name for p in out.glob("case_*.png"))
    count, rows, seconds = re.search(r"(\d+) case\(s\), (\d+) organ row\(s\) in ([\d.]+) s", html).groups()
    cross = json.loads(next(run.rglob(CROSS_SITE)).read_text())
    sites = {}
    for site in sorted({row["site"] for row in cases}):
        dice = [float(row["dice"]) for row in cases if row["site"] == site]
        sites[site] = {
            "cases": len({row["case"] for row in cases if row["site"] == site}),
            "organ_rows": len(dice),
            "dice_training_grid_cross_site": round(cross[site][FINAL_GLOBAL]["val_dice"], 4),
            "dice_ct_grid_mean": round(statistics.fmean(dice), 4),
            "surface_dice_2mm": [float(row["surface_dice_2mm"]) for row in cases if row["site"] == site],
        }
    return {
        "command": f"dose3d report {run} --out TMP",
        "run": str(run),
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(children.ru_utime + children.ru_stime, 1),
        "case_part_seconds": float(seconds),
        "cases": int(count),
        "organ_rows": int(rows),
        "pictures": pictures,
        "sites": sites,
        "load_average_at_start": [round(v, 2) for v in load],
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }


if __name__ == "__main__":
    result = main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/demo"))
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
