"""Flower peer: Flower 1.42's FedAvg (Message API) in its simulation engine (Ray), the same MONAI task.

``.venv-flower/bin/python benchmarks/peers/flower/run.py SPEC OUT`` (the environment of ``setup_venv.sh``,
without dose3d) runs one ``ClientApp`` per site of the task file ``SPEC`` and a ``ServerApp`` with
``flwr.serverapp.strategy.FedAvg`` (every node trains every round, weighted by ``num-examples``, no separate
evaluation round: each site validates the global model it receives, as the NVFlare peer does), starting from
the task's initial weights, and writes the final global model to ``OUT/final_model.pt``. Each site keeps its
data, network and optimiser for the whole run (one ``SiteTask`` per node, as a Flower example keeps them in
the ``ClientApp``'s process). Message sizes are those of the serialised message tree that Flower ships (the
sum of ``deflate()`` of the message and every record, array record and array in it).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/peers, for monai_task
from monai_task import (
    FINAL_MODEL,
    ROUNDS_LOG,
    SiteTask,
    check_complete,
    initial_weights,
    load_spec,
    write_versions,
)

_TASKS: dict[str, SiteTask] = {}


def tree_bytes(obj: object) -> int:
    """Bytes of an inflatable Flower object as it travels: its own deflated body and its children's."""
    children = getattr(obj, "children", None) or {}
    return len(obj.deflate()) + sum(tree_bytes(child) for child in children.values())


def make_apps(spec_path: Path, out: Path) -> tuple[ServerApp, ClientApp]:
    """The ``ServerApp`` and ``ClientApp`` of the run (closures over the task file and output folder)."""
    spec = load_spec(spec_path)
    site_names = sorted(spec["sites"])
    client = ClientApp()

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        received_at = time.time()
        site = site_names[int(context.node_config["partition-id"])]
        if site not in _TASKS:  # one per node, kept for the run, as the example's module-level objects
            _TASKS[site] = SiteTask(spec, site, out, "flower")
        task = _TASKS[site]
        weights = msg.content["arrays"].to_torch_state_dict()
        round_ = int(msg.content["config"]["server-round"]) - 1
        new_weights, metrics = task.round(weights, round_, received_at, tree_bytes(msg))
        content = RecordDict(
            {
                "arrays": ArrayRecord(new_weights),
                "metrics": MetricRecord({"val_dice": metrics["val_dice"], "num-examples": metrics["steps"]}),
            }
        )
        reply = Message(content=content, reply_to=msg)
        task.log_sent(tree_bytes(reply))
        return reply

    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        sites = len(site_names)
        strategy = FedAvg(
            fraction_train=1.0,
            fraction_evaluate=0.0,
            min_train_nodes=sites,
            min_available_nodes=sites,
        )
        result = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(initial_weights(spec)),
            num_rounds=int(spec["rounds"]),
        )
        torch.save(result.arrays.to_torch_state_dict(), out / FINAL_MODEL)

    return server, client


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: .venv-flower/bin/python benchmarks/peers/flower/run.py SPEC OUT", file=sys.stderr)
        return 2
    spec_path, out = Path(argv[0]).resolve(), Path(argv[1]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in (FINAL_MODEL, ROUNDS_LOG):  # a run's figures are its own
        (out / stale).unlink(missing_ok=True)
    write_versions(out, "flwr")
    spec = load_spec(spec_path)
    server, client = make_apps(spec_path, out)
    sites = len(spec["sites"])
    threads = int(spec.get("threads_per_site", 1))
    run_simulation(
        server_app=server,
        client_app=client,
        num_supernodes=sites,
        backend_config={
            "client_resources": {"num_cpus": threads, "num_gpus": 0.0},
            "init_args": {"num_cpus": sites * threads, "include_dashboard": False},
        },
    )
    incomplete = check_complete(spec, out)
    if incomplete:
        print(f"Flower peer: {incomplete}", file=sys.stderr)
        return 1
    if not (out / FINAL_MODEL).is_file():
        print(f"Flower peer: no {FINAL_MODEL} in {out}; see its log", file=sys.stderr)
        return 1
    print(json.dumps({"final_model": str(out / FINAL_MODEL)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
