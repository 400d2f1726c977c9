"""Stock NVFlare peer: NVFlare 2.9's PyTorch ``FedAvgRecipe`` in its simulator, with its default intervals.

``python benchmarks/peers/nvflare/run.py SPEC OUT`` runs ``client.py`` (the Client API loop of NVFlare's
examples around ``monai_task``) at every site of the task file ``SPEC`` (``dose3d bench --peers`` writes
it), for its rounds, starting from its initial weights (``initial_ckpt``), and copies the final global model to
``OUT/final_model.pt`` as a plain state dict. Nothing of dose3d's job is used: no update checks, transfer
log, site policy, polling changes, persistor or controller; the recipe's defaults for everything else (task
request interval 2 s, FedAvg's task check period 0.5 s, the Client API's 0.5 s waits).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import torch
from nvflare.app_opt.pt.recipes.fedavg import FedAvgRecipe
from nvflare.recipe import SimEnv

PEERS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PEERS))
from monai_task import FINAL_MODEL, ROUNDS_LOG, check_complete, load_spec, write_versions  # noqa: E402

JOB_NAME = "stock_fedavg"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python benchmarks/peers/nvflare/run.py SPEC OUT", file=sys.stderr)
        return 2
    spec_path, out = Path(argv[0]).resolve(), Path(argv[1]).resolve()
    spec = load_spec(spec_path)
    out.mkdir(parents=True, exist_ok=True)
    for stale in (FINAL_MODEL, ROUNDS_LOG):  # a run's figures are its own
        (out / stale).unlink(missing_ok=True)
    write_versions(out, "nvflare")
    sites = len(spec["sites"])
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PEERS), os.environ.get("PYTHONPATH")]))
    script = Path(__file__).with_name("client.py")
    previous = Path.cwd()
    os.chdir(script.parent)  # the recipe copies the script it names into the job
    try:
        recipe = FedAvgRecipe(
            name=JOB_NAME,
            model={"class_path": "monai.networks.nets.UNet", "args": spec["network"]},
            initial_ckpt=str(Path(spec["initial_model"]).resolve()),
            min_clients=sites,
            num_rounds=int(spec["rounds"]),
            train_script=script.name,
            train_args=f"--spec {spec_path} --out {out}",
            key_metric="val_dice",
        )
        workspace = out / "sim"
        shutil.rmtree(workspace, ignore_errors=True)
        recipe.execute(SimEnv(num_clients=sites, num_threads=sites, workspace_root=str(workspace)))
    finally:
        os.chdir(previous)
    incomplete = check_complete(spec, out)
    if incomplete:
        print(f"stock NVFlare peer: {incomplete}", file=sys.stderr)
        return 1
    saved = next((out / "sim").rglob("FL_global_model.pt"), None)
    if saved is None:
        print(f"stock NVFlare peer: no FL_global_model.pt under {out / 'sim'}; see its log", file=sys.stderr)
        return 1
    data = torch.load(saved, map_location="cpu", weights_only=False)
    state = data.get("model", data) if isinstance(data, dict) else data
    torch.save({k: torch.as_tensor(v) for k, v in state.items()}, out / FINAL_MODEL)
    print(f"stock NVFlare peer: final model {out / FINAL_MODEL}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
