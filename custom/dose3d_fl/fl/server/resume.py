"""``dose3d fl resume``: a copy of a job folder that continues from the server's last checkpoint.

NVFlare 2.9 has no server high availability: a job whose server process died is over. What survives is the
checkpoint ``ResilientFedAvg`` writes after every round in the server's workspace. The resume job is the same
job with ``resume: true`` in its controller's arguments: submitted to the same server, it loads that
checkpoint and runs the rounds that are left, with the round numbers (and so the sites' learning-rate
schedule) of the interrupted job.

This is the resume by hand. A server whose kit has the ``AutoResume`` component (``dose3d poc up`` and
``dose3d provision`` install it) resubmits a job that its restart interrupted by itself, without changing the
job's signed content (``dose3d_fl.fl.server.auto_resume``); do not submit a resume job by hand there as well.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

SERVER_CONFIG = Path("app") / "config" / "config_fed_server.json"


def make_resume_job(job_dir: Path, out_dir: Path) -> Path:
    """Write ``out_dir/<job name>`` (replacing it): ``job_dir`` with its controller set to resume.

    Args:
        job_dir: an exported job folder whose controller is a ``ResilientFedAvg`` (``seg_fedavg``, ``gan_fedavg``).
        out_dir: parent folder of the resume job.

    Raises:
        ValueError: the job has no workflow that accepts ``resume`` (not built on ``ResilientFedAvg``).
    """
    job_dir, out_dir = Path(job_dir), Path(out_dir)
    config_path = job_dir / SERVER_CONFIG
    config = json.loads(config_path.read_text())
    controllers = [w for w in config.get("workflows", []) if "checkpoint_name" in w.get("args", {})]
    if not controllers:
        raise ValueError(
            f"{config_path}: no workflow with a checkpoint_name argument; only jobs whose controller is "
            "dose3d_fl.fl.server.resilient.ResilientFedAvg (or a subclass) can resume; re-export the job"
        )
    for workflow in controllers:
        workflow["args"]["resume"] = True
    target = out_dir / job_dir.name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(job_dir, target)
    (target / SERVER_CONFIG).write_text(json.dumps(config, indent=4) + "\n")
    return target
