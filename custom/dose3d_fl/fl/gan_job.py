"""The ``gan_fedavg`` job: federated training of the label-conditioned 3D GAN, built with NVFlare's Recipe API.

The server runs the segmentation job's controller (``SegFedAvgRecipe`` / ``dose3d_fl.fl.server.controller.SegFedAvg``,
so every server-side check added there applies to the GAN too), keeps the global and the best global model
by ``gan_mmd`` (lower is better) and runs cross-site evaluation; each site runs ``gan_client.py`` on data
it resolves from its own configuration.

Two aggregation modes (job argument ``aggregation``):

* ``both``: the server's model is ``GanPair`` (``generator.*`` and ``discriminator.*``); FedAvg of both.
* ``generator-only``: the server's model is ``SeededGenerator`` (``generator.*`` only). Each site keeps its
  discriminator, and its optimiser, in its own process; it receives and sends only generator tensors.
  The server's model is the generator alone, not the pair with the discriminator excluded, because NVFlare
  2.9's ``FLModelUtils.update_model`` replaces the global parameters with the aggregate of what the sites
  sent: a pair model fed generator-only updates would lose its discriminator after the first round.

Export the committed job folder with ``dose3d fl export --job gan``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nvflare.recipe import add_cross_site_evaluation, add_experiment_tracking

from dose3d_fl.fl.export import export_recipe, in_script_folder
from dose3d_fl.fl.policy.metrics import declare_metrics
from dose3d_fl.fl.seg_job import (
    SegFedAvgRecipe,
    add_task_polling,
    add_transfer_timeouts,
)
from dose3d_fl.gan.network import network_args
from dose3d_fl.gan.profiles import DEFAULT_GAN_PROFILE, get_gan_profile

JOB_NAME = "gan_fedavg"
CLIENT_SCRIPT = Path(__file__).parent / "site" / "gan_client.py"
KEY_METRIC = "gan_mmd"
# The metrics gan_client.py sends (``gan_`` + the quality metrics of dose3d_fl.gan.metrics, the losses, the case
# count): the job declares them, each site's weights-only guard refuses any other (dose3d_fl.fl.policy.metrics).
SITE_METRICS = (
    "gan_dropped_memorized",
    "gan_best_ncc",
    "gan_label_ok",
    "gan_mmd",
    "gan_msssim",
    "gan_diversity",
    "gan_msssim_real",
    "gan_tissue_hu_error",
    "gan_loss_g",
    "gan_loss_d",
    "gan_loss_l1",
    "train_cases",
)
AGGREGATIONS = ("both", "generator-only")
SERVER_MODELS = {
    "both": "dose3d_fl.gan.network.GanPair",
    "generator-only": "dose3d_fl.gan.network.SeededGenerator",
}
DEFAULT_GAN_ROUNDS = 10
DEFAULT_GAN_LOCAL_EPOCHS = 2


@dataclass(frozen=True)
class GanJobConfig:
    """Job arguments (no paths, no secrets).

    Args:
        num_rounds: FedAvg rounds.
        min_clients: sites that must answer each round.
        local_epochs: local epochs (``steps_per_epoch`` generator steps each) per round at each site.
        profile: GAN profile name (``dose3d_fl.gan.profiles``).
        aggregation: ``"both"`` or ``"generator-only"`` (the module docstring says what each sends).
        tensorboard: stream site metrics to the server's TensorBoard event files.
        min_responses: results a round needs (capped at ``min_clients``): a round closes without a lost site
            (``dose3d_fl.fl.server.controller.SegFedAvg``, as in the segmentation job).
        round_timeout: seconds a round waits for the sites (0: no limit); late results are discarded.
    """

    num_rounds: int = DEFAULT_GAN_ROUNDS
    min_clients: int = 3
    local_epochs: int = DEFAULT_GAN_LOCAL_EPOCHS
    profile: str = DEFAULT_GAN_PROFILE
    aggregation: str = "generator-only"
    tensorboard: bool = True
    min_responses: int = 2
    round_timeout: int = 7200

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation {self.aggregation!r} is not one of {', '.join(AGGREGATIONS)}")
        if self.min_responses < 1 or self.round_timeout < 0:
            raise ValueError(
                f"min_responses must be >= 1 and round_timeout >= 0 s, got {self.min_responses} / {self.round_timeout}"
            )


def build_gan_recipe(config: GanJobConfig | None = None) -> SegFedAvgRecipe:
    """Build the FedAvg recipe of the GAN job (same controller class as the segmentation job)."""
    config = config or GanJobConfig()
    profile = get_gan_profile(config.profile)
    with in_script_folder(CLIENT_SCRIPT.parent):
        recipe = SegFedAvgRecipe(
            name=JOB_NAME,
            model={"class_path": SERVER_MODELS[config.aggregation], "args": network_args(profile)},
            min_clients=config.min_clients,
            num_rounds=config.num_rounds,
            train_script=CLIENT_SCRIPT.name,
            train_args=(
                f"--local-epochs {config.local_epochs} --profile {profile.name} "
                f"--aggregation {config.aggregation}"
            ),
            key_metric=KEY_METRIC,
            key_metric_mode="min",
            min_responses=min(config.min_responses, config.min_clients),
            round_timeout=config.round_timeout,
        )
        # The segmentation job's timeouts (server/README.md): 3D models over hospital networks.
        add_transfer_timeouts(recipe)
        add_task_polling(recipe)
        declare_metrics(recipe, SITE_METRICS)
        add_cross_site_evaluation(recipe, submit_model_timeout=1800, validation_timeout=14400)
        if config.tensorboard:
            add_experiment_tracking(recipe, tracking_type="tensorboard")
    return recipe


def export_gan_job(out_dir: Path, config: GanJobConfig | None = None) -> Path:
    """Write the job folder ``out_dir/gan_fedavg`` (replacing it), ready for ``nvflare job submit``."""
    return export_recipe(build_gan_recipe(config), JOB_NAME, out_dir, CLIENT_SCRIPT.parent)
