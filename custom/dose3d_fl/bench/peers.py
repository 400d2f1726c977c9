"""The benchmark's peers: stock NVFlare and Flower on the same sites, split, network, budget and machine.

The peers' code lives in ``benchmarks/peers/`` and imports nothing of dose3d: a plain MONAI training loop
(``monai_task.py``) under NVFlare 2.9's ``FedAvgRecipe`` with its default intervals (``nvflare/``), and under
Flower 1.42's FedAvg in its simulation engine, in its own virtual environment ``.venv-flower``
(``flower/setup_venv.sh``). This module writes their task file (``spec.json``: each site's training and
validation cases of the project's split, the profile's preprocessing and network, the rounds and local epochs,
the seed, and ``initial.pt``: the project's seeded initial weights), runs each peer as a measured child
process (wall time and peak memory of its whole process tree), and reads the figures the peers' sites log
(``rounds.jsonl``) into the benchmark's definitions:

* round ``r`` ends when its last result leaves a site (the server aggregates right after; the project's
  figure uses the server's clock for the same moment);
* fixed cost of a round = its wall time (from the previous round's end) minus the slowest site's compute
  (validation + training);
* the Dice of round ``r``'s global model is what the sites measured on it at the start of round ``r + 1``
  (union of their validation cases); the final model is scored by the benchmark's evaluator;
* bytes per round: each model message as the framework serialises it (NVFlare: FOBS of the task message;
  Flower: the deflated message tree).

Training recipe of the peers, as their examples write it: Adam created once per site for the whole run at the
profile's learning rate (no schedule), the profile's loss, crops and augmentation; the project's FedAvg
starts Adam afresh every round at twice the rate with a cosine schedule (docs/performance.md). The peers'
Dice therefore measure the stock recipe, not the project's tuning.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dose3d_fl.bench.measure import Measured, run_measured
from dose3d_fl.data.cases import LABEL_VALUES, SiteCases
from dose3d_fl.seg.network import SeededUNet, network_args
from dose3d_fl.seg.profiles import SegProfile

logger = logging.getLogger(__name__)

PEERS = ("nvflare", "flower")
# The peers' code is not part of the package: it lives in the repository's benchmarks/peers/.
_PEER_SCRIPT = Path("benchmarks") / "peers" / "nvflare" / "run.py"


def checkout_root() -> Path | None:
    """The dose3d-fl checkout that holds ``benchmarks/peers``: the tree of an editable install, else the
    working directory; None for an installed wheel run outside a checkout."""
    for root in (Path(__file__).resolve().parents[3], Path.cwd()):
        if (root / _PEER_SCRIPT).is_file():
            return root
    return None


REPO = checkout_root() or Path.cwd()
PEERS_DIR = REPO / "benchmarks" / "peers"
FLOWER_VENV = REPO / ".venv-flower"
ROUNDS_LOG = "rounds.jsonl"  # monai_task.ROUNDS_LOG
FINAL_MODEL = "final_model.pt"  # monai_task.FINAL_MODEL
_PROFILE_KEYS = (
    "pixdim",
    "hu_min",
    "hu_max",
    "body_hu",
    "roi_size",
    "batch_size",
    "num_samples",
    "pos_neg",
    "lr",
    "weight_decay",
    "intensity_shift",
    "intensity_scale",
    "noise_std",
    "aug_prob",
    "sw_batch_size",
    "sw_overlap",
)


@dataclass(frozen=True)
class PeerPlan:
    """How to run one peer: its command, or why it cannot run here."""

    name: str
    command: list[str] | None
    skipped: str | None = None


def parse_peers(text: str | None) -> tuple[str, ...]:
    """``"nvflare,flower"`` -> ``("nvflare", "flower")``.

    Raises:
        ValueError: an unknown peer name.
    """
    names = tuple(n.strip() for n in (text or "").split(",") if n.strip())
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise ValueError(f"--peers: unknown peer {unknown[0]!r}; choose from {', '.join(PEERS)}")
    return names


def flower_python(venv: Path = FLOWER_VENV) -> Path | None:
    """The Flower environment's interpreter, or ``None`` when ``setup_venv.sh`` has not made it."""
    python = venv / "bin" / "python"
    return python if python.is_file() else None


def peer_plan(name: str, spec: Path, out: Path, venv: Path = FLOWER_VENV) -> PeerPlan:
    """The command of peer ``name`` on task file ``spec`` writing to ``out``; Flower without its environment
    is skipped with the reason."""
    if not (PEERS_DIR / "nvflare" / "run.py").is_file():
        return PeerPlan(
            name,
            None,
            f"{name} peer skipped: its code is in the repository's benchmarks/peers/, not in {PEERS_DIR}; "
            "run dose3d bench from a checkout of dose3d-fl",
        )
    if name == "nvflare":
        return PeerPlan(name, [sys.executable, str(PEERS_DIR / "nvflare" / "run.py"), str(spec), str(out)])
    python = flower_python(venv)
    if python is None:
        return PeerPlan(
            name,
            None,
            f"Flower peer skipped: no {venv}/bin/python; create it with benchmarks/peers/flower/setup_venv.sh",
        )
    return PeerPlan(name, [str(python), str(PEERS_DIR / "flower" / "run.py"), str(spec), str(out)])


