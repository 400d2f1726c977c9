"""The ``seg_fedavg`` job: FedAvg of a MONAI 3D segmentation network, built with NVFlare's Recipe API.

What runs where: the server runs FedAvg (weights only), keeps the global and the best global model by
``val_dice`` and runs cross-site evaluation; each site runs ``seg_client.py`` (the Client API loop around
the plain MONAI trainer) on data it resolves from its own configuration. The job names no path: the network
is given by class path and arguments (``dose3d_fl`` is installed at every site and at the server).

Export the committed job folder with ``dose3d fl export`` (or ``python -m dose3d_fl.fl.seg_job OUT``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nvflare.app_opt.pt.file_model_locator import PTFileModelLocator
from nvflare.app_opt.pt.recipes.fedavg import FedAvgRecipe
from nvflare.client.config import TransferType
from nvflare.recipe import Run, add_cross_site_evaluation, add_experiment_tracking
from nvflare.recipe.spec import ExecEnv

from dose3d_fl.data.tg263 import check_organs
from dose3d_fl.fl import DEFAULT_LOCAL_EPOCHS, DEFAULT_ROUNDS, LOCAL_LR_SCALE
from dose3d_fl.fl.export import export_recipe, in_script_folder
from dose3d_fl.fl.policy.metrics import SEG_ORGAN_METRICS, declare_metrics, organ_metric_names
from dose3d_fl.fl.policy.quantization import QUANTIZATIONS, quantization_filters
from dose3d_fl.fl.server.aggregators import DEFAULT_TRIM_FRACTION, RobustAggregator
from dose3d_fl.fl.server.controller import SegFedAvg
from dose3d_fl.fl.server.persistor import SegModelPersistor
from dose3d_fl.fl.server.update_checks import DEFAULT_MAX_NORM_RATIO
from dose3d_fl.fl.site.polling import RESULT_POLL_INTERVAL
from dose3d_fl.seg.network import network_args
from dose3d_fl.seg.profiles import DEFAULT_PROFILE, SegProfile, get_profile

JOB_NAME = "seg_fedavg"
CLIENT_SCRIPT = Path(__file__).parent / "site" / "seg_client.py"
KEY_METRIC = "val_dice"
# The metrics seg_client.py sends (train and validate results): the job declares them, each site's weights-only
# guard refuses any other (dose3d_fl.fl.policy.metrics).
SITE_METRICS = (
    "val_dice",
    "val_cases",
    "train_loss",
    "val_seconds",
    "train_seconds",
    "cache_seconds",
    "data_seconds",
)
# Per organ of the job's task, the site also sends these (``val_dice_Spleen``, ...; ``site_metrics``).
ORGAN_METRICS = SEG_ORGAN_METRICS


def site_metrics(organs: tuple[str, ...]) -> tuple[str, ...]:
    """Every metric name a site of a job with these organs sends: ``SITE_METRICS`` and the per-organ ones."""
    return (*SITE_METRICS, *organ_metric_names(ORGAN_METRICS, organs))


TRANSFERS = ("full", "diff")
AGGREGATIONS = ("fedavg", "median", "trimmed_mean")
# The command line spells it with a hyphen (``--aggregation trimmed-mean``); both spellings are accepted.
AGGREGATION_ALIASES = {"trimmed-mean": "trimmed_mean"}
# Seconds between a site's task requests (NVFlare: 2) and between the server workflow's checks of a round's
# tasks (NVFlare: 0.5, and 0.2 in the server's task monitor); see add_task_polling and SegFedAvgRecipe.
TASK_REQUEST_INTERVAL = 0.2
TASK_CHECK_PERIOD = 0.05


@dataclass(frozen=True)
class SegJobConfig:
    """Job arguments (everything here may travel with the job: no paths, no secrets).

    The defaults are the committed ``jobs/seg_fedavg`` and the ``make demo`` run: 25 rounds x 4 local epochs
    of ``cpu-small`` reach union validation Dice above 0.90 on the demo data in about 7 minutes on 2 cores
    (docs/segmentation.md).

    Args:
        num_rounds: FedAvg rounds.
        min_clients: sites that must answer each round.
        local_epochs: local epochs per round at each site.
        profile: segmentation profile name (``dose3d_fl.seg.profiles``).
        tensorboard: stream site metrics to the server's TensorBoard event files.
        aggregation: ``"fedavg"`` (weighted mean), or a robust coordinate-wise ``"median"`` /
            ``"trimmed_mean"`` (also spelt ``"trimmed-mean"``), weighted by the sites' reported steps capped
            at the median site's, correct with FULL and DIFF transfer (``dose3d_fl.fl.server.aggregators``).
        trim_fraction: the trimmed mean's share of the sites cut at each end per coordinate (``floor(b n)``
            of ``n`` sites; 0.2 cuts one of five).
        max_norm_ratio: the server rejects an update farther from the global model than this many times the
            median of the other sites' (``dose3d_fl.fl.server.update_checks``).
        min_responses: results a round needs (capped at ``min_clients``); a round that closes with fewer
            stops the job, which ``resume`` then continues (``dose3d_fl.fl.server.resilient``).
        round_timeout: seconds a round waits for the sites; late results are discarded. Set it above the
            slowest site's round (its local training plus two model transfers); 0 waits without limit.
        resume: start from the server's checkpoint of the last ``seg_fedavg`` job and continue its rounds.
        dead_client_grace_period: seconds the server job waits for a site whose job was reported dead to show
            a sign of life before giving up its tasks (server/README.md).
        cross_site_evaluation: evaluate every site's and the global model at every site after training.
        fedprox_mu: FedProx: the server sends this proximal coefficient with the global model and the sites
            add NVFlare's ``PTFedProxLoss`` towards it to their loss; 0 is plain FedAvg.
        transfer: ``"full"`` (sites send their weights) or ``"diff"`` (the difference from the global model
            they received; NVFlare's ``TransferType.DIFF``).
        quantization: ``""`` (float32), ``"float16"`` (models travel as float16, both ways) or ``"int8"``
            (training messages as int8, the sites' updates with error feedback); restored on arrival
            (``dose3d_fl.fl.policy.quantization``).
        task_request_interval: seconds a site waits between asking the server for work (``add_task_polling``).
        task_check_period: seconds between the server workflow's checks of a round's results (NVFlare: 0.5 s in
            FedAvg, 0.2 s in the server's task monitor; ``ResilientFedAvg`` gives both this period).
        result_poll_interval: seconds between the in-process Client API's checks for a task or a result at
            the site (``dose3d_fl.fl.site.polling``; NVFlare: 0.5).
        keep_optimizer_state: the sites carry their local Adam moments from round to round; by default each
            round's local training starts Adam afresh from the received global model, which the benchmark
            found better on non-IID sites (docs/performance.md).
        local_lr_scale: factor on the profile's learning rate (its whole schedule) for the sites' local
            training. FedAvg moves the global model by the mean of the sites' updates, which point in
            different directions on non-IID sites, so a federation needs a larger local step than pooled
            training for the same progress (docs/performance.md).
        fedbn: FedBN: each site keeps its own BatchNorm layers and loads the rest of the global model
            (``dose3d_fl.fl.site.fedbn``); the server is unchanged. Needs a profile with batch normalisation.
        silobn: SiloBN: each site keeps only its BatchNorm statistics; the layers' scale and shift are
            federated. Excludes ``fedbn``; needs batch normalisation too.
        organs: the task's organs, TG-263 names in label order; they replace the profile's (default the
            profile's: the spleen). The network gets one class per organ; every site reads its cache in this
            order, an organ a case does not delineate unlabelled (``dose3d_fl.data.cases``).
        train_seed: seed of the initial global model and of every site's random crops and augmentation
            (default the profile's): repeated runs with other seeds measure how much a result owes to chance.
    """

    num_rounds: int = DEFAULT_ROUNDS
    min_clients: int = 3
    local_epochs: int = DEFAULT_LOCAL_EPOCHS
    profile: str = DEFAULT_PROFILE
    tensorboard: bool = True
    aggregation: str = "fedavg"
    trim_fraction: float = DEFAULT_TRIM_FRACTION
    max_norm_ratio: float = DEFAULT_MAX_NORM_RATIO
    min_responses: int = 2
    round_timeout: int = 7200
    resume: bool = False
    dead_client_grace_period: int = 600
    cross_site_evaluation: bool = True
    fedprox_mu: float = 0.0
    transfer: str = "full"
    quantization: str = ""
    task_request_interval: float = TASK_REQUEST_INTERVAL
    task_check_period: float = TASK_CHECK_PERIOD
    result_poll_interval: float = RESULT_POLL_INTERVAL
    keep_optimizer_state: bool = False
    local_lr_scale: float = LOCAL_LR_SCALE
    fedbn: bool = False
    silobn: bool = False
    organs: tuple[str, ...] | None = None
    train_seed: int | None = None

    def __post_init__(self) -> None:
        if self.organs is not None:
            object.__setattr__(self, "organs", check_organs(tuple(self.organs)))
        for name in ("num_rounds", "local_epochs", "min_clients", "min_responses"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.round_timeout < 0:
            raise ValueError(f"round_timeout must be >= 0 s (0: no limit), got {self.round_timeout}")
        aggregation = AGGREGATION_ALIASES.get(self.aggregation, self.aggregation)
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation {self.aggregation!r} is not one of fedavg, median, trimmed-mean")
        object.__setattr__(self, "aggregation", aggregation)  # the one internal spelling
        if not 0 <= self.trim_fraction < 0.5:
            raise ValueError(f"trim_fraction must be in [0, 0.5), got {self.trim_fraction}")
        if self.transfer not in TRANSFERS:
            raise ValueError(f"transfer {self.transfer!r} is not one of {', '.join(TRANSFERS)}")
        if self.quantization and self.quantization not in QUANTIZATIONS:
            raise ValueError(
                f"quantization {self.quantization!r} is not one of {', '.join(QUANTIZATIONS)} (or empty for "
                "float32)"
            )
        if self.fedprox_mu < 0:
            raise ValueError(f"fedprox_mu must be >= 0 (0: FedAvg), got {self.fedprox_mu}")
        if self.local_lr_scale <= 0:
            raise ValueError(f"local_lr_scale must be > 0, got {self.local_lr_scale}")
        if self.result_poll_interval <= 0:
            raise ValueError(f"result_poll_interval must be > 0 s, got {self.result_poll_interval}")
        if self.fedbn and self.silobn:
            raise ValueError(
                "fedbn and silobn exclude each other: a site keeps its BatchNorm layers (fedbn) or only their "
                "statistics (silobn)"
            )
        if (self.fedbn or self.silobn) and (norm := get_profile(self.profile).norm) != "batch":
            option = "fedbn" if self.fedbn else "silobn"
            raise ValueError(
                f"{option} keeps the sites' BatchNorm layers, but profile {self.profile!r} uses {norm} "
                "normalisation; choose a profile with batch normalisation"
            )

    @property
    def site_norm(self) -> bool:
        """Whether each site keeps BatchNorm tensors of its own (FedBN or SiloBN): no single global model."""
        return self.fedbn or self.silobn

    @property
    def seg_profile(self) -> SegProfile:
        """The job's profile with the job's organs (the network and every site's task) and training seed."""
        return get_profile(self.profile, self.organs, self.train_seed)


class SegFedAvgRecipe(FedAvgRecipe):
    """NVFlare's PyTorch ``FedAvgRecipe`` with ``SegFedAvg`` (update checks, transfer log, round line).

    ``_create_controller`` is the recipe's documented extension point ("allowing framework recipes to extend
    it"); the arguments are those NVFlare 2.9's recipe gives ``FedAvg``, plus the update-check, dropout and
    resume arguments of ``SegFedAvg`` and ``dose3d_fl.fl.server.resilient.ResilientFedAvg``.

    Args:
        max_norm_ratio: see ``SegFedAvg``.
        min_responses: results a round needs (0: every sampled site).
        round_timeout: seconds a round waits for results (0: no limit).
        resume: continue from the server's checkpoint of the last job of this name.
        fedprox_mu: FedProx proximal coefficient sent to the sites (0: FedAvg).
        task_check_period: seconds between the workflow's checks of a round's results (NVFlare: 0.5).
        **kwargs: ``FedAvgRecipe``'s arguments.
    """

    def __init__(
        self,
        *,
        max_norm_ratio: float = DEFAULT_MAX_NORM_RATIO,
        min_responses: int = 0,
        round_timeout: int = 0,
        resume: bool = False,
        fedprox_mu: float = 0.0,
        task_check_period: float = TASK_CHECK_PERIOD,
        **kwargs: Any,
    ) -> None:
        # FedAvgRecipe.__init__ calls _create_controller, so these must be set first.
        self.fedprox_mu = fedprox_mu
        self.task_check_period = task_check_period
        self.max_norm_ratio = max_norm_ratio
        self.min_responses = min_responses
        self.round_timeout = round_timeout
        self.resume = resume
        super().__init__(**kwargs)

    def _create_controller(self, persistor_id: str, model_params: Any, model_aggregator: Any) -> SegFedAvg:
        return SegFedAvg(
            min_responses=self.min_responses,
            round_timeout=self.round_timeout,
            resume=self.resume,
            checkpoint_name=self.name,
            num_clients=self.min_clients,
            num_rounds=self.num_rounds,
            persistor_id=persistor_id,
            model=model_params,
            save_filename=self.save_filename,
            aggregator=model_aggregator,
            stop_cond=self.stop_cond,
            patience=self.patience,
            task_name="train",
            exclude_vars=self.exclude_vars,
            aggregation_weights=self.aggregation_weights,
            memory_gc_rounds=self.server_memory_gc_rounds,
            enable_tensor_disk_offload=self.enable_tensor_disk_offload,
            max_norm_ratio=self.max_norm_ratio,
            task_check_period=self.task_check_period,
            **self._get_controller_kwargs(),
        )

    def _get_controller_kwargs(self) -> dict[str, Any]:
        # As NVFlare's FedProxRecipe: FedAvg sends ``fedprox_mu`` in the meta of every training model.
        kwargs = super()._get_controller_kwargs()
        if self.fedprox_mu:
            kwargs["fedprox_mu"] = self.fedprox_mu
        return kwargs


def build_seg_recipe(config: SegJobConfig | None = None) -> FedAvgRecipe:
    """Build the FedAvg recipe of the segmentation job."""
    config = config or SegJobConfig()
    profile = config.seg_profile
    with in_script_folder(CLIENT_SCRIPT.parent):  # the job names its script relatively (fl/export.py)
        recipe = SegFedAvgRecipe(
            name=JOB_NAME,
            model={
                "class_path": "dose3d_fl.seg.network.SeededUNet",
                "args": {"seed": profile.seed, **network_args(profile)},
            },
            min_clients=config.min_clients,
            num_rounds=config.num_rounds,
            train_script=CLIENT_SCRIPT.name,
            train_args=(
                f"--local-epochs {config.local_epochs} --profile {profile.name} "
                f"--result-poll {config.result_poll_interval:g} --lr-scale {config.local_lr_scale:g} "
                f"--organs {','.join(profile.organs)}"
                + (" --keep-optimizer-state" if config.keep_optimizer_state else "")
                + (" --fedbn" if config.fedbn else "")
                + (" --silobn" if config.silobn else "")
                + (f" --seed {config.train_seed}" if config.train_seed is not None else "")
            ),
            key_metric=KEY_METRIC,
            key_metric_mode="max",
            aggregator=None
            if config.aggregation == "fedavg"
            else RobustAggregator(method=config.aggregation, trim_fraction=config.trim_fraction),
            max_norm_ratio=config.max_norm_ratio,
            min_responses=min(config.min_responses, config.min_clients),
            round_timeout=config.round_timeout,
            resume=config.resume,
            fedprox_mu=config.fedprox_mu,
            task_check_period=config.task_check_period,
            params_transfer_type=TransferType.DIFF if config.transfer == "diff" else TransferType.FULL,
            # The global model files carry the profile and their provenance (fl/server/persistor.py).
            model_persistor=SegModelPersistor(profile.name, organs=profile.organs, seed=config.train_seed),
            model_locator=PTFileModelLocator(pt_persistor_id="persistor"),
        )
        add_transfer_timeouts(recipe, config.dead_client_grace_period)
        add_task_polling(recipe, config.task_request_interval)
        declare_metrics(recipe, site_metrics(profile.organs))
        # Cross-site evaluation of several 3D models at a slow site may take hours.
        if config.cross_site_evaluation:
            add_cross_site_evaluation(recipe, submit_model_timeout=1800, validation_timeout=14400)
        if config.tensorboard:
            add_experiment_tracking(recipe, tracking_type="tensorboard")
    if config.quantization:
        add_quantization(recipe, config.quantization)
    return recipe


def add_quantization(recipe: FedAvgRecipe, quantization: str) -> None:
    """Models travel as float16 or int8 both ways and are restored on arrival (``dose3d_fl.fl.policy.quantization``).

    Call it after any other result filter of the sites (the simulator's site policy): a site's weights-only
    guard and payload audit then see the float32 model, as they do in a POC, where a site's own filters run
    before the job's.
    """
    filters = quantization_filters(quantization)
    tasks = filters["tasks"]
    recipe.add_server_output_filter(filters["server_out"], tasks=tasks)
    recipe.add_client_input_filter(filters["client_in"], tasks=tasks)
    recipe.add_client_output_filter(filters["client_out"], tasks=tasks)
    recipe.add_server_input_filter(filters["server_in"], tasks=tasks)


def add_task_polling(recipe: FedAvgRecipe, interval: float = TASK_REQUEST_INTERVAL) -> None:
    """How soon a site that finished its round asks for the next one (NVFlare's default: every 2 s).

    The server tells a site to wait ``task_request_interval`` seconds after each task and between task
    requests. The slowest site of a round, whose result closes it, therefore asks for the next round this
    long after it sent its result. With NVFlare's 2 s that wait was most of the per-round orchestration cost
    the benchmark measured (``benchmarks/``, docs/performance.md). The server needs about 0.15 s from the
    last result to the next round's task (closing the task every ``task_check_period``, the update checks,
    aggregation and checkpoints), so 0.2 s is just above it: against 0.5 s it cut the fixed cost per round
    from 0.67 s to 0.39 s, and the federation's CPU time did not change measurably
    (``benchmarks/polling.py``). A request is one small message; an idle site sends five a second.
    """
    recipe.add_server_config({"server": {"task_request_interval": interval}})


def add_transfer_timeouts(recipe: FedAvgRecipe, dead_client_grace_period: int = 600) -> None:
    """The job's timeouts for 3D models over hospital networks (server/README.md gives each one's reason).

    A site that is slow to fetch or return a model is not dropped after NVFlare's 60 s defaults, and a site
    whose connection drops has ``dead_client_grace_period`` seconds to show that its job is alive.
    """
    recipe.add_server_config({"dead_client_grace_period": dead_client_grace_period})
    recipe.add_client_config({"get_task_timeout": 600, "submit_task_result_timeout": 600})


def export_seg_job(out_dir: Path, config: SegJobConfig | None = None) -> Path:
    """Write the job folder ``out_dir/seg_fedavg`` (replacing it), ready for ``nvflare job submit``."""
    return export_recipe(build_seg_recipe(config), JOB_NAME, out_dir, CLIENT_SCRIPT.parent)


def execute_seg_recipe(recipe: FedAvgRecipe, env: ExecEnv) -> Run:
    """Run the recipe in an execution environment (simulator, POC, production)."""
    with in_script_folder(CLIENT_SCRIPT.parent):  # the script is named relatively, as in export
        return recipe.execute(env)


if __name__ == "__main__":
    print(export_seg_job(Path(sys.argv[1] if len(sys.argv) > 1 else "jobs")))
