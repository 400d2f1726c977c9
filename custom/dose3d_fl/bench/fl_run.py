"""One federated run of the benchmark: the ``seg_fedavg`` job in the NVFlare simulator, with wire meters.

Run as ``python -m dose3d_fl.bench.fl_run WORKSPACE CONFIG_JSON`` (the benchmark starts each run in its own
process, so its memory and wall time are its own). ``CONFIG_JSON`` holds ``sites``, ``seed`` and ``job`` (the
``SegJobConfig`` fields); ``WORKSPACE/data`` must hold the ingested site caches.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from dose3d_fl.fl.seg_job import SegJobConfig
from dose3d_fl.fl.simulate import SimulationConfig, simulate_seg
from dose3d_fl.fl.wire_meter import add_wire_meters


def run(workspace: Path, sites: int, seed: int, job: SegJobConfig) -> dict:
    """Simulate the job with wire meters; returns the simulation summary (also ``WORKSPACE/summary.json``)."""
    return simulate_seg(
        SimulationConfig(workspace=workspace, sites=sites, job=job, seed=seed), add_wire_meters
    )


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 2:
        print("usage: python -m dose3d_fl.bench.fl_run WORKSPACE CONFIG_JSON", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = json.loads(args[1])
    run(Path(args[0]), int(config["sites"]), int(config["seed"]), SegJobConfig(**config["job"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
