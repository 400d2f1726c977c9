"""Load: 8 simulated sites x a tiny model x 5 rounds of ResilientFedAvg; the server's peak memory.

The sites run the probe client of the ResilientFedAvg tests (``tests/fl/server/resilient_job/probe_client.py``: it
adds a step to the weights it receives, no training), so the run measures orchestration and aggregation:
the model is the ``cpu-small`` UNet (151 k parameters). The simulator's processes are sampled every 0.2 s;
the server is the simulator process that is not a client worker. Writes
``benchmarks/results/reliability_load.json``. Usage: ``.venv/bin/python benchmarks/reliability_load.py``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from nvflare.recipe import SimEnv

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dose3d_fl.fl.export import in_script_folder  # noqa: E402
from dose3d_fl.fl.seg_job import SegFedAvgRecipe  # noqa: E402
from dose3d_fl.fl.server.resilient import CHECKPOINT_DIR_ENV  # noqa: E402
from dose3d_fl.fl.simulate import server_job_dir, simulation_dir  # noqa: E402
from dose3d_fl.seg.network import network_args  # noqa: E402
from dose3d_fl.seg.profiles import get_profile  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "reliability_load.json"
PROBE_DIR = REPO / "tests" / "fl" / "server" / "resilient_job"
SITES, ROUNDS = 8, 5


class PeakMemory(threading.Thread):
    """Samples the RSS of this process's descendants: the server's peak and the sum's peak."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.server_mib = 0.0
        self.total_mib = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        while not self.stop.is_set():
            server, total = 0.0, 0.0
            for proc in me.children(recursive=True):
                try:
                    rss = proc.memory_info().rss / 2**20
                    worker = "simulator_worker" in " ".join(proc.cmdline())
                except psutil.Error:
                    continue
                total += rss
                if not worker:
                    server = max(server, rss)
            self.server_mib, self.total_mib = max(self.server_mib, server), max(self.total_mib, total)
            time.sleep(0.2)


def main() -> None:
    profile = get_profile("cpu-small")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[CHECKPOINT_DIR_ENV] = str(Path(tmp) / "checkpoints")
        with in_script_folder(PROBE_DIR):
            recipe = SegFedAvgRecipe(
                name="load",
                model={
                    "class_path": "dose3d_fl.seg.network.SeededUNet",
                    "args": {"seed": profile.seed, **network_args(profile)},
                },
                min_clients=SITES,
                num_rounds=ROUNDS,
                train_script="probe_client.py",
                train_args=f"--record {Path(tmp) / 'record.jsonl'}",
                min_responses=SITES - 1,
                round_timeout=600,
            )
            monitor = PeakMemory()
            monitor.start()
            start = time.perf_counter()
            recipe.execute(
                SimEnv(num_clients=SITES, num_threads=SITES, workspace_root=str(Path(tmp) / "sim"))
            )
            wall = time.perf_counter() - start
            monitor.stop.set()
        server = server_job_dir(simulation_dir(Path(tmp), "load"))
        participation = json.loads((server / "participation.json").read_text())
    rounds_ok = [len(r["aggregated"]) for r in participation["rounds"]]
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "command": "python benchmarks/reliability_load.py",
        "sites": SITES,
        "rounds": ROUNDS,
        "model": "cpu-small SeededUNet, 150973 parameters",
        "sites_aggregated_per_round": rounds_ok,
        "wall_s": round(wall, 1),
        "server_peak_rss_mib": round(monitor.server_mib, 1),
        "all_processes_peak_rss_mib": round(monitor.total_mib, 1),
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