def write_task_spec(
    folder: Path, sites: list[SiteCases], profile: SegProfile, rounds: int, local_epochs: int, seed: int
) -> Path:
    """Write ``folder/spec.json`` and ``folder/initial.pt`` (the project's initial weights for the training
    ``seed``, as this project's runs with that seed start from).

    Raises:
        ValueError: a case whose labels need remapping to the task's organ order (the peers read labels as
            they are: the spleen task's caches).
    """
    folder.mkdir(parents=True, exist_ok=True)
    initial = folder / "initial.pt"
    net = SeededUNet(seed=seed, **network_args(profile))
    torch.save({k: v.detach().clone() for k, v in net.state_dict().items()}, initial)
    cases: dict[str, dict[str, list[dict[str, str]]]] = {}
    for site in sites:
        for case in (*site.train, *site.val):
            if case.get(LABEL_VALUES) is not None:
                raise ValueError(
                    f"{site.name}: case {case.get('image')} needs its labels remapped; the peers take the "
                    "one-organ task only"
                )
        cases[site.name] = {
            part: [{"image": str(c["image"]), "label": str(c["label"])} for c in getattr(site, part)]
            for part in ("train", "val")
        }
    p = profile.to_dict()
    spec = {
        "profile": {key: p[key] for key in _PROFILE_KEYS},
        "network": network_args(profile),
        "sites": cases,
        "rounds": rounds,
        "local_epochs": local_epochs,
        "seed": seed,
        "threads_per_site": max(1, (os.cpu_count() or 1) // len(sites)),
        "initial_model": str(initial.resolve()),
    }
    path = folder / "spec.json"
    path.write_text(json.dumps(spec, indent=1) + "\n")
    return path


def run_peer(plan: PeerPlan, out: Path, log: Path) -> Measured:
    """Run a peer to completion as a measured child process (its own process tree's wall time and memory).

    Raises:
        RuntimeError: the peer exited with an error (the message names its log).
    """
    assert plan.command is not None
    out.mkdir(parents=True, exist_ok=True)
    (out / ROUNDS_LOG).unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return run_measured(plan.command, log, env=env)


def _records(out: Path) -> dict[int, list[dict[str, Any]]]:
    path = out / ROUNDS_LOG
    rounds: dict[int, list[dict[str, Any]]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                rounds.setdefault(int(record["round"]), []).append(record)
    return rounds


def peer_figures(out: Path, measured: Measured, final_dice: float, target: float) -> dict[str, Any]:
    """The benchmark's figures of a finished peer run from its sites' ``rounds.jsonl`` (module docstring).

    Raises:
        ValueError: the run logged no round.
    """
    rounds = _records(out)
    if not rounds:
        raise ValueError(f"{out / ROUNDS_LOG}: the peer logged no round")
    numbers = sorted(rounds)
    ends = {r: max(rec["sent_at"] for rec in rounds[r]) for r in numbers}
    figures = []
    previous_end = measured.started_at
    for r in numbers:
        compute = max(rec["val_seconds"] + rec["train_seconds"] for rec in rounds[r])
        wall = ends[r] - previous_end
        cases = sum(rec["val_cases"] for rec in rounds[r])
        dice = sum(rec["val_dice"] * rec["val_cases"] for rec in rounds[r]) / max(cases, 1)
        figures.append({"round": r + 1, "wall": wall, "compute": compute, "received_dice": dice})
        previous_end = ends[r]
    steady = figures[1:] or figures
    # Dice of round r's model = what the sites measured at the start of round r + 1; the last: the evaluator's.
    model_dice = [f["received_dice"] for f in figures[1:]] + [final_dice]
    reached = next((i for i, d in enumerate(model_dice) if d >= target), None)
    sent = [rec["sent_bytes"] for recs in rounds.values() for rec in recs]
    received = [rec["received_bytes"] for recs in rounds.values() for rec in recs]
    wall = sum(f["wall"] for f in figures)
    compute = sum(f["compute"] for f in figures)
    return {
        "rounds": len(figures),
        "training_wall_seconds": round(wall, 2),
        "overhead_ratio": round(wall / compute, 3) if compute else None,
        "whole_process_overhead_ratio": round(measured.wall_seconds / compute, 3) if compute else None,
        "fixed_seconds_per_round": round((wall - compute) / len(figures), 3),
        "first_round_wall_seconds": round(figures[0]["wall"], 3),
        "steady_fixed_seconds_per_round": round(
            sum(f["wall"] - f["compute"] for f in steady) / len(steady), 3
        ),
        "steady_fixed_seconds_median": round(statistics.median(f["wall"] - f["compute"] for f in steady), 3),
        "steady_compute_seconds_per_round": round(sum(f["compute"] for f in steady) / len(steady), 3),
        "sent_bytes_per_round": round(statistics.mean(sent), 1),
        "received_bytes_per_round": round(statistics.mean(received), 1),
        "seconds_to_target": None
        if reached is None
        else round(ends[numbers[reached]] - measured.started_at, 1),
        "round_union_dice": model_dice,
        "versions": json.loads(versions.read_text()) if (versions := out / "versions.json").is_file() else {},
    }


def load_final_model(out: Path) -> dict[str, torch.Tensor]:
    """The peer's final global model (a plain state dict).

    Raises:
        FileNotFoundError: the peer wrote none.
    """
    path = out / FINAL_MODEL
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the peer wrote no final model; see its log")
    return torch.load(path, map_location="cpu", weights_only=True)
