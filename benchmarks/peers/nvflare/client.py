"""Stock NVFlare peer, site side: the Client API loop of NVFlare's examples around the shared MONAI task.

``flare.init()``, then while the job runs: ``flare.receive()`` the global model, validate and train it
(``monai_task.SiteTask``), ``flare.send()`` the new weights with the validation Dice and the number of
training steps. Nothing else: NVFlare's own defaults for every interval and timeout. The only addition is
measurement: the size of each model message as NVFlare serialises it (FOBS), appended with the round's
timings to ``OUT/rounds.jsonl``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import nvflare.client as flare
from monai_task import SiteTask, load_spec  # benchmarks/peers, on PYTHONPATH (run.py sets it)
from nvflare.app_common.utils.fl_model_utils import FLModelUtils
from nvflare.fuel.utils import fobs


def message_bytes(model: flare.FLModel) -> int:
    """The FOBS encoding of the model as a task message, its tensors as numpy arrays (the recipe's exchange
    format: the Client API converts torch tensors to numpy before it sends them)."""
    params = {k: v.detach().cpu().numpy() if hasattr(v, "detach") else v for k, v in model.params.items()}
    copy = flare.FLModel(
        params=params, metrics=model.metrics, meta=model.meta, current_round=model.current_round
    )
    return len(fobs.dumps(FLModelUtils.to_shareable(copy)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    flare.init()
    site = flare.get_site_name()
    task = SiteTask(load_spec(args.spec), site, Path(args.out), "nvflare")
    while flare.is_running():
        input_model = flare.receive()
        if input_model is None:
            break
        received_at = time.time()
        weights, metrics = task.round(
            input_model.params, input_model.current_round, received_at, message_bytes(input_model)
        )
        output_model = flare.FLModel(
            params=weights,
            metrics={"val_dice": metrics["val_dice"]},
            meta={"NUM_STEPS_CURRENT_ROUND": metrics["steps"]},
        )
        task.log_sent(message_bytes(output_model))
        flare.send(output_model)


if __name__ == "__main__":
    main()
