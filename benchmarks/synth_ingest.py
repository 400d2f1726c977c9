"""Time `dose3d synth` (3 sites, default patients) and `dose3d ingest` (each site, then a re-run).

Runs the real command-line tools as a user would, each in its own process, and writes
``benchmarks/results/synth_ingest.json``. Usage: ``.venv/bin/python benchmarks/synth_ingest.py``.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "synth_ingest.json"
DOSE3D = Path(sys.executable).with_name("dose3d")


def timed(args: list[str]) -> tuple[float, float]:
    """Run a command; return its wall time (s) and the peak RSS of its process tree so far (MiB)."""
    start = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return wall, peak_mib


def main() -> None:
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "command": "python benchmarks/synth_ingest.py",
    }
    with tempfile.TemporaryDirectory() as tmp:
        dicom, cache = Path(tmp) / "dicom", Path(tmp) / "cache"
        wall, _ = timed([str(DOSE3D), "synth", "--out", str(dicom)])
        results["synth_3_sites_default_s"] = round(wall, 2)
        results["synth_bytes"] = sum(p.stat().st_size for p in dicom.rglob("*") if p.is_file())
        for site in sorted(p.name for p in dicom.iterdir()):
            args = [str(DOSE3D), "ingest", "--input", str(dicom / site), "--out", str(cache / site)]
            first, peak = timed(args)
            again, _ = timed(args)
            manifest = json.loads((cache / site / "manifest.json").read_text())
            results[site] = {
                "files": sum(1 for p in (dicom / site).rglob("*") if p.is_file()),
                "cases": len(manifest["cases"]),
                "ingest_s": round(first, 2),
                "ingest_rerun_unchanged_s": round(again, 2),
                "peak_rss_mib_so_far": round(peak, 1),
            }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
